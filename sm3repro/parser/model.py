"""The Chen & Manning (2014) feed-forward parser: embeddings, two hidden layers, softmax."""

from __future__ import annotations

import os

import torch
from torch import nn

from sm3repro import study
from sm3repro.data.vocab import UNK_ID
from sm3repro.parser.features import N_LABEL_FEATURES, N_TAG_FEATURES, N_WORD_FEATURES

ACTIVATIONS = ("relu", "cube", "tanh")
# The defaults below are the config's too (sm3repro.run.config.ModelConfig reads them).
ACTIVATION = "relu"
DROPOUT = 0.5


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return torch.relu(x)
    if name == "cube":
        return x * x * x
    return torch.tanh(x)


class ChenManningParser(nn.Module):
    """Word, POS and label embeddings -> hidden -> hidden -> scores over 2L+1 transitions."""

    def __init__(
        self,
        n_words: int,
        n_tags: int,
        n_labels: int,
        n_transitions: int,
        embed_dim: int = study.EMBED_DIM,
        hidden: tuple[int, int] = study.HIDDEN,
        activation: str = ACTIVATION,
        dropout: float = DROPOUT,
        word_dropout: float = 0.0,
        word_counts: list[int] | None = None,
        sparse_word_grads: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        if word_dropout < 0 or (word_dropout > 0 and word_counts is None):
            raise ValueError("model.word_dropout must be >= 0 and needs the train word counts")
        self.activation, self.dropout, self.embed_dim = activation, dropout, embed_dim
        # Word dropout (Kiperwasser & Goldberg, 2016): in training, a word seen c times is
        # replaced by UNK with probability a / (a + c), so UNK's embedding learns rare words.
        self.word_dropout = word_dropout
        if word_dropout > 0:
            counts = torch.tensor(word_counts, dtype=torch.float32)
            p = torch.where(counts > 0, word_dropout / (word_dropout + counts), torch.zeros(()))
            self.register_buffer("word_unk_p", p, persistent=False)
        # sparse_word_grads: the word table's gradient holds only the rows of a batch's words
        # (for optimizers that are exact with row-sparse updates; see sparse_rows_config).
        self.word_embed = nn.Embedding(n_words, embed_dim, sparse=sparse_word_grads)
        self.tag_embed = nn.Embedding(n_tags, embed_dim)
        self.label_embed = nn.Embedding(n_labels, embed_dim)
        n_inputs = (N_WORD_FEATURES + N_TAG_FEATURES + N_LABEL_FEATURES) * embed_dim
        self.hidden1 = nn.Linear(n_inputs, hidden[0])
        self.hidden2 = nn.Linear(hidden[0], hidden[1])
        self.output = nn.Linear(hidden[1], n_transitions)
        for table in (self.word_embed, self.tag_embed, self.label_embed):
            nn.init.uniform_(table.weight, -0.1, 0.1)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, 48]`` feature ids -> ``[B, 48 * embed_dim]`` concatenated embeddings."""
        w, t = N_WORD_FEATURES, N_WORD_FEATURES + N_TAG_FEATURES
        words = features[:, :w]
        if self.training and self.word_dropout > 0:
            drop = torch.rand(words.shape, device=words.device) < self.word_unk_p[words]
            words = words.masked_fill(drop, UNK_ID)
        parts = (
            self.word_embed(words),
            self.tag_embed(features[:, w:t]),
            self.label_embed(features[:, t:]),
        )
        return torch.cat(parts, dim=1).flatten(1)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Drawing the mask as `rand >= p` is several times cheaper on CPU than nn.Dropout here.
        if not self.training or self.dropout == 0.0:
            return x
        keep = torch.rand_like(x) >= self.dropout
        return x * keep * (1.0 / (1.0 - self.dropout))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self._drop(activate(self.hidden1(self.embed(features)), self.activation))
        h = self._drop(activate(self.hidden2(h), self.activation))
        return self.output(h)

    def load_pretrained(self, path: str | os.PathLike, words: list[str]) -> int:
        """Copy vectors for known words from a ``word v1 ... vd`` text file; returns how many.

        The file's dimension must equal ``embed_dim``; a malformed line raises with its number.
        """
        index = {w: i for i, w in enumerate(words)}
        found = 0
        weight = self.word_embed.weight
        with open(path, encoding="utf-8") as fh, torch.no_grad():
            for line_no, line in enumerate(fh, start=1):
                parts = line.rstrip().split(" ")
                if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec-style "count dim" header
                if len(parts) != self.embed_dim + 1:
                    raise ValueError(
                        f"{path}:{line_no}: expected a word and {self.embed_dim} numbers, "
                        f"found {len(parts) - 1} numbers"
                    )
                i = index.get(parts[0])
                if i is not None:
                    try:
                        weight[i] = torch.tensor([float(x) for x in parts[1:]])
                    except ValueError:
                        raise ValueError(f"{path}:{line_no}: non-numeric vector value") from None
                    found += 1
        return found
