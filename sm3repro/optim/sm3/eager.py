"""SM3's forloop path (``impl=forloop``): eager torch ops, one parameter at a time, where the
fused kernel is unavailable or cannot take a parameter.

It is :mod:`sm3repro.optim.sm3.reference`'s rule in bounded scratch. A parameter is stepped one
tile at a time, a tile being at most :data:`_BLOCK_BYTES` (trailing dimensions kept whole while
they fit), so the temporaries stay under a few MiB whatever the parameter's size or shape (one
row of the widened parser's first layer is 2 MB). An accumulator read by several tiles is
written once all of them have read it: the largest dimension's as each of its ranges is done
(those ranges are the outer loop), the others' at the end, from maxima gathered across tiles
(small: one number per slice). Max is exact in any order and every other op is elementwise, so
the result does not depend on the tiling.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["dense_step", "sparse_step"]

# Scratch per step: one tile of this many bytes, plus a tile's maxima. 256 KiB: at 512 KiB a
# step's peak RSS grew 3-4.6 MiB (glibc's mmap threshold), at 256 KiB under 1 MiB.
_BLOCK_BYTES = 1 << 18

Tile = tuple[slice, ...]
Sets = list[tuple[int, Tensor]]  # (dimension, its 1-D accumulator) for the rows and dims covers


def _along(acc: Tensor, dim: int, ndim: int) -> Tensor:
    """A 1-D accumulator for dimension ``dim``, viewed to broadcast against the parameter."""
    shape = [1] * ndim
    shape[dim] = acc.numel()
    return acc.view(shape)


def _slice_max(x: Tensor, dim: int) -> Tensor:
    """For each index k along ``dim``, the max of x over the slice x.select(dim, k)."""
    others = [d for d in range(x.dim()) if d != dim]
    return torch.amax(x, dim=others) if others else x.clone()  # amax(dim=[]) reduces all


def _inverse_root(src: Tensor, out: Tensor | None, eps: float) -> Tensor:
    """out = 1 / (sqrt(src) + eps); ``out`` may be ``src`` itself, or None for a new tensor."""
    if out is None:
        out = torch.empty_like(src)
    if eps == 0.0:
        return torch.rsqrt(src, out=out)
    torch.sqrt(src, out=out)
    return out.add_(eps).reciprocal_()


def _apply_update(
    param: Tensor, grad: Tensor, precond: Tensor, buf: Tensor | None, lr: float, momentum: float
) -> None:
    if buf is None:
        param.addcmul_(grad, precond, value=-lr)
    else:
        buf.mul_(momentum).addcmul_(grad, precond, value=1.0 - momentum)
        param.add_(buf, alpha=-lr)


def _tiles(shape: Sequence[int], item: int, outer: int = 0) -> list[tuple[slice, list[Tile]]]:
    """The tiles of a tensor of ``shape`` (``item`` bytes an element), grouped by their range
    along dimension ``outer``: ``(range, its tiles)``, in order. A tile holds at most
    _BLOCK_BYTES (one element at least); trailing dimensions are kept whole while they fit, so
    a tile is a few long contiguous runs (a matrix: whole rows, or one row's column block)."""
    budget = max(1, _BLOCK_BYTES // item)
    steps: list[int] = []
    for size in reversed(shape):
        steps.insert(0, max(1, min(size, budget)))
        budget = max(1, budget // steps[0])
    ranges = [
        [slice(start, min(start + step, size)) for start in range(0, size, step)]
        for size, step in zip(shape, steps, strict=True)
    ]
    inner = ranges[:outer] + ranges[outer + 1 :]
    return [
        (span, [(*rest[:outer], span, *rest[outer:]) for rest in itertools.product(*inner)])
        for span in ranges[outer]
    ]


class _Tiled:
    """One parameter's step in tiles: its tensors, the hyperparameters, the tiles and one tile
    of scratch (allocated once per step: re-allocating a tile per tile let glibc raise its mmap
    threshold and leave the heap fragmented)."""

    def __init__(
        self,
        param: Tensor,
        grad: Tensor,
        buf: Tensor | None,
        *,
        outer: int,
        lr: float,
        momentum: float,
        eps: float,
    ) -> None:
        self.param, self.grad, self.buf = param, grad, buf
        self.lr, self.momentum, self.eps = lr, momentum, eps
        self.outer = outer
        self.groups = _tiles(param.shape, param.element_size(), outer)
        most = max(1, _BLOCK_BYTES // param.element_size())
        self.work = torch.empty(min(param.numel(), most), dtype=param.dtype, device=param.device)

    def scratch(self, like: Tensor) -> Tensor:
        return self.work[: like.numel()].view(like.shape)

    def span_buffer(self) -> Tensor:
        """A buffer for the longest range of the outer dimension (the first one)."""
        first = self.groups[0][0]
        return torch.empty(
            first.stop - first.start, dtype=self.param.dtype, device=self.param.device
        )

    def update(self, tile: Tile, precond: Tensor) -> None:
        buf = None if self.buf is None else self.buf[tile]
        _apply_update(self.param[tile], self.grad[tile], precond, buf, self.lr, self.momentum)


def _gather(
    x: Tensor, tile: Tile, sets: Sets, outer: int, best: Tensor, gathered: dict[int, Tensor]
) -> None:
    """Fold a tile's slice maxima of x into ``best`` (the outer dimension's current range) and
    ``gathered`` (the other dimensions' maxima over every tile so far)."""
    for dim, _ in sets:
        into = best if dim == outer else gathered[dim][tile[dim]]
        torch.maximum(into, _slice_max(x, dim), out=into)


def _adagrad(step: _Tiled, acc: Tensor) -> None:
    """The singleton cover, one set per coordinate: both variants are Adagrad."""
    for _, tiles in step.groups:
        for tile in tiles:
            grad, mu = step.grad[tile], acc[tile]
            mu.addcmul_(grad, grad)
            step.update(tile, _inverse_root(mu, step.scratch(grad), step.eps))


def _accumulation(step: _Tiled, sets: Sets) -> tuple[Tensor, dict[int, Tensor], Tensor]:
    """What both variants accumulate into: the outer dimension's accumulator (written range by
    range), zeroed maxima of the other dimensions (written at the end), and the range buffer."""
    gathered = {dim: torch.zeros_like(acc) for dim, acc in sets if dim != step.outer}
    return dict(sets)[step.outer], gathered, step.span_buffer()


def _sm3_ii(step: _Tiled, sets: Sets) -> None:
    """nu = min over the sets holding a coordinate + g^2; then mu(r) = max of nu over S_r,
    afresh (the old values entered through nu only)."""
    ndim, outer = step.param.dim(), step.outer
    outer_acc, gathered, spans = _accumulation(step, sets)
    for span, tiles in step.groups:
        best = spans[: span.stop - span.start].zero_()
        for tile in tiles:
            grad = step.grad[tile]
            nu = step.scratch(grad)
            views = [_along(acc[tile[dim]], dim, ndim) for dim, acc in sets]
            if len(views) == 1:  # rows cover: mu_row + g^2 in one pass
                torch.addcmul(views[0], grad, grad, out=nu)
            else:  # expanded first, so that the result is full-size at any rank
                torch.minimum(views[0].expand(nu.shape), views[1], out=nu)
                for view in views[2:]:
                    torch.minimum(nu, view, out=nu)
                nu.addcmul_(grad, grad)
            _gather(nu, tile, sets, outer, best, gathered)
            step.update(tile, _inverse_root(nu, nu, step.eps))
        outer_acc[span] = best  # every tile of this range has read the old values
    for dim, acc in sets:
        if dim != outer:
            acc.copy_(gathered[dim])


def _sm3_i(step: _Tiled, sets: Sets) -> None:
    """mu(r) += max of g^2 over S_r; then nu = min over the sets holding a coordinate. As
    1/sqrt is decreasing, 1/sqrt(min(a, b)) = max(1/sqrt(a), 1/sqrt(b)) (with eps too): roots
    of the short accumulators only, then a broadcast max, no full-size square root."""
    ndim, outer = step.param.dim(), step.outer
    outer_acc, gathered, spans = _accumulation(step, sets)
    for span, tiles in step.groups:
        best = spans[: span.stop - span.start].zero_()
        for tile in tiles:
            grad = step.grad[tile]
            _gather(
                torch.mul(grad, grad, out=step.scratch(grad)), tile, sets, outer, best, gathered
            )
        outer_acc[span].add_(best)
    for dim, acc in sets:
        if dim != outer:
            acc.add_(gathered[dim])
    for span, tiles in step.groups:
        # The range buffer is free again: the outer roots go there (no range-sized temporary).
        roots = _inverse_root(outer_acc[span], spans[: span.stop - span.start], step.eps)
        outer_inverse = _along(roots, outer, ndim)
        for tile in tiles:
            precond = outer_inverse  # rows cover: the row factor broadcasts in the update
            for dim, acc in sets:
                if dim != outer:
                    inverse = _along(_inverse_root(acc[tile[dim]], None, step.eps), dim, ndim)
                    out = step.scratch(step.grad[tile])
                    precond = torch.maximum(precond.expand(out.shape), inverse, out=out)
            step.update(tile, precond)


def dense_step(
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    cover: str,
    buf: Tensor | None,
    *,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> None:
    """One step of ``param`` on the dense gradient ``grad``, a tile at a time; ``cover`` is
    what ``accs`` represent (:func:`sm3repro.optim.sm3.reference.cover_of`)."""
    if param.numel() == 0:  # nothing to step (and no tile to take a maximum over)
        return
    if param.dim() == 0:  # tiles index dimensions: a scalar is a vector of one
        param, grad, accs = param.unsqueeze(0), grad.unsqueeze(0), [accs[0].unsqueeze(0)]
        buf = None if buf is None else buf.unsqueeze(0)
    if cover == "singleton":
        _adagrad(_Tiled(param, grad, buf, outer=0, lr=lr, momentum=momentum, eps=eps), accs[0])
        return
    sets = [(0, accs[0])] if cover == "rows" else list(enumerate(accs))
    # The largest dimension's ranges are the outer loop: its accumulator needs no gathering.
    outer = max(sets, key=lambda dim_acc: param.shape[dim_acc[0]])[0]
    step = _Tiled(param, grad, buf, outer=outer, lr=lr, momentum=momentum, eps=eps)
    (_sm3_ii if variant == "ii" else _sm3_i)(step, sets)


def sparse_step(
    param: Tensor,
    rows: Tensor,
    values: Tensor,
    accs: list[Tensor],
    cover: str,
    *,
    lr: float,
    variant: str,
    eps: float,
) -> None:
    """One step on the gradient ``values`` (n, *param.shape[1:]) of the distinct ``rows``:
    touches only those rows (the scratch is the size of the rows)."""
    squares = values * values
    ndim = values.dim()
    mu = accs[0].index_select(0, rows)  # (n,) for rows and dims, (n, ...) for singleton
    if cover == "singleton":
        nu = mu.add_(squares)
        accs[0].index_copy_(0, rows, nu)
        precond = _inverse_root(nu, nu.clone(), eps)
    elif variant == "ii":
        views = [_along(mu, 0, ndim)]
        views += [_along(a, d, ndim) for d, a in enumerate(accs[1:], start=1)]
        nu = functools.reduce(torch.minimum, views) + squares
        for d, acc in enumerate(accs[1:], start=1):
            torch.maximum(acc, _slice_max(nu, d), out=acc)  # max(old, touched rows' nu)
        accs[0].index_copy_(0, rows, _slice_max(nu, 0))
        precond = _inverse_root(nu, nu, eps)
    else:
        for d, acc in enumerate(accs[1:], start=1):
            acc.add_(_slice_max(squares, d))  # untouched rows add max(0) = nothing
        mu.add_(_slice_max(squares, 0))
        accs[0].index_copy_(0, rows, mu)
        views = [_along(_inverse_root(mu, None, eps), 0, ndim)]
        views += [
            _along(_inverse_root(a, None, eps), d, ndim) for d, a in enumerate(accs[1:], start=1)
        ]
        precond = views[0]
        for view in views[1:]:
            precond = torch.maximum(precond, view)
    param.index_add_(0, rows, values * precond, alpha=-lr)
