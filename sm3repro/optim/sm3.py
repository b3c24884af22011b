"""SM3 (Anil, Gupta, Koren & Singer, 2019): Adagrad-like adaptivity with sublinear memory.

Layout follows ``torch/optim/adagrad.py``: the :class:`SM3` class gathers parameters, gradients
and state, and :func:`sm3` is the functional core that does the arithmetic in place. A step runs
in one of two implementations: the fused C++ kernel of :mod:`sm3repro.optim.sm3_fused` (one pass
over each parameter, no full-size scratch) where it builds, else the eager torch ops below.
:mod:`sm3repro.optim.sm3_reference` holds a plain, readable whole step that tests hold both to.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from sm3repro.optim import sm3_fused
from sm3repro.optim.sm3_reference import cover_of as _cover_kind
from sm3repro.optim.sm3_reference import sm3_preconditioner

__all__ = ["SM3", "sm3", "sm3_preconditioner"]

VARIANTS = ("i", "ii")
COVERS = ("dims", "rows", "singleton")
KERNELS = ("auto", "fused", "eager")

# Parameters larger than this many bytes are stepped eagerly in blocks of _BLOCK_BYTES (the
# shared scratch would otherwise grow to the largest parameter, as large as Adagrad's state).
_WHOLE_MAX_BYTES = 4 << 20
_BLOCK_BYTES = 1 << 20

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


def _initial_accumulators(param: Tensor, cover: str) -> list[Tensor]:
    # Start at the smallest positive normal number instead of 0: far below the rounding unit of
    # any squared gradient that matters (so the arithmetic is unchanged), but it keeps nu > 0,
    # so a coordinate that never had a nonzero gradient gets 0 * finite = 0 and no NaN, with no
    # clamp pass over the full tensor.
    fill = torch.finfo(param.dtype).tiny
    options = {"dtype": param.dtype, "device": param.device}
    if cover == "singleton" or param.dim() <= 1:
        return [torch.full(param.shape, fill, **options)]
    if cover == "rows":
        return [torch.full((param.shape[0],), fill, **options)]
    return [torch.full((size,), fill, **options) for size in param.shape]


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


def _min_program(views: Sequence[Tensor], out: Tensor) -> list[_Op]:
    """out = elementwise min of broadcast accumulator views."""
    # Expanding the first view (free) makes the first op's result full-size even for rank >= 3.
    first = views[0] if len(views) == 2 else views[0].expand(out.shape)
    program: list[_Op] = [(torch.minimum, (first, views[1]), out)]
    program += [(torch.minimum, (out, view), out) for view in views[2:]]
    return program


def _max_program(views: Sequence[Tensor], out: Tensor) -> list[_Op]:
    first = views[0] if len(views) == 2 else views[0].expand(out.shape)
    program: list[_Op] = [(torch.maximum, (first, views[1]), out)]
    program += [(torch.maximum, (out, view), out) for view in views[2:]]
    return program


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
                self.combine = _min_program(self.views, scratch)
            for dim, acc in enumerate(accs):
                self.reduce += _max_except_program(scratch, dim, acc, self.owned)
        else:
            self.slice_max = [torch.empty_like(a) for a in accs]
            self.inverse = [torch.empty_like(a) for a in accs]
            for dim, out in enumerate(self.slice_max):
                self.reduce += _max_except_program(scratch, dim, out, self.owned)
            inverse_views = [_broadcast_view(a, j, ndim) for j, a in enumerate(self.inverse)]
            if len(inverse_views) > 1:
                self.combine = _max_program(inverse_views, scratch)
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


class _Workspace:
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


class SM3(Optimizer):
    r"""SM3-I / SM3-II (Anil et al., 2019): Adagrad-like per-coordinate step sizes from a cover of
    the coordinates by sets ``S_r``, storing one accumulator ``mu(r)`` per set.

    With ``g`` the gradient:

    * SM3-I:  ``mu_t(r) = mu_{t-1}(r) + max_{j in S_r} g_t(j)^2``;
      ``nu_t(i) = min_{r: i in S_r} mu_t(r)``.
    * SM3-II: ``nu_t(i) = min_{r: i in S_r} mu_{t-1}(r) + g_t(i)^2``;
      ``mu_t(r) = max_{i in S_r} nu_t(i)``.

    and then ``update = g / (sqrt(nu) + eps)`` (``eps`` is added *outside* the square root, as in
    ``torch.optim.Adagrad``; with the default ``eps = 0`` this is the paper's rule exactly) and
    ``w <- w - lr * update``. With ``momentum = beta > 0`` the update is first smoothed as in the
    reference TensorFlow implementation, ``m <- beta * m + (1 - beta) * update`` (a moving
    average, not heavy-ball), and ``w <- w - lr * m``; the buffer exists only when ``beta > 0``.

    Covers (``cover``):

    * ``"dims"`` (default): for a parameter of shape ``(d1, ..., dk)`` with ``k >= 2``, one set
      per co-dimension-one slice (the rows and the columns of a matrix), so the state is
      ``d1 + ... + dk`` numbers. Rank 0 and 1 parameters get a per-coordinate accumulator,
      which is exactly Adagrad (as are shapes like ``(n, 1)``, because the set spanning the whole
      tensor never attains the minimum).
    * ``"rows"``: one set per slice along the first dimension (one number per row).
    * ``"singleton"``: one set per coordinate (a full-size accumulator): exactly Adagrad with
      ``eps`` outside the root, ``initial_accumulator_value = 0`` and no ``lr_decay``.

    State per parameter: ``state["accumulators"]``, a list of tensors (1-D per-dimension tensors
    for the ``"dims"`` cover, one row tensor for ``"rows"``, one parameter-shaped tensor
    otherwise); ``state["momentum_buffer"]`` only when ``momentum > 0``; and ``state["step"]``, a
    Python int. Parameters that never receive a gradient get no state.

    Accumulators start at ``torch.finfo(dtype).tiny`` (about 1.2e-38 in float32, 2.2e-308 in
    float64) rather than 0. It keeps ``nu > 0`` without a clamp pass, so a coordinate whose
    accumulators have only ever seen zero gradients gets a zero update (``0 * finite``), never a
    NaN or inf (even when ``g^2`` underflows to 0). Adding it to a squared gradient with
    ``|g| >~ 5e-16`` (float32; ``1.5e-146`` in float64) rounds it away, so from a coordinate's
    first such gradient on the arithmetic is exactly that of a zero start; only a coordinate
    whose gradients have all been smaller gets a damped step instead of Adagrad's full
    ``lr``-sized first step. (In float16 the start is 6e-5 and squared gradients below it
    underflow anyway: keep SM3's parameters in float32 or wider.)

    Row-sparse gradients (``nn.Embedding(sparse=True)``) are supported with every cover and
    give exactly the dense step on the gradient with zero rows: duplicate indices are summed, and
    only the rows present are read or written. That is exact because a zero row gets a zero
    update and keeps its row accumulator, while each other accumulator (the columns, under
    ``"dims"``) becomes the max of its old value and the touched rows' ``nu`` (SM3-II; an
    untouched row's ``nu = min(mu_row, mu_col)`` never exceeds ``mu_col``, and some row attains
    ``mu_col``) or grows by the touched rows' largest ``g^2`` (SM3-I). A sparse gradient with
    ``momentum > 0`` is an error: the moving average moves every row.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate ``eta`` (> 0). 0.01 is the study's value.
        variant: ``"i"`` or ``"ii"`` (SM3-II's preconditioner is never larger than SM3-I's).
        cover: ``"dims"``, ``"rows"`` or ``"singleton"`` (see above).
        momentum: moving-average coefficient ``beta`` in ``[0, 1)``.
        eps: added to ``sqrt(nu)`` before dividing (>= 0).
        kernel: ``"auto"`` (the fused C++ kernel where it builds, else eager torch ops, with one
            warning), ``"fused"`` (an error where it does not build) or ``"eager"``.
            :attr:`implementation` says which one runs.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        variant: str = "ii",
        cover: str = "dims",
        momentum: float = 0.0,
        eps: float = 0.0,
        kernel: str = "auto",
    ) -> None:
        defaults = {"lr": lr, "variant": variant, "cover": cover, "momentum": momentum, "eps": eps}
        _check_hyperparameters(defaults)
        if kernel not in KERNELS:
            raise ValueError(f"SM3: kernel must be one of {KERNELS}, got {kernel!r}")
        self._kernel = None if kernel == "eager" else sm3_fused.kernel()
        if kernel == "fused" and self._kernel is None:
            raise RuntimeError("SM3: kernel='fused' but the fused CPU kernel could not be built")
        # Scratch for full-size temporaries; deliberately not part of the (serialized) state.
        self._workspace = _Workspace()
        super().__init__(params, defaults)

    @property
    def implementation(self) -> str:
        """``"fused-cpp"`` or ``"eager"``: which code steps dense 2-D, 1-D and sparse-row
        parameters (float32/float64 on CPU; anything else always runs eagerly)."""
        return "fused-cpp" if self._kernel is not None else "eager"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_hyperparameters(self.param_groups[-1])  # groups may override the defaults

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._workspace = _Workspace()
        self._kernel = sm3_fused.kernel()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            accumulators: list[list[Tensor]] = []
            momentum_buffers: list[Tensor | None] = []
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_complex() or not param.is_floating_point():
                    raise TypeError(f"SM3 needs real floating-point parameters, got {param.dtype}")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["accumulators"] = _initial_accumulators(param, group["cover"])
                    if group["momentum"] > 0:
                        state["momentum_buffer"] = torch.zeros_like(
                            param, memory_format=torch.preserve_format
                        )
                state["step"] += 1
                params.append(param)
                grads.append(param.grad)
                accumulators.append(state["accumulators"])
                momentum_buffers.append(state.get("momentum_buffer"))

            sm3(
                params,
                grads,
                accumulators,
                momentum_buffers,
                lr=group["lr"],
                variant=group["variant"],
                momentum=group["momentum"],
                eps=group["eps"],
                workspace=self._workspace,
                kernel=self._kernel,
            )
        return loss


def _check_hyperparameters(group: dict[str, Any]) -> None:
    lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
    if not (isinstance(lr, numbers.Real) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"SM3: lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(momentum, numbers.Real) and 0.0 <= momentum < 1.0):
        raise ValueError(f"SM3: momentum must be in [0, 1), got {momentum!r}")
    if not (isinstance(eps, numbers.Real) and eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"SM3: eps must be a finite number >= 0, got {eps!r}")
    if group["variant"] not in VARIANTS:
        raise ValueError(f"SM3: variant must be one of {VARIANTS}, got {group['variant']!r}")
    if group["cover"] not in COVERS:
        raise ValueError(f"SM3: cover must be one of {COVERS}, got {group['cover']!r}")


def sm3(
    params: list[Tensor],
    grads: list[Tensor],
    accumulators: list[list[Tensor]],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    variant: str,
    momentum: float = 0.0,
    eps: float = 0.0,
    workspace: _Workspace | None = None,
    kernel: Any | None = None,
) -> None:
    """Functional SM3: update ``params``, ``accumulators`` and ``momentum_buffers`` in place.

    See :class:`SM3` for the algorithm. ``accumulators[k]`` is parameter k's list of
    accumulators; its cover is read from their shapes. ``workspace`` (optional) keeps scratch
    memory and precomputed views between calls; ``kernel`` is :func:`sm3_fused.kernel`'s module
    (``None``: eager torch ops only).
    """
    if variant not in VARIANTS:
        raise ValueError(f"SM3: variant must be one of {VARIANTS}, got {variant!r}")
    workspace = workspace if workspace is not None else _Workspace()
    for param, grad, accs, buf in zip(params, grads, accumulators, momentum_buffers, strict=True):
        if param.numel() == 0:
            continue
        kind = _cover_kind(param.shape, accs)
        if grad.is_sparse:
            if buf is not None:
                raise RuntimeError(
                    "SM3: sparse gradients are not supported with momentum > 0 "
                    "(the moving average would have to decay every row)"
                )
            rows, values = _summed_rows(param, grad, kernel)
            if not _fused_step(kernel, param, values, rows, accs, kind, None, lr, variant, 0, eps):
                _sparse_step(param, rows, values, accs, kind, lr=lr, variant=variant, eps=eps)
        elif _fused_step(kernel, param, grad, None, accs, kind, buf, lr, variant, momentum, eps):
            continue
        elif param.dim() and param.numel() * param.element_size() > _WHOLE_MAX_BYTES:
            _blocked_step(param, grad, accs, kind, buf, lr, variant, momentum, eps)
        else:
            _eager_step(workspace, param, grad, accs, buf, lr, variant, momentum, eps)


def _fused_step(
    kernel: Any | None,
    param: Tensor,
    grad: Tensor,
    rows_index: Tensor | None,
    accs: list[Tensor],
    kind: str,
    buf: Tensor | None,
    lr: float,
    variant: str,
    momentum: float,
    eps: float,
) -> bool:
    """Step with the fused kernel where it applies (True), else do nothing (False). ``grad`` is
    the dense gradient, or with ``rows_index`` the values of those (distinct) rows."""
    if kernel is None or param.dtype not in (torch.float32, torch.float64):
        return False
    if param.device.type != "cpu" or (kind == "dims" and param.dim() != 2):
        return False
    tensors = [param, *accs] + ([buf] if buf is not None else [])
    if not all(t.is_contiguous() for t in tensors):
        return False
    # A (rows, cols) view: a sparse gradient's rows and the row cover need the parameter's own
    # rows; the singleton cover is elementwise, so any view of its rows will do.
    if kind == "rows" or rows_index is not None:
        cols = max(param[0].numel(), 1)
    else:
        cols = param.shape[-1] if param.dim() else 1
    values = grad.contiguous()
    full = kind == "singleton"
    kernel.sm3_step(
        param.view(-1, cols),
        values.view(-1, cols),
        accs[0].view(-1, cols) if full else accs[0],
        accs[1] if kind == "dims" else None,
        buf.view(-1, cols) if buf is not None else None,
        rows_index,
        {"rows": 0, "dims": 1, "singleton": 2}[kind],
        variant == "ii",
        lr,
        momentum,
        eps,
    )
    return True


def _eager_step(
    workspace: _Workspace,
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


def _min_of(views: Sequence[Tensor]) -> Tensor:
    out = views[0]
    for view in views[1:]:
        out = torch.minimum(out, view)
    return out


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
    time, so temporaries stay near _BLOCK_BYTES whatever the parameter's size. The
    accumulators of the other dimensions are read unchanged by every block and updated at the
    end, from maxima gathered across blocks."""
    slice_numel = max(param[0].numel(), 1)
    rows = max(1, _BLOCK_BYTES // (slice_numel * param.element_size()))
    blocks = [slice(start, start + rows) for start in range(0, param.shape[0], rows)]
    ndim = param.dim()

    def bufs(b: slice) -> Tensor | None:
        return buf[b] if buf is not None else None

    if kind == "singleton":
        for b in blocks:
            accs[0][b].addcmul_(grad[b], grad[b])
            precond = _inverse_root(accs[0][b], None, eps)
            _apply_update(param[b], grad[b], precond, bufs(b), lr, momentum)
        return
    others = [torch.zeros_like(a) for a in accs[1:]]  # maxima over all blocks, small
    if variant == "ii":
        for b in blocks:
            views = [_broadcast_view(accs[0][b], 0, ndim)]
            views += [_broadcast_view(a, d, ndim) for d, a in enumerate(accs[1:], start=1)]
            nu = _min_of(views).addcmul(grad[b], grad[b])
            for d, other in enumerate(others, start=1):
                torch.maximum(other, _max_except(nu, d), out=other)
            accs[0][b] = _max_except(nu, 0)
            _apply_update(param[b], grad[b], _inverse_root(nu, nu, eps), bufs(b), lr, momentum)
        for acc, other in zip(accs[1:], others, strict=True):
            acc.copy_(other)
        return
    for b in blocks:  # SM3-I: the accumulators first, from the slice maxima of g^2
        squares = grad[b] * grad[b]
        for d, other in enumerate(others, start=1):
            torch.maximum(other, _max_except(squares, d), out=other)
        accs[0][b] += _max_except(squares, 0)
    for acc, other in zip(accs[1:], others, strict=True):
        acc.add_(other)
    inverses = [_inverse_root(acc, None, eps) for acc in accs]
    for b in blocks:
        views = [_broadcast_view(inverses[0][b], 0, ndim)]
        views += [_broadcast_view(a, d, ndim) for d, a in enumerate(inverses[1:], start=1)]
        precond = views[0]
        for view in views[1:]:
            precond = torch.maximum(precond, view)
        _apply_update(param[b], grad[b], precond, bufs(b), lr, momentum)


def _max_except(x: Tensor, dim: int) -> Tensor:
    """For each index k along ``dim``, the max of the non-negative x over x.select(dim, k)."""
    out = torch.empty(x.shape[dim], dtype=x.dtype, device=x.device)
    _run(_max_except_program(x.contiguous(), dim, out, []))
    return out


def _summed_rows(param: Tensor, grad: Tensor, kernel: Any | None) -> tuple[Tensor, Tensor]:
    """(distinct row indices, their gradient rows) of a row-sparse ``grad``, duplicates summed."""
    if grad.sparse_dim() != 1 or grad.dense_dim() != param.dim() - 1:
        raise RuntimeError(
            f"SM3: only row-sparse gradients (sparse_dim 1, like nn.Embedding's) are supported, "
            f"got sparse_dim {grad.sparse_dim()} for a parameter of shape {tuple(param.shape)}"
        )
    if grad.is_coalesced() or kernel is None or grad.dtype not in (torch.float32, torch.float64):
        grad = grad.coalesce()  # the result must be used, not discarded
        return grad.indices()[0], grad.values()
    # torch's coalesce sorts the indices: ~10x slower than one pass with a row -> slot map.
    values = grad._values()
    rows, summed = kernel.sum_duplicate_rows(
        grad._indices()[0], values.reshape(values.shape[0], -1), param.shape[0]
    )
    return rows, summed.view(-1, *param.shape[1:])


def _sparse_step(
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
        nu = _min_of(views) + squares
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
