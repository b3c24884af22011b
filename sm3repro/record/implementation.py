"""What a record's ``optimizer_impl`` says about the code that ran.

The registry writes it (``sm3repro.SM3(variant=ii, cover=dims, kernel=fused-cpp)``,
``torch.optim.Adam(fused=True)``) and the training loop appends how the word embedding's
gradients were taken (``; word embedding: sparse rows``). Run records and the memory arm's
records carry it; the report reads it through these two functions.
"""

from __future__ import annotations

_SM3_IMPL = "sm3repro.SM3("
SPARSE_ROWS = "sparse rows"  # in the note the training loop appends for the word embedding


def sm3_ran_eager(optimizer_impl: object) -> bool:
    """Whether a record's SM3 stepped with eager torch ops instead of its fused kernel: its
    ``optimizer_impl`` says ``kernel=eager``, or names no kernel (records written before the
    fused kernel existed ran the eager path). False for other optimizers and missing values."""
    if not isinstance(optimizer_impl, str) or not optimizer_impl.startswith(_SM3_IMPL):
        return False
    arguments = optimizer_impl[len(_SM3_IMPL) :].split(")", 1)[0].split(",")
    kernels = [a.strip().removeprefix("kernel=") for a in arguments if "kernel=" in a]
    return not kernels or kernels[0] == "eager"


def ran_sparse_rows(optimizer_impl: str) -> bool:
    """Whether the run's word embedding took row-sparse gradients (``sparse_rows=true``)."""
    return SPARSE_ROWS in optimizer_impl
