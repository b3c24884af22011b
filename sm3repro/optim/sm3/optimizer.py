"""SM3 (Anil, Gupta, Koren & Singer, 2019): Adagrad-like adaptivity with sublinear memory.

Layout follows ``torch/optim/adagrad.py``: the :class:`SM3` class gathers parameters, gradients
and state, and :func:`sm3` is the functional core that does the arithmetic in place. A step runs
in one of two implementations, named as the config's ``optimizer.impl`` names them: ``fused``,
the C++ kernel of :mod:`sm3repro.optim.sm3.fused` (one pass over each parameter, no full-size
scratch), or ``forloop``, the eager torch ops of :mod:`sm3repro.optim.sm3.eager`, a parameter
at a time. :func:`kernel_for` is the one place that chooses; the choice (``impl``) is a
parameter-group default, as torch keeps ``foreach`` and ``fused``.
:mod:`sm3repro.optim.sm3.reference` holds a plain, readable whole step that tests hold both to.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from sm3repro import study
from sm3repro.optim.catalog import SM3_IMPLS
from sm3repro.optim.sm3 import eager as sm3_eager
from sm3repro.optim.sm3 import fused as sm3_fused
from sm3repro.optim.sm3.reference import cover_of, sm3_preconditioner

__all__ = ["SM3", "kernel_for", "sm3", "sm3_preconditioner"]

VARIANTS = ("i", "ii")
COVERS = ("dims", "rows", "singleton")
# SM3REPRO_SM3_KERNEL, if set, is an impl that replaces fastest and default in this process;
# "forloop" also switches the kernel off, so that impl=fused fails (CI's pass over the
# fallback). "auto" and "eager" are its values from before impl named them.
_ENV = "SM3REPRO_SM3_KERNEL"
_OLD_NAMES = {"auto": "fastest", "eager": "forloop"}


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
        impl: the config's ``optimizer.impl``: ``"fastest"`` or ``"default"`` (the fused C++
            kernel where it builds, else forloop, with one warning), ``"fused"`` (an error where
            it does not build) or ``"forloop"`` (eager torch ops). :func:`kernel_for` decides;
            :attr:`implementation` says which one runs.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = study.LR,
        variant: str = "ii",
        cover: str = "dims",
        momentum: float = 0.0,
        eps: float = 0.0,
        impl: str = "fastest",
    ) -> None:
        # impl is a default (as torch keeps ``foreach``/``fused``): every group carries it, and
        # it is pickled, deep-copied and saved with the optimizer.
        defaults = {
            "lr": lr, "variant": variant, "cover": cover, "momentum": momentum, "eps": eps,
            "impl": impl,
        }  # fmt: skip
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    @property
    def implementation(self) -> str:
        """What steps the parameters, in impl's words: ``"fused"`` (the kernel, for every
        parameter it can take, :func:`_fusable`; the others go forloop) or ``"forloop"``;
        ``"mixed"`` when the groups differ. Run records name it (``impl=...``)."""
        ran = set()
        for group in self.param_groups:
            kernel = kernel_for(group["impl"])
            for p in group["params"]:
                # The kernel's own limits on the tensor itself (_fusable checks the rest).
                fits = p.is_cpu and p.dtype in (torch.float32, torch.float64)
                fits = fits and (group["cover"] != "dims" or p.dim() <= 2)
                ran.add("fused" if kernel is not None and fits else "forloop")
        return ran.pop() if len(ran) == 1 else "mixed"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_hyperparameters(self.param_groups[-1])  # groups may override the defaults

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Saved or pickled before impl named the choice, the defaults and groups carry
        # kernel=auto|fused|eager instead.
        old = {"auto": "fastest", "fused": "fused", "eager": "forloop"}
        for group in (self.defaults, *self.param_groups):
            if "kernel" in group:
                group.setdefault("impl", old.get(group.pop("kernel"), "fastest"))
            group.setdefault("impl", self.defaults.get("impl", "fastest"))

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Grad mode off by hand rather than with a no_grad decorator (as torch's own optimizers
        # do): the decorator's context object cost more than stepping a bias.
        grad_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        try:
            self._step_groups()
        finally:
            torch.set_grad_enabled(grad_enabled)
        return loss

    def _step_groups(self) -> None:
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
                impl=group["impl"],
            )


def _env_impl() -> str | None:
    """The impl SM3REPRO_SM3_KERNEL names (None: unset or empty)."""
    value = os.environ.get(_ENV, "").strip().lower()
    if not value:
        return None
    impl = _OLD_NAMES.get(value, value)
    if impl not in SM3_IMPLS:
        raise ValueError(
            f"{_ENV}={value}: must be one of {', '.join(SM3_IMPLS)} (or unset); "
            f"{', '.join(_OLD_NAMES)} are read as {', '.join(_OLD_NAMES.values())}"
        )
    return impl


def kernel_for(impl: str) -> Any | None:
    """The one place SM3's implementation is chosen: the compiled kernel module that ``impl``
    runs (:func:`sm3repro.optim.sm3.fused.kernel`), or None for the forloop path.

    ``"fastest"`` and ``"default"``: the kernel where it builds, else None (the build failure
    warned once); ``"fused"``: the kernel, or RuntimeError; ``"forloop"``: None. A set
    SM3REPRO_SM3_KERNEL replaces fastest and default, and its ``forloop`` switches the kernel off
    for ``"fused"`` too.
    """
    if impl not in SM3_IMPLS:
        raise ValueError(f"SM3: impl must be one of {SM3_IMPLS}, got {impl!r}")
    override = _env_impl()
    if override is not None and impl in ("fastest", "default"):
        impl = override
    if impl == "forloop":
        return None
    module = None if override == "forloop" else sm3_fused.kernel()
    if impl == "fused" and module is None:
        raise RuntimeError(
            "SM3: impl='fused' but the fused CPU kernel could not be built (see the warning "
            f"above) or {_ENV}=forloop switched it off"
        )
    return module


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
    kernel_for(group["impl"])  # a bad impl, or fused without the kernel, fails here, not in step


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
    impl: str = "fastest",
) -> None:
    """Functional SM3: update ``params``, ``accumulators`` and ``momentum_buffers`` in place.

    See :class:`SM3` for the algorithm and ``impl``. ``accumulators[k]`` is parameter k's list
    of accumulators; its cover is read from their shapes. The kernel steps every parameter it
    can take (:func:`_fusable`), the dense ones together in one call at the end; the others go
    forloop.
    """
    if variant not in VARIANTS:
        raise ValueError(f"SM3: variant must be one of {VARIANTS}, got {variant!r}")
    kernel = kernel_for(impl)
    fused: list[tuple] = []
    for param, grad, accs, buf in zip(params, grads, accumulators, momentum_buffers, strict=True):
        if param.numel() == 0:
            continue
        cover = cover_of(param.shape, accs)
        if grad.is_sparse:
            _sparse_step(kernel, param, grad, accs, cover, buf, lr=lr, variant=variant, eps=eps)
        elif _fusable(kernel, param, grad := grad.contiguous(), accs, cover, buf):
            col_acc = accs[1] if cover == "dims" else None
            fused.append((param, grad, accs[0], col_acc, buf, cover, _width(param, cover)))
        else:
            sm3_eager.dense_step(
                param, grad, accs, cover, buf, lr=lr, variant=variant, momentum=momentum, eps=eps
            )
    if fused:
        params_, grads_, rows, cols, bufs, covers, widths = map(list, zip(*fused, strict=True))
        kernel.sm3_step_many(
            params=params_, grads=grads_, row_accs=rows, col_accs=cols, bufs=bufs, covers=covers,
            widths=widths, variant=variant, lr=lr, momentum=momentum, eps=eps,
        )  # fmt: skip


def _sparse_step(
    kernel: Any | None,
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    cover: str,
    buf: Tensor | None,
    *,
    lr: float,
    variant: str,
    eps: float,
) -> None:
    """One step on a row-sparse ``grad``: only the rows present are read or written."""
    if buf is not None:
        raise RuntimeError(
            "SM3: sparse gradients are not supported with momentum > 0 "
            "(the moving average would have to decay every row)"
        )
    rows, values = _summed_rows(param, grad, kernel)
    if _fusable(kernel, param, values, accs, cover, None):
        kernel.sm3_step(
            param=param, grad=values, row_acc=accs[0],
            col_acc=accs[1] if cover == "dims" else None, buf=None, rows_index=rows,
            cover=cover, cols=_width(param, cover, sparse=True), variant=variant, lr=lr,
            momentum=0.0, eps=eps,
        )  # fmt: skip
    else:
        values = values.view(-1, *param.shape[1:])  # the kernel's rows come flat
        sm3_eager.sparse_step(param, rows, values, accs, cover, lr=lr, variant=variant, eps=eps)


def _fusable(
    kernel: Any | None,
    param: Tensor,
    grad: Tensor,
    accs: list[Tensor],
    cover: str,
    buf: Tensor | None,
) -> bool:
    """Whether the kernel can step this parameter (it reads raw memory as a matrix): float32/64
    contiguous CPU tensors, a dims cover only for matrices. ``grad`` is the dense gradient or
    the summed sparse rows."""
    if kernel is None or param.dtype not in (torch.float32, torch.float64):
        return False
    if not param.is_cpu or (cover == "dims" and param.dim() != 2):
        return False
    if not (param.is_contiguous() and grad.is_contiguous() and grad.dtype == param.dtype):
        return False
    return all(t.is_contiguous() for t in accs) and (buf is None or buf.is_contiguous())


def _width(param: Tensor, cover: str, *, sparse: bool = False) -> int:
    """Columns of the (rows, cols) matrix the kernel reads the parameter as: a sparse gradient's
    rows and the row cover need the parameter's own rows; the singleton cover is elementwise,
    so any split will do (the last dimension keeps rows long)."""
    if cover == "rows" or sparse:
        return param.numel() // param.shape[0] if param.dim() else 1
    return param.shape[-1] if param.dim() else 1


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
    # The kernel reads (1, n) indices and (n, ...) values as they are; its values come back as
    # (unique, cols), which the fused step reads as they are too.
    return kernel.sum_duplicate_rows(
        indices=grad._indices(), values=grad._values(), rows=param.shape[0]
    )
