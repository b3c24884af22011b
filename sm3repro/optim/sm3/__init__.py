"""SM3 (Anil et al., 2019): the optimizer, its eager and fused paths, and the reference rule."""

from sm3repro.optim.sm3.optimizer import SM3

__all__ = ["SM3"]
