"""Vocabularies for words, POS tags and dependency labels, built from the training split only."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sm3repro.data.treebank import Sentence

NULL, ROOT, UNK = "<NULL>", "<ROOT>", "<UNK>"
SPECIALS = (NULL, ROOT, UNK)
NULL_ID, ROOT_ID, UNK_ID = 0, 1, 2
POS_COLUMNS = ("xpos", "upos", "both", "all")
LABELS = ("full", "universal")  # relations as written (nmod:poss), or their universal part


def universal_label(deprel: str) -> str:
    """The universal part of a UD relation: ``nmod`` for ``nmod:poss``."""
    return deprel.split(":", 1)[0]


@dataclass(frozen=True)
class TreebankView:
    """Which columns the parser reads: the POS column and the label granularity."""

    # "xpos" (PTB-style, default), "upos", "both" (UPOS|XPOS) or "all" (UPOS|XPOS|FEATS)
    pos_column: str = "xpos"
    labels: str = "full"  # "full" (nmod:poss) or "universal" (nmod)
    lowercase: bool = True

    def __post_init__(self) -> None:
        if self.pos_column not in POS_COLUMNS:
            raise ValueError(
                f"data.pos_column must be one of {', '.join(POS_COLUMNS)}, got {self.pos_column!r}"
            )
        if self.labels not in LABELS:
            raise ValueError(f"data.labels must be one of {', '.join(LABELS)}, got {self.labels!r}")

    def words(self, sent: Sentence) -> list[str]:
        return [w.lower() for w in sent.forms] if self.lowercase else list(sent.forms)

    def tags(self, sent: Sentence) -> list[str]:
        if self.pos_column == "both":  # UD's AUX/VERB split is invisible in PTB tags alone
            return [f"{u}|{x}" for u, x in zip(sent.upos, sent.xpos, strict=True)]
        if self.pos_column == "all":  # one symbol per tag bundle, as UDPipe embeds FEATS
            if len(sent.feats) != len(sent):
                raise ValueError("data.pos_column=all needs the FEATS column, which is absent")
            return [
                f"{u}|{x}|{f}" for u, x, f in zip(sent.upos, sent.xpos, sent.feats, strict=True)
            ]
        return sent.xpos if self.pos_column == "xpos" else sent.upos

    def deprels(self, sent: Sentence) -> list[str]:
        if self.labels == "full":
            return list(sent.deprels)
        return [universal_label(r) for r in sent.deprels]


@dataclass
class Vocab:
    """Index maps; ids 0, 1, 2 are NULL, ROOT and UNK in all three."""

    words: list[str]
    tags: list[str]
    labels: list[str]
    view: TreebankView
    word_counts: list[int] | None = None  # train frequency of each word id (0 for specials)

    def __post_init__(self) -> None:
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.tag_index = {t: i for i, t in enumerate(self.tags)}
        self.label_index = {lab: i for i, lab in enumerate(self.labels)}

    @property
    def relations(self) -> list[str]:
        """Labels that transitions carry (the specials excluded)."""
        return self.labels[len(SPECIALS) :]

    @property
    def n_transitions(self) -> int:
        return 2 * len(self.relations) + 1

    @classmethod
    def build(cls, train: Sequence[Sentence], view: TreebankView, min_word_freq: int = 1) -> Vocab:
        """Words seen at least ``min_word_freq`` times; every train tag and label."""
        if min_word_freq < 1:
            raise ValueError(f"data.min_word_freq must be >= 1, got {min_word_freq}")
        word_counts: Counter[str] = Counter()
        tags: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        for sent in train:
            word_counts.update(view.words(sent))
            tags.update(view.tags(sent))
            labels.update(view.deprels(sent))
        # Sorted by frequency then spelling so the vocabulary is deterministic.
        words = [
            w
            for w, c in sorted(word_counts.items(), key=lambda x: (-x[1], x[0]))
            if c >= min_word_freq
        ]
        return cls(
            word_counts=[0] * len(SPECIALS) + [word_counts[w] for w in words],
            words=[*SPECIALS, *words],
            tags=[*SPECIALS, *sorted(tags)],
            labels=[*SPECIALS, *sorted(labels)],
            view=view,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "words": self.words,
                "tags": self.tags,
                "labels": self.labels,
                "view": vars(self.view),
                "word_counts": self.word_counts,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        d = json.loads(text)
        return cls(
            d["words"], d["tags"], d["labels"], TreebankView(**d["view"]), d.get("word_counts")
        )
