"""Evaluation metrics for dependency parses."""

from sm3repro.metrics.attachment import PTB_PUNCT_TAGS, attachment_scores

__all__ = ["PTB_PUNCT_TAGS", "attachment_scores"]
