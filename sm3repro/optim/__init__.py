"""Optimizers for the study: SM3-I/II and a registry building them and torch's baselines."""

from sm3repro.optim.registry import OPTIMIZERS, build_optimizer, optimizer_state_bytes
from sm3repro.optim.sm3 import SM3

__all__ = ["OPTIMIZERS", "SM3", "build_optimizer", "optimizer_state_bytes"]
