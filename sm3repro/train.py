"""``python -m sm3repro.train``: the training CLI (the run itself is sm3repro.run.train)."""

from sm3repro.run.train import main

if __name__ == "__main__":
    main()
