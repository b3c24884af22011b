"""The optimizer catalog and registry: every entry is complete, builds and steps; config errors
name the offending key."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import fields

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from sm3repro import study
from sm3repro.optim import (
    CATALOG,
    OPTIMIZERS,
    SM3,
    build_optimizer,
    check_optimizer_config,
    optimizer_state_bytes,
)
from sm3repro.optim.catalog import IMPLS, KEYS, SM3_IMPLS, paper_grid, study_rows
from sm3repro.optim.registry import sparse_rows_config
from sm3repro.optim.sm3.optimizer import kernel_for
from sm3repro.run.config import OptimizerConfig


def fastest_sm3() -> str:
    """What SM3's impl=fastest runs here, as run records name it: fused where the kernel builds
    (and SM3REPRO_SM3_KERNEL does not switch it off), else forloop."""
    return "fused" if kernel_for("fastest") is not None else "forloop"


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 3))


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.tensor([[1, 2], [3, 4]])).pow(2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_catalog_holds_the_studys_rows_and_the_registry_builds_its_names() -> None:
    assert set(OPTIMIZERS) == set(CATALOG)
    # The study's four optimizers (SM3 stands in as SM3-II) and the sweep that adds SM3-I.
    assert study_rows() == ("sm3_ii", "sgd", "adagrad", "adam")
    # The paper grid: the study's rows, SM3-I, and any optimizer an entry adds to it (never
    # hand-listed), in catalog order.
    assert {"sm3_ii", "sm3_i", "sgd", "adagrad", "adam"} <= set(paper_grid())
    assert paper_grid() == tuple(n for n in CATALOG if CATALOG[n].paper_grid)


# A 30 x 7 matrix and a 5-vector: 215 parameters; 30 + 7 rows and columns, 5 vector entries.
@pytest.mark.parametrize(
    "name, expected",
    [("sgd", 0), ("adagrad", 4 * 215), ("adam", 8 * 215), ("sm3_ii", 4 * (37 + 5)),
     ("sm3_i", 4 * (37 + 5)), ("adafactor", 4 * (37 + 5))],
)  # fmt: skip
def test_theory_state_follows_the_optimizers_definition(name: str, expected: int) -> None:
    """The memory arm's theory line, from the entry."""
    assert CATALOG[name].theory_state_bytes([(30, 7), (5,)]) == expected


def test_an_entry_without_declared_state_has_no_theory() -> None:
    spec = dataclasses.replace(CATALOG["adam"], name="undeclared", state_slots=None)
    assert spec.theory_state_bytes([(30, 7)]) is None


def test_catalog_keys_are_the_schemas_hyperparameters() -> None:
    assert {f.name for f in fields(OptimizerConfig)} == KEYS | {"name", "lr", "impl"}


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_catalog_entry_is_complete(name: str) -> None:
    spec = CATALOG[name]
    assert spec.name == name and spec.label and spec.style["color"]
    assert spec.keys <= KEYS and set(spec.impls) <= set(IMPLS) and "fastest" in spec.impls
    # Every key it takes (and every fixed argument) is an argument of the class it builds.
    arguments = inspect.signature(spec.cls.__init__).parameters
    assert set(spec.keys) | set(spec.fixed) <= set(arguments), spec.target
    assert ("fused" in spec.impls) == bool(spec.fused_devices())
    if spec.cls is SM3:  # SM3 takes the config's impl as it is
        assert "impl" in arguments and spec.impls == SM3_IMPLS
    elif spec.fused:
        assert "fused" in arguments


@pytest.mark.parametrize("name", list(CATALOG))
@pytest.mark.parametrize("impl", ["fastest", "default"])
def test_every_name_builds_and_steps(name: str, impl: str) -> None:
    spec = CATALOG[name]
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer, label = build_optimizer(model.parameters(), {"name": name, "lr": 0.01, "impl": impl})
    assert type(optimizer) is spec.cls and optimizer.param_groups[0]["lr"] == 0.01
    one_step(model, optimizer)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if spec.cls is SM3:
        assert optimizer.defaults["variant"] == spec.fixed["variant"]
        assert optimizer.defaults["impl"] == impl
        assert label == (
            f"sm3repro.SM3(variant={spec.fixed['variant']}, cover=dims, impl={fastest_sm3()})"
        )
        return
    # CPU float parameters: torch's fused kernel applies wherever the class has one.
    fused = impl == "fastest" and "cpu" in spec.fused_devices()
    cls = spec.cls.__name__
    assert label == (f"torch.optim.{cls}(fused=True)" if fused else f"torch.optim.{cls}(default)")
    assert bool(optimizer.defaults.get("fused")) == fused


@pytest.mark.parametrize("name", list(CATALOG))
@pytest.mark.parametrize("impl", IMPLS)
def test_impls_outside_the_entry_are_rejected_with_the_key(name: str, impl: str) -> None:
    cfg = {"name": name, "impl": impl}
    if impl == "fused" and CATALOG[name].cls is SM3 and fastest_sm3() == "forloop":
        with pytest.raises(ValueError, match=r"optimizer\.impl=fused: .*could not be built"):
            build_optimizer(small_model().parameters(), cfg)
    elif impl in CATALOG[name].impls:
        optimizer, label = build_optimizer(small_model().parameters(), cfg)
        if CATALOG[name].cls is SM3:  # the config's impl reaches SM3 unchanged
            assert optimizer.defaults["impl"] == impl
            ran = "forloop" if impl == "forloop" else fastest_sm3()
            assert label.endswith(f", impl={ran})")
    else:
        with pytest.raises(ValueError, match=rf"optimizer\.impl={impl} .*optimizer\.name={name}"):
            build_optimizer(small_model().parameters(), cfg)


def test_lr_defaults_to_the_studys_value() -> None:
    assert study.LR == 0.01  # Section III: one lr for every optimizer
    for name in CATALOG:
        optimizer, _ = build_optimizer(small_model().parameters(), {"name": name})
        assert optimizer.param_groups[0]["lr"] == study.LR
    assert SM3(small_model().parameters()).defaults["lr"] == study.LR


def test_hydra_style_config_is_accepted() -> None:
    cfg = OmegaConf.create(
        {
            "name": "sm3_ii",
            "lr": 0.02,
            "momentum": 0.5,
            "eps": 1e-8,
            "cover": "singleton",
            "impl": "fastest",
            "_target_": "ignored.Class",
        }
    )
    optimizer, label = build_optimizer(small_model().parameters(), cfg)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["eps"], group["cover"]) == (
        0.02,
        0.5,
        1e-8,
        "singleton",
    )
    assert label == f"sm3repro.SM3(variant=ii, cover=singleton, impl={fastest_sm3()})"


def test_options_reach_torch_optimizers() -> None:
    params = list(small_model().parameters())
    adam, _ = build_optimizer(params, {"name": "adam", "lr": 0.1, "betas": [0.8, 0.9], "eps": 1e-6})
    assert adam.defaults["betas"] == (0.8, 0.9) and adam.defaults["eps"] == 1e-6
    sgd, label = build_optimizer(params, {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4})
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    adagrad, _ = build_optimizer(params, {"name": "adagrad", "eps": 1e-6, "impl": "forloop"})
    assert adagrad.defaults["eps"] == 1e-6 and adagrad.defaults["foreach"] is False
    # "off" values of inapplicable keys are fine (a shared config may carry them).
    build_optimizer(params, {"name": "adam", "momentum": 0.0, "cover": None})


def test_fastest_falls_back_when_fused_cannot_run() -> None:
    params = [nn.Parameter(torch.zeros(3, device="meta"))]
    optimizer, label = build_optimizer(params, {"name": "adam"})
    assert not optimizer.defaults.get("fused")
    assert label.startswith("torch.optim.Adam(default; fused unavailable")
    with pytest.raises(ValueError, match="optimizer.impl=fused"):
        build_optimizer(params, {"name": "adam", "impl": "fused"})


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "adamw"}, "optimizer.name"),
        ({"lr": 0.01}, "optimizer.name"),
        ({"name": "sgd", "lr": 0.0}, "optimizer.lr"),
        ({"name": "sm3_i", "lr": -0.1}, "optimizer.lr"),
        ({"name": "adam", "lr": "fast"}, "optimizer.lr"),
        ({"name": "sm3_ii", "learning_rate": 0.1}, "optimizer.learning_rate"),
        ({"name": "adam", "cover": "dims"}, "optimizer.cover"),
        ({"name": "sgd", "eps": 1e-8}, "optimizer.eps"),
        ({"name": "sm3_ii", "weight_decay": 1e-8}, "optimizer.weight_decay"),
        ({"name": "sm3_ii", "impl": "foreach"}, "optimizer.impl"),
        ({"name": "adam", "impl": "turbo"}, "optimizer.impl"),
        ({"name": "sm3_ii", "cover": "columns"}, "optimizer.cover"),
        ({"name": "adam", "betas": [0.9]}, "optimizer.betas"),
    ],
)
def test_config_errors_name_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_optimizer(small_model().parameters(), cfg)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="sm3_ii") as info:
        build_optimizer(small_model().parameters(), {"name": "adamw"})
    assert all(name in str(info.value) for name in CATALOG)


@pytest.mark.parametrize(
    ("name", "key"),
    [(name, key) for name, spec in CATALOG.items() for key in sorted(KEYS - spec.keys)],
)
def test_keys_the_entry_does_not_take_name_the_key_and_the_optimizer(name: str, key: str) -> None:
    value = {"betas": [0.9, 0.99], "cover": "dims"}.get(key, 0.5)
    message = rf"optimizer\.{key} does not apply to optimizer\.name={name}"
    with pytest.raises(ValueError, match=message):
        check_optimizer_config({"name": name, key: value})


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "sm3_ii", "momentum": 1.5}, "optimizer.momentum"),
        ({"name": "sm3_i", "eps": -1.0}, "optimizer.eps"),
        ({"name": "adagrad", "eps": -1.0}, "optimizer.eps"),
        ({"name": "adam", "betas": [1.5, 0.9]}, "optimizer.betas"),
        ({"name": "sgd", "momentum": -0.5}, "optimizer.momentum"),
        ({"name": "adam", "weight_decay": -1.0}, "optimizer.weight_decay"),
    ],
)
def test_invalid_values_name_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_optimizer(small_model().parameters(), cfg)
    # The same check without a model: what config.validate runs before loading data.
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_optimizer_config(cfg)


def test_every_unknown_key_is_listed() -> None:
    with pytest.raises(ValueError, match=r"optimizer\.lr_decay, optimizer\.nesterov"):
        build_optimizer(
            small_model().parameters(), {"name": "sgd", "nesterov": True, "lr_decay": 0}
        )


def test_state_bytes_of_torch_optimizers() -> None:
    model = small_model()
    n = sum(p.numel() for p in model.parameters())
    adam, _ = build_optimizer(model.parameters(), {"name": "adam", "impl": "default"})
    one_step(model, adam)
    steps = sum(s["step"].numel() * s["step"].element_size() for s in adam.state.values())
    assert optimizer_state_bytes(adam) == 2 * n * 4 + steps
    sgd, _ = build_optimizer(model.parameters(), {"name": "sgd"})
    one_step(model, sgd)
    assert optimizer_state_bytes(sgd) == 0  # no momentum: torch keeps no buffer
    sm3, _ = build_optimizer(model.parameters(), {"name": "sm3_ii"})
    one_step(model, sm3)
    # Embedding 10x4 -> 10+4, Linear weight 3x8 -> 3+8, bias 3 -> 3 (per coordinate).
    assert optimizer_state_bytes(sm3) == (10 + 4 + 3 + 8 + 3) * 4


@pytest.mark.parametrize("name", list(CATALOG))
def test_state_bytes_count_every_tensor_of_the_state(name: str) -> None:
    model = small_model()
    optimizer, _ = build_optimizer(model.parameters(), {"name": name})
    one_step(model, optimizer)
    leaves = torch.utils._pytree.tree_leaves(optimizer.state_dict()["state"])
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    assert optimizer_state_bytes(optimizer) == sum(t.numel() * t.element_size() for t in tensors)


def test_state_bytes_of_adafactor_are_its_factored_moments() -> None:
    model = small_model()
    adafactor, label = build_optimizer(model.parameters(), {"name": "adafactor"})
    assert label == "torch.optim.Adafactor(default)"  # torch has no fused Adafactor
    one_step(model, adafactor)
    # Each matrix keeps a row and a column vector (Embedding 10x4, Linear 3x8), the bias a
    # full one (3), all float32, plus a float32 step counter per parameter.
    assert optimizer_state_bytes(adafactor) == ((10 + 4) + (3 + 8) + 3) * 4 + 3 * 4


@pytest.mark.parametrize(
    ("cfg", "sparse", "impl"),
    [
        ({"name": "sgd", "momentum": 0.0, "impl": "fastest"}, True, "default"),
        ({"name": "adagrad", "impl": "fastest"}, True, "default"),
        ({"name": "sm3_ii", "momentum": 0.0, "impl": "fastest"}, True, "fastest"),
        ({"name": "sm3_i", "cover": "dims"}, True, None),
        ({"name": "adam", "impl": "fastest"}, False, "fastest"),
        ({"name": "sgd", "momentum": 0.9}, False, None),
        ({"name": "sm3_ii", "momentum": 0.5}, False, None),
        ({"name": "adagrad", "weight_decay": 1e-4}, False, None),
    ],
)
def test_sparse_rows_only_where_exact(cfg: dict, sparse: bool, impl: str | None) -> None:
    built, sparse_words, note = sparse_rows_config(cfg, requested=True)
    assert sparse_words == sparse
    assert built.get("impl") == impl
    assert ("sparse rows" if sparse else "dense gradients") in note
    assert sparse_rows_config(cfg, requested=False) == (cfg, False, "")
    model = nn.Embedding(10, 3, sparse=sparse_words)
    optimizer, _ = build_optimizer(model.parameters(), built)
    model(torch.tensor([1, 4, 4])).sum().backward()
    optimizer.step()  # fused torch kernels would reject a sparse gradient here


def test_sparse_rows_reject_an_explicit_fused_request() -> None:
    with pytest.raises(ValueError, match="single-tensor path"):
        sparse_rows_config({"name": "adagrad", "impl": "fused"}, requested=True)
