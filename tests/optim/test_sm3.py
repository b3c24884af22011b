"""SM3-I / SM3-II: identities with Adagrad, Proposition 2, a hand-worked case, state handling."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import gc
import io
import math
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from sm3repro.optim import SM3, optimizer_state_bytes
from sm3repro.optim.sm3 import eager as sm3_eager
from sm3repro.optim.sm3 import fused as sm3_fused
from sm3repro.optim.sm3.reference import sm3_preconditioner, sm3_reference_step

needs_fused_kernel = pytest.mark.needs_fused_kernel

F64 = torch.float64
TINY64 = torch.finfo(F64).tiny


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are tiny: extra threads only add barrier waits (seconds on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nonzero_grads(shape: tuple[int, ...], steps: int, seed: int) -> list[torch.Tensor]:
    """Random float64 gradients bounded away from 0 (torch's Adagrad with eps=0 divides 0/0)."""
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(steps):
        g = torch.randn(shape, generator=gen, dtype=F64)
        grads.append(torch.where(g.abs() < 1e-3, torch.full_like(g, 0.5), g))
    return grads


def run(optimizer_cls, kwargs: dict, init: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    param = nn.Parameter(init.clone())
    optimizer = optimizer_cls([param], **kwargs)
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
    return param.detach()


def adagrad(lr: float) -> tuple[type, dict]:
    return torch.optim.Adagrad, {
        "lr": lr,
        "eps": 0.0,
        "initial_accumulator_value": 0.0,
        "lr_decay": 0,
    }


# -- identities with Adagrad ------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("shape", [(6, 7), (3, 4, 5)])
def test_singleton_cover_is_adagrad(variant: str, shape: tuple[int, ...]) -> None:
    grads = nonzero_grads(shape, 100, seed=1)
    init = torch.randn(shape, dtype=F64)
    ours = run(SM3, {"lr": 0.1, "variant": variant, "cover": "singleton"}, init, grads)
    theirs = run(*adagrad(0.1), init, grads)
    assert (ours - theirs).abs().max().item() <= 1e-12


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("shape", [(), (5,), (6, 1), (1, 6)])
def test_default_cover_is_adagrad_for_rank_le_1_and_single_row_or_column(
    variant: str, shape: tuple[int, ...]
) -> None:
    grads = nonzero_grads(shape, 100, seed=2)
    init = torch.randn(shape, dtype=F64)
    ours = run(SM3, {"lr": 0.1, "variant": variant}, init, grads)
    theirs = run(*adagrad(0.1), init, grads)
    assert (ours - theirs).abs().max().item() <= 1e-12


@pytest.mark.parametrize("shape", [(), (5,), (4, 6), (3, 4, 5), (6, 1)])
def test_first_step_of_sm3_ii_is_adagrads(shape: tuple[int, ...]) -> None:
    grads = nonzero_grads(shape, 1, seed=3)
    init = torch.randn(shape, dtype=F64)
    ours = run(SM3, {"lr": 0.1, "variant": "ii"}, init, grads)
    theirs = run(*adagrad(0.1), init, grads)
    assert (ours - theirs).abs().max().item() <= 1e-15


def test_first_step_of_sm3_i_is_not_adagrads_on_a_matrix() -> None:
    grads = nonzero_grads((4, 6), 1, seed=4)
    init = torch.randn((4, 6), dtype=F64)
    ours = run(SM3, {"lr": 0.1, "variant": "i"}, init, grads)
    theirs = run(*adagrad(0.1), init, grads)
    assert (ours - theirs).abs().max().item() > 1e-3


# -- Proposition 2 ----------------------------------------------------------------------------

shapes_2d_3d = st.one_of(
    st.tuples(st.integers(1, 5), st.integers(1, 5)),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
)
gradient_values = st.one_of(st.just(0.0), st.floats(-10.0, 10.0, allow_nan=False, width=64))


@st.composite
def gradient_sequences(draw: st.DrawFn) -> list[np.ndarray]:
    shape = draw(shapes_2d_3d)
    steps = draw(st.integers(1, 6))
    return [draw(arrays(np.float64, shape, elements=gradient_values)) for _ in range(steps)]


@settings(max_examples=60, deadline=None)
@given(gradient_sequences())
def test_proposition_2(sequence: list[np.ndarray]) -> None:
    """sum_{s<=t} g_s(i)^2 <= nu'_t(i) <= nu_t(i), each non-decreasing in t, for one fixed
    gradient sequence; and each optimizer really steps by -lr * g / sqrt(nu)."""
    shape = sequence[0].shape
    lr = 0.5
    params = {v: nn.Parameter(torch.zeros(shape, dtype=F64)) for v in ("i", "ii")}
    optimizers = {v: SM3([params[v]], lr=lr, variant=v) for v in ("i", "ii")}
    total = torch.zeros(shape, dtype=F64)
    previous = {v: torch.zeros(shape, dtype=F64) for v in ("i", "ii")}
    tol = 1e-12
    for values in sequence:
        g = torch.from_numpy(values)
        total = total + g * g
        nu = {}
        for v, param in params.items():
            state = optimizers[v].state.get(param)
            before = (
                [a.clone() for a in state["accumulators"]]
                if state
                else [torch.full((n,), TINY64, dtype=F64) for n in shape]  # documented start
            )
            nu[v] = sm3_preconditioner(before, g, v)
            w_before = param.detach().clone()
            param.grad = g.clone()
            optimizers[v].step()
            expected = w_before - lr * g / nu[v].clamp_min(TINY64).sqrt()
            torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-12)
            assert torch.isfinite(param).all()
            assert (nu[v] >= previous[v] * (1 - tol)).all(), f"nu_{v} decreased"
            previous[v] = nu[v]
        assert (total <= nu["ii"] * (1 + tol)).all()
        assert (nu["ii"] <= nu["i"] * (1 + tol)).all()


# -- a hand-worked case -----------------------------------------------------------------------

G1 = [[1.0, 2.0, 0.0], [3.0, 1.0, 1.0]]  # squares [[1, 4, 0], [9, 1, 1]]
G2 = [[2.0, 0.0, 1.0], [0.0, 1.0, 2.0]]  # squares [[4, 0, 1], [0, 1, 4]]


def two_steps(variant: str, lr: float) -> tuple[list, list, list]:
    """Weights, accumulators and the reference nu of both steps of the hand-worked case."""
    param = nn.Parameter(torch.zeros(2, 3, dtype=F64))
    optimizer = SM3([param], lr=lr, variant=variant)
    weights, accumulators, nus = [], [], []
    before = [torch.full((2,), TINY64, dtype=F64), torch.full((3,), TINY64, dtype=F64)]
    for g in (G1, G2):
        nus.append(sm3_preconditioner(before, torch.tensor(g, dtype=F64), variant))
        param.grad = torch.tensor(g, dtype=F64)
        optimizer.step()
        weights.append(param.detach().clone())
        before = [a.clone() for a in optimizer.state[param]["accumulators"]]
        accumulators.append(before)
    return weights, accumulators, nus


def assert_nu(nu: torch.Tensor, expected: list[list[float]]) -> None:
    # The accumulators start at float64's tiny (2.2e-308), visible only where nu is 0.
    torch.testing.assert_close(nu, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-300)


def test_hand_worked_sm3_i() -> None:
    lr = 0.5
    (w1, w2), (acc1, acc2), (nu1, nu2) = two_steps("i", lr)
    # Step 1. Row maxima of g1^2: max(1, 4, 0) = 4, max(9, 1, 1) = 9.
    # Column maxima: max(1, 9) = 9, max(4, 1) = 4, max(0, 1) = 1.
    assert acc1[0].tolist() == [4.0, 9.0] and acc1[1].tolist() == [9.0, 4.0, 1.0]
    # nu1 = min(row, column): [[min(4,9), min(4,4), min(4,1)], [min(9,9), min(9,4), min(9,1)]]
    assert_nu(nu1, [[4.0, 4.0, 1.0], [9.0, 4.0, 1.0]])
    # update1 = g1 / sqrt(nu1) = [[1/2, 2/2, 0/1], [3/3, 1/2, 1/1]]
    step1 = [[0.5, 1.0, 0.0], [1.0, 0.5, 1.0]]
    torch.testing.assert_close(w1, -lr * torch.tensor(step1, dtype=F64), rtol=1e-15, atol=0)
    # Step 2. Row maxima of g2^2: max(4, 0, 1) = 4, max(0, 1, 4) = 4 -> rows [4+4, 9+4].
    # Column maxima: max(4, 0) = 4, max(0, 1) = 1, max(1, 4) = 4 -> columns [9+4, 4+1, 1+4].
    assert acc2[0].tolist() == [8.0, 13.0] and acc2[1].tolist() == [13.0, 5.0, 5.0]
    # nu2 = [[min(8,13), min(8,5), min(8,5)], [min(13,13), min(13,5), min(13,5)]]
    assert_nu(nu2, [[8.0, 5.0, 5.0], [13.0, 5.0, 5.0]])
    step2 = [[2 / math.sqrt(8), 0.0, 1 / math.sqrt(5)], [0.0, 1 / math.sqrt(5), 2 / math.sqrt(5)]]
    expected = -lr * (torch.tensor(step1, dtype=F64) + torch.tensor(step2, dtype=F64))
    torch.testing.assert_close(w2, expected, rtol=1e-15, atol=0)


def test_hand_worked_sm3_ii() -> None:
    lr = 0.5
    (w1, w2), (acc1, acc2), (nu1, nu2) = two_steps("ii", lr)
    # Step 1. mu'_0 = 0, so nu'1 = g1^2 = [[1, 4, 0], [9, 1, 1]]: Adagrad's first step.
    assert_nu(nu1, [[1.0, 4.0, 0.0], [9.0, 1.0, 1.0]])
    # update1 = g1 / sqrt(nu'1) = [[1/1, 2/2, 0 (g = 0: no update)], [3/3, 1/1, 1/1]]
    step1 = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    torch.testing.assert_close(w1, -lr * torch.tensor(step1, dtype=F64), rtol=1e-15, atol=0)
    # mu'1 = maxima of nu'1: rows [max(1,4,0), max(9,1,1)] = [4, 9];
    # columns [max(1,9), max(4,1), max(0,1)] = [9, 4, 1].
    assert acc1[0].tolist() == [4.0, 9.0] and acc1[1].tolist() == [9.0, 4.0, 1.0]
    # Step 2. min(row, column) = [[min(4,9), min(4,4), min(4,1)], [min(9,9), min(9,4), min(9,1)]]
    #   = [[4, 4, 1], [9, 4, 1]]; plus g2^2 [[4, 0, 1], [0, 1, 4]]: nu'2 = [[8, 4, 2], [9, 5, 5]].
    assert_nu(nu2, [[8.0, 4.0, 2.0], [9.0, 5.0, 5.0]])
    step2 = [[2 / math.sqrt(8), 0.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(5), 2 / math.sqrt(5)]]
    expected = -lr * (torch.tensor(step1, dtype=F64) + torch.tensor(step2, dtype=F64))
    torch.testing.assert_close(w2, expected, rtol=1e-15, atol=0)
    # mu'2: rows [max(8,4,2), max(9,5,5)] = [8, 9]; columns [max(8,9), max(4,5), max(2,5)].
    assert acc2[0].tolist() == [8.0, 9.0] and acc2[1].tolist() == [9.0, 5.0, 5.0]
    # Proposition 2 here: sum g^2 = [[5, 4, 1], [9, 2, 5]] <= nu'2 <= nu2 = [[8, 5, 5], [13, 5, 5]].


# -- the fast float32 path against the reference ----------------------------------------------


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize(
    "shape", [(10000, 7), (3, 1000), (3000, 30, 2), (37, 5, 11), (2, 3, 4, 5), (1, 9)]
)
def test_float32_fast_path_matches_reference(variant: str, shape: tuple[int, ...]) -> None:
    """float32 (the kernel where it builds, else forloop) gives the reference's accumulators and
    steps, computed in float64."""
    gen = torch.Generator().manual_seed(5)
    param = nn.Parameter(torch.randn(shape, generator=gen))
    optimizer = SM3([param], lr=0.01, variant=variant)
    for step in range(3):
        g = torch.randn(shape, generator=gen)
        g[0] = 0.0  # a slice with no gradient at all must stay finite
        if step:
            before = [a.clone() for a in optimizer.state[param]["accumulators"]]
        else:
            before = [torch.zeros(n) for n in shape]
        nu = sm3_preconditioner([a.double() for a in before], g.double(), variant)
        w_before = param.detach().double()
        param.grad = g
        optimizer.step()
        expected = w_before - 0.01 * g.double() / nu.clamp_min(TINY64).sqrt()
        torch.testing.assert_close(param.detach().double(), expected, rtol=1e-5, atol=1e-7)
        after = optimizer.state[param]["accumulators"]
        if variant == "i":
            ref_after = [
                b.double() + (g.double() ** 2).amax(dim=[d for d in range(len(shape)) if d != j])
                for j, b in enumerate(before)
            ]
        else:
            ref_after = [
                nu.amax(dim=[d for d in range(len(shape)) if d != j]) for j in range(len(shape))
            ]
        for a, r in zip(after, ref_after, strict=True):
            torch.testing.assert_close(a.double(), r, rtol=1e-6, atol=1e-30)


# -- save / load ------------------------------------------------------------------------------


def make_params(seed: int = 0) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (5,), ()]
    return [nn.Parameter(torch.randn(s, generator=gen, dtype=F64)) for s in shapes]


def closure_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(4, generator=gen, dtype=F64)
    y = torch.randn(5, generator=gen, dtype=F64)
    w, b, s = params
    loss = (((w @ x + b) * s - y) ** 2).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_state_dict_round_trip_resumes_identically(variant: str, momentum: float) -> None:
    straight = make_params()
    opt = SM3(straight, lr=0.05, variant=variant, momentum=momentum)
    for t in range(20):
        closure_step(straight, opt, t)

    first = make_params()
    opt1 = SM3(first, lr=0.05, variant=variant, momentum=momentum)
    for t in range(10):
        closure_step(first, opt1, t)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in first], "optim": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = [nn.Parameter(t.clone()) for t in saved["params"]]
    opt2 = SM3(resumed, lr=0.05, variant=variant, momentum=momentum)
    opt2.load_state_dict(saved["optim"])
    assert ("momentum_buffer" in opt2.state[resumed[0]]) == (momentum > 0)
    for t in range(10, 20):
        closure_step(resumed, opt2, t)
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)
    assert opt2.state[resumed[0]]["step"] == 20


def test_loading_into_a_used_optimizer_rebuilds_its_cached_views() -> None:
    straight = make_params()
    opt = SM3(straight, lr=0.05)
    for t in range(20):
        closure_step(straight, opt, t)

    params = make_params()
    optimizer = SM3(params, lr=0.05)
    for t in range(10):
        closure_step(params, optimizer, t)
    saved = copy.deepcopy(optimizer.state_dict())
    weights = [p.detach().clone() for p in params]
    for t in range(10, 15):  # wander off, then rewind the same optimizer
        closure_step(params, optimizer, t)
    optimizer.load_state_dict(saved)
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)
    for t in range(10, 20):
        closure_step(params, optimizer, t)
    for a, b in zip(straight, params, strict=True):
        assert torch.equal(a, b)


def test_parameters_share_scratch_whatever_their_order() -> None:
    """A small parameter stepped before a large one (the scratch then grows) is unaffected."""
    gen = torch.Generator().manual_seed(9)
    shapes = [(3, 4), (50, 30), (2, 3, 4)]
    inits = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=F64) for s in shapes] for _ in range(3)]
    for variant in ("i", "ii"):
        together = [nn.Parameter(t.clone()) for t in inits]
        alone = [nn.Parameter(t.clone()) for t in inits]
        shared = SM3(together, variant=variant)
        separate = [SM3([p], variant=variant) for p in alone]
        for step_grads in grads:
            for p, q, g in zip(together, alone, step_grads, strict=True):
                p.grad, q.grad = g.clone(), g.clone()
            shared.step()
            for optimizer in separate:
                optimizer.step()
        for p, q in zip(together, alone, strict=True):
            assert torch.equal(p, q)


# -- convergence on a convex problem ----------------------------------------------------------


def logistic_regression_loss(optimizer_cls, kwargs: dict, steps: int = 200) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(7)
    n, d, k = 400, 20, 5
    x = torch.randn(n, d, generator=gen, dtype=F64)
    true_w = torch.randn(d, k, generator=gen, dtype=F64) * 2
    y = (x @ true_w + 0.5 * torch.randn(n, k, generator=gen, dtype=F64)).argmax(1)
    w = nn.Parameter(torch.zeros(d, k, dtype=F64))
    b = nn.Parameter(torch.zeros(k, dtype=F64))
    optimizer = optimizer_cls([w, b], **kwargs)

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(x @ w + b, y)

    initial = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return initial, loss().item()


@pytest.mark.parametrize("variant", ["i", "ii"])
def test_minimises_logistic_regression_like_adagrad(variant: str) -> None:
    lr = 0.1
    initial, ours = logistic_regression_loss(SM3, {"lr": lr, "variant": variant})
    _, reference = logistic_regression_loss(torch.optim.Adagrad, {"lr": lr})
    assert ours < 0.3 * initial
    assert ours <= reference + 0.05, (ours, reference)


# -- sparse gradients -------------------------------------------------------------------------

BATCHES = [[1, 3, 3, 7], [3, 5, 5, 5, 0], [8, 1], [2, 2, 2, 2], [7, 0, 9, 9]]


def embedding_run(sparse: bool, variant: str, cover: str) -> tuple[nn.Embedding, SM3, list]:
    gen = torch.Generator().manual_seed(11)
    emb = nn.Embedding(12, 4, sparse=sparse).double()
    with torch.no_grad():
        emb.weight.copy_(torch.randn(12, 4, generator=gen, dtype=F64))
    optimizer = SM3(emb.parameters(), lr=0.1, variant=variant, cover=cover)
    history = []
    for t, batch in enumerate(BATCHES):
        weights = torch.randn(len(batch), 4, generator=torch.Generator().manual_seed(t), dtype=F64)
        optimizer.zero_grad()
        (emb(torch.tensor(batch)) * weights).sum().backward()
        assert emb.weight.grad.is_sparse == sparse
        before = optimizer.state[emb.weight]["accumulators"][0].clone() if optimizer.state else None
        optimizer.step()
        history.append((batch, before, optimizer.state[emb.weight]["accumulators"][0].clone()))
    return emb, optimizer, history


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("cover", ["dims", "rows"])
def test_sparse_embedding_matches_dense(variant: str, cover: str) -> None:
    dense, dense_opt, _ = embedding_run(False, variant, cover)
    sparse, sparse_opt, history = embedding_run(True, variant, cover)
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=1e-13, atol=1e-13)
    acc_sparse = sparse_opt.state[sparse.weight]["accumulators"]
    acc_dense = dense_opt.state[dense.weight]["accumulators"]
    shapes = {"dims": [torch.Size([12]), torch.Size([4])], "rows": [torch.Size([12])]}
    assert [a.shape for a in acc_sparse] == shapes[cover]
    for a, b in zip(acc_sparse, acc_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
    for batch, before, after in history[1:]:
        absent = [r for r in range(12) if r not in batch]
        assert torch.equal(after[absent], before[absent]), "rows absent from a batch changed"
    never = [r for r in range(12) if all(r not in b for b in BATCHES)]
    assert never == [4, 6, 10, 11]
    init = torch.randn(12, 4, generator=torch.Generator().manual_seed(11), dtype=F64)
    assert torch.equal(sparse.weight.detach()[never], init[never])
    assert (acc_sparse[0][never] == TINY64).all()


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # from torch's sparse Adagrad
@pytest.mark.parametrize("variant", ["i", "ii"])
def test_sparse_singleton_cover_is_sparse_adagrad(variant: str) -> None:
    ours, _, _ = embedding_run(True, variant, "singleton")
    gen = torch.Generator().manual_seed(11)
    emb = nn.Embedding(12, 4, sparse=True).double()
    with torch.no_grad():
        emb.weight.copy_(torch.randn(12, 4, generator=gen, dtype=F64))
    optimizer = torch.optim.Adagrad(emb.parameters(), lr=0.1, eps=0.0)
    for t, batch in enumerate(BATCHES):
        weights = torch.randn(len(batch), 4, generator=torch.Generator().manual_seed(t), dtype=F64)
        optimizer.zero_grad()
        (emb(torch.tensor(batch)) * weights).sum().backward()
        optimizer.step()
    torch.testing.assert_close(ours.weight, emb.weight, rtol=1e-13, atol=1e-13)


def test_sparse_gradient_errors_are_clear() -> None:
    emb = nn.Embedding(6, 3, sparse=True)
    optimizer = SM3(emb.parameters(), momentum=0.5)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="momentum"):
        optimizer.step()

    param = nn.Parameter(torch.zeros(4, 3))
    optimizer = SM3([param])
    param.grad = torch.ones(4, 3).to_sparse(2)  # sparse in both dims: not row-sparse
    with pytest.raises(RuntimeError, match="row-sparse"):
        optimizer.step()


# -- state, zero gradients, validation --------------------------------------------------------


def test_state_bytes_are_the_accumulators() -> None:
    matrix = nn.Parameter(torch.randn(30, 20))
    cube = nn.Parameter(torch.randn(3, 4, 5, dtype=F64))
    scalar = nn.Parameter(torch.tensor(1.5))
    frozen = nn.Parameter(torch.randn(7, 7))
    optimizer = SM3([matrix, cube, scalar, frozen])
    for p in (matrix, cube, scalar):
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert frozen not in optimizer.state
    assert set(optimizer.state[matrix]) == {"step", "accumulators"}
    assert isinstance(optimizer.state[matrix]["step"], int)  # not a tensor: no bytes
    assert optimizer_state_bytes(optimizer) == (30 + 20) * 4 + (3 + 4 + 5) * 8 + 1 * 4
    assert scalar.item() == pytest.approx(1.5 - 0.01)  # 0-d: Adagrad, g / sqrt(g^2) = 1

    with_momentum = SM3([matrix], momentum=0.9)
    matrix.grad = torch.ones_like(matrix)
    with_momentum.step()
    assert optimizer_state_bytes(with_momentum) == (30 + 20) * 4 + 30 * 20 * 4
    assert with_momentum.state[matrix]["momentum_buffer"].shape == matrix.shape


def test_singleton_state_bytes_and_zero_gradients_give_no_nan() -> None:
    param = nn.Parameter(torch.randn(4, 5))
    start = param.detach().clone()
    for variant in ("i", "ii"):
        for cover in ("dims", "rows", "singleton"):
            optimizer = SM3([param], variant=variant, cover=cover)
            param.grad = torch.zeros(4, 5)
            optimizer.step()
            assert torch.equal(param.detach(), start)  # nu is (tiny) > 0 and g = 0: no update
            grad = torch.zeros(4, 5)
            grad[1, 2] = 3.0
            param.grad = grad
            optimizer.step()
            moved = (param.detach() != start).nonzero().tolist()
            assert moved == [[1, 2]]
            assert param[1, 2].item() == pytest.approx(start[1, 2].item() - 0.01)
            with torch.no_grad():
                param.copy_(start)
    assert optimizer_state_bytes(optimizer) == 4 * 5 * 4


def test_momentum_is_a_moving_average_of_updates() -> None:
    param = nn.Parameter(torch.zeros(3, dtype=F64))
    optimizer = SM3([param], lr=1.0, momentum=0.5)
    param.grad = torch.tensor([1.0, -2.0, 4.0], dtype=F64)
    optimizer.step()  # update = g / |g| = sign(g); m = 0.5 * 0 + 0.5 * sign(g)
    torch.testing.assert_close(param.detach(), -0.5 * param.grad.sign())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"eps": -1e-8}, "eps"),
        ({"variant": "iii"}, "variant"),
        ({"cover": "columns"}, "cover"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SM3([nn.Parameter(torch.zeros(2))], **kwargs)


def test_eps_is_added_outside_the_root() -> None:
    for variant in ("i", "ii"):
        param = nn.Parameter(torch.zeros(2, 2, dtype=F64))
        optimizer = SM3([param], lr=1.0, variant=variant, eps=1.0)
        param.grad = torch.full((2, 2), 3.0, dtype=F64)
        optimizer.step()  # nu = 9 everywhere (both variants): update = 3 / (3 + 1)
        torch.testing.assert_close(param.detach(), torch.full((2, 2), -0.75, dtype=F64))


def test_param_groups_may_choose_their_variant() -> None:
    a, b = nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(3, 4))
    optimizer = SM3([{"params": [a], "variant": "i"}, {"params": [b]}], lr=0.1)
    assert [g["variant"] for g in optimizer.param_groups] == ["i", "ii"]
    with pytest.raises(ValueError, match="variant"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "variant": "x"})


# -- every implementation against the readable reference --------------------------------------

IMPLEMENTATIONS = [pytest.param("fused", marks=needs_fused_kernel), "forloop", "forloop-tiles"]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """SM3's impl; "forloop-tiles" steps every parameter in tiny tiles: 40 bytes are 5 float64s,
    so a (9, 7) matrix goes in tiles one row high and 5 and 2 columns wide (rows outermost), a
    (4, 9) one likewise but columns outermost (9 > 4: the row accumulator is gathered across
    tiles), an (8, 1) one in row blocks of 5 and 3, and a (5, 3, 4) tensor a row of 4 at a
    time. Untiled, each of them is one tile."""
    if request.param == "forloop-tiles":
        monkeypatch.setattr(sm3_eager, "_BLOCK_BYTES", 40)
        return "forloop"
    return request.param


def row_sparse(grad: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """grad restricted to ``rows`` as an uncoalesced sparse tensor (rows may repeat: the
    repeated entries split the row's value in two parts that sum back to it)."""
    index = torch.tensor(rows, dtype=torch.long)
    values = grad[index].clone()
    counts = torch.bincount(index, minlength=grad.shape[0])[index]
    values /= counts.view(-1, *[1] * (grad.dim() - 1)).to(values.dtype)
    return torch.sparse_coo_tensor(index.unsqueeze(0), values, grad.shape)


@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("cover", ["dims", "rows", "singleton"])
@pytest.mark.parametrize("momentum", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(9, 7), (4, 9), (5, 3, 4), (6,), (), (8, 1)])
def test_fast_paths_equal_the_reference_step(
    implementation: str, variant: str, cover: str, momentum: float, shape: tuple[int, ...]
) -> None:
    """40 float64 steps: weights, accumulators and momentum buffers equal the reference's."""
    gen = torch.Generator().manual_seed(21)
    param = nn.Parameter(torch.randn(shape, generator=gen, dtype=F64))
    optimizer = SM3(
        [param],
        lr=0.05,
        variant=variant,
        cover=cover,
        momentum=momentum,
        eps=0.01 if cover == "rows" else 0.0,
        impl=implementation,
    )
    reference = param.detach().clone()
    ref_accs = ref_buf = None
    for step in range(40):
        grad = torch.randn(shape, generator=gen, dtype=F64)
        if shape and step % 3 == 0:
            grad[0] = 0.0  # a slice with no gradient
        sparse = len(shape) >= 1 and momentum == 0 and step % 2 == 1
        if sparse:
            rows = torch.randint(shape[0], (shape[0],), generator=gen).tolist()
            param.grad = row_sparse(grad, rows)
            grad = param.grad.to_dense()
        else:
            param.grad = grad.clone()
        optimizer.step()
        if ref_accs is None:
            state = optimizer.state[param]
            ref_accs = [torch.full_like(a, TINY64) for a in state["accumulators"]]
            ref_buf = torch.zeros_like(reference) if momentum else None
        sm3_reference_step(
            reference,
            grad,
            ref_accs,
            ref_buf,
            lr=0.05,
            variant=variant,
            momentum=momentum,
            eps=optimizer.defaults["eps"],
        )
    state = optimizer.state[param]
    torch.testing.assert_close(param.detach(), reference, rtol=0, atol=1e-12)
    for ours, theirs in zip(state["accumulators"], ref_accs, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    if momentum:
        torch.testing.assert_close(state["momentum_buffer"], ref_buf, rtol=0, atol=1e-12)


def test_reference_momentum_is_the_documented_moving_average() -> None:
    """Three steps with beta = 0.7 on a singleton cover, worked through by hand."""
    beta, lr = 0.7, 0.1
    param = torch.zeros(2, dtype=F64)
    accs = [torch.zeros(2, dtype=F64)]
    buf = torch.zeros(2, dtype=F64)
    grads = [[3.0, -1.0], [4.0, 0.0], [0.0, 2.0]]
    m, w, total = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    for g in grads:
        g = torch.tensor(g, dtype=F64)
        total += g * g
        update = torch.where(total > 0, g / total.sqrt(), torch.zeros_like(g))
        m = beta * m + (1 - beta) * update
        w -= lr * m
        sm3_reference_step(param, g, accs, buf, lr=lr, variant="ii", momentum=beta)
        torch.testing.assert_close(param, w, rtol=0, atol=1e-15, equal_nan=False)
    # By hand, coordinate 0: updates 1, 4/5, 0 -> m = 0.3, 0.21 + 0.24, 0.315; w = -lr * sum m.
    assert param[0].item() == pytest.approx(-lr * (0.3 + 0.45 + 0.315), abs=1e-15)


@needs_fused_kernel
def test_fused_kernel_reports_itself() -> None:
    param = nn.Parameter(torch.zeros(3, 2))
    assert SM3([param], impl="fused").implementation == "fused"
    assert SM3([param]).implementation == "fused"  # "fastest" takes it where it builds
    assert SM3([param], impl="default").implementation == "fused"
    mixed = SM3(
        [{"params": [param]}, {"params": [nn.Parameter(torch.zeros(2))], "impl": "forloop"}]
    )
    assert mixed.implementation == "mixed"


@needs_fused_kernel
def test_the_kernel_steps_what_the_implementation_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``implementation`` names is what steps: a float32 matrix (dims cover), a 3-D tensor
    under the rows cover and a vector all go to the kernel, none forloop; a 3-D tensor under the
    dims cover is one the kernel cannot take, and is named forloop."""

    def no_forloop(*args: object, **kwargs: object) -> None:
        raise AssertionError("a parameter the kernel takes was stepped forloop")

    monkeypatch.setattr(sm3_eager, "dense_step", no_forloop)
    for cover, shape in (("dims", (4, 3)), ("rows", (2, 3, 4)), ("dims", (5,))):
        param = nn.Parameter(torch.ones(shape))
        optimizer = SM3([param], cover=cover, impl="fused")
        assert optimizer.implementation == "fused", (cover, shape)
        param.grad = torch.ones(shape)
        optimizer.step()
        assert torch.all(param.detach() < 1), (cover, shape)
    monkeypatch.undo()
    cube = nn.Parameter(torch.ones(2, 3, 4))
    assert SM3([cube], cover="dims", impl="fused").implementation == "forloop"
    half = nn.Parameter(torch.ones(3, 2, dtype=torch.float16))  # a dtype the kernel lacks
    assert SM3([half], impl="fused").implementation == "forloop"


@needs_fused_kernel
def test_an_uncoalesced_sparse_gradient_is_summed_by_the_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Duplicate rows of an embedding's gradient are summed in one pass by the kernel (torch's
    coalesce sorts them); an already coalesced gradient needs no summing."""
    module = sm3_fused.kernel()
    summed: list[int] = []
    original = module.sum_duplicate_rows

    def counting(**kwargs: object) -> list[torch.Tensor]:
        summed.append(1)
        return original(**kwargs)

    monkeypatch.setattr(module, "sum_duplicate_rows", counting)
    table = nn.Embedding(10, 4, sparse=True)
    optimizer = SM3(table.parameters(), impl="fused")
    table(torch.tensor([1, 3, 1, 7])).sum().backward()
    assert not table.weight.grad.is_coalesced()
    optimizer.step()
    assert summed == [1]
    table.weight.grad = table.weight.grad.coalesce()
    optimizer.step()
    assert summed == [1]


def test_without_a_compiler_sm3_falls_back_to_forloop(monkeypatch: pytest.MonkeyPatch) -> None:
    param = nn.Parameter(torch.zeros(3, 2))
    assert SM3([param], impl="forloop").implementation == "forloop"
    with pytest.raises(ValueError, match="impl"):
        SM3([param], impl="cuda")

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error building extension: c++: not found")

    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.delenv("SM3REPRO_SM3_KERNEL", raising=False)
    monkeypatch.setattr(cpp_extension, "load_inline", no_compiler)
    with pytest.warns(RuntimeWarning, match="unavailable, using the eager torch path"):
        assert sm3_fused.kernel.__wrapped__() is None  # the uncached builder
    monkeypatch.setattr(sm3_fused, "kernel", lambda: None)
    optimizer = SM3([param])
    assert optimizer.implementation == "forloop"
    param.grad = torch.ones(3, 2)
    optimizer.step()
    assert torch.allclose(param.detach(), torch.full((3, 2), -0.01))
    with pytest.raises(RuntimeError, match="could not be built"):
        SM3([param], impl="fused")


def test_the_environment_overrides_fastest_and_switches_the_kernel_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SM3REPRO_SM3_KERNEL=forloop (or its old spelling, eager) makes fastest and default run
    forloop and impl=fused an error, without building anything; an unknown value is an error."""
    from sm3repro.optim.sm3.optimizer import kernel_for

    def no_build() -> None:
        raise AssertionError("the kernel was asked for")

    monkeypatch.setattr(sm3_fused, "kernel", no_build)
    param = nn.Parameter(torch.zeros(3, 2))
    for value in ("forloop", "eager", " Forloop "):
        monkeypatch.setenv("SM3REPRO_SM3_KERNEL", value)
        assert kernel_for("fastest") is None and kernel_for("default") is None
        assert SM3([param]).implementation == "forloop"
        with pytest.raises(RuntimeError, match="switched it off"):
            SM3([param], impl="fused")
    monkeypatch.setenv("SM3REPRO_SM3_KERNEL", "cuda")
    with pytest.raises(ValueError, match="SM3REPRO_SM3_KERNEL=cuda"):
        kernel_for("fastest")
    monkeypatch.setenv("SM3REPRO_SM3_KERNEL", "fused")
    monkeypatch.setattr(sm3_fused, "kernel", lambda: None)
    with pytest.raises(RuntimeError, match="could not be built"):
        kernel_for("fastest")  # fused is demanded, so its absence is an error
    assert kernel_for("forloop") is None  # an explicit forloop needs no kernel
    for value in ("", "fastest", "default", "auto"):  # no override
        monkeypatch.setenv("SM3REPRO_SM3_KERNEL", value)
        assert kernel_for("fastest") is None  # the stubbed kernel is unavailable: no error


@pytest.mark.parametrize("impl", ["forloop", pytest.param("fused", marks=needs_fused_kernel)])
def test_the_impl_survives_pickling_and_deepcopy(impl: str) -> None:
    param = nn.Parameter(torch.zeros(3, 2))
    optimizer = SM3([param], impl=impl)
    param.grad = torch.ones(3, 2)
    optimizer.step()
    for restored in (pickle.loads(pickle.dumps(optimizer)), copy.deepcopy(optimizer)):
        assert restored.defaults["impl"] == impl
        assert restored.param_groups[0]["impl"] == impl
        assert restored.implementation == optimizer.implementation == impl


def test_optimizers_saved_before_impl_load_with_their_kernel_as_impl() -> None:
    """State saved (or an optimizer pickled) before impl named the choice carries
    kernel=auto|fused|eager: it loads as impl fastest, fused and forloop."""
    param = nn.Parameter(torch.zeros(3, 2))
    optimizer = SM3([param], impl="forloop")
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        del group["impl"]
        group["kernel"] = "eager"
    fresh = SM3([param])  # impl fastest: what the old group says must win, as any saved value
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["impl"] == "forloop" and "kernel" not in fresh.param_groups[0]
    state = copy.deepcopy(optimizer.__getstate__())
    for group in (state["defaults"], *state["param_groups"]):
        del group["impl"]
        group["kernel"] = "auto"
    old = SM3.__new__(SM3)
    old.__setstate__(state)
    assert old.defaults["impl"] == old.param_groups[0]["impl"] == "fastest"
    assert "kernel" not in old.defaults


def test_a_cold_kernel_build_says_so_on_stderr_and_a_cached_one_is_silent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.delenv("SM3REPRO_SM3_KERNEL", raising=False)
    monkeypatch.setattr(cpp_extension, "verify_ninja_availability", lambda: None)
    monkeypatch.setattr(sm3_fused, "_build_dir", lambda name: tmp_path)
    built = object()

    def fake_build(name: str, **kwargs: object) -> object:
        (tmp_path / f"{name}.so").write_bytes(b"")  # what a real build leaves
        return built

    monkeypatch.setattr(cpp_extension, "load_inline", fake_build)
    assert sm3_fused.kernel.__wrapped__() is built
    err = capsys.readouterr().err
    assert "building SM3's fused CPU kernel" in err
    assert re.search(r"SM3 kernel built in \d+\.\d s", err), err
    assert sm3_fused.kernel.__wrapped__() is built  # cached on disk now: nothing to say
    assert capsys.readouterr().err == ""


@needs_fused_kernel
def test_fused_kernel_refuses_tensors_that_do_not_fit() -> None:
    """The kernel reads raw memory: a wrong-sized accumulator must be an error, not a write
    past its end."""
    kernel = sm3_fused.kernel()
    assert kernel is not None
    param, grad = torch.zeros(4, 3), torch.ones(4, 3)
    row, col = torch.zeros(4), torch.zeros(3)
    fits = {
        "param": param, "grad": grad, "row_acc": row, "col_acc": col, "buf": None,
        "rows_index": None, "cover": "dims", "cols": 3, "variant": "ii", "lr": 0.1,
        "momentum": 0.0, "eps": 0.0,
    }  # fmt: skip
    kernel.sm3_step(**fits)
    assert torch.all(param < 0)
    cases = [
        ({"row_acc": torch.zeros(3)}, "row accumulator"),
        ({"col_acc": torch.zeros(2)}, "one number per column"),
        ({"col_acc": None}, "dims cover only"),
        ({"cover": "rows"}, "dims cover only"),
        ({"grad": torch.ones(5, 3)}, "parameter's size"),
        ({"cols": 5}, "cols must divide"),
        ({"buf": torch.zeros(3)}, "momentum buffer"),
        ({"rows_index": torch.tensor([0])}, "one gradient row per index"),
        ({"row_acc": torch.zeros(12), "col_acc": None, "cover": "columns"}, "cover must be"),
        ({"variant": "iii"}, "variant must be"),
    ]
    for change, message in cases:
        with pytest.raises(RuntimeError, match=message):
            kernel.sm3_step(**(fits | change))
    with pytest.raises(TypeError):  # keyword arguments only: nothing is mirrored by position
        kernel.sm3_step(*fits.values())
    many = {
        "params": [param], "grads": [grad], "row_accs": [row], "col_accs": [col], "bufs": [None],
        "covers": ["dims"], "widths": [], "variant": "ii", "lr": 0.1, "momentum": 0.0,
        "eps": 0.0,
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="one entry per parameter"):
        kernel.sm3_step_many(**many)


@needs_fused_kernel
def test_summing_duplicate_rows_recovers_after_a_bad_index() -> None:
    """The row -> slot map is reused between calls: a refused index must leave it clean."""
    kernel = sm3_fused.kernel()
    values = torch.arange(12.0).view(4, 3)
    with pytest.raises(RuntimeError, match="row index 9 out of range for 6 rows"):
        kernel.sum_duplicate_rows(indices=torch.tensor([[2, 5, 2, 9]]), values=values, rows=6)
    rows, summed = kernel.sum_duplicate_rows(
        indices=torch.tensor([[5, 2, 5, 0]]), values=values, rows=6
    )
    assert rows.tolist() == [5, 2, 0]
    assert summed.tolist() == [[6.0, 8.0, 10.0], [3.0, 4.0, 5.0], [9.0, 10.0, 11.0]]


def test_mixed_fused_and_forloop_parameters_in_one_step_equal_the_reference() -> None:
    """Dense parameters the kernel takes are stepped together after the loop; one it cannot
    take (not contiguous) is stepped forloop in between: both give the reference step."""
    gen = torch.Generator().manual_seed(5)
    inits = [torch.randn(5, 4, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64),
             torch.randn(4, 5, generator=gen, dtype=F64)]  # fmt: skip
    params = [nn.Parameter(inits[0].clone()), nn.Parameter(inits[1].clone()),
              nn.Parameter(inits[2].clone().t())]  # fmt: skip
    assert not params[2].is_contiguous()
    optimizer = SM3(params, lr=0.1, variant="ii")
    expected = [p.detach().clone() for p in params]
    dims = [[torch.full((size,), TINY64, dtype=F64) for size in p.shape] for p in params]
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        for want, grad, accs in zip(expected, grads, dims, strict=True):
            sm3_reference_step(want, grad, accs, None, lr=0.1, variant="ii")
    for param, want in zip(params, expected, strict=True):
        torch.testing.assert_close(param.detach(), want, rtol=0, atol=1e-12)


# -- exact sparse rows: SGD, Adagrad, SM3-I, SM3-II ---------------------------------------------

VOCAB, WIDTH = 40, 6
NEVER = [3, 17, 29]  # rows no batch touches
ONCE = 11  # a row only the first batch touches


def sparse_row_batches(steps: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(33)
    allowed = [r for r in range(VOCAB) if r not in NEVER and r != ONCE]
    batches = []
    for step in range(steps):
        picks = torch.randint(
            len(allowed), (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen
        )
        batch = [allowed[i] for i in picks.tolist()]
        batch += batch[:2]  # duplicate indices
        batches.append(batch + [ONCE] if step == 0 else batch)
    return batches


OPTIMIZERS_EXACT_WITH_SPARSE_ROWS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1),
    "sm3_i": lambda ps: SM3(ps, lr=0.1, variant="i"),
    "sm3_ii": lambda ps: SM3(ps, lr=0.1, variant="ii"),
    "sm3_ii_forloop": lambda ps: SM3(ps, lr=0.1, variant="ii", impl="forloop"),
    "sm3_i_forloop": lambda ps: SM3(ps, lr=0.1, variant="i", impl="forloop"),
}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # from torch's sparse Adagrad
@pytest.mark.parametrize("name", sorted(OPTIMIZERS_EXACT_WITH_SPARSE_ROWS))
def test_sparse_rows_equal_the_dense_path_over_200_steps(name: str) -> None:
    make = OPTIMIZERS_EXACT_WITH_SPARSE_ROWS[name]
    init = torch.randn(VOCAB, WIDTH, generator=torch.Generator().manual_seed(34), dtype=F64)
    tables = {}
    for sparse in (False, True):
        emb = nn.Embedding(VOCAB, WIDTH, sparse=sparse).double()
        with torch.no_grad():
            emb.weight.copy_(init)
        optimizer = make(emb.parameters())
        for step, batch in enumerate(sparse_row_batches(200)):
            gen = torch.Generator().manual_seed(1000 + step)
            weights = torch.randn(len(batch), WIDTH, generator=gen, dtype=F64)
            optimizer.zero_grad()
            (emb(torch.tensor(batch)) * weights).sum().backward()
            assert emb.weight.grad.is_sparse == sparse
            optimizer.step()
        tables[sparse] = (emb.weight.detach(), optimizer.state[emb.weight])
    (dense, dense_state), (sparse, sparse_state) = tables[False], tables[True]
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-12)
    assert torch.equal(sparse[NEVER], init[NEVER])
    assert not torch.equal(sparse[ONCE], init[ONCE])
    # SGD keeps no state; Adagrad keeps "sum"; SM3 keeps "accumulators".
    for key in ("sum", "accumulators"):
        if key in dense_state:
            dense_acc, sparse_acc = dense_state[key], sparse_state[key]
            torch.testing.assert_close(sparse_acc, dense_acc, rtol=1e-12, atol=0)


# -- bounded scratch ----------------------------------------------------------------------------


def peak_rss_growth(fn: Callable[[], None]) -> int:
    """Bytes the process's resident set peaked above its size before ``fn`` (Linux)."""
    gc.collect()
    # Hand free heap memory back to the OS first: a step reusing it would not grow the RSS.
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark VmHWM to VmRSS

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    before = status("VmRSS")
    fn()
    return status("VmHWM") - before


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or not ctypes.util.find_library("c"),
    reason="measures with Linux /proc and glibc's malloc_trim",
)
@pytest.mark.parametrize("impl", [pytest.param("fused", marks=needs_fused_kernel), "forloop"])
@pytest.mark.parametrize("variant", ["i", "ii"])
def test_scratch_stays_bounded_for_a_50m_element_parameter(impl: str, variant: str) -> None:
    param = nn.Parameter(torch.zeros(10_000, 5_000))
    param.grad = torch.full_like(param, 0.5)
    optimizer = SM3([param], variant=variant, impl=impl)
    optimizer.step()  # the state (accumulators) is allocated here, outside the measurement
    # The measure sees a transient buffer of 16 MiB (so it would see a full-size scratch)...
    assert peak_rss_growth(lambda: torch.ones(4 * 2**20).sum()) >= 15 * 2**20
    # ...and SM3's step needs almost none.
    growth = peak_rss_growth(optimizer.step)
    assert growth <= 6 * 2**20, f"{growth / 2**20:.1f} MiB of scratch for a 191 MiB parameter"


@pytest.mark.parametrize(
    ("shape", "outer"),
    [((1_100, 1_000), 0), ((1_100, 1_000), 1), ((3, 300_000), 1), ((3, 70_000, 2), 1),
     ((5, 3, 4), 2), ((200_000,), 0), ((1,), 0)],
)  # fmt: skip
def test_forloop_tiles_cover_a_parameter_once_in_bounded_pieces(
    shape: tuple[int, ...], outer: int
) -> None:
    """The forloop path's tiles: every element in exactly one, none over _BLOCK_BYTES, grouped
    by consecutive ranges of the outer dimension that cover it."""
    item = 4
    seen = torch.zeros(shape, dtype=torch.int8)
    spans = []
    for span, tiles in sm3_eager._tiles(shape, item, outer):
        spans.append(span)
        for tile in tiles:
            assert tile[outer] == span
            assert seen[tile].numel() * item <= sm3_eager._BLOCK_BYTES
            seen[tile] += 1
    assert torch.equal(seen, torch.ones_like(seen))
    assert spans[0].start == 0 and spans[-1].stop == shape[outer]
    assert all(a.stop == b.start for a, b in zip(spans, spans[1:], strict=False))


@pytest.mark.parametrize("impl", [pytest.param("fused", marks=needs_fused_kernel), "forloop"])
def test_a_group_may_switch_variant_between_steps(impl: str) -> None:
    """The variant is read at every step: switching it between steps gives the reference's
    steps (both variants keep the same accumulators)."""
    gen = torch.Generator().manual_seed(8)
    init = torch.randn(6, 5, generator=gen, dtype=F64)
    grads = [torch.randn(6, 5, generator=gen, dtype=F64) for _ in range(4)]
    param = nn.Parameter(init.clone())
    optimizer = SM3([param], lr=0.1, impl=impl)
    want = init.clone()
    accs = [torch.full((6,), TINY64, dtype=F64), torch.full((5,), TINY64, dtype=F64)]
    for step, grad in enumerate(grads):
        variant = "ii" if step % 2 == 0 else "i"
        optimizer.param_groups[0]["variant"] = variant
        param.grad = grad.clone()
        optimizer.step()
        sm3_reference_step(want, grad, accs, None, lr=0.1, variant=variant)
    torch.testing.assert_close(param.detach(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", [pytest.param("fused", marks=needs_fused_kernel), "forloop"])
@pytest.mark.parametrize("variant", ["i", "ii"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_wide_matrices_split_by_columns_equal_the_reference(
    impl: str, variant: str, momentum: float
) -> None:
    """A matrix this wide (one thread x 140,000 float64 columns > 1 MiB of column maxima) is
    stepped with its columns split between threads (fused), or in tiles one row high and at
    most 65,536 columns wide, columns outermost (forloop): the reference's arithmetic."""
    gen = torch.Generator().manual_seed(21)
    shape = (5, 140_000)
    param = nn.Parameter(torch.randn(shape, generator=gen, dtype=F64))
    want = param.detach().clone()
    optimizer = SM3([param], lr=0.1, variant=variant, momentum=momentum, impl=impl)
    accs = [torch.full((size,), TINY64, dtype=F64) for size in shape]
    buf = torch.zeros(shape, dtype=F64) if momentum else None
    for _ in range(3):
        grad = torch.randn(shape, generator=gen, dtype=F64)
        param.grad = grad.clone()
        optimizer.step()
        sm3_reference_step(want, grad, accs, buf, lr=0.1, variant=variant, momentum=momentum)
    torch.testing.assert_close(param.detach(), want, rtol=0, atol=1e-12)
    for ours, theirs in zip(optimizer.state[param]["accumulators"], accs, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@needs_fused_kernel
def test_wide_sparse_rows_split_by_columns_equal_the_dense_step() -> None:
    gen = torch.Generator().manual_seed(22)
    shape = (30, 140_000)
    dense = nn.Parameter(torch.randn(shape, generator=gen, dtype=F64))
    sparse = nn.Parameter(dense.detach().clone())
    optimizers = [SM3([p], lr=0.1, variant="ii", impl="fused") for p in (dense, sparse)]
    for step in range(3):
        rows = torch.tensor([step, 7, 12 + step, 7])  # a duplicate, and rows never touched
        values = torch.randn(len(rows), shape[1], generator=gen, dtype=F64)
        grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape)
        dense.grad, sparse.grad = grad.to_dense(), grad
        for optimizer in optimizers:
            optimizer.step()
    torch.testing.assert_close(sparse.detach(), dense.detach(), rtol=0, atol=1e-12)


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or not ctypes.util.find_library("c"),
    reason="measures with Linux /proc and glibc's malloc_trim",
)
@pytest.mark.parametrize(
    ("impl", "limit_mib"), [pytest.param("fused", 1, marks=needs_fused_kernel), ("forloop", 4)]
)
@pytest.mark.parametrize("variant", ["i", "ii"])
def test_scratch_stays_bounded_for_a_wide_matrix(impl: str, limit_mib: int, variant: str) -> None:
    """Per-thread column maxima of a 600,000-column matrix would be 2 x 2.4 MB (plus SM3-I's
    column inverses): split by columns, the fused step needs a few KB. The forloop step works in
    tiles of 256 KiB (one row x 65,536 columns here), where whole rows took 4.8 MB each."""
    torch.set_num_threads(2)  # the autouse fixture restores it
    param = nn.Parameter(torch.zeros(20, 600_000))
    param.grad = torch.full_like(param, 0.5)
    optimizer = SM3([param], variant=variant, impl=impl)
    optimizer.step()
    assert peak_rss_growth(lambda: torch.ones(2**20).sum()) >= 3 * 2**20  # sees 4 MiB
    growth = peak_rss_growth(optimizer.step)
    assert growth <= limit_mib * 2**20, (
        f"{growth / 2**20:.2f} MiB of scratch for a 20 x 600,000 matrix"
    )


def test_non_contiguous_accumulators_are_stepped_forloop_and_correctly() -> None:
    """State loaded with strided accumulators (e.g. from another program's state_dict) cannot go
    to the kernel, which reads raw memory: the forloop path steps it, with the same result."""
    gen = torch.Generator().manual_seed(9)
    init = torch.randn(4, 6, generator=gen, dtype=F64)
    grads = [torch.randn(4, 6, generator=gen, dtype=F64) for _ in range(3)]
    param = nn.Parameter(init.clone())
    optimizer = SM3([param], lr=0.1, variant="ii")
    param.grad = grads[0].clone()
    optimizer.step()
    state = optimizer.state[param]
    strided = []
    for acc in state["accumulators"]:
        holder = torch.zeros(2 * acc.numel(), dtype=F64)[::2]  # every other element
        holder.copy_(acc)
        strided.append(holder)
    state["accumulators"] = strided
    assert not any(a.is_contiguous() for a in strided)
    want, accs = init.clone(), [torch.full((n,), TINY64, dtype=F64) for n in (4, 6)]
    sm3_reference_step(want, grads[0], accs, None, lr=0.1, variant="ii")
    for grad in grads[1:]:
        param.grad = grad.clone()
        optimizer.step()
        sm3_reference_step(want, grad, accs, None, lr=0.1, variant="ii")
    torch.testing.assert_close(param.detach(), want, rtol=0, atol=1e-12)


def test_integer_tensors_are_refused() -> None:
    counts = torch.zeros(3, dtype=torch.int64)
    counts.grad = torch.ones(3, dtype=torch.int64)
    with pytest.raises(TypeError, match="real floating-point"):
        SM3([counts]).step()


@pytest.mark.parametrize("impl", ["fastest", "forloop"])
def test_an_empty_parameter_is_skipped_and_the_rest_are_stepped(impl: str) -> None:
    """A zero-size parameter (e.g. a layer of width 0) has nothing to update; the parameters
    after it in the group still take their step."""
    empty = nn.Parameter(torch.zeros(0, 4, dtype=F64))
    empty.grad = torch.zeros_like(empty)
    params = [nn.Parameter(torch.ones(3, 4, dtype=F64)) for _ in range(2)]
    for param in params:
        param.grad = torch.full_like(param, 0.5)
    SM3([params[0], empty, params[1]], lr=0.1, impl=impl).step()
    for param in params:  # first step of SM3: g / |g| = 1 everywhere
        torch.testing.assert_close(param.detach(), torch.full_like(param, 0.9), rtol=0, atol=1e-6)


def test_a_parameter_without_a_gradient_is_left_alone_and_the_rest_are_stepped() -> None:
    frozen, trained = (nn.Parameter(torch.ones(3, 4, dtype=F64)) for _ in range(2))
    trained.grad = torch.full_like(trained, 0.5)
    optimizer = SM3([frozen, trained], lr=0.1)
    optimizer.step()
    assert (
        torch.equal(frozen.detach(), torch.ones(3, 4, dtype=F64)) and frozen not in optimizer.state
    )
    torch.testing.assert_close(trained.detach(), torch.full_like(trained, 0.9), rtol=0, atol=1e-6)


def test_the_functional_core_defaults_to_the_class_defaults() -> None:
    """sm3() with no eps or momentum is the paper's rule: the class's default step."""
    from sm3repro.optim.sm3.optimizer import sm3

    gen = torch.Generator().manual_seed(10)
    init, grad = (
        torch.randn(3, 5, generator=gen, dtype=F64),
        torch.randn(3, 5, generator=gen, dtype=F64),
    )
    param = nn.Parameter(init.clone())
    param.grad = grad.clone()
    SM3([param], lr=0.1).step()
    functional = init.clone()
    accs = [torch.full((n,), TINY64, dtype=F64) for n in (3, 5)]
    sm3([functional], [grad.clone()], [accs], [None], lr=0.1, variant="ii")  # impl fastest
    torch.testing.assert_close(functional, param.detach(), rtol=0, atol=1e-12)
    # A buffer without a momentum: beta = 0, so the buffer holds this step's update and the
    # weights move exactly as without one.
    with_buffer, buffer = init.clone(), torch.zeros_like(init)
    accs = [torch.full((n,), TINY64, dtype=F64) for n in (3, 5)]
    sm3([with_buffer], [grad.clone()], [accs], [buffer], lr=0.1, variant="ii")
    torch.testing.assert_close(with_buffer, param.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(buffer, (init - with_buffer) / 0.1, rtol=1e-9, atol=1e-12)


# -- the training switch ------------------------------------------------------------------------


@pytest.mark.slow
def test_sparse_rows_training_matches_dense(run_harness, tmp_path) -> None:
    """1 epoch on 300 sentences, float32: dev scores with sparse rows are the dense ones (to
    0.01: the same arithmetic up to rounding order); Adam stays dense and says so."""
    run_harness(
        "-m",
        "optimizer=sgd,adagrad,sm3_ii,adam",
        "sparse_rows=false,true",
        "data.max_train_sentences=300",
        "data.max_eval_sentences=100",
        "epochs=1",
        "torch_threads=1",
        "logger.name=none",
        "checkpoint=false",
        timeout=900,
    )
    from conftest import read_records

    records = list(read_records(tmp_path / "results").values())
    assert len(records) == 8 and all(s["status"] == "completed" for s in records)
    adam = sorted(s["optimizer_impl"] for s in records if s["optimizer"] == "adam")
    assert adam[0] == "torch.optim.Adam(fused=True)"
    assert adam[1].endswith(
        "; word embedding: dense gradients (not exact for adam: its state moves every row)"
    )
    runs = {
        (s["optimizer"], "sparse rows" in s["optimizer_impl"]): s
        for s in records
        if s["optimizer"] != "adam"
    }
    assert len(runs) == 6
    for name in ("sgd", "adagrad", "sm3_ii"):
        dense, sparse = runs[name, False]["final"]["dev"], runs[name, True]["final"]["dev"]
        for score in ("las_macro", "uas_macro", "las_micro"):
            assert abs(dense[score] - sparse[score]) <= 0.01, (name, score, dense, sparse)
