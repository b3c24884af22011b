"""Every optimizer the harness runs, each declared once.

An entry says how the optimizer is built (a torch class, or SM3 with its variant), which config
keys apply to it, which implementations it has, how the report labels and draws it, and what
part it plays in the study. Its hyperparameter values live in ``conf/optimizer/<name>.yaml``
(what a run records); a key the yaml leaves unset takes the class's own default, and ``lr``
takes the study's (:data:`sm3repro.study.LR`). Config choices, validation, the registry, the
report, the paper and smoke grids and the tests all read this table, so adding an optimizer is
one entry here plus its yaml.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = [
    "CATALOG", "IMPLS", "KEYS", "SM3_IMPLS", "OptimizerSpec", "names", "paper_grid",
    "sparse_rows_grid", "study_rows",
]  # fmt: skip

# impl: "fastest" = torch's fused kernel where it works here, else the class's default.
IMPLS = ("fastest", "default", "fused", "foreach", "forloop")
# Hyperparameter keys of the config schema (besides name, lr and impl).
KEYS = frozenset({"momentum", "eps", "betas", "weight_decay", "cover"})


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: how it is built, configured, shown and used in the study.

    The class is named by its import path (Hydra's ``_target_`` convention) and imported on
    first use, so reading labels and styles (the report) does not import torch.
    """

    name: str  # the config's optimizer.name and conf/optimizer/<name>.yaml
    target: str  # import path of the optimizer class
    keys: frozenset[str]  # the config keys (of KEYS) it takes
    label: str  # tables and legends
    style: Mapping[str, Any]  # matplotlib line kwargs; "color" is required
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constructor args its name implies
    # torch's fused kernel: True where torch has fused kernels, or only these device types.
    fused: bool | frozenset[str] = False
    study_row: bool = False  # one of the study's four optimizers (its Tables I-II)
    paper_grid: bool = False  # swept by experiment=paper/smoke; always a row in the tables
    # The optimizer.impl values it takes; left empty, torch's: all of IMPLS, "fused" only
    # with a fused kernel.
    impls: tuple[str, ...] = ()
    # Without momentum or weight decay, a row whose gradient is zero keeps its parameter and
    # state exactly, so row-sparse gradients give the dense result (the sparse_rows switch).
    sparse_rows_exact: bool = False
    # Its sparse-row step is faster than its fastest dense step (scripts/bench_optim.py, parser
    # shapes, batch 64): its fastest exact implementation, the second tier of claim 3.
    sparse_rows_faster: bool = False
    # Its state in theory, in float32 values (the memory arm's theory line): ``state_slots``
    # per parameter, or with ``factored_state`` one per row and per column of each matrix and
    # one per element of a vector. None: not declared, so the memory arm shows no theory for it.
    state_slots: int | None = None
    factored_state: bool = False

    def __post_init__(self) -> None:
        if not self.impls:
            torch_impls = tuple(i for i in IMPLS if i != "fused" or self.fused)
            object.__setattr__(self, "impls", torch_impls)

    @cached_property
    def cls(self) -> type[Optimizer]:
        from hydra.utils import get_class

        return get_class(self.target)

    def theory_state_bytes(self, shapes: Iterable[Sequence[int]]) -> int | None:
        """Its state for parameters of ``shapes`` by its definition, in float32 bytes (None:
        not declared). Per-tensor step counters are left out: a few bytes per tensor."""
        if self.factored_state:
            return 4 * sum(sum(s) if len(s) >= 2 else math.prod(s) for s in shapes)
        if self.state_slots is None:
            return None
        return 4 * self.state_slots * sum(math.prod(s) for s in shapes)

    def fused_devices(self) -> frozenset[str]:
        """Device types its fused kernel runs on (empty: none)."""
        if self.fused is True:
            return _torch_fused_devices()
        return frozenset(self.fused or ())


def _torch_fused_devices() -> frozenset[str]:
    """Device types torch has fused optimizer kernels for, by torch's own rule."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return frozenset(_get_fused_kernels_supported_devices())
    except ImportError:  # the private helper moved: the devices that have had kernels
        return frozenset({"cpu", "cuda"})


# SM3's impl, the one vocabulary of its implementation (config, SM3(impl=...), the run record,
# the report): fastest/default = its fused C++ kernel where it builds, else forloop; fused = the
# kernel or an error; forloop = eager torch ops, a parameter at a time. What ran is fused or
# forloop (sm3repro.optim.sm3.optimizer.kernel_for decides).
SM3_IMPLS = ("fastest", "default", "fused", "forloop")

_SPECS = (
    # The study's "SM3" never names its variant; SM3-II is the one every public implementation
    # provides, so it stands in for the study's row.
    OptimizerSpec(
        name="sm3_ii",
        sparse_rows_exact=True,
        sparse_rows_faster=True,
        target="sm3repro.optim.sm3.optimizer.SM3",
        keys=frozenset({"momentum", "eps", "cover"}),
        label="SM3-II",
        style={"color": "tab:red"},
        fixed={"variant": "ii"},
        impls=SM3_IMPLS,
        factored_state=True,  # one accumulator per row and per column (per element of a vector)
        fused=frozenset({"cpu"}),  # its own C++ kernel (sm3repro.optim.sm3.fused), CPU only
        study_row=True,
        paper_grid=True,
    ),
    OptimizerSpec(
        name="sm3_i",
        sparse_rows_exact=True,
        sparse_rows_faster=True,
        target="sm3repro.optim.sm3.optimizer.SM3",
        keys=frozenset({"momentum", "eps", "cover"}),
        label="SM3-I",
        style={"color": "tab:orange", "linestyle": "--"},
        fixed={"variant": "i"},
        impls=SM3_IMPLS,
        factored_state=True,
        fused=frozenset({"cpu"}),
        paper_grid=True,
    ),
    OptimizerSpec(
        name="sgd",
        sparse_rows_exact=True,
        sparse_rows_faster=True,
        target="torch.optim.SGD",
        keys=frozenset({"momentum", "weight_decay"}),
        label="SGD",
        style={"color": "tab:gray"},
        state_slots=0,  # without momentum
        fused=True,
        study_row=True,
        paper_grid=True,
    ),
    OptimizerSpec(
        name="adagrad",
        sparse_rows_exact=True,  # but torch's sparse Adagrad step is slower than its fused one
        target="torch.optim.Adagrad",
        keys=frozenset({"eps", "weight_decay"}),
        label="Adagrad",
        style={"color": "tab:green"},
        state_slots=1,  # the sum of squared gradients
        fused=frozenset({"cpu"}),  # torch's fused Adagrad is CPU-only
        study_row=True,
        paper_grid=True,
    ),
    OptimizerSpec(
        name="adam",
        target="torch.optim.Adam",
        keys=frozenset({"betas", "eps", "weight_decay"}),
        label="Adam",
        style={"color": "tab:blue"},
        state_slots=2,  # first and second moments
        fused=True,
        study_row=True,
        paper_grid=True,
    ),
    # Factored second moments (Shazeer & Stern, 2018): the other memory-saving optimizer
    # Anil et al. compare SM3 with. Its eps is a pair and its beta2 a decay rate, so of the
    # schema's keys only weight_decay maps onto its arguments.
    OptimizerSpec(
        name="adafactor",
        target="torch.optim.Adafactor",
        keys=frozenset({"weight_decay"}),
        label="Adafactor",
        style={"color": "tab:purple", "linestyle": ":"},
        factored_state=True,  # torch's, without momentum: row and column factors per matrix
    ),
)

# In row and legend order.
CATALOG: Mapping[str, OptimizerSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def names() -> tuple[str, ...]:
    """Every optimizer name, in row and legend order."""
    return tuple(CATALOG)


def study_rows() -> tuple[str, ...]:
    """The study's four optimizers (SM3, SGD, Adagrad, Adam), in row order."""
    return tuple(name for name, spec in CATALOG.items() if spec.study_row)


def paper_grid() -> tuple[str, ...]:
    """The optimizers ``experiment=paper`` sweeps, in sweep order."""
    return tuple(name for name, spec in CATALOG.items() if spec.paper_grid)


def sparse_rows_grid() -> tuple[str, ...]:
    """The paper-grid optimizers whose fastest exact implementation takes sparse rows: the ones
    ``experiment=fastest_exact`` reruns (the others' dense paper runs serve both tiers)."""
    return tuple(
        name
        for name, spec in CATALOG.items()
        if spec.paper_grid and spec.sparse_rows_exact and spec.sparse_rows_faster
    )


# -- how every table, figure and log names, orders and draws an optimizer ----------------------
# A name the catalog does not know (a record from elsewhere) keeps its own name and comes last.


def label(name: str) -> str:
    return CATALOG[name].label if name in CATALOG else name


def style(name: str) -> dict[str, Any]:
    return dict(CATALOG[name].style) if name in CATALOG else {}


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` without repeats: known optimizers in catalog order, then the rest by name."""
    names = set(names)
    return [n for n in CATALOG if n in names] + sorted(names - CATALOG.keys())
