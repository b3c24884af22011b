"""Build the catalog's optimizers from a config mapping, and measure their state.

A config looks like ``{name: sm3_ii, lr: 0.01, momentum: 0.0, eps: 0.0, cover: dims,
impl: fastest}`` (an omegaconf ``DictConfig`` or a plain dict). Keys are checked strictly, so a
typo fails loudly instead of silently running the default; ``check_optimizer_config`` runs the
same checks (and the class's own) without the model, so a run can fail before loading data.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch.optim import Optimizer

from sm3repro import study
from sm3repro.optim.catalog import CATALOG, IMPLS, KEYS, OptimizerSpec
from sm3repro.optim.sm3.optimizer import COVERS, SM3

__all__ = [
    "IMPLS",
    "OPTIMIZERS",
    "build_optimizer",
    "check_optimizer_config",
    "optimizer_state_bytes",
    "sparse_rows_config",
]

# name -> class, for callers that only need the class (SM3 serves both variants).
OPTIMIZERS: Mapping[str, type[Optimizer]] = MappingProxyType(
    {name: spec.cls for name, spec in CATALOG.items()}
)
_KNOWN = {"name", "lr", "impl", "_target_", *KEYS}
# Values that mean "off", so a shared config may carry them for optimizers without the feature.
_NEUTRAL = {"momentum": 0.0, "weight_decay": 0.0}


class _Options(NamedTuple):
    spec: OptimizerSpec
    lr: float
    impl: str
    kwargs: dict[str, Any]  # the applicable hyperparameters that are set


def _as_dict(cfg: Mapping[str, Any]) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # omegaconf is optional here; plain dicts need nothing
        DictConfig = None  # noqa: N806
    if DictConfig is not None and isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))
    if not isinstance(cfg, Mapping):
        raise TypeError(f"optimizer config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"optimizer.{key} must be a finite number, got {value!r}")
    return float(value)


def build_optimizer(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], cfg: Mapping[str, Any]
) -> tuple[Optimizer, str]:
    """Build the optimizer named by ``cfg["name"]``; return it and a string naming the
    implementation actually used (e.g. ``"torch.optim.Adam(fused=True)"``).

    ``cfg`` keys: ``name`` (one of :data:`~sm3repro.optim.catalog.CATALOG`), ``lr`` (default
    :data:`sm3repro.study.LR`), the hyperparameters the catalog entry takes (``momentum``,
    ``eps``, ``weight_decay``, ``betas``, ``cover``), and ``impl`` (one of the entry's
    ``impls``, default ``"fastest"``: torch's ``fused=True`` where it works, else its default).
    A ``_target_`` key is ignored; any other key is an error, as is a key that does not apply to
    the chosen optimizer (``None`` counts as unset, and ``momentum``/``weight_decay`` of 0 are
    accepted everywhere).
    """
    options = _resolve(cfg)
    params = list(params)  # may be a generator, and a failed fused attempt must not consume it
    return _construct(options, params)


def check_optimizer_config(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError naming the key (and the optimizer) if ``cfg`` cannot build an optimizer.

    Runs every check ``build_optimizer`` runs, the optimizer class's own value checks
    included, on a one-element stand-in parameter, so no model or data is needed.
    """
    options = _resolve(cfg)
    _construct(options, [torch.nn.Parameter(torch.zeros(1))], check_only=True)


def _resolve(cfg: Mapping[str, Any]) -> _Options:
    options = _as_dict(cfg)
    options.pop("_target_", None)
    unknown = sorted(str(key) for key in set(options) - _KNOWN)
    if unknown:
        listed = ", ".join(f"optimizer.{key}" for key in unknown)
        raise ValueError(f"unknown key {listed} (allowed: {sorted(_KNOWN - {'_target_'})})")
    name = options.pop("name", None)
    if not isinstance(name, str) or name not in CATALOG:
        raise ValueError(f"optimizer.name must be one of {sorted(CATALOG)}, got {name!r}")
    spec = CATALOG[name]
    lr = options.pop("lr", None)
    lr = study.LR if lr is None else _number("lr", lr)
    if lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {lr!r}")
    impl = options.pop("impl", None) or "fastest"
    if impl not in IMPLS:
        raise ValueError(f"optimizer.impl must be one of {list(IMPLS)}, got {impl!r}")
    if impl not in spec.impls:
        raise ValueError(
            f"optimizer.impl={impl} is not available for optimizer.name={name} "
            f"(it takes: {', '.join(spec.impls)})"
        )

    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in spec.keys:
            if key in _NEUTRAL and _number(key, value) == _NEUTRAL[key]:
                continue
            raise ValueError(
                f"optimizer.{key} does not apply to optimizer.name={name} "
                f"(it takes: {', '.join(sorted(spec.keys)) or 'no other keys'})"
            )
        if key == "betas":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"optimizer.betas must be two numbers, got {value!r}")
            kwargs[key] = tuple(_number(key, b) for b in value)
        elif key == "cover":
            if value not in COVERS:
                raise ValueError(f"optimizer.cover must be one of {list(COVERS)}, got {value!r}")
            kwargs[key] = value
        else:
            kwargs[key] = _number(key, value)
    return _Options(spec, lr, impl, kwargs)


def _construct(
    options: _Options, params: list[Any], check_only: bool = False
) -> tuple[Optimizer, str]:
    spec, lr, impl, kwargs = options
    if not issubclass(spec.cls, SM3):
        return _build_torch(spec, params, lr, impl, kwargs)
    # SM3 takes impl as it is. A config check needs no compiled kernel unless impl demands one.
    if check_only and impl != "fused":
        impl = "forloop"
    try:
        optimizer = spec.cls(params, lr=lr, impl=impl, **spec.fixed, **kwargs)
    except ValueError as error:
        raise ValueError(f"optimizer.{_key_of(error)}: {error}") from error
    except RuntimeError as error:  # fused demanded (by impl or the variable) but not built
        raise ValueError(f"optimizer.impl={impl}: {error}") from error
    # What ran, in impl's words (record.implementation.sm3_ran_eager reads it).
    variant, cover = optimizer.defaults["variant"], optimizer.defaults["cover"]
    return optimizer, (
        f"sm3repro.SM3(variant={variant}, cover={cover}, impl={optimizer.implementation})"
    )


def sparse_rows_config(cfg: Mapping[str, Any], requested: bool) -> tuple[dict[str, Any], bool, str]:
    """For the training switch ``sparse_rows``: ``(optimizer config to build, whether the word
    embedding may produce row-sparse gradients, a note for the run's optimizer_impl)``.

    Sparse rows are used only where they give exactly the dense result: for the catalog's
    ``sparse_rows_exact`` optimizers (SGD, Adagrad, SM3 with any cover) without momentum or
    weight decay. Adam's moments and any momentum or weight decay move every row, so those stay
    dense. torch's SGD
    and Adagrad accept sparse gradients only on their single-tensor path, so ``impl`` becomes
    ``default`` for them (an explicit fused/foreach request is an error).
    """
    options = _as_dict(cfg)
    if not requested:
        return options, False, ""
    name = options.get("name")
    moving = [k for k in ("momentum", "weight_decay") if options.get(k) not in (None, 0, 0.0)]
    why = None
    if name not in CATALOG or not CATALOG[name].sparse_rows_exact:
        why = f"not exact for {name}: its state moves every row"
    elif moving:
        why = f"not exact with {' and '.join(moving)} > 0: it moves every row"
    if why is not None:
        return options, False, f"; word embedding: dense gradients ({why})"
    if not issubclass(CATALOG[name].cls, SM3):
        impl = options.get("impl") or "fastest"
        if impl not in ("fastest", "default", "forloop"):
            raise ValueError(
                f"optimizer.impl={impl}: torch's {name} takes sparse gradients only on its "
                "single-tensor path; use fastest, default or forloop with sparse_rows"
            )
        options["impl"] = "forloop" if impl == "forloop" else "default"
    return options, True, "; word embedding: sparse rows"


def _flat_params(params: list[Any]) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for item in params:
        if isinstance(item, Mapping):
            group = item["params"]
            flat.extend([group] if isinstance(group, torch.Tensor) else group)
        else:
            flat.append(item)
    return flat


def _fused_problem(spec: OptimizerSpec, params: list[Any]) -> str | None:
    """Why torch's fused kernel cannot take these parameters (None if it can). torch checks
    devices only at the first step for some classes, so check up front."""
    devices = spec.fused_devices()
    for p in _flat_params(params):
        if p.device.type not in devices or not torch.is_floating_point(p):
            return f"{p.dtype} parameter on {p.device.type}"
    return None


def _build_torch(
    spec: OptimizerSpec, params: list[Any], lr: float, impl: str, kwargs: dict[str, Any]
) -> tuple[Optimizer, str]:
    cls = spec.cls
    label = f"torch.optim.{cls.__name__}"
    try:
        if impl == "default" or (impl == "fastest" and not spec.fused):
            return cls(params, lr=lr, **spec.fixed, **kwargs), f"{label}(default)"
        if impl in ("fused", "fastest"):
            problem = _fused_problem(spec, params)
            if problem is None:
                try:
                    optimizer = cls(params, lr=lr, fused=True, **spec.fixed, **kwargs)
                    return optimizer, f"{label}(fused=True)"
                except (RuntimeError, TypeError) as error:  # TypeError: torch without `fused`
                    problem = str(error).splitlines()[0] if str(error) else type(error).__name__
            if impl == "fused":
                raise ValueError(f"optimizer.impl=fused is not available for {label}: {problem}")
            optimizer = cls(params, lr=lr, **spec.fixed, **kwargs)
            return optimizer, f"{label}(default; fused unavailable: {problem})"
        foreach = impl == "foreach"
        optimizer = cls(params, lr=lr, foreach=foreach, **spec.fixed, **kwargs)
        return optimizer, f"{label}(foreach={foreach})"
    except ValueError as error:
        if str(error).startswith("optimizer."):
            raise
        # torch's messages name its own arguments; point at the config key.
        raise ValueError(f"optimizer.{_key_of(error)}: {label}: {error}") from error


# Words in torch's and SM3's argument errors -> the config key they are about.
_MESSAGE_KEYS = {
    "learning rate": "lr",
    "lr": "lr",
    "momentum": "momentum",
    "epsilon": "eps",
    "eps": "eps",
    "beta": "betas",
    "weight_decay": "weight_decay",
    "variant": "name",
    "cover": "cover",
}


def _key_of(error: Exception) -> str:
    message = str(error)
    for word, key in _MESSAGE_KEYS.items():
        if word in message:
            return key
    return "<config>"


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """Bytes held by every tensor in ``optimizer.state`` (recursing into lists, tuples and
    dicts; ``step`` counters count when they are tensors). Scratch memory outside the state is
    not included."""

    def nbytes(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, Mapping):
            return sum(nbytes(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(nbytes(v) for v in value)
        return 0

    return sum(nbytes(state) for state in optimizer.state.values())
