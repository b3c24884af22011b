"""SM3 (Anil et al., 2019): the optimizer, its fused and forloop (eager) paths, and the
reference rule."""

from sm3repro.optim.sm3.optimizer import SM3

__all__ = ["SM3"]
