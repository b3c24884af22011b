"""Optimizer step time and state bytes on the parser's real parameter shapes.

Every optimizer gets its own copy of the parameters and the same random, real-sized (dense)
gradients; their steps are timed side by side in interleaved rounds (round-robin, so load from
other processes hits all of them alike) and the median per-step time over rounds is reported,
as a ratio to torch's default Adagrad, with each optimizer's state bytes. OpenMP workers are
set to sleep rather than spin at barriers (OMP_WAIT_POLICY=PASSIVE unless set otherwise): on a
shared machine spinning made every parallel op wait for a descheduled worker.

    python scripts/bench_optim.py [--threads 2] [--rounds 15] [--steps 20] [--json out.json]
"""

from __future__ import annotations

import os

# On a shared machine, OpenMP threads that spin at barriers turn every parallel op into a wait
# for a descheduled worker (measured here: ~8 ms per op while other processes ran). Sleeping
# workers let the scheduler move the work and keep timings meaningful for every optimizer
# alike. Must be set before torch loads the OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sm3repro.data.download import EWT_FILES  # noqa: E402
from sm3repro.optim import SM3, optimizer_state_bytes  # noqa: E402
from sm3repro.paths import ewt_data_dir  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN = ewt_data_dir(REPO_ROOT) / EWT_FILES["train"]
N_SPECIALS = 3  # padding, unknown, root
EMBED, HIDDEN, N_FEATURES = 50, 200, 48
LR = 0.01


def treebank_sizes(path: Path) -> tuple[int, int, int]:
    """(word vocabulary, POS tags, labels) of a CoNLL-U file: lowercased FORMs with min frequency
    1, XPOS tags and DEPRELs, each plus the specials. A quick plain read, enough for shapes."""
    words: set[str] = set()
    tags: set[str] = set()
    labels: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if "-" in cols[0] or "." in cols[0]:  # multiword ranges and empty nodes
                continue
            words.add(cols[1].lower())
            tags.add(cols[4])
            labels.add(cols[7])
    return len(words) + N_SPECIALS, len(tags) + N_SPECIALS, len(labels) + N_SPECIALS


def parser_shapes(vocab: int, n_tags: int, n_labels: int) -> dict[str, tuple[int, ...]]:
    n_relations = n_labels - N_SPECIALS
    n_out = 2 * n_relations + 1  # shift + left/right arc per relation
    return {
        "word_embedding": (vocab, EMBED),
        "pos_embedding": (n_tags, EMBED),
        "label_embedding": (n_labels, EMBED),
        "W1": (HIDDEN, N_FEATURES * EMBED),
        "b1": (HIDDEN,),
        "W2": (HIDDEN, HIDDEN),
        "b2": (HIDDEN,),
        "W_out": (n_out, HIDDEN),
        "b_out": (n_out,),
    }


def candidates() -> list[tuple[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]]:
    found = [
        ("torch SGD", lambda ps: torch.optim.SGD(ps, lr=LR)),
        ("torch Adagrad (default)", lambda ps: torch.optim.Adagrad(ps, lr=LR)),
        ("torch Adagrad (fused)", lambda ps: torch.optim.Adagrad(ps, lr=LR, fused=True)),
        ("torch Adam (default)", lambda ps: torch.optim.Adam(ps, lr=LR)),
        ("torch Adam (fused)", lambda ps: torch.optim.Adam(ps, lr=LR, fused=True)),
        ("SM3-I", lambda ps: SM3(ps, lr=LR, variant="i")),
        ("SM3-II", lambda ps: SM3(ps, lr=LR, variant="ii")),
    ]
    try:
        from pytorch_optimizer import SM3 as PeerSM3
    except ImportError:
        print("pytorch_optimizer is not installed: skipping the peer pytorch_optimizer.SM3")
    else:
        found.append(("pytorch_optimizer.SM3", lambda ps: PeerSM3(ps, lr=LR)))
    return found


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
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.train.is_file():
        vocab, n_tags, n_labels = treebank_sizes(args.train)
    elif args.vocab_size is None:
        parser.error(f"{args.train} not found: run `make data`, or pass --train or --vocab-size")
    else:
        vocab, n_tags, n_labels = args.vocab_size, 52, 54
    if args.vocab_size is not None:
        vocab = args.vocab_size
    shapes = parser_shapes(vocab, n_tags, n_labels)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}, {platform.processor() or platform.machine()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print("shapes: " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))
    print(f"{n_params:,} parameters (float32)")
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
        workspace = getattr(run["optimizer"], "_workspace", None)  # SM3's scratch, not state
        run["scratch_bytes"] = workspace.nbytes() if workspace is not None else None
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
    for run in runs:
        if run["scratch_bytes"] is not None:
            print(
                f"{run['label']}: plus {run['scratch_bytes']:,} bytes of reusable scratch outside "
                "its state (one buffer the size of the largest parameter, the transient memory "
                "torch's default Adagrad allocates every step, and small reduction buffers)"
            )

    checks = []
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
                        "scratch_bytes",
                    )
                }
                | {"min_ms": min(run["times"]) * 1e3}
                | {"round_ms": [t * 1e3 for t in run["times"]]}
                for run in runs
            ],
            "checks": [{"check": text, "pass": ok} for text, ok in checks],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
