"""SM3's momentum over several steps against a reference written here in numpy, both variants.

The reference follows the paper's update (Anil et al., 2019, Algorithms SM3-I and SM3-II) for the
default cover (one accumulator per slice along each dimension) and the reference implementation's
momentum, a moving average of updates: m <- beta m + (1 - beta) update, w <- w - lr m. Betas other
than 0.5 tell beta from 1 - beta.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from sm3repro.optim import SM3


class Reference:
    """SM3 on one numpy array: per-dimension accumulators, moving-average momentum."""

    def __init__(self, shape: tuple[int, ...], variant: str, cover: str, beta: float, eps: float):
        self.variant, self.beta, self.eps = variant, beta, eps
        if cover == "singleton" or len(shape) == 1:
            self.dims = None  # a full-size accumulator: Adagrad
            self.full = np.zeros(shape)
        elif cover == "rows":
            self.dims = [0]
            self.accs = [np.zeros(shape[0])]
        else:
            self.dims = list(range(len(shape)))
            self.accs = [np.zeros(n) for n in shape]
        self.m = np.zeros(shape)

    def _expand(self, acc: np.ndarray, dim: int, ndim: int) -> np.ndarray:
        return acc.reshape([-1 if d == dim else 1 for d in range(ndim)])

    def _slice_max(self, x: np.ndarray, dim: int) -> np.ndarray:
        return x.max(axis=tuple(d for d in range(x.ndim) if d != dim))

    def preconditioner(self, g: np.ndarray) -> np.ndarray:
        if self.dims is None:
            self.full += g * g
            return self.full
        sq = g * g
        if self.variant == "i":
            for k, dim in enumerate(self.dims):
                self.accs[k] = self.accs[k] + self._slice_max(sq, dim)
            return self._min_over_sets(g.ndim)
        nu = self._min_over_sets(g.ndim) + sq
        for k, dim in enumerate(self.dims):
            self.accs[k] = self._slice_max(nu, dim)
        return nu

    def _min_over_sets(self, ndim: int) -> np.ndarray:
        views = [self._expand(acc, dim, ndim) for acc, dim in zip(self.accs, self.dims)]  # noqa: B905
        out = views[0]
        for view in views[1:]:
            out = np.minimum(out, view)
        return out

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        update = g / (np.sqrt(self.preconditioner(g)) + self.eps)
        if self.beta == 0:
            return w - lr * update
        self.m = self.beta * self.m + (1 - self.beta) * update
        return w - lr * self.m


CASES = list(
    itertools.product(
        ("i", "ii"),
        [
            ((5, 4), "dims"),
            ((3, 4, 2), "dims"),
            ((6,), "dims"),
            ((5, 4), "rows"),
            ((4, 3), "singleton"),
        ],
        (0.0, 0.3, 0.9),
    )
)


@pytest.mark.parametrize(
    "variant, shape_cover, beta", CASES, ids=[f"{v}-{s}-{c}-b{b}" for v, (s, c), b in CASES]
)
def test_several_steps_match_the_reference(variant: str, shape_cover: tuple, beta: float) -> None:
    shape, cover = shape_cover
    rng = np.random.default_rng(7)
    w0 = rng.normal(size=shape)
    # gradients of very different sizes, so row and column maxima move between coordinates
    grads = [rng.normal(size=shape) * rng.choice([0.1, 1.0, 5.0], size=shape) for _ in range(6)]
    lr, eps = 0.1, 1e-3
    param = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    optimizer = SM3([param], lr=lr, variant=variant, cover=cover, momentum=beta, eps=eps)
    ref, w = Reference(shape, variant, cover, beta, eps), w0.copy()
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        w = ref.step(w, g, lr)
        np.testing.assert_allclose(param.detach().numpy(), w, rtol=1e-10, atol=1e-12)
    state = optimizer.state[param]
    assert state["step"] == len(grads)
    if beta > 0:
        np.testing.assert_allclose(state["momentum_buffer"].numpy(), ref.m, rtol=1e-10)
    else:
        assert "momentum_buffer" not in state


def test_each_group_uses_its_own_beta() -> None:
    rng = np.random.default_rng(3)
    shapes, betas = [(4, 3), (4, 3)], [0.2, 0.85]
    params = [nn.Parameter(torch.tensor(rng.normal(size=s))) for s in shapes]
    optimizer = SM3(
        [{"params": [p], "momentum": b} for p, b in zip(params, betas, strict=True)], lr=0.05
    )
    refs = [Reference(s, "ii", "dims", b, 0.0) for s, b in zip(shapes, betas, strict=True)]
    ws = [p.detach().numpy().copy() for p in params]
    for _ in range(4):
        gs = [rng.normal(size=s) for s in shapes]
        for p, g in zip(params, gs, strict=True):
            p.grad = torch.tensor(g)
        optimizer.step()
        ws = [r.step(w, g, 0.05) for r, w, g in zip(refs, ws, gs, strict=True)]
    for p, w in zip(params, ws, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-10)
