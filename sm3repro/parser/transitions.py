"""Arc-standard transitions over many sentences at once, with the state held in arrays.

Transition ids: 0 is SHIFT, ``1 + r`` is LEFT-ARC(r) and ``1 + R + r`` is RIGHT-ARC(r) for
relation index ``r`` of ``R``. Each sentence of ``n`` words takes exactly ``2n`` transitions.

Every sentence owns a row of width ``W = max_len + 2``: position 0 is ROOT, 1..n its words and
``W - 1`` a NULL slot that stands for "no such token" in features. Children are tracked
incrementally: in arc-standard a new left child is always the new leftmost one and a new right
child the new rightmost, so no arc list is ever rescanned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sm3repro.data.treebank import Sentence
from sm3repro.data.vocab import NULL_ID, ROOT_ID, SPECIALS, UNK_ID, Vocab

SHIFT = 0


@dataclass
class EncodedCorpus:
    """Sentences as padded id arrays (``[S, W]``), ROOT at column 0 and NULL in padding."""

    lengths: np.ndarray  # [S] words per sentence
    words: np.ndarray  # [S, W] word ids
    tags: np.ndarray  # [S, W] POS ids
    heads: np.ndarray  # [S, W] gold heads (-1 where absent)
    relations: np.ndarray  # [S, W] gold relation index, -1 for a relation unseen in train

    @property
    def width(self) -> int:
        return self.words.shape[1]

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, index: np.ndarray) -> EncodedCorpus:
        return EncodedCorpus(*(a[index] for a in vars(self).values()))


def encode(sentences: Sequence[Sentence], vocab: Vocab) -> EncodedCorpus:
    """Map sentences to ids; words and tags unseen in train become UNK."""
    view = vocab.view
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    width = int(lengths.max(initial=0)) + 2
    shape = (len(sentences), width)
    words = np.full(shape, NULL_ID, dtype=np.int32)
    tags = np.full(shape, NULL_ID, dtype=np.int32)
    heads = np.full(shape, -1, dtype=np.int32)
    relations = np.full(shape, -1, dtype=np.int32)
    words[:, 0] = ROOT_ID
    tags[:, 0] = ROOT_ID
    n_special = len(vocab.labels) - len(vocab.relations)
    wi, ti, li = vocab.word_index, vocab.tag_index, vocab.label_index
    for k, sent in enumerate(sentences):
        n = len(sent)
        words[k, 1 : n + 1] = [wi.get(w, UNK_ID) for w in view.words(sent)]
        tags[k, 1 : n + 1] = [ti.get(t, UNK_ID) for t in view.tags(sent)]
        heads[k, 1 : n + 1] = sent.heads
        relations[k, 1 : n + 1] = [li.get(r, n_special - 1) - n_special for r in view.deprels(sent)]
    return EncodedCorpus(lengths, words, tags, heads, relations)


class ArcStandardBatch:
    """The parser state of a batch of sentences, advanced one transition at a time for all."""

    def __init__(self, corpus: EncodedCorpus, n_relations: int) -> None:
        self.corpus = corpus
        self.n_relations = n_relations
        S, W = len(corpus), corpus.width
        self.W = W
        self.null = W - 1
        self.n = corpus.lengths.astype(np.int64)
        self.base = np.arange(S, dtype=np.int64) * W
        self.stack = np.zeros(S * W, dtype=np.int64)  # row b: stack of sentence b, ROOT at 0
        self.depth = np.ones(S, dtype=np.int64)
        self.next = np.ones(S, dtype=np.int64)  # buffer front (n + 1 when empty)
        self.head = np.full(S * W, -1, dtype=np.int64)
        self.rel = np.full(S * W, -1, dtype=np.int64)
        self.label_feat = np.full(S * W, NULL_ID, dtype=np.int32)  # label ids seen by features
        self.n_children = np.zeros(S * W, dtype=np.int64)
        null = np.full(S * W, self.null, dtype=np.int64)
        self.lc1, self.lc2, self.rc1, self.rc2 = null, null.copy(), null.copy(), null.copy()
        self.words = corpus.words.reshape(-1)
        self.tags = corpus.tags.reshape(-1)

    # -- reading the state ---------------------------------------------------------------
    def stack_top(self, active: np.ndarray, k: int) -> np.ndarray:
        """Local position of the k-th stack item from the top (1-based), NULL when absent."""
        depth = self.depth[active]
        pos = self.stack[self.base[active] + np.maximum(depth - k, 0)]
        return np.where(depth >= k, pos, self.null)

    def buffer(self, active: np.ndarray, k: int) -> np.ndarray:
        """Local position of the k-th buffer item (1-based), NULL when absent."""
        pos = self.next[active] + (k - 1)
        return np.where(pos <= self.n[active], pos, self.null)

    def done(self) -> np.ndarray:
        return (self.depth == 1) & (self.next > self.n)

    def legal(self, active: np.ndarray) -> np.ndarray:
        """``[len(active), 3]`` booleans: SHIFT, LEFT-ARC(*), RIGHT-ARC(*) allowed."""
        depth, has_buffer = self.depth[active], self.next[active] <= self.n[active]
        left = depth >= 3  # never make ROOT a dependent
        right = (depth >= 3) | ((depth == 2) & ~has_buffer)  # ROOT takes one child, last
        return np.stack([has_buffer, left, right], axis=1)

    def oracle(self, active: np.ndarray) -> np.ndarray:
        """Static arc-standard oracle: LEFT if s2's head is s1; RIGHT if s1's head is s2 and
        s1 has all its children; else SHIFT."""
        base = self.base[active]
        s1, s2 = self.stack_top(active, 1), self.stack_top(active, 2)
        gold_head = self.corpus.heads.reshape(-1)
        gold_rel = self.corpus.relations.reshape(-1)
        two = self.depth[active] >= 2
        left = two & (s2 != 0) & (gold_head[base + s2] == s1)
        right = (
            two
            & ~left
            & (gold_head[base + s1] == s2)
            & (self.n_children[base + s1] == self.gold_children[base + s1])
        )
        out = np.zeros(len(active), dtype=np.int64)
        out[left] = 1 + gold_rel[base[left] + s2[left]]
        out[right] = 1 + self.n_relations + gold_rel[base[right] + s1[right]]
        return out

    def prepare_oracle(self) -> None:
        """Count each token's gold children (the oracle's RIGHT-ARC condition)."""
        heads = self.corpus.heads
        S, W = heads.shape
        rows, cols = np.nonzero(heads >= 0)
        self.gold_children = np.bincount(rows * W + heads[rows, cols], minlength=S * W)

    # -- changing it ----------------------------------------------------------------------
    def apply(self, active: np.ndarray, transitions: np.ndarray) -> None:
        """Apply one transition per active sentence (the caller guarantees legality)."""
        R = self.n_relations
        shift = transitions == SHIFT
        if shift.any():
            a = active[shift]
            self.stack[self.base[a] + self.depth[a]] = self.next[a]
            self.depth[a] += 1
            self.next[a] += 1
        arc = ~shift
        if arc.any():
            a, t = active[arc], transitions[arc]
            base = self.base[a]
            s1, s2 = self.stack_top(a, 1), self.stack_top(a, 2)
            is_left = t <= R
            rel = np.where(is_left, t - 1, t - 1 - R)
            head = np.where(is_left, s1, s2) + base
            dep = np.where(is_left, s2, s1) + base
            self.head[dep] = head - base
            self.rel[dep] = rel
            self.label_feat[dep] = rel + len(SPECIALS)  # relation r is label id r + 3
            self.n_children[head] += 1
            # New leftmost child for LEFT-ARC, new rightmost child for RIGHT-ARC.
            lh, rh = head[is_left], head[~is_left]
            self.lc2[lh] = self.lc1[lh]
            self.lc1[lh] = dep[is_left] - base[is_left]
            self.rc2[rh] = self.rc1[rh]
            self.rc1[rh] = dep[~is_left] - base[~is_left]
            # Pop the dependent: LEFT removes s2 (s1 slides down), RIGHT removes s1.
            d = self.depth[a]
            self.stack[base + d - 2] = np.where(is_left, s1, s2)
            self.depth[a] = d - 1


Policy = Callable[[ArcStandardBatch, np.ndarray, int], np.ndarray]


def run_transitions(
    corpus: EncodedCorpus, n_relations: int, policy: Policy, oracle: bool = False
) -> ArcStandardBatch:
    """Drive every sentence to its final tree, asking ``policy(state, active, step)`` for one
    transition per active sentence at each step. Returns the final state (``head``/``rel``)."""
    state = ArcStandardBatch(corpus, n_relations)
    if oracle:
        state.prepare_oracle()
    n_steps = 2 * corpus.lengths
    # Longest first, so the sentences still running are always a prefix of this order.
    order = np.argsort(-n_steps, kind="stable")
    neg_steps = -n_steps[order]
    for step in range(int(-neg_steps[0]) if len(order) else 0):
        active = order[: np.searchsorted(neg_steps, -step, side="left")]
        state.apply(active, policy(state, active, step))
    return state


def step_offsets(corpus: EncodedCorpus) -> np.ndarray:
    """Row of each sentence's first configuration when all ``2n`` are laid out in order."""
    n_steps = 2 * corpus.lengths
    return np.concatenate([[0], np.cumsum(n_steps)[:-1]]).astype(np.int64)
