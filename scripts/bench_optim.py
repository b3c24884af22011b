"""Optimizer step time and state bytes on the parser's real parameter shapes.

Every optimizer gets its own copy of the parameters and the same random, real-sized (dense)
gradients; their steps are timed side by side in interleaved rounds (round-robin, so load from
other processes hits all of them alike) and the median per-step time over rounds is reported,
as a ratio to torch's default Adagrad, with each optimizer's state bytes; SM3's dense steps
are also given against torch's fused Adagrad. Two more measures: SM3-II's step with row-sparse
word-embedding gradients (the rows of the words in real batch-64 EWT configurations) against
its own dense step, timed the same way; and SM3's scratch outside its state (peak resident
memory above the state, from /proc) for the parser shapes and one 100M-element parameter.
OpenMP workers are
set to sleep rather than spin at barriers (OMP_WAIT_POLICY=PASSIVE unless set otherwise): on a
shared machine spinning made every parallel op wait for a descheduled worker.

    python scripts/bench_optim.py [--threads 2] [--rounds 15] [--steps 20] [--json out.json]
        [--sparse-batches 64] [--scratch-numel 100000000]
"""

from __future__ import annotations

import os

# On a shared machine, OpenMP threads that spin at barriers turn every parallel op into a wait
# for a descheduled worker (measured here: ~8 ms per op while other processes ran). Sleeping
# workers let the scheduler move the work and keep timings meaningful for every optimizer
# alike. Must be set before torch loads the OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sm3repro.data.download import EWT_FILES  # noqa: E402
from sm3repro.data.treebank import Sentence, read_treebank  # noqa: E402
from sm3repro.data.vocab import TreebankView, Vocab  # noqa: E402
from sm3repro.optim import SM3, optimizer_state_bytes  # noqa: E402
from sm3repro.optim.catalog import CATALOG  # noqa: E402
from sm3repro.optim.sm3 import fused as sm3_fused  # noqa: E402
from sm3repro.optim.sm3.optimizer import kernel_for  # noqa: E402
from sm3repro.parser.features import N_WORD_FEATURES, oracle_examples  # noqa: E402
from sm3repro.parser.model import ChenManningParser  # noqa: E402
from sm3repro.parser.transitions import encode  # noqa: E402
from sm3repro.paths import config_dir, ewt_data_dir  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN = ewt_data_dir(REPO_ROOT) / EWT_FILES["train"]
WORDS = "word_embed.weight"  # the parameter that gets row-sparse gradients
LR = 0.01
# SM3-II's whole sparse-rows step may exceed the sum of its two parts timed alone (the other
# parameters' dense step, the word table's sparse step) by at most 10%. One step holding both
# does no work the two parts do not (it enters step() once, not twice), so what exceeds the
# noise is overhead of mixing a sparse gradient into the step. Six repeats of this measure on
# the 2-core box gave 1.00-1.02x: 10% leaves room for a busier machine, while a sparse path
# that lost its advantage (e.g. densified the word table: its dense step is ~0.25 ms of the
# ~0.32 ms floor) would land near 1.5x and fail.
SPARSE_FLOOR_MARGIN = 1.10


def study_vocab(train: Path) -> tuple[Vocab, list[Sentence]]:
    """The vocabulary a training run builds from ``train`` with the project's data config
    (``conf/data/ud_ewt.yaml``: lowercased words seen at least ``min_word_freq`` times), and
    the sentences."""
    cfg = OmegaConf.load(config_dir() / "data" / "ud_ewt.yaml")
    view = TreebankView(pos_column=cfg.pos_column, labels=cfg.labels, lowercase=cfg.lowercase)
    sentences = read_treebank(train)
    return Vocab.build(sentences, view, cfg.min_word_freq), sentences


def parser_shapes(vocab: int, n_tags: int, n_labels: int, n_transitions: int) -> dict:
    """Parameter name -> shape of the study's parser (the project's model class, its defaults)."""
    model = ChenManningParser(vocab, n_tags, n_labels, n_transitions)
    return {name: tuple(param.shape) for name, param in model.named_parameters()}


def candidates() -> list[tuple[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]]:
    found = [
        ("torch SGD", lambda ps: torch.optim.SGD(ps, lr=LR)),
        ("torch Adagrad (default)", lambda ps: torch.optim.Adagrad(ps, lr=LR)),
        ("torch Adagrad (fused)", lambda ps: torch.optim.Adagrad(ps, lr=LR, fused=True)),
        ("torch Adam (default)", lambda ps: torch.optim.Adam(ps, lr=LR)),
        ("torch Adam (fused)", lambda ps: torch.optim.Adam(ps, lr=LR, fused=True)),
        ("SM3-I", lambda ps: SM3(ps, lr=LR, variant="i")),
        ("SM3-II", lambda ps: SM3(ps, lr=LR, variant="ii")),
        ("SM3-I (forloop)", lambda ps: SM3(ps, lr=LR, variant="i", impl="forloop")),
        ("SM3-II (forloop)", lambda ps: SM3(ps, lr=LR, variant="ii", impl="forloop")),
    ]
    try:
        from pytorch_optimizer import SM3 as PeerSM3
    except ImportError:
        print("pytorch_optimizer is not installed: skipping the peer pytorch_optimizer.SM3")
    else:
        found.append(("pytorch_optimizer.SM3", lambda ps: PeerSM3(ps, lr=LR)))
    return found


def batch_word_rows(
    vocab: Vocab, sentences: list[Sentence], n_batches: int, batch: int, seed: int
) -> list[torch.Tensor]:
    """One LongTensor of word ids per batch: the word features of ``batch`` random oracle
    configurations of the projective train trees, as in training."""
    projective = [s for s in sentences if s.is_projective()]
    features, _ = oracle_examples(encode(projective, vocab), len(vocab.relations))
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    words = torch.from_numpy(features[:, :N_WORD_FEATURES]).long()
    picks = order[: n_batches * batch].view(n_batches, batch)
    return [words[rows].flatten() for rows in picks]


def sparse_row_grad(words: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """An uncoalesced row-sparse gradient like nn.Embedding(sparse=True)'s for these words."""
    values = torch.randn(len(words), shape[1])
    return torch.sparse_coo_tensor(words.unsqueeze(0), values, shape)


def bench_sparse_rows(args: argparse.Namespace, shapes: dict, batches: list) -> dict:
    """SM3-II with a row-sparse word-embedding gradient vs the same optimizer's dense step
    (every other parameter dense in both), interleaved rounds, medians; the floor a sparse
    step is held to (the dense step of every parameter but the word embedding, plus the word
    table's own sparse-row step); and torch's SGD and Adagrad with sparse rows vs their fused
    dense steps (which one is their fastest exact implementation: the catalog's
    sparse_rows_faster)."""
    dense_grads = [{k: torch.randn(s) for k, s in shapes.items()} for _ in range(2)]
    sparse_grads = [
        dict(dense_grads[i % 2], **{WORDS: sparse_row_grad(words, shapes[WORDS])})
        for i, words in enumerate(batches)
    ]
    others = [{k: g for k, g in grads.items() if k != WORDS} for grads in dense_grads]
    words_dense = [{WORDS: grads[WORDS]} for grads in dense_grads]
    words_sparse = [{WORDS: grads[WORDS]} for grads in sparse_grads]
    sm3 = lambda ps: SM3(ps, lr=LR, variant="ii")  # noqa: E731
    sgd_fused = lambda ps: torch.optim.SGD(ps, lr=LR, fused=True)  # noqa: E731
    adagrad_fused = lambda ps: torch.optim.Adagrad(ps, lr=LR, fused=True)  # noqa: E731
    # torch's SGD and Adagrad take sparse gradients only on their single-tensor path
    sgd_sparse = lambda ps: torch.optim.SGD(ps, lr=LR)  # noqa: E731
    adagrad_sparse = lambda ps: torch.optim.Adagrad(ps, lr=LR)  # noqa: E731
    cases = {
        "dense": (sm3, dense_grads), "sparse rows": (sm3, sparse_grads),
        "others only": (sm3, others), "word table dense": (sm3, words_dense),
        "word table sparse rows": (sm3, words_sparse),
        "SGD fused dense": (sgd_fused, dense_grads), "SGD sparse rows": (sgd_sparse, sparse_grads),
        "Adagrad fused dense": (adagrad_fused, dense_grads),
        "Adagrad sparse rows": (adagrad_sparse, sparse_grads),
    }  # fmt: skip
    runs = {}
    for label, (make, grad_sets) in cases.items():
        params = [nn.Parameter(torch.randn(shapes[k]) * 0.1) for k in grad_sets[0]]
        runs[label] = (params, make(params), grad_sets, [])

    def run_steps(params, optimizer, grad_sets, steps: int) -> float:
        start = time.perf_counter()
        for step in range(steps):
            for param, grad in zip(params, grad_sets[step % len(grad_sets)].values(), strict=True):
                param.grad = grad
            optimizer.step()
        return (time.perf_counter() - start) / steps

    for params, optimizer, grad_sets, _ in runs.values():
        run_steps(params, optimizer, grad_sets, args.warmup)
    for _ in range(args.rounds):
        for params, optimizer, grad_sets, times in runs.values():
            times.append(run_steps(params, optimizer, grad_sets, args.steps))
    result = {label: statistics.median(run[3]) * 1e3 for label, run in runs.items()}
    unique = statistics.median(len(torch.unique(words)) for words in batches)
    result["unique_rows_median"] = unique
    return result


def _rss(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def sm3_scratch_bytes(shapes: list[tuple[int, ...]], variant: str, impl: str) -> int:
    """Peak resident memory of two SM3 steps above everything allocated before them (the
    parameters, gradients and state): SM3's scratch, whichever path runs. Linux only."""
    params = [nn.Parameter(torch.zeros(s)) for s in shapes]
    for param in params:
        param.grad = torch.full_like(param, 0.5)
    optimizer = SM3(params, lr=LR, variant=variant, impl=impl)
    optimizer.step()  # allocates the state
    gc.collect()
    # Hand free heap memory back to the OS first: a step reusing it would not grow the RSS.
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the RSS now
    before = _rss("VmRSS")
    optimizer.step()
    optimizer.step()
    return _rss("VmHWM") - before  # SM3 holds no scratch between steps: the peak is all of it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (2)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (15)")
    parser.add_argument("--steps", type=int, default=20, help="steps per optimizer per round (20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (5)")
    parser.add_argument("--vocab-size", type=int, default=None, help="override the vocabulary")
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="EWT train .conllu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--sparse-batches", type=int, default=64, help="EWT batches of 64 for the sparse rows"
    )
    parser.add_argument(
        "--scratch-numel", type=int, default=100_000_000, help="large parameter for scratch"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    treebank = None
    if args.train.is_file():
        treebank = study_vocab(args.train)
        vocab = treebank[0]
        sizes = [len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions]
    elif args.vocab_size is None:
        parser.error(f"{args.train} not found: run `make data`, or pass --train or --vocab-size")
    else:
        sizes = [args.vocab_size, 52, 54, 101]  # EWT's tag, label and transition counts
    if args.vocab_size is not None:
        sizes[0] = args.vocab_size
    shapes = parser_shapes(*sizes)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}, {platform.processor() or platform.machine()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print("shapes: " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))
    print(f"{n_params:,} parameters (float32)")
    kernel_start = time.perf_counter()
    kernel = kernel_for("fastest")
    print(
        f"SM3 impl=fastest runs: {'fused' if kernel else 'forloop (fused kernel unavailable)'}, "
        f"ready in {time.perf_counter() - kernel_start:.1f} s (cold build "
        f"{'this run' if sm3_fused.build_seconds() and sm3_fused.build_seconds() > 5 else 'cached'})"
    )
    load_before = os.getloadavg()[0]

    initial = {k: torch.randn(s) * 0.1 for k, s in shapes.items()}
    # Two gradient sets, alternated, so no step sees exactly the previous step's gradient.
    grad_sets = [{k: torch.randn(s) for k, s in shapes.items()} for _ in range(2)]

    runs = []
    for label, make in candidates():
        params = [nn.Parameter(t.clone()) for t in initial.values()]
        optimizer = make(params)
        runs.append({"label": label, "params": params, "optimizer": optimizer, "times": []})

    def run_steps(run: dict, steps: int) -> float:
        params, optimizer = run["params"], run["optimizer"]
        start = time.perf_counter()
        for step in range(steps):
            grads = grad_sets[step % 2]
            for param, grad in zip(params, grads.values(), strict=True):
                param.grad = grad
            optimizer.step()
        return (time.perf_counter() - start) / steps

    for run in runs:
        run_steps(run, args.warmup)
    for _ in range(args.rounds):
        for run in runs:
            run["times"].append(run_steps(run, args.steps))

    load_after = os.getloadavg()[0]
    by_label = {run["label"]: run for run in runs}
    for run in runs:
        run["median_ms"] = statistics.median(run["times"]) * 1e3
        run["state_bytes"] = optimizer_state_bytes(run["optimizer"])
    base = by_label["torch Adagrad (default)"]
    adam = by_label["torch Adam (default)"]

    header = (
        f"{'optimizer':<26}{'step ms':>9}{'x Adagrad':>11}{'state bytes':>14}"
        f"{'% Adam':>9}{'% Adagrad':>11}"
    )
    print()
    print(header)
    print("-" * len(header))
    for run in runs:
        run["x_adagrad"] = run["median_ms"] / base["median_ms"]
        run["pct_adam"] = 100.0 * run["state_bytes"] / adam["state_bytes"]
        run["pct_adagrad"] = 100.0 * run["state_bytes"] / base["state_bytes"]
        print(
            f"{run['label']:<26}{run['median_ms']:>9.3f}{run['x_adagrad']:>10.2f}x"
            f"{run['state_bytes']:>14,}{run['pct_adam']:>8.2f}%{run['pct_adagrad']:>10.2f}%"
        )

    fused_adagrad = by_label["torch Adagrad (fused)"]
    print()
    for name in ("SM3-I", "SM3-II", "SM3-I (forloop)", "SM3-II (forloop)"):
        run = by_label[name]
        run["x_fused_adagrad"] = run["median_ms"] / fused_adagrad["median_ms"]
        print(f"{name:<26}{run['x_fused_adagrad']:>9.2f}x torch Adagrad (fused)")

    checks = []
    for name in ("SM3-I", "SM3-II"):
        ratio = by_label[name]["x_fused_adagrad"]
        checks.append((f"{name} step <= 1.0x torch Adagrad (fused): {ratio:.2f}x", ratio <= 1.0))

    sparse = None
    if treebank is not None and args.sparse_batches > 0 and args.vocab_size is None:
        batches = batch_word_rows(*treebank, args.sparse_batches, 64, args.seed)
        sparse = bench_sparse_rows(args, shapes, batches)
        ratio = sparse["sparse rows"] / sparse["dense"]
        sparse["ratio"] = ratio
        sparse["floor_ratio"] = sparse["others only"] / sparse["dense"]
        # What a sparse step can reach: the other parameters' dense step plus the word table's
        # sparse step, each timed alone. The whole sparse step is held to this, not to a share
        # of the dense step: the others alone are already about half of it on these shapes.
        sparse["floor_ms"] = sparse["others only"] + sparse["word table sparse rows"]
        sparse["vs_floor"] = sparse["sparse rows"] / sparse["floor_ms"]
        share = torch.Size(shapes[WORDS]).numel() / n_params
        print(
            f"\nSM3-II, batch-64 word rows (median {sparse['unique_rows_median']:.0f} unique of "
            f"{shapes[WORDS][0]}; the word table is {share:.0%} of the parameters): sparse rows "
            f"{sparse['sparse rows']:.3f} ms, dense {sparse['dense']:.3f} ms per step; every "
            f"other parameter alone (the floor) {sparse['others only']:.3f} ms = "
            f"{sparse['floor_ratio']:.2f}x the dense step; the word table's own step "
            f"{sparse['word table sparse rows']:.3f} ms sparse vs {sparse['word table dense']:.3f} ms "
            f"dense = {sparse['word table sparse rows'] / sparse['word table dense']:.2f}x"
        )
        print(
            f"SM3-II sparse rows vs the floor (others {sparse['others only']:.3f} + word table "
            f"sparse {sparse['word table sparse rows']:.3f} = {sparse['floor_ms']:.3f} ms): "
            f"{sparse['vs_floor']:.2f}x; vs its dense step: {ratio:.2f}x (a figure, not a "
            f"target: the floor alone is {sparse['floor_ms'] / sparse['dense']:.2f}x of it)"
        )
        checks.append((
            f"SM3-II sparse-rows step <= {SPARSE_FLOOR_MARGIN:.2f}x its floor (other parameters' "
            f"step + the word table's sparse step): {sparse['vs_floor']:.2f}x",
            sparse["vs_floor"] <= SPARSE_FLOOR_MARGIN,
        ))  # fmt: skip
        for name, key in (("SGD", "sgd"), ("Adagrad", "adagrad")):
            torch_ratio = sparse[f"{name} sparse rows"] / sparse[f"{name} fused dense"]
            print(
                f"{name}: sparse rows {sparse[f'{name} sparse rows']:.3f} ms vs fused dense "
                f"{sparse[f'{name} fused dense']:.3f} ms = {torch_ratio:.2f}x"
            )
            faster = CATALOG[key].sparse_rows_faster
            checks.append((
                f"catalog: {name}'s fastest exact step is "
                f"{'sparse rows' if faster else 'fused dense'} ({torch_ratio:.2f}x)",
                (torch_ratio < 1.0) == faster,
            ))  # fmt: skip

    scratch = {}
    if Path("/proc/self/clear_refs").exists() and ctypes.util.find_library("c"):
        print()
        limit = 4 * 2**20
        cases = {
            "parser shapes": list(shapes.values()),
            f"{args.scratch_numel:,}-element parameter": [(args.scratch_numel // 10_000, 10_000)],
            # the first hidden layer of the memory arm's 200.7M-parameter parser (embed 10,800)
            "200 x 518,400 matrix": [(200, 518_400)],
        }
        for case, case_shapes in cases.items():
            for variant, impl in itertools.product(("i", "ii"), ("fastest", "forloop")):
                name = f"SM3-{variant.upper()}" + (" (forloop)" if impl == "forloop" else "")
                got = sm3_scratch_bytes(case_shapes, variant, impl)
                scratch[f"{name} {case}"] = got
                print(f"{name} scratch outside its state, {case}: {got:,} bytes")
                checks.append(
                    (f"{name} scratch <= 4 MiB, {case}: {got / 2**20:.2f} MiB", got <= limit)
                )

    peer = by_label.get("pytorch_optimizer.SM3")
    for name in ("SM3-I", "SM3-II"):
        run = by_label[name]
        checks.append(
            (f"{name} step time <= 1.0x torch Adagrad (default)", run["x_adagrad"] <= 1.0)
        )
        if peer is not None:
            checks.append(
                (
                    f"{name} step faster than pytorch_optimizer.SM3",
                    run["median_ms"] < peer["median_ms"],
                )
            )
        checks.append((f"{name} state bytes <= 1% of Adam's", run["pct_adam"] <= 1.0))
        checks.append((f"{name} state bytes <= 2% of Adagrad's", run["pct_adagrad"] <= 2.0))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    cores = os.cpu_count() or 1
    print(f"\nload average {load_before:.2f} before, {load_after:.2f} after, on {cores} cores")
    others = max(load_before, load_after) - 1.0  # the 1-minute average counts this process too
    if others > cores - args.threads + 0.5:
        print(
            "note: other processes were busy on this machine, so absolute times are inflated and "
            "noisy; the ratios (interleaved rounds) are steadier. Re-run and compare medians."
        )
        if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and args.threads > 1:
            print(
                "note: without OMP_WAIT_POLICY=PASSIVE, busy cores stall every parallel op on a "
                "descheduled OpenMP worker, penalising optimizers that issue more ops."
            )

    if args.json is not None:
        result = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "shapes": {k: list(v) for k, v in shapes.items()},
            "n_params": n_params,
            "load_average": [load_before, load_after],
            "optimizers": [
                {
                    key: run[key]
                    for key in (
                        "label",
                        "median_ms",
                        "x_adagrad",
                        "state_bytes",
                        "pct_adam",
                        "pct_adagrad",
                    )
                    if key in run
                }
                | {"min_ms": min(run["times"]) * 1e3}
                | {"round_ms": [t * 1e3 for t in run["times"]]}
                for run in runs
            ],
            "sparse_rows": sparse,
            "scratch_bytes": scratch,
            "checks": [{"check": text, "pass": ok} for text, ok in checks],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
