"""Attachment scores: micro vs macro averaging, punctuation and label options, validation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from sm3repro.data.treebank import Sentence, read_treebank
from sm3repro.metrics import PTB_PUNCT_TAGS, attachment_scores


def sent(rows: list[tuple[str, str, str, int, str]]) -> Sentence:
    """A gold sentence from (form, upos, xpos, head, deprel) rows."""
    forms, upos, xpos, heads, rels = (list(col) for col in zip(*rows, strict=True))
    return Sentence(forms, forms, upos, xpos, heads, rels)


# "She read the book ." : 5 words
LONG = sent(
    [
        ("She", "PRON", "PRP", 2, "nsubj"),
        ("read", "VERB", "VBD", 0, "root"),
        ("the", "DET", "DT", 4, "det"),
        ("book", "NOUN", "NN", 2, "obj"),
        (".", "PUNCT", ".", 2, "punct"),
    ]
)
# "Hi !" : 2 words
SHORT = sent([("Hi", "INTJ", "UH", 0, "root"), ("!", "PUNCT", ".", 1, "punct")])


def test_macro_and_micro_differ_long_right_short_wrong() -> None:
    # Long sentence all right (5/5), short sentence all wrong (0/2).
    scores = attachment_scores(
        [LONG, SHORT], [LONG.heads, [2, 0]], [LONG.deprels, ["punct", "root"]]
    )
    assert scores["uas_micro"] == pytest.approx(5 / 7)  # tokens: 5 right of 7
    assert scores["las_micro"] == pytest.approx(5 / 7)
    assert scores["uas_macro"] == pytest.approx(0.5)  # sentences: (1 + 0) / 2
    assert scores["las_macro"] == pytest.approx(0.5)
    assert scores["tokens"] == 7 and scores["sentences"] == 2


def test_las_needs_the_right_head_and_label() -> None:
    # LONG: "the" gets a wrong label (UAS ok, LAS not), "book" a wrong head with the right label.
    heads = [2, 0, 4, 3, 2]
    rels = ["nsubj", "root", "nmod", "obj", "punct"]
    scores = attachment_scores([LONG, SHORT], [heads, SHORT.heads], [rels, SHORT.deprels])
    assert scores["uas_micro"] == pytest.approx(6 / 7)  # only "book" has a wrong head
    assert scores["las_micro"] == pytest.approx(5 / 7)  # "book" and "the" are wrong
    assert scores["uas_macro"] == pytest.approx((4 / 5 + 1) / 2)
    assert scores["las_macro"] == pytest.approx((3 / 5 + 1) / 2)


def test_punctuation_options() -> None:
    # "well - known ." : the hyphen (UPOS PUNCT, EWT's XPOS HYPH) and "." get wrong heads.
    gold = sent(
        [
            ("well", "ADV", "RB", 3, "advmod"),
            ("-", "PUNCT", "HYPH", 3, "punct"),
            ("known", "ADJ", "JJ", 0, "root"),
            (".", "PUNCT", ".", 3, "punct"),
        ]
    )
    pred = ([[3, 1, 0, 1]], [gold.deprels])
    include = attachment_scores([gold], *pred)
    upos = attachment_scores([gold], *pred, punct="upos")
    ptb = attachment_scores([gold], *pred, punct="ptb")
    assert (include["uas_micro"], include["tokens"]) == (pytest.approx(2 / 4), 4)
    assert (upos["uas_micro"], upos["tokens"]) == (pytest.approx(1.0), 2)  # both excluded
    assert (ptb["uas_micro"], ptb["tokens"]) == (pytest.approx(2 / 3), 3)  # HYPH is not PTB


def test_ptb_punctuation_set() -> None:
    # A root word plus one SYM word per PTB punctuation tag, all with wrong heads.
    tags = ["``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$", "(", ")"]
    assert set(tags) == PTB_PUNCT_TAGS
    gold = sent([("word", "NOUN", "NN", 0, "root")] + [(t, "SYM", t, 1, "punct") for t in tags])
    heads = [0] + [0] * len(tags)
    ptb = attachment_scores([gold], [heads], [gold.deprels], punct="ptb")
    assert (ptb["uas_micro"], ptb["tokens"]) == (1.0, 1)
    upos = attachment_scores([gold], [heads], [gold.deprels], punct="upos")  # no UPOS PUNCT
    assert (upos["uas_micro"], upos["tokens"]) == (pytest.approx(1 / 12), 12)
    # Nor does ptb exclude words tagged HYPH or NFP, or forms that merely look like punctuation.
    other = sent([("a", "X", "NN", 0, "root"), ("-", "PUNCT", "HYPH", 1, "punct")])
    assert attachment_scores([other], [[0, 0]], [other.deprels], punct="ptb")["tokens"] == 2


def test_sentence_with_only_punctuation_leaves_macro() -> None:
    dot = sent([(".", "PUNCT", ".", 0, "root")])
    # SHORT: "Hi" right, "!" wrong; the "." sentence is wrong but has nothing to score.
    scores = attachment_scores(
        [SHORT, dot], [[0, 2], [1]], [SHORT.deprels, dot.deprels], punct="upos"
    )
    assert scores["sentences"] == 1 and scores["tokens"] == 1
    assert scores["uas_macro"] == 1.0 and scores["uas_micro"] == 1.0
    with_punct = attachment_scores([SHORT, dot], [[0, 2], [1]], [SHORT.deprels, dot.deprels])
    assert with_punct["uas_macro"] == pytest.approx((1 / 2 + 0) / 2)
    assert with_punct["uas_micro"] == pytest.approx(1 / 3)


def test_label_options() -> None:
    gold = sent(
        [
            ("my", "PRON", "PRP$", 2, "nmod:poss"),
            ("book", "NOUN", "NN", 0, "root"),
            ("today", "NOUN", "NN", 2, "obl"),
        ]
    )
    rels = ["nmod", "root", "obl:tmod"]  # subtypes differ only
    universal = attachment_scores([gold], [gold.heads], [rels])
    full = attachment_scores([gold], [gold.heads], [rels], labels="full")
    assert universal["las_micro"] == 1.0 and universal["uas_micro"] == 1.0
    assert full["las_micro"] == pytest.approx(1 / 3) and full["uas_micro"] == 1.0
    # Different universal relations are wrong either way.
    wrong = attachment_scores([gold], [gold.heads], [["det", "root", "obl"]])
    assert wrong["las_micro"] == pytest.approx(2 / 3)


def test_numpy_predictions_accepted() -> None:
    scores = attachment_scores([LONG], [np.array(LONG.heads)], [LONG.deprels])
    assert scores["uas_micro"] == 1.0


def test_nothing_to_score_gives_nan() -> None:
    dot = sent([(".", "PUNCT", ".", 0, "punct")])
    scores = attachment_scores([dot], [[0]], [["punct"]], punct="upos")
    assert scores["tokens"] == 0 and scores["sentences"] == 0
    assert math.isnan(scores["uas_micro"]) and math.isnan(scores["las_macro"])
    assert math.isnan(attachment_scores([], [], [])["uas_macro"])


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [({"punct": "exclude"}, "punct='exclude'"), ({"labels": "basic"}, "labels='basic'")],
)
def test_unknown_options_raise(kwargs: dict[str, str], phrase: str) -> None:
    with pytest.raises(ValueError, match="is not one of") as info:
        attachment_scores([LONG], [LONG.heads], [LONG.deprels], **kwargs)
    assert phrase in str(info.value)
    assert "'include'" in str(info.value) or "'universal'" in str(info.value)


def test_length_mismatches_raise() -> None:
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        attachment_scores([LONG, SHORT], [LONG.heads], [LONG.deprels])
    with pytest.raises(ValueError, match="sentence 1: 2 gold words but 3 predicted heads"):
        attachment_scores([LONG, SHORT], [LONG.heads, [0, 1, 1]], [LONG.deprels, SHORT.deprels])
    with pytest.raises(ValueError, match="sentence 0: .* and 4 predicted relations"):
        attachment_scores([LONG], [LONG.heads], [LONG.deprels[:4]])


def _reference(gold, heads, rels, punct, labels):  # plain loops, to check the numpy version
    def keep(s: Sentence, i: int) -> bool:
        if punct == "upos":
            return s.upos[i] != "PUNCT"
        if punct == "ptb":
            return s.xpos[i] not in PTB_PUNCT_TAGS
        return True

    def lab(r: str) -> str:
        return r.split(":")[0] if labels == "universal" else r

    n = u = l_ = 0
    per_sent = []
    for s, hs, rs in zip(gold, heads, rels, strict=True):
        idx = [i for i in range(len(s)) if keep(s, i)]
        su = sum(hs[i] == s.heads[i] for i in idx)
        sl = sum(hs[i] == s.heads[i] and lab(rs[i]) == lab(s.deprels[i]) for i in idx)
        n, u, l_ = n + len(idx), u + su, l_ + sl
        if idx:
            per_sent.append((su / len(idx), sl / len(idx)))
    return u / n, l_ / n, sum(p[0] for p in per_sent) / len(per_sent), len(per_sent)


@pytest.fixture(scope="module")
def dev(ewt_dev) -> list[Sentence]:
    return read_treebank(ewt_dev)


def test_perfect_prediction_on_ewt_dev(dev: list[Sentence]) -> None:
    heads, rels = [s.heads for s in dev], [s.deprels for s in dev]
    scores = attachment_scores(dev, heads, rels)
    assert scores == {
        "uas_micro": 1.0,
        "las_micro": 1.0,
        "uas_macro": 1.0,
        "las_macro": 1.0,
        "tokens": 25147,
        "sentences": 2001,
    }
    # Fast: best of three well under 0.1 s for ~25k tokens (loose bound for a busy machine).
    best = min(_timed(lambda: attachment_scores(dev, heads, rels)) for _ in range(3))
    assert best < 0.1


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("punct", ["include", "upos", "ptb"])
@pytest.mark.parametrize("labels", ["universal", "full"])
def test_matches_plain_loops_on_perturbed_ewt_dev(
    dev: list[Sentence], punct: str, labels: str
) -> None:
    rng = np.random.default_rng(0)
    heads, rels = [], []
    for s in dev:  # corrupt about a fifth of heads and a tenth of labels
        h = np.array(s.heads)
        flip = rng.random(len(s)) < 0.2
        h[flip] = rng.integers(0, len(s) + 1, flip.sum())
        heads.append(h.tolist())
        rels.append([r if rng.random() > 0.1 else "dep:x" for r in s.deprels])
    scores = attachment_scores(dev, heads, rels, punct=punct, labels=labels)
    uas, las, uas_macro, n_sents = _reference(dev, heads, rels, punct, labels)
    assert scores["uas_micro"] == pytest.approx(uas)
    assert scores["las_micro"] == pytest.approx(las)
    assert scores["uas_macro"] == pytest.approx(uas_macro)
    assert scores["sentences"] == n_sents
    assert 0.5 < scores["las_micro"] < scores["uas_micro"] < 0.95
