"""What a record's ``optimizer_impl`` says about the code that ran.

The registry writes it (``sm3repro.SM3(variant=ii, cover=dims, impl=fused)``,
``torch.optim.Adam(fused=True)``) and the training loop appends how the word embedding's
gradients were taken (``; word embedding: sparse rows``). Run records and the memory arm's
records carry it; the report reads it through these two functions.
"""

from __future__ import annotations

_SM3_IMPL = "sm3repro.SM3("
# How a record names SM3's fused kernel: impl=fused (what ran, in the config's impl words), or
# kernel=fused-cpp in records written before impl named it (their eager path: kernel=eager).
_SM3_FUSED = {"impl=fused", "kernel=fused-cpp"}
SPARSE_ROWS = "sparse rows"  # in the note the training loop appends for the word embedding


def sm3_ran_eager(optimizer_impl: object) -> bool:
    """Whether a record's SM3 stepped with eager torch ops (``impl=forloop``) instead of its
    fused kernel: its ``optimizer_impl`` names no fused kernel (``impl=forloop`` or ``mixed``;
    older records ``kernel=eager``, or nothing: those written before the fused kernel existed
    ran the eager path). False for other optimizers and missing values."""
    if not isinstance(optimizer_impl, str) or not optimizer_impl.startswith(_SM3_IMPL):
        return False
    arguments = optimizer_impl[len(_SM3_IMPL) :].split(")", 1)[0].split(",")
    return not any(a.strip() in _SM3_FUSED for a in arguments)


def ran_sparse_rows(optimizer_impl: str) -> bool:
    """Whether the run's word embedding took row-sparse gradients (``sparse_rows=true``)."""
    return SPARSE_ROWS in optimizer_impl
