"""Model selection and averaging: the best dev epoch and its weights, EMA weights scored, and
word dropout at its configured rate."""

from __future__ import annotations

import pytest
import torch
from inprocess import train_tiny

from sm3repro.data.vocab import UNK_ID
from sm3repro.parser.features import N_FEATURES, N_WORD_FEATURES
from sm3repro.parser.model import ChenManningParser
from sm3repro.run import train

# Scripted dev LAS per epoch: the best is epoch 2, and epoch 3 ties it (the earlier one wins).
DEV_LAS = [0.30, 0.70, 0.70, 0.60]


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def test_best_dev_epoch_and_its_weights_are_kept(tmp_path, ewt_dir, monkeypatch) -> None:
    evaluate, dev_weights, test_scored = train.evaluate, [], []

    def scripted(model, data, split, cfg):
        scores, heads, rels = evaluate(model, data, split, cfg)
        w = weights(model)
        if split is data.dev:
            dev_weights.append(w)
            las = DEV_LAS[len(dev_weights) - 1]
        else:  # tell the test scores apart by the epoch whose weights were scored
            epoch = next(i + 1 for i, d in enumerate(dev_weights) if torch.equal(d, w))
            test_scored.append(epoch)
            las = epoch / 10
        return {**scores, "las_micro": las}, heads, rels

    monkeypatch.setattr(train, "evaluate", scripted)
    # dev scored at epoch ends only: the scripted scores are per epoch
    summary = train_tiny(
        tmp_path, ewt_dir, f"epochs={len(DEV_LAS)}", "batch_size=256", "dev_evals_per_epoch=1"
    )
    assert test_scored == [4, 2]  # the final model, then the best dev epoch's weights
    best = summary["best_dev"]
    assert best["epoch"] == 2 and best["dev"]["las_micro"] == 0.70
    assert best["test"]["las_micro"] == 0.2
    assert summary["final"]["test"]["las_micro"] == 0.4
    assert summary["final"]["dev"]["las_micro"] == 0.60
    assert not all(torch.equal(dev_weights[1], w) for w in dev_weights[2:])  # weights moved on


def test_ema_weights_are_the_ones_scored(tmp_path, ewt_dir, monkeypatch) -> None:
    decay = 0.8
    raw: list[torch.nn.Module] = []
    trajectory: list[torch.Tensor] = []  # raw weights before each training step
    init = ChenManningParser.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        raw.append(self)
        self.register_forward_pre_hook(
            lambda module, _: (
                trajectory.append(weights(module)) if module is raw[0] and module.training else None
            )
        )

    monkeypatch.setattr(ChenManningParser, "__init__", recording_init)
    evaluate, scored = train.evaluate, []

    def recording(model, data, split, cfg):
        result = evaluate(model, data, split, cfg)
        own = evaluate(raw[0], data, split, cfg)[0]  # the same split on the raw weights
        scored.append((split is data.dev, model, weights(model), weights(raw[0]), result[0], own))
        return result

    monkeypatch.setattr(train, "evaluate", recording)
    summary = train_tiny(tmp_path, ewt_dir, "epochs=1", "batch_size=256", f"ema_decay={decay}",
                         "dev_evals_per_epoch=1")  # fmt: skip
    is_dev, model, scored_w, raw_w, dev_scores, raw_scores = scored[0]
    # built by __init__: the trained model, then the host calibration's (run start and end);
    # the scored average is none of them
    assert is_dev and len(raw) == 3 and all(model is not built for built in raw)
    # the exponential moving average of the weights after each step, computed here
    steps = [*trajectory[1:], raw_w]
    ema = steps[0]
    for w in steps[1:]:
        ema = decay * ema + (1 - decay) * w
    torch.testing.assert_close(scored_w, ema, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(scored_w, raw_w)
    assert summary["final"]["dev"]["las_micro"] == dev_scores["las_micro"]
    test_scores = scored[1][4]
    assert summary["final"]["test"] == test_scores
    assert (dev_scores, test_scores) != (raw_scores, scored[1][5])


@pytest.mark.parametrize("rate", [0.25, 2.0])
def test_word_dropout_replaces_words_with_unk_at_a_over_a_plus_count(rate: float) -> None:
    counts = [0, 0, 0, 1, 4, 20, 0]  # NULL, ROOT, UNK, then words seen 1, 4, 20 and 0 times
    model = ChenManningParser(
        len(counts), 3, 3, 5, embed_dim=1, word_dropout=rate, word_counts=counts
    )
    with torch.no_grad():
        model.word_embed.weight[:, 0] = torch.arange(len(counts), dtype=torch.float32)
    n = 60_000
    words = torch.arange(n * N_WORD_FEATURES).remainder(len(counts)).view(n, N_WORD_FEATURES)
    features = torch.cat([words, torch.zeros(n, N_FEATURES - N_WORD_FEATURES, dtype=torch.long)], 1)
    torch.manual_seed(0)
    model.train()
    seen = model.embed(features)[:, :N_WORD_FEATURES].round().long()
    assert set(seen.unique().tolist()) <= set(range(len(counts)))
    replaced = seen != words
    assert (seen[replaced] == UNK_ID).all()  # a dropped word becomes UNK, nothing else
    for word, count in enumerate(counts):
        mask = words == word
        expected = rate / (rate + count) if count > 0 else 0.0
        got = replaced[mask].float().mean().item()
        sigma = (expected * (1 - expected) / mask.sum().item()) ** 0.5
        assert abs(got - expected) <= 5 * sigma + 1e-9, (word, count, got, expected)
    model.eval()
    assert torch.equal(model.embed(features)[:, :N_WORD_FEATURES].round().long(), words)


def test_no_word_dropout_keeps_every_word() -> None:
    model = ChenManningParser(5, 3, 3, 5, embed_dim=1, word_counts=[0, 0, 0, 1, 1])
    with torch.no_grad():
        model.word_embed.weight[:, 0] = torch.arange(5, dtype=torch.float32)
    words = torch.arange(4000 * N_WORD_FEATURES).remainder(5).view(4000, N_WORD_FEATURES)
    features = torch.cat(
        [words, torch.zeros(4000, N_FEATURES - N_WORD_FEATURES, dtype=torch.long)], 1
    )
    model.train()
    assert torch.equal(model.embed(features)[:, :N_WORD_FEATURES].round().long(), words)


def test_word_dropout_keeps_the_checkpoint_format() -> None:
    """The UNK probabilities are derived from the train counts, not state: a model with word
    dropout saves and loads the same state dict as one without (checkpoints, best weights)."""
    plain = ChenManningParser(7, 3, 3, 5, embed_dim=2)
    dropping = ChenManningParser(7, 3, 3, 5, embed_dim=2, word_dropout=0.25, word_counts=[1] * 7)
    assert dropping.state_dict().keys() == plain.state_dict().keys()
    dropping.load_state_dict(plain.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": -0.1}, "model.dropout must be in"),
        ({"dropout": 1.0}, "model.dropout must be in"),
        ({"word_dropout": -0.5, "word_counts": [1] * 7}, "model.word_dropout must be >= 0"),
        ({"word_dropout": 0.25}, "needs the train word counts"),
    ],
)
def test_dropout_rates_out_of_range_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChenManningParser(7, 3, 3, 5, embed_dim=2, **kwargs)


def test_hidden_layers_take_their_configured_widths() -> None:
    model = ChenManningParser(7, 3, 3, 5, embed_dim=2, hidden=(30, 20))
    assert model.hidden1.out_features == 30 and model.hidden2.in_features == 30
    assert model.hidden2.out_features == 20 and model.output.in_features == 20
    assert model(torch.zeros(4, N_FEATURES, dtype=torch.long)).shape == (4, 5)


def test_word_dropout_never_drops_a_word_whose_probability_is_zero(monkeypatch) -> None:
    """NULL, ROOT and UNK (count 0) have p = 0: kept even on a uniform draw of exactly 0.0,
    which torch.rand can return; any positive p drops the word on that draw."""
    counts = [0, 0, 0, 3]
    model = ChenManningParser(4, 3, 3, 5, embed_dim=1, word_dropout=1.0, word_counts=counts)
    with torch.no_grad():
        model.word_embed.weight[:, 0] = torch.arange(4, dtype=torch.float32)
    words = torch.arange(4).repeat(N_WORD_FEATURES // 4 + 1)[:N_WORD_FEATURES].view(1, -1)
    features = torch.cat([words, torch.zeros(1, N_FEATURES - N_WORD_FEATURES, dtype=torch.long)], 1)
    monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.zeros(shape))
    model.train()
    seen = model.embed(features)[:, :N_WORD_FEATURES].round().long()
    assert torch.equal(seen, torch.where(words == 3, UNK_ID, words))


def test_embeddings_start_uniform_in_a_tenth() -> None:
    """Chen & Manning's initialization: every embedding table U(-0.1, 0.1), not nn.Embedding's
    N(0, 1) (the uniform's std is 0.1 / sqrt(3) = 0.0577)."""
    torch.manual_seed(0)
    model = ChenManningParser(2000, 50, 40, 5, embed_dim=50)
    for table in (model.word_embed, model.tag_embed, model.label_embed):
        w = table.weight.detach()
        assert w.abs().max() <= 0.1 and w.std().item() == pytest.approx(0.1 / 3**0.5, rel=0.05)


def test_the_word_table_gives_dense_gradients_unless_asked() -> None:
    """The study protocol is dense; row-sparse word gradients are the opt-in switch."""
    features = torch.zeros(4, N_FEATURES, dtype=torch.long)
    for sparse in (None, True):
        kwargs = {} if sparse is None else {"sparse_word_grads": sparse}
        model = ChenManningParser(7, 3, 3, 5, embed_dim=2, **kwargs)
        model(features).sum().backward()
        assert model.word_embed.weight.grad.is_sparse is bool(sparse)


def test_dropout_rates_at_zero_are_accepted() -> None:
    """0 is the edge of the valid range: the no-dropout arm trains with model.dropout=0."""
    model = ChenManningParser(7, 3, 3, 5, embed_dim=2, dropout=0.0, word_dropout=0.0)
    assert model.dropout == 0.0 and model.word_dropout == 0.0
