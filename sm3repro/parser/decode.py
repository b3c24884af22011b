"""Batched greedy decoding: every sentence advances one transition per step, in lockstep.

Illegal transitions are masked with -inf, so every output is a single-rooted tree. With
``precompute`` the first layer is read from a table of embedding x weight products built for the
ids actually present (Chen & Manning's trick), which removes the big matmul from every step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sm3repro.parser.features import N_LABEL_FEATURES, N_TAG_FEATURES, N_WORD_FEATURES, extract
from sm3repro.parser.model import ChenManningParser, activate
from sm3repro.parser.transitions import ArcStandardBatch, EncodedCorpus, run_transitions


class _FirstLayerTable:
    """Per-feature-position products of embeddings and the first layer's weight slices."""

    def __init__(self, model: ChenManningParser, corpus: EncodedCorpus) -> None:
        d = model.embed_dim
        w_slices = model.hidden1.weight.detach().view(model.hidden1.out_features, -1, d)
        present = np.unique(corpus.words)
        present = np.union1d(present, [0, 1, 2])  # NULL, ROOT, UNK always appear
        self.word_compact = np.full(model.word_embed.num_embeddings, -1, dtype=np.int64)
        self.word_compact[present] = np.arange(len(present))
        groups = (
            (
                model.word_embed.weight[torch.from_numpy(present).to(w_slices.device)],
                N_WORD_FEATURES,
            ),
            (model.tag_embed.weight, N_TAG_FEATURES),
            (model.label_embed.weight, N_LABEL_FEATURES),
        )
        hidden = model.hidden1.out_features
        rows = sum(emb.shape[0] * count for emb, count in groups)
        self.table = torch.empty(rows, hidden, device=w_slices.device)
        offsets, row, position = [], 0, 0
        for emb, count in groups:
            n = emb.shape[0]
            # [count, d, hidden] weight slices; one batched matmul fills this group's block.
            weights = w_slices[:, position : position + count, :].permute(1, 2, 0)
            block = self.table[row : row + count * n].view(count, n, hidden)
            torch.matmul(emb.detach().unsqueeze(0), weights, out=block)
            offsets.extend(row + k * n for k in range(count))
            row += count * n
            position += count
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.bias = model.hidden1.bias.detach()

    def __call__(self, features: np.ndarray) -> torch.Tensor:
        idx = features.astype(np.int64)
        idx[:, :N_WORD_FEATURES] = self.word_compact[idx[:, :N_WORD_FEATURES]]
        idx += self.offsets
        idx = torch.from_numpy(idx).to(self.table.device)
        return F.embedding_bag(idx, self.table, mode="sum") + self.bias


@torch.no_grad()
def parse(
    model: ChenManningParser, corpus: EncodedCorpus, precompute: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy parses: ``heads`` and relation indices, each ``[S, W]`` (column 0 is ROOT)."""
    was_training = model.training
    model.eval()
    n_relations = (model.output.out_features - 1) // 2
    first_layer = _FirstLayerTable(model, corpus) if precompute else None
    # Transition t belongs to group 0 (SHIFT), 1 (LEFT-ARC) or 2 (RIGHT-ARC).
    device = model.output.weight.device  # the state stays in numpy on the CPU; scores may not
    group = torch.tensor([0] + [1] * n_relations + [2] * n_relations, device=device)

    def choose(state: ArcStandardBatch, active: np.ndarray, step: int) -> np.ndarray:
        features = extract(state, active)
        if first_layer is not None:
            h = activate(first_layer(features), model.activation)
            scores = model.output(activate(model.hidden2(h), model.activation))
        else:
            scores = model(torch.from_numpy(features).to(device))
        legal = torch.from_numpy(state.legal(active)).to(device)[:, group]
        scores = scores.masked_fill(~legal, float("-inf"))
        return scores.argmax(dim=1).cpu().numpy()

    try:
        state = run_transitions(corpus, n_relations, choose)
    finally:
        model.train(was_training)
    return state.padded(state.head), state.padded(state.rel)
