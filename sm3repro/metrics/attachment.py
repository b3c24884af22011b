"""Unlabeled and labeled attachment scores (UAS/LAS), token- and sentence-averaged.

The defaults follow the CoNLL 2018 shared task scorer: every syntactic word is scored,
punctuation included, and LAS compares only the universal part of a relation (``nmod`` for
``nmod:poss``). Scores are fractions in [0, 1].

- *micro*: correct tokens / scored tokens over the whole corpus (what most papers report).
- *macro*: the mean of the per-sentence scores (the SM3 study's metric). A sentence whose
  tokens are all excluded (e.g. a lone "." with ``punct="upos"``) has no score and is left
  out of the macro mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sm3repro.data.treebank import Sentence

PUNCT_OPTIONS = ("include", "upos", "ptb")
LABEL_OPTIONS = ("universal", "full")

# Penn Treebank punctuation tags, as excluded by the PTB parsing literature (Chen & Manning
# score without these), plus the raw brackets "(" and ")" that some corpora use instead of
# -LRB-/-RRB-. "#" and "$" are counted as punctuation here as well. UD English-EWT's own
# tags HYPH and NFP are not PTB tags and are NOT in the set: on UD data, punct="upos" is the
# natural choice.
PTB_PUNCT_TAGS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$", "(", ")"})


def _check_option(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def attachment_scores(
    gold: Sequence[Sentence],
    pred_heads: Sequence[Sequence[int]],
    pred_deprels: Sequence[Sequence[str]],
    *,
    punct: str = "include",
    labels: str = "universal",
) -> dict[str, float | int]:
    """Score predicted heads and relations against ``gold``.

    ``punct``: ``"include"`` scores every word; ``"upos"`` skips words whose gold UPOS is
    PUNCT; ``"ptb"`` skips words whose gold XPOS is in :data:`PTB_PUNCT_TAGS`.
    ``labels``: ``"universal"`` compares relations up to the first ``:``; ``"full"`` compares
    them whole.

    Returns ``uas_micro``, ``las_micro``, ``uas_macro``, ``las_macro`` and the number of
    scored ``tokens`` and ``sentences``. With nothing to score the four scores are NaN.
    """
    _check_option("punct", punct, PUNCT_OPTIONS)
    _check_option("labels", labels, LABEL_OPTIONS)
    _check_lengths(gold, pred_heads, pred_deprels)
    lengths = np.fromiter((len(s) for s in gold), dtype=np.int64, count=len(gold))
    n_tokens = int(lengths.sum())
    gold_heads = np.fromiter((h for s in gold for h in s.heads), dtype=np.int64, count=n_tokens)
    heads = np.fromiter((int(h) for hs in pred_heads for h in hs), dtype=np.int64, count=n_tokens)
    head_ok = gold_heads == heads
    label_ok = head_ok & _relation_ok(gold, pred_deprels, labels, n_tokens)
    scored = _scored(gold, punct, n_tokens)

    # Per-sentence counts with one bincount each over the sentence index of every token.
    sent_of_token = np.repeat(np.arange(len(gold)), lengths)
    per_sent = np.bincount(sent_of_token, weights=scored, minlength=len(gold))
    uas_sent = np.bincount(sent_of_token, weights=head_ok & scored, minlength=len(gold))
    las_sent = np.bincount(sent_of_token, weights=label_ok & scored, minlength=len(gold))
    has_tokens = per_sent > 0
    total = int(scored.sum())
    if total == 0:  # nothing to score: no meaningful accuracy
        nan = float("nan")
        return {"uas_micro": nan, "las_micro": nan, "uas_macro": nan, "las_macro": nan,
                "tokens": 0, "sentences": 0}  # fmt: skip
    return {
        "uas_micro": float(uas_sent.sum() / total),
        "las_micro": float(las_sent.sum() / total),
        "uas_macro": float(np.mean(uas_sent[has_tokens] / per_sent[has_tokens])),
        "las_macro": float(np.mean(las_sent[has_tokens] / per_sent[has_tokens])),
        "tokens": total,
        "sentences": int(has_tokens.sum()),
    }


def _check_lengths(
    gold: Sequence[Sentence],
    pred_heads: Sequence[Sequence[int]],
    pred_deprels: Sequence[Sequence[str]],
) -> None:
    if not len(gold) == len(pred_heads) == len(pred_deprels):
        raise ValueError(
            f"{len(gold)} gold sentences but {len(pred_heads)} predicted head lists "
            f"and {len(pred_deprels)} predicted relation lists"
        )
    for i, (sent, heads, rels) in enumerate(zip(gold, pred_heads, pred_deprels, strict=True)):
        if not len(sent) == len(heads) == len(rels):
            raise ValueError(
                f"sentence {i}: {len(sent)} gold words but {len(heads)} predicted heads "
                f"and {len(rels)} predicted relations"
            )


def _relation_ok(
    gold: Sequence[Sentence], pred_deprels: Sequence[Sequence[str]], labels: str, n_tokens: int
) -> np.ndarray:
    """Per token: is the predicted relation the gold one (up to the first ":" if universal)?
    Compared as Python strings: ~25k tokens take a few ms."""
    if labels == "universal":
        gold_rels = (r.split(":", 1)[0] for s in gold for r in s.deprels)
        rels = (r.split(":", 1)[0] for rs in pred_deprels for r in rs)
    else:
        gold_rels = (r for s in gold for r in s.deprels)
        rels = (r for rs in pred_deprels for r in rs)
    return np.fromiter(
        (g == p for g, p in zip(gold_rels, rels, strict=True)), dtype=bool, count=n_tokens
    )


def _scored(gold: Sequence[Sentence], punct: str, n_tokens: int) -> np.ndarray:
    """Per token: does it count (punctuation left out as ``punct`` says)?"""
    if punct == "include":
        return np.ones(n_tokens, dtype=bool)
    if punct == "upos":
        return np.fromiter((u != "PUNCT" for s in gold for u in s.upos), bool, count=n_tokens)
    return np.fromiter(
        (x not in PTB_PUNCT_TAGS for s in gold for x in s.xpos), bool, count=n_tokens
    )
