"""Parser speed on EWT, measured side by side in one run, against the issue's targets.

    python scripts/bench_parser.py [--data DIR] [--threads 2] [--repeats 5]

Figures: reading train with the `conllu`-based reader (reported apart); oracle + 48-feature
extraction for all of train; reloading the feature cache; greedy decoding of EWT test with a
trained-size model (48 features, hidden 200+200, labeled output), all included (encoding,
first-layer table, transitions, scoring), with and without the precomputed first layer.
The peer (Stanford CS224n parser, measured on this machine, see shared notes): featurizes
train in 5.0 s and parses test at ~3,400 sentences/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sm3repro.data.treebank import read_treebank
from sm3repro.data.vocab import TreebankView, Vocab
from sm3repro.parser.decode import parse
from sm3repro.parser.features import cache_key, load_or_build, oracle_examples
from sm3repro.parser.model import ChenManningParser
from sm3repro.parser.transitions import encode
from sm3repro.paths import ewt_data_dir

PEER_FEATURIZE_S = 5.0
PEER_SENT_PER_S = 3400.0


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    default_data = ewt_data_dir(Path(__file__).resolve().parent.parent)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=default_data, help="folder with en_ewt-ud-*.conllu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)

    read_s, train = timed(lambda: read_treebank(data / "en_ewt-ud-train.conllu"), 1)
    test = read_treebank(data / "en_ewt-ud-test.conllu")
    vocab = Vocab.build(train, TreebankView(), min_word_freq=2)
    projective = [s for s in train if s.is_projective()]

    def featurize():
        return oracle_examples(encode(projective, vocab), len(vocab.relations))

    feat_s, (features, gold) = timed(featurize, args.repeats)
    with tempfile.TemporaryDirectory() as cache:
        key = cache_key("bench", vocab.to_json())
        load_or_build(cache, key, lambda: (features, gold))
        reload_s, _ = timed(lambda: load_or_build(cache, key, featurize), args.repeats)

    torch.manual_seed(0)
    model = ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions
    )
    model.eval()
    decode_s, _ = timed(lambda: parse(model, encode(test, vocab), precompute=True), args.repeats)
    direct_s, _ = timed(lambda: parse(model, encode(test, vocab), precompute=False), args.repeats)
    rate, direct_rate = len(test) / decode_s, len(test) / direct_s

    print(
        f"EWT train: {len(train):,} sentences, {len(projective):,} projective, "
        f"{len(features):,} configurations; test: {len(test):,} sentences; threads {args.threads}"
    )
    print(f"{'figure':<52} {'value':>12} {'vs peer':>9}")
    print(f"{'read train (conllu reader + validation), s':<52} {read_s:>12.3f} {'':>9}")
    print(
        f"{'oracle + 48 features, all of train, s':<52} {feat_s:>12.3f} "
        f"{PEER_FEATURIZE_S / feat_s:>8.1f}x"
    )
    print(f"{'reload feature cache, s':<52} {reload_s:>12.3f} {PEER_FEATURIZE_S / reload_s:>8.1f}x")
    print(
        f"{'decode test, precomputed first layer, sent/s':<52} {rate:>12,.0f} "
        f"{rate / PEER_SENT_PER_S:>8.1f}x"
    )
    print(f"{'decode test, direct forward pass, sent/s':<52} {direct_rate:>12,.0f} "
          f"{direct_rate / PEER_SENT_PER_S:>8.1f}x")  # fmt: skip
    checks = [
        ("oracle + features <= 1.0 s", feat_s <= 1.0),
        ("cache reload <= 0.5 s", reload_s <= 0.5),
        ("decoding >= 10,000 sentences/s", rate >= 10_000),
    ]
    for name, ok in checks:
        print(f"target {name}: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
