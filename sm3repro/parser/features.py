"""Chen & Manning (2014) features and the featurized training set (cached on disk).

48 features per configuration: 18 words, 18 POS tags and 12 labels. The 18 token positions are
the top three stack items, the first three buffer items, the first/second leftmost and rightmost
children of s1 and s2, and the leftmost-of-leftmost / rightmost-of-rightmost children of s1 and
s2; labels are read for the 12 child positions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from sm3repro.parser.transitions import (
    ArcStandardBatch,
    EncodedCorpus,
    run_transitions,
)

# Bump when the feature layout or oracle changes: it invalidates cached training sets.
FEATURE_VERSION = 1
N_WORD_FEATURES, N_TAG_FEATURES, N_LABEL_FEATURES = 18, 18, 12
N_FEATURES = N_WORD_FEATURES + N_TAG_FEATURES + N_LABEL_FEATURES


def extract(state: ArcStandardBatch, active: np.ndarray) -> np.ndarray:
    """``[len(active), 48]`` int32 feature ids for the active sentences' configurations."""
    base = state.base[active][:, None]
    s1, s2, s3 = (state.stack_top(active, k) for k in (1, 2, 3))
    b1, b2, b3 = (state.buffer(active, k) for k in (1, 2, 3))
    b = base[:, 0]
    lc1, lc2, rc1, rc2 = state.lc1, state.lc2, state.rc1, state.rc2
    s1_lc1, s1_rc1 = lc1[b + s1], rc1[b + s1]
    s2_lc1, s2_rc1 = lc1[b + s2], rc1[b + s2]
    children = np.stack(
        [
            s1_lc1, s1_rc1, lc2[b + s1], rc2[b + s1],
            s2_lc1, s2_rc1, lc2[b + s2], rc2[b + s2],
            lc1[b + s1_lc1], rc1[b + s1_rc1], lc1[b + s2_lc1], rc1[b + s2_rc1],
        ],
        axis=1,
    )  # fmt: skip
    tokens = np.concatenate([np.stack([s1, s2, s3, b1, b2, b3], axis=1), children], axis=1)
    flat_tokens = tokens + base
    out = np.empty((len(active), N_FEATURES), dtype=np.int32)
    out[:, :N_WORD_FEATURES] = state.words[flat_tokens]
    out[:, N_WORD_FEATURES : N_WORD_FEATURES + N_TAG_FEATURES] = state.tags[flat_tokens]
    out[:, N_WORD_FEATURES + N_TAG_FEATURES :] = state.label_feat[children + base]
    return out


def oracle_examples(corpus: EncodedCorpus, n_relations: int) -> tuple[np.ndarray, np.ndarray]:
    """Every oracle configuration of every sentence: features ``[N, 48]`` and gold transitions.

    Rows are in step-major order: all sentences' first configurations (longest sentence first),
    then all second ones, and so on; the order depends on the corpus alone. Sentences must be
    projective (the static oracle cannot reach a non-projective tree).
    """
    total = int(2 * corpus.lengths.sum())
    features = np.empty((total, N_FEATURES), dtype=np.int32)
    gold = np.empty(total, dtype=np.int16)
    cursor = 0

    def record(state: ArcStandardBatch, active: np.ndarray, step: int) -> np.ndarray:
        nonlocal cursor
        rows = slice(cursor, cursor + len(active))
        cursor += len(active)
        features[rows] = extract(state, active)
        transitions = state.oracle(active)
        gold[rows] = transitions
        return transitions

    run_transitions(corpus, n_relations, record, oracle=True)
    return features, gold


def cache_key(*parts: str | bytes) -> str:
    """A short digest of everything the featurized set depends on."""
    h = hashlib.sha256(f"features-v{FEATURE_VERSION}".encode())
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def load_or_build(
    cache_dir: str | os.PathLike | None,
    key: str,
    build,
    source: tuple[str | os.PathLike, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Cached ``(features, gold)`` under ``cache_dir/key.npz``, built and saved when absent.

    Returns a flag saying whether the cache was hit. A damaged cache file is rebuilt.
    ``source`` is the training file and its sha256: a sidecar ``train-<key>.json`` records it,
    so that when the file changes, the cache built from its old version is reported (the key,
    which includes the checksum, already keeps it from being used) and removed.
    """
    import warnings

    path = Path(cache_dir) / f"train-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            with np.load(path) as data:
                return data["features"], data["gold"], True
        except Exception as err:  # a truncated or foreign file: rebuild it
            warnings.warn(f"feature cache {path} is unreadable ({err}); rebuilding", stacklevel=2)
    if path is not None and source is not None:
        for stale in _stale_caches(path.parent, source):
            warnings.warn(
                f"feature cache {stale} was built from an earlier version of {source[0]} "
                "(its checksum changed); rebuilding the features and removing the stale cache",
                stacklevel=2,
            )
            stale.unlink(missing_ok=True)
            stale.with_suffix(".json").unlink(missing_ok=True)
    features, gold = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, features=features, gold=gold)
        os.replace(tmp, path)
        if source is not None:
            from sm3repro.io import atomic_write_json

            sidecar = {"source": str(Path(source[0]).resolve()), "sha256": source[1]}
            atomic_write_json(path.with_suffix(".json"), sidecar)
    return features, gold, False


def _stale_caches(cache_dir: Path, source: tuple[str | os.PathLike, str]) -> list[Path]:
    """Caches whose sidecar names the same training file with another checksum."""
    import json

    where, checksum = str(Path(source[0]).resolve()), source[1]
    stale = []
    for sidecar in sorted(cache_dir.glob("train-*.json")):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue  # another process is replacing it, or it is foreign: not ours to judge
        same_file = isinstance(meta, dict) and meta.get("source") == where
        if same_file and meta.get("sha256") != checksum:
            stale.append(sidecar.with_suffix(".npz"))
    return stale
