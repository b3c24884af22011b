"""From config to tensors: read the treebanks, build vocabularies, featurize (cached)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sm3repro.data.treebank import Sentence, read_treebank
from sm3repro.data.vocab import TreebankView, Vocab
from sm3repro.io import sha256_file
from sm3repro.parser.features import cache_key, load_or_build, oracle_examples
from sm3repro.parser.transitions import EncodedCorpus, encode


@dataclass
class EvalSet:
    sentences: list[Sentence]
    corpus: EncodedCorpus


@dataclass
class ParserData:
    vocab: Vocab
    features: np.ndarray  # [N, 48] int32 oracle configurations of the projective train trees
    gold: np.ndarray  # [N] gold transition ids
    dev: EvalSet
    test: EvalSet
    stats: dict = field(default_factory=dict)


def load_data(cfg: DictConfig, cache_dir: str | Path | None) -> ParserData:
    """Everything the training loop needs, with load and featurization times in ``stats``."""
    t0 = time.perf_counter()
    train = read_treebank(cfg.train)
    dev = read_treebank(cfg.dev)
    test = read_treebank(cfg.test)
    if cfg.max_train_sentences:
        train = train[: cfg.max_train_sentences]
    if cfg.max_eval_sentences:
        dev, test = dev[: cfg.max_eval_sentences], test[: cfg.max_eval_sentences]
    view = TreebankView(pos_column=cfg.pos_column, labels=cfg.labels, lowercase=cfg.lowercase)
    vocab = Vocab.build(train, view, cfg.min_word_freq)
    checksums = {split: sha256_file(cfg[split]) for split in ("train", "dev", "test")}
    t1 = time.perf_counter()

    projective = [s for s in train if s.is_projective()]
    key = cache_key(checksums["train"], str(cfg.max_train_sentences), vocab.to_json())

    def build() -> tuple[np.ndarray, np.ndarray]:
        return oracle_examples(encode(projective, vocab), len(vocab.relations))

    features, gold, cache_hit = load_or_build(
        cache_dir, key, build, source=(cfg.train, checksums["train"])
    )
    t2 = time.perf_counter()
    stats = {
        "name": cfg.name,
        "train_sentences": len(train),
        "train_projective_sentences": len(projective),
        "skipped_nonprojective": len(train) - len(projective),
        "train_examples": int(len(gold)),
        "dev_sentences": len(dev),
        "test_sentences": len(test),
        "vocab_words": len(vocab.words),
        "vocab_tags": len(vocab.tags),
        "vocab_labels": len(vocab.labels),
        "n_transitions": vocab.n_transitions,
        "checksums": checksums,
        "feature_cache_hit": cache_hit,
        "read_s": round(t1 - t0, 3),
        "featurize_s": round(t2 - t1, 3),
    }
    return ParserData(
        vocab=vocab,
        features=features,
        gold=gold,
        dev=EvalSet(dev, encode(dev, vocab)),
        test=EvalSet(test, encode(test, vocab)),
        stats=stats,
    )


_DATA_MEMO: dict[str, ParserData] = {}


def load_data_once(cfg: DictConfig) -> ParserData:
    """A multirun trains many configs in one process: read and featurize the data once."""
    key = OmegaConf.to_yaml(cfg.data, resolve=True)
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # keep one data set in memory, not one per sweep value
        _DATA_MEMO[key] = load_data(cfg.data, cfg.cache_dir)
        return _DATA_MEMO[key]
    data = _DATA_MEMO[key]
    data.stats = {**data.stats, "read_s": 0.0, "featurize_s": 0.0, "reused_in_process": True}
    return data
