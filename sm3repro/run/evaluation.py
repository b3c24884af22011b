"""Parse an evaluation split with a model and score it as the config says (punctuation, labels)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch import nn

from sm3repro.metrics import attachment_scores
from sm3repro.parser.dataset import EvalSet, ParserData
from sm3repro.parser.decode import parse


def evaluate(
    model: nn.Module, data: ParserData, split: EvalSet, cfg: DictConfig
) -> tuple[dict[str, Any], list[list[int]], list[list[str]]]:
    """Parse a split and score it: returns (scores, heads, relation names)."""
    heads, rels = parse(model, split.corpus)
    relations = data.vocab.relations
    pred_heads, pred_rels = [], []
    for k, sent in enumerate(split.sentences):
        n = len(sent)
        pred_heads.append(heads[k, 1 : n + 1].tolist())
        pred_rels.append([relations[r] for r in rels[k, 1 : n + 1]])
    scores = attachment_scores(
        split.sentences,
        pred_heads,
        pred_rels,
        punct=cfg.data.eval_punct,
        labels=cfg.data.eval_labels,
    )
    scores = {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in scores.items()}
    return scores, pred_heads, pred_rels
