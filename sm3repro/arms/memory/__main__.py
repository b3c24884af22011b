import sys

from sm3repro.arms.memory.arm import main

sys.exit(main())
