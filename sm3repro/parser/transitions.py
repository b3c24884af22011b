"""Arc-standard transitions over many sentences at once, with the state held in arrays.

Transition ids: 0 is SHIFT, ``1 + r`` is LEFT-ARC(r) and ``1 + R + r`` is RIGHT-ARC(r) for
relation index ``r`` of ``R``. Each sentence of ``n`` words takes exactly ``2n`` transitions.

Every sentence has local positions 0 (ROOT), 1..n (its words) and n + 1, a NULL slot that stands
for "no such token" in features. Children are tracked
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
    """The parser state of a batch of sentences, advanced one transition at a time for all.

    Sentence ``b`` owns ``n_b + 2`` consecutive slots of every flat array, from ``base[b]``:
    local position 0 is ROOT, 1..n the words and ``n + 1`` its NULL slot. Keeping rows only as
    long as each sentence makes the arrays ~10x smaller than padding to the longest one.
    """

    def __init__(self, corpus: EncodedCorpus, n_relations: int) -> None:
        self.corpus = corpus
        self.n_relations = n_relations
        self.n = corpus.lengths.astype(np.int64)
        self.null = self.n + 1
        widths = self.n + 2
        self.base = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        total = int(widths.sum())
        # Slot (b, j) of the padded corpus arrays, for j <= n_b + 1, in row-major order.
        self._slots = np.arange(corpus.width) <= self.null[:, None]
        self.words = corpus.words[self._slots]
        self.tags = corpus.tags[self._slots]
        S = len(corpus)
        self.stack = np.zeros(total, dtype=np.int64)  # stack of sentence b from base[b], ROOT first
        self.depth = np.ones(S, dtype=np.int64)
        self.next = np.ones(S, dtype=np.int64)  # buffer front (n + 1 when empty)
        self.head = np.full(total, -1, dtype=np.int64)
        self.rel = np.full(total, -1, dtype=np.int64)
        self.label_feat = np.full(total, NULL_ID, dtype=np.int32)  # label ids seen by features
        self.n_children = np.zeros(total, dtype=np.int64)
        null = np.repeat(self.null, widths)
        self.lc1, self.lc2, self.rc1, self.rc2 = null, null.copy(), null.copy(), null.copy()

    def padded(self, flat: np.ndarray, fill: int = -1) -> np.ndarray:
        """A flat per-slot array laid out as the corpus's ``[S, W]`` arrays."""
        out = np.full(self._slots.shape, fill, dtype=flat.dtype)
        out[self._slots] = flat
        return out

    # -- reading the state ---------------------------------------------------------------
    def stack_top(self, active: np.ndarray, k: int) -> np.ndarray:
        """Local position of the k-th stack item from the top (1-based), NULL when absent."""
        depth = self.depth[active]
        pos = self.stack[self.base[active] + np.maximum(depth - k, 0)]
        return np.where(depth >= k, pos, self.null[active])

    def buffer(self, active: np.ndarray, k: int) -> np.ndarray:
        """Local position of the k-th buffer item (1-based), NULL when absent."""
        pos = self.next[active] + (k - 1)
        return np.where(pos <= self.n[active], pos, self.null[active])

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
        gold_head, gold_rel = self.gold_head, self.gold_rel
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
        """Flatten the gold tree and count each token's gold children (RIGHT-ARC's condition)."""
        self.gold_head = self.corpus.heads[self._slots].astype(np.int64)
        self.gold_rel = self.corpus.relations[self._slots].astype(np.int64)
        owner = np.repeat(np.arange(len(self.n)), self.n + 2)
        has_head = self.gold_head >= 0
        targets = self.base[owner[has_head]] + self.gold_head[has_head]
        self.gold_children = np.bincount(targets, minlength=len(self.gold_head))

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
    transition per active sentence at each step. Returns the final state; ``state.padded(state.head)`` gives ``[S, W]`` heads."""
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
