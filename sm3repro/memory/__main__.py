import sys

from sm3repro.memory.arm import main

sys.exit(main())
