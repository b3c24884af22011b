"""The scaling arm's model family: the study's parser with wider embeddings.

The knob is ``embed_dim``; the hidden layers stay at the study's 200 + 200, the vocabulary is
EWT's and the features are the study's 48. Why the embedding width: it adds parameters at the
lowest compute per parameter this family has. The three embedding tables (8,974 rows on EWT)
cost a lookup, not a matmul, and only the first layer (48 x embed_dim inputs) grows with them,
so about half the parameters do no arithmetic at all; widening the hidden layers instead puts
every new parameter into a matmul, which made a 200M-parameter step several times slower on
this 2-core CPU. Optimizer state is per parameter either way, which is all the arm measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sm3repro import study
from sm3repro.optim.catalog import CATALOG
from sm3repro.parser.features import N_LABEL_FEATURES, N_TAG_FEATURES, N_WORD_FEATURES

N_FEATURES = N_WORD_FEATURES + N_TAG_FEATURES + N_LABEL_FEATURES  # 48
# Embedding widths of the main grid: the study's parser (50 -> 989,803 parameters on EWT)
# and four wider ones, geometrically spaced up to 200.7M parameters.
GRID_EMBED_DIMS = (50, 270, 1080, 3230, 10800)
# A finer ladder for the budget search (x1.2 parameters per rung, ~19M to ~600M).
BUDGET_EMBED_DIMS = tuple(round(1000 * 1.2**k) for k in range(20))

Shape = Sequence[int]


def parameter_shapes(
    embed_dim: int, n_words: int, n_tags: int, n_labels: int, n_transitions: int
) -> list[tuple[int, ...]]:
    """Shapes of ChenManningParser's parameters, in module order (embeddings, layers)."""
    h1, h2 = study.HIDDEN  # the study's hidden widths, kept at every size
    return [
        (n_words, embed_dim),
        (n_tags, embed_dim),
        (n_labels, embed_dim),
        (h1, N_FEATURES * embed_dim),
        (h1,),
        (h2, h1),
        (h2,),
        (n_transitions, h2),
        (n_transitions,),
    ]


def n_parameters(shapes: Sequence[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def theory_state_bytes(optimizer: str, shapes: Sequence[Shape]) -> int | None:
    """Optimizer state in float32 bytes by the optimizer's definition, as its catalog entry
    declares it (None: an unknown name, or no declared state)."""
    spec = CATALOG.get(optimizer)
    return None if spec is None else spec.theory_state_bytes(shapes)
