"""SM3's eager torch implementation: the fallback where the fused kernel is unavailable.

Speed tricks, each with its reason beside it: integer views for max-reductions, regrouped column
maxima, torch calls bound in advance (:class:`_Plan`), one shared scratch buffer
(:class:`Workspace`), and no full-size square root for SM3-I. Parameters above
:data:`_WHOLE_MAX_BYTES` are stepped in pieces of about :data:`_BLOCK_BYTES` (matrices in tiles,
split by columns when a row is wider than a tile), so the scratch stays a few MiB whatever their
size or shape. :mod:`sm3repro.optim.sm3.reference` is the plain version these must agree with.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sm3repro.optim.sm3.reference import cover_of as _cover_kind

__all__ = ["Workspace", "dense_step", "sparse_step"]

# Parameters larger than this many bytes are stepped eagerly in blocks of _BLOCK_BYTES (the
# shared scratch would otherwise grow to the largest parameter, as large as Adagrad's state).
_WHOLE_MAX_BYTES = 4 << 20
_BLOCK_BYTES = 1 << 19

# Non-negative IEEE floats order exactly like their bit patterns read as signed integers, and
# integer max-reductions are several times faster than float ones on CPU (no NaN bookkeeping).
# Every tensor reduced below is non-negative, so reductions run on these integer views.
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}

# Reducing a tall, narrow matrix down its columns is slow; regrouping rows into rows about this
# many elements wide and reducing twice is ~3.5x faster on the parser's 16657 x 50 embedding.
# Below _REGROUP_MIN elements the two extra calls cost more than they save.
_WIDE_ROW = 1024
_REGROUP_MIN = 1 << 16


def _bits(t: Tensor) -> Tensor:
    int_dtype = _BITS.get(t.dtype)
    return t if int_dtype is None else t.view(int_dtype)


def _broadcast_view(acc: Tensor, dim: int, ndim: int) -> Tensor:
    """A 1-D accumulator for dimension ``dim`` viewed so that it broadcasts against the param."""
    shape = [1] * ndim
    shape[dim] = acc.numel()
    return acc.view(shape)


# A tiny "program": torch calls with their arguments and out= tensors bound in advance, so a
# step issues only the arithmetic, without rebuilding views (Python and dispatch overhead is a
# large share of a step on small parameters).
_Op = tuple[Callable[..., Tensor], tuple[Any, ...], Tensor]


def _run(program: Sequence[_Op]) -> None:
    for fn, args, out in program:
        fn(*args, out=out)


def _column_max_program(x: Tensor, out: Tensor, owned: list[Tensor]) -> list[_Op]:
    """out = x.amax(0) for a contiguous 2-D x, regrouping tall inputs into wide rows first.
    Small intermediate buffers are appended to ``owned``."""
    rows, cols = x.shape
    group = min(rows, max(1, _WIDE_ROW // max(cols, 1)))
    if group <= 1 or rows * cols < _REGROUP_MIN:
        return [(torch.amax, (x, 0), out)]
    whole = rows // group
    wide = torch.empty(group * cols, dtype=x.dtype, device=x.device)
    owned.append(wide)
    program: list[_Op] = [(torch.amax, (x[: whole * group].view(whole, group * cols), 0), wide)]
    if whole * group < rows:
        # max is idempotent, so the leftover rows can ride along in an overlapping last group.
        program.append((torch.maximum, (wide, x[rows - group :].reshape(group * cols)), wide))
    program.append((torch.amax, (wide.view(group, cols), 0), out))
    return program


def _max_except_program(src: Tensor, dim: int, out: Tensor, owned: list[Tensor]) -> list[_Op]:
    """out[k] = max of the non-negative, contiguous ``src`` over the slice src.select(dim, k)."""
    src_bits, out_bits = _bits(src), _bits(out)
    outer = math.prod(src.shape[:dim])
    size = src.shape[dim]
    inner = math.prod(src.shape[dim + 1 :])
    x = src_bits.view(outer, size, inner)
    if inner == 1:
        return _column_max_program(x.view(outer, size), out_bits, owned)
    if outer == 1:
        return [(torch.amax, (x.view(size, inner), 1), out_bits)]
    # Reduce the contiguous inner dims first (the fast direction), then the outer ones.
    middle = torch.empty((outer, size), dtype=x.dtype, device=x.device)
    owned.append(middle)
    return [(torch.amax, (x, 2), middle), *_column_max_program(middle, out_bits, owned)]


def _fold_program(fn: Callable[..., Tensor], views: Sequence[Tensor], out: Tensor) -> list[_Op]:
    """out = fn(views[0], fn(views[1], ...)) elementwise (torch.minimum or torch.maximum)."""
    # Expanding the first view (free) makes the first op's result full-size even for rank >= 3.
    first = views[0] if len(views) == 2 else views[0].expand(out.shape)
    return [(fn, (first, views[1]), out)] + [(fn, (out, view), out) for view in views[2:]]


def _inverse_root(src: Tensor, out: Tensor | None, eps: float) -> Tensor:
    """out = 1 / (sqrt(src) + eps); ``out`` may be ``src`` itself, or None for a new tensor."""
    if out is None:
        out = torch.empty_like(src)
    if eps == 0.0:
        return torch.rsqrt(src, out=out)
    torch.sqrt(src, out=out)
    return out.add_(eps).reciprocal_()


class _Plan:
    """Everything one parameter's dense step needs besides the gradient: views of the
    accumulators and of the shared scratch, small reduction buffers, and bound torch calls."""

    def __init__(self, param: Tensor, accs: list[Tensor], variant: str, buffer: Tensor) -> None:
        self.shape = param.shape
        self.accs_list = accs
        self.accs = tuple(accs)
        self.variant = variant
        self.buffer = buffer
        self.kind = _cover_kind(param.shape, accs)
        self.scratch = scratch = buffer[: param.numel()].view(param.shape)
        self.reduce: list[_Op] = []
        self.combine: list[_Op] = []
        self.slice_max: list[Tensor] = []
        self.inverse: list[Tensor] = []
        self.precond_view: Tensor | None = None
        self.owned: list[Tensor] = []  # small reduction buffers
        if self.kind == "singleton":
            return
        ndim = param.dim()
        self.views = [_broadcast_view(a, j, ndim) for j, a in enumerate(accs)]
        if variant == "ii":
            # SM3-II defines mu_t(r) afresh as the max of nu_t over S_r (the old values entered
            # through nu only), so reduce straight into the accumulators.
            if self.kind == "dims":
                self.combine = _fold_program(torch.minimum, self.views, scratch)
            for dim, acc in enumerate(accs):
                self.reduce += _max_except_program(scratch, dim, acc, self.owned)
        else:
            self.slice_max = [torch.empty_like(a) for a in accs]
            self.inverse = [torch.empty_like(a) for a in accs]
            for dim, out in enumerate(self.slice_max):
                self.reduce += _max_except_program(scratch, dim, out, self.owned)
            inverse_views = [_broadcast_view(a, j, ndim) for j, a in enumerate(self.inverse)]
            if len(inverse_views) > 1:
                self.combine = _fold_program(torch.maximum, inverse_views, scratch)
            else:  # rows cover: the row factor broadcasts in the update, no full-size write
                self.precond_view = inverse_views[0]

    def valid_for(self, param: Tensor, accs: list[Tensor], variant: str, buffer: Tensor) -> bool:
        return (
            self.shape == param.shape
            and self.accs_list is accs
            and self.variant == variant
            and self.buffer is buffer
            and len(accs) == len(self.accs)
            and all(a is b for a, b in zip(accs, self.accs, strict=True))
        )

    def nbytes(self) -> int:
        small = self.slice_max + self.inverse + self.owned
        return sum(t.numel() * t.element_size() for t in small)


class Workspace:
    """Scratch memory for the one full-size temporary each step needs, shared by all parameters
    and reused across steps (allocating ~4 MB per step costs page faults with glibc's default
    malloc), plus each parameter's :class:`_Plan`.

    It lives outside ``optimizer.state`` on purpose: it holds nothing between steps that the
    algorithm needs, is never serialized, and is the transient memory an allocating
    implementation would use anyway. :meth:`nbytes` reports it.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self._plans: dict[int, tuple[Tensor, _Plan]] = {}

    def plan(self, param: Tensor, accs: list[Tensor], variant: str) -> _Plan:
        key = (param.dtype, param.device)
        base = self._buffers.get(key)
        if base is None or base.numel() < param.numel():
            # Grow to the largest parameter seen; plans on the old buffer rebuild themselves.
            base = self._buffers[key] = torch.empty(param.numel(), dtype=key[0], device=key[1])
        entry = self._plans.get(id(param))
        if (
            entry is not None
            and entry[0] is param
            and entry[1].valid_for(param, accs, variant, base)
        ):
            return entry[1]
        plan = _Plan(param, accs, variant, base)
        self._plans[id(param)] = (param, plan)
        return plan

    def nbytes(self) -> int:
        buffers = sum(b.numel() * b.element_size() for b in self._buffers.values())
        return buffers + sum(plan.nbytes() for _, plan in self._plans.values())


def _eager_step(
    workspace: Workspace,
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    buf: Tensor | None,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> None:
    """The eager dense step for a parameter of at most _WHOLE_MAX_BYTES."""
    plan = workspace.plan(param, accs, variant)
    if plan.kind == "singleton":
        # One set per coordinate: both variants reduce to Adagrad.
        accs[0].addcmul_(grad, grad)
        precond = _inverse_root(accs[0], plan.scratch, eps)
    elif variant == "ii":
        nu = plan.scratch
        if plan.kind == "rows":
            torch.addcmul(plan.views[0], grad, grad, out=nu)  # mu_row + g^2 in one pass
        else:
            _run(plan.combine)  # nu = min over the sets containing each coordinate
            nu.addcmul_(grad, grad)
        _run(plan.reduce)  # mu(r) = max of nu over S_r, straight into the accumulators
        precond = _inverse_root(nu, nu, eps)
    else:
        torch.mul(grad, grad, out=plan.scratch)
        _run(plan.reduce)  # slice maxima of g^2
        for acc, slice_max, inverse in zip(accs, plan.slice_max, plan.inverse, strict=True):
            acc.add_(slice_max)
            _inverse_root(acc, inverse, eps)
        # 1/sqrt is decreasing, so 1/sqrt(min(a, b)) = max(1/sqrt(a), 1/sqrt(b)) (with eps
        # too): roots of the short accumulators only, then one broadcast max, no full-size
        # square root.
        if plan.combine:
            _run(plan.combine)
            precond = plan.scratch
        else:
            precond = plan.precond_view
    # precond = 1 / (sqrt(nu) + eps), full-size or broadcastable against grad.
    _apply_update(param, grad, precond, buf, lr, momentum)


def _apply_update(
    param: Tensor, grad: Tensor, precond: Tensor, buf: Tensor | None, lr: float, momentum: float
) -> None:
    if buf is None:
        param.addcmul_(grad, precond, value=-lr)
    else:
        buf.mul_(momentum).addcmul_(grad, precond, value=1.0 - momentum)
        param.add_(buf, alpha=-lr)


def _blocked_step(
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    kind: str,
    buf: Tensor | None,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> None:
    """The eager dense step for a large parameter, a block of leading-dimension slices at a
    time, every full-size temporary written into one reused block buffer (about _BLOCK_BYTES
    whatever the parameter's size). The accumulators of the other dimensions are read unchanged
    by every block and updated at the end, from maxima gathered across blocks."""
    slice_numel = max(param[0].numel(), 1)
    rows = max(1, _BLOCK_BYTES // (slice_numel * param.element_size()))
    blocks = [
        slice(start, min(start + rows, param.shape[0])) for start in range(0, len(param), rows)
    ]
    work = torch.empty(rows * slice_numel, dtype=param.dtype, device=param.device)
    ndim = param.dim()

    def scratch(b: slice) -> Tensor:
        return work[: (b.stop - b.start) * slice_numel].view((b.stop - b.start, *param.shape[1:]))

    def fold(fn: Callable[..., Tensor], vectors: list[Tensor], b: slice) -> Tensor:
        """fn (minimum or maximum) of the broadcast accumulator-shaped vectors, into scratch."""
        views = [_broadcast_view(vectors[0][b], 0, ndim)]
        views += [_broadcast_view(a, d, ndim) for d, a in enumerate(vectors[1:], start=1)]
        out = scratch(b)
        out.copy_(views[0].expand(out.shape))
        for view in views[1:]:
            fn(out, view, out=out)
        return out

    def update(b: slice, precond: Tensor) -> None:
        _apply_update(param[b], grad[b], precond, buf[b] if buf is not None else None, lr, momentum)

    if kind == "singleton":
        for b in blocks:
            accs[0][b].addcmul_(grad[b], grad[b])
            update(b, _inverse_root(accs[0][b], scratch(b), eps))
        return
    others = [torch.zeros_like(a) for a in accs[1:]]  # maxima over all blocks, small
    if variant == "ii":
        for b in blocks:
            nu = fold(torch.minimum, accs, b).addcmul_(grad[b], grad[b])
            for d, other in enumerate(others, start=1):
                torch.maximum(other, _max_except(nu, d), out=other)
            accs[0][b] = _max_except(nu, 0)
            update(b, _inverse_root(nu, nu, eps))
        for acc, other in zip(accs[1:], others, strict=True):
            acc.copy_(other)
        return
    for b in blocks:  # SM3-I: the accumulators first, from the slice maxima of g^2
        squares = torch.mul(grad[b], grad[b], out=scratch(b))
        for d, other in enumerate(others, start=1):
            torch.maximum(other, _max_except(squares, d), out=other)
        accs[0][b] += _max_except(squares, 0)
    for acc, other in zip(accs[1:], others, strict=True):
        acc.add_(other)
    inverses = [_inverse_root(acc, None, eps) for acc in accs]
    for b in blocks:
        update(b, fold(torch.maximum, inverses, b))


def _tiled_step(
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    kind: str,
    buf: Tensor | None,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> None:
    """The eager dense step for a large matrix, one tile of about _BLOCK_BYTES at a time: whole
    rows where a row fits in a tile, else column blocks one row high. Every temporary is a tile
    or a tile's row or column maxima, whatever the matrix's width (a row of the widened parser's
    first layer is 2 MB). Each column block is finished before the next starts, so its column
    accumulators can be written when it ends; rows that span several column blocks gather their
    maxima in ``row_max`` (only ever needed when rows * _BLOCK_BYTES < the matrix's size, so it
    is small)."""
    n_rows, n_cols = param.shape
    item = param.element_size()
    width = min(n_cols, max(1, _BLOCK_BYTES // item))
    height = min(n_rows, max(1, _BLOCK_BYTES // (width * item)))
    like = {"dtype": param.dtype, "device": param.device}
    # Every buffer is allocated once per step: freeing and re-allocating 512 KiB per tile lets
    # glibc raise its mmap threshold and leave the heap fragmented (a few MiB more RSS at times).
    tile_work = torch.empty(height * width, **like)
    col_work, col_maxima = torch.empty(width, **like), torch.empty(width, **like)
    row_work, row_maxima = torch.empty(height, **like), torch.empty(height, **like)
    row_acc, col_acc = accs[0], accs[1] if kind == "dims" else None
    row_max = None if width == n_cols else torch.zeros(n_rows, **like)
    col_blocks = [slice(c, min(c + width, n_cols)) for c in range(0, n_cols, width)]
    row_blocks = [slice(r, min(r + height, n_rows)) for r in range(0, n_rows, height)]

    def tile(rb: slice, cb: slice) -> Tensor:
        return tile_work[: (rb.stop - rb.start) * (cb.stop - cb.start)].view(
            rb.stop - rb.start, cb.stop - cb.start
        )

    def maxima(x: Tensor, dim: int) -> Tensor:
        """x.amax(dim), into the buffer for rows (dim 1) or columns (dim 0)."""
        out = (col_maxima if dim == 0 else row_maxima)[: x.shape[1 - dim]]
        return torch.amax(x, dim, out=out)

    def update(rb: slice, cb: slice, precond: Tensor) -> None:
        block_buf = buf[rb, cb] if buf is not None else None
        _apply_update(param[rb, cb], grad[rb, cb], precond, block_buf, lr, momentum)

    def gather_rows(rb: slice, maxima: Tensor, into_acc: Callable[[Tensor, Tensor], Any]) -> None:
        """A tile's row maxima: straight into the row accumulators when the tile holds whole
        rows (no later tile reads those rows), else into row_max for the end of the step."""
        if row_max is None:
            into_acc(row_acc[rb], maxima)
        else:
            torch.maximum(row_max[rb], maxima, out=row_max[rb])

    if kind == "singleton":  # elementwise: Adagrad in tiles
        for cb in col_blocks:
            for rb in row_blocks:
                g = grad[rb, cb]
                row_acc[rb, cb].addcmul_(g, g)
                update(rb, cb, _inverse_root(row_acc[rb, cb], tile(rb, cb), eps))
        return
    if variant == "ii":
        for cb in col_blocks:
            col_max = col_work[: cb.stop - cb.start].zero_()
            for rb in row_blocks:
                nu = tile(rb, cb)
                if col_acc is None:
                    nu.copy_(row_acc[rb].unsqueeze(1).expand_as(nu))
                else:
                    torch.minimum(row_acc[rb].unsqueeze(1), col_acc[cb].unsqueeze(0), out=nu)
                nu.addcmul_(grad[rb, cb], grad[rb, cb])
                if col_acc is not None:
                    torch.maximum(col_max, maxima(nu, 0), out=col_max)
                gather_rows(rb, maxima(nu, 1), Tensor.copy_)  # SM3-II: mu(r) = max of nu afresh
                update(rb, cb, _inverse_root(nu, nu, eps))
            if col_acc is not None:
                col_acc[cb] = col_max
        if row_max is not None:
            row_acc.copy_(row_max)
        return
    # SM3-I: first the accumulators, from the slice maxima of g^2...
    for cb in col_blocks:
        col_max = col_work[: cb.stop - cb.start].zero_()
        for rb in row_blocks:
            squares = torch.mul(grad[rb, cb], grad[rb, cb], out=tile(rb, cb))
            if col_acc is not None:
                torch.maximum(col_max, maxima(squares, 0), out=col_max)
            gather_rows(rb, maxima(squares, 1), Tensor.add_)
        if col_acc is not None:
            col_acc[cb] += col_max
    if row_max is not None:
        row_acc += row_max
    # ...then the update, with 1/sqrt(min(a, b)) = max(1/sqrt(a), 1/sqrt(b)) as in _eager_step.
    for cb in col_blocks:
        col_inverse = None
        if col_acc is not None:
            col_inverse = _inverse_root(col_acc[cb], col_work[: cb.stop - cb.start], eps)
        for rb in row_blocks:
            row_inverse = _inverse_root(row_acc[rb], row_work[: rb.stop - rb.start], eps)
            precond = row_inverse.unsqueeze(1)
            if col_inverse is not None:
                precond = torch.maximum(precond, col_inverse.unsqueeze(0), out=tile(rb, cb))
            update(rb, cb, precond)


def _max_except(x: Tensor, dim: int) -> Tensor:
    """For each index k along ``dim``, the max of the non-negative x over x.select(dim, k)."""
    out = torch.empty(x.shape[dim], dtype=x.dtype, device=x.device)
    _run(_max_except_program(x.contiguous(), dim, out, []))
    return out


def sparse_step(
    param: Tensor,
    rows: Tensor,
    values: Tensor,
    accs: list[Tensor],
    kind: str,
    *,
    lr: float,
    variant: str,
    eps: float,
) -> None:
    """Eager step for the gradient ``values`` (n, *param.shape[1:]) of the distinct ``rows``:
    touches only those rows."""
    squares = values * values
    ndim = values.dim()
    mu = accs[0].index_select(0, rows)  # (n,) for rows and dims, (n, ...) for singleton
    if kind == "singleton":
        nu = mu.add_(squares)
        accs[0].index_copy_(0, rows, nu)
        precond = _inverse_root(nu, nu.clone(), eps)
    elif variant == "ii":
        views = [_broadcast_view(mu, 0, ndim)]
        views += [_broadcast_view(a, d, ndim) for d, a in enumerate(accs[1:], start=1)]
        nu = functools.reduce(torch.minimum, views) + squares
        for d, acc in enumerate(accs[1:], start=1):
            torch.maximum(acc, _max_except(nu, d), out=acc)  # max(old, touched rows' nu)
        accs[0].index_copy_(0, rows, _max_except(nu, 0))
        precond = _inverse_root(nu, nu, eps)
    else:
        for d, acc in enumerate(accs[1:], start=1):
            acc.add_(_max_except(squares, d))  # untouched rows add max(0) = nothing
        mu.add_(_max_except(squares, 0))
        accs[0].index_copy_(0, rows, mu)
        views = [_broadcast_view(_inverse_root(mu, None, eps), 0, ndim)]
        views += [
            _broadcast_view(_inverse_root(a, None, eps), d, ndim)
            for d, a in enumerate(accs[1:], start=1)
        ]
        precond = views[0]
        for view in views[1:]:
            precond = torch.maximum(precond, view)
    param.index_add_(0, rows, values * precond, alpha=-lr)


def dense_step(
    workspace: Workspace,
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    kind: str,
    buf: Tensor | None,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> None:
    """One eager dense step: whole for parameters up to _WHOLE_MAX_BYTES, else in tiles
    (matrices) or blocks of leading-dimension slices (other ranks)."""
    if not param.dim() or param.numel() * param.element_size() <= _WHOLE_MAX_BYTES:
        _eager_step(workspace, param, grad, accs, buf, lr, variant, momentum, eps)
    elif param.dim() == 2:
        _tiled_step(param, grad, accs, kind, buf, lr, variant, momentum, eps)
    else:
        _blocked_step(param, grad, accs, kind, buf, lr, variant, momentum, eps)
