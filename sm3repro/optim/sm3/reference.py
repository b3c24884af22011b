"""A plain, readable SM3 step for one parameter, straight from the definitions.

This is what :func:`sm3repro.optim.sm3.optimizer.sm3` computes, written without any of its speed tricks
(no integer views, no regrouped reductions, no shared scratch, no fused kernel): every
intermediate is a fresh tensor. Tests check the fast paths against it. With ``g`` the gradient
and ``mu(r)`` the accumulator of set ``S_r`` of the cover:

* SM3-I:  ``mu(r) += max_{j in S_r} g(j)^2``, then ``nu(i) = min_{r: i in S_r} mu(r)``;
* SM3-II: ``nu(i) = min_{r: i in S_r} mu(r) + g(i)^2``, then ``mu(r) = max_{i in S_r} nu(i)``;
* singleton cover: ``mu(i) += g(i)^2 = nu(i)`` (Adagrad, both variants);

``update = g / (sqrt(nu) + eps)``; with ``momentum = beta > 0``,
``m = beta * m + (1 - beta) * update`` and ``w -= lr * m``, else ``w -= lr * update``.

A sparse (row-sparse) gradient is the dense gradient with zero rows, and this reference steps
on exactly that: ``grad.to_dense()``. The fast path touches only the present rows and must
give the same result, which holds for every cover when ``momentum == 0`` (a zero row keeps its
weights and row accumulator, and a column accumulator becomes the max of its old value and the
touched rows' ``nu``; see :class:`sm3repro.optim.sm3.optimizer.SM3`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["cover_of", "sm3_preconditioner", "sm3_reference_step"]


def cover_of(shape: torch.Size, accumulators: Sequence[Tensor]) -> str:
    """Which cover a list of accumulators represents, read from their shapes."""
    if len(accumulators) == 1 and accumulators[0].shape == shape:
        return "singleton"
    if len(shape) >= 2:
        if len(accumulators) == 1 and accumulators[0].shape == (shape[0],):
            return "rows"
        if len(accumulators) == len(shape) and all(
            acc.shape == (size,) for acc, size in zip(accumulators, shape, strict=True)
        ):
            return "dims"
    got = [tuple(acc.shape) for acc in accumulators]
    raise ValueError(
        f"SM3 accumulators of shapes {got} match no cover of a parameter {tuple(shape)}"
    )


def _along(acc: Tensor, dim: int, ndim: int) -> Tensor:
    """A 1-D accumulator for dimension ``dim``, shaped to broadcast against the parameter."""
    shape = [1] * ndim
    shape[dim] = -1
    return acc.reshape(shape)


def _max_over_set(x: Tensor, dim: int) -> Tensor:
    """For each index k along ``dim``, the max of x over the slice x.select(dim, k)."""
    others = [d for d in range(x.dim()) if d != dim]
    return x.amax(dim=others) if others else x.clone()


def _nu(
    kind: str, accumulators: Sequence[Tensor], squares: Tensor, variant: str
) -> tuple[Tensor, list[Tensor]]:
    """nu of one step and the accumulators after it (returned, inputs untouched)."""
    ndim = squares.dim()
    if kind == "singleton":
        nu = accumulators[0] + squares
        return nu, [nu.clone()]
    if variant == "i":
        new_accs = [acc + _max_over_set(squares, dim) for dim, acc in enumerate(accumulators)]
        nu = _along(new_accs[0], 0, ndim).expand(squares.shape)
        for dim, acc in enumerate(new_accs[1:], start=1):
            nu = torch.minimum(nu, _along(acc, dim, ndim))
        return nu.clone(), new_accs
    smallest = _along(accumulators[0], 0, ndim).expand(squares.shape)
    for dim, acc in enumerate(accumulators[1:], start=1):
        smallest = torch.minimum(smallest, _along(acc, dim, ndim))
    nu = smallest + squares
    return nu, [_max_over_set(nu, dim) for dim in range(len(accumulators))]


def sm3_preconditioner(accumulators: Sequence[Tensor], grad: Tensor, variant: str) -> Tensor:
    """``nu`` of one dense step from the accumulators *before* it (which are not modified)."""
    if variant not in ("i", "ii"):
        raise ValueError(f"SM3: variant must be one of ('i', 'ii'), got {variant!r}")
    kind = cover_of(grad.shape, accumulators)
    return _nu(kind, accumulators, grad * grad, variant)[0]


@torch.no_grad()
def sm3_reference_step(
    param: Tensor,
    grad: Tensor,
    accumulators: list[Tensor],
    momentum_buffer: Tensor | None,
    *,
    lr: float,
    variant: str,
    momentum: float = 0.0,
    eps: float = 0.0,
) -> None:
    """One SM3 step on one parameter: updates ``param``, ``accumulators`` (each in place) and
    ``momentum_buffer`` (when not ``None``) from the definitions in the module docstring."""
    if grad.is_sparse:
        grad = grad.to_dense()  # sums duplicate indices
    kind = cover_of(param.shape, accumulators)
    nu, new_accumulators = _nu(kind, accumulators, grad * grad, variant)
    update = grad / (nu.sqrt() + eps)
    if momentum_buffer is not None:
        momentum_buffer.copy_(momentum * momentum_buffer + (1.0 - momentum) * update)
        update = momentum_buffer
    param.sub_(lr * update)
    for acc, new in zip(accumulators, new_accumulators, strict=True):
        acc.copy_(new)
