"""sm3repro: a reproducibility harness for SM3 (Anil et al., 2019) on a Chen & Manning parser."""

__version__ = "0.1.0"
