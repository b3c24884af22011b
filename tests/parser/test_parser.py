"""Arc-standard oracle, features, decoding and learning on real EWT sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sm3repro.data.treebank import read_treebank
from sm3repro.data.vocab import TreebankView, Vocab
from sm3repro.metrics import attachment_scores
from sm3repro.parser.decode import parse
from sm3repro.parser.features import N_FEATURES, oracle_examples
from sm3repro.parser.model import ChenManningParser
from sm3repro.parser.transitions import encode, run_transitions


@pytest.fixture(scope="module")
def train_sentences(ewt_train):
    return read_treebank(ewt_train)


@pytest.fixture(scope="module")
def vocab(train_sentences):
    return Vocab.build(train_sentences, TreebankView(), min_word_freq=2)


def test_oracle_replay_rebuilds_every_projective_train_tree(train_sentences, vocab):
    projective = [s for s in train_sentences if s.is_projective()]
    assert len(train_sentences) - len(projective) == 288
    corpus = encode(projective, vocab)
    features, gold = oracle_examples(corpus, len(vocab.relations))
    assert features.shape == (392_214, N_FEATURES)
    assert len(gold) == 2 * int(corpus.lengths.sum())

    cursor = 0

    def replay(state, active, step):  # rows were written step-major, in `active` order
        nonlocal cursor
        cursor += len(active)
        return gold[cursor - len(active) : cursor].astype(np.int64)

    state = run_transitions(corpus, len(vocab.relations), replay)
    assert cursor == len(gold)
    heads, rels = state.padded(state.head), state.padded(state.rel)
    words = corpus.heads >= 0
    assert np.array_equal(heads[words], corpus.heads[words])
    assert np.array_equal(rels[words], corpus.relations[words])


def test_first_configuration_features(train_sentences, vocab):
    """Initial state: stack [ROOT], buffer w1 w2 w3; everything else NULL."""
    sent = train_sentences[0]
    corpus = encode([sent], vocab)
    features, gold = oracle_examples(corpus, len(vocab.relations))
    first = features[0]  # step-major rows: row k is the k-th configuration of this sentence
    view = vocab.view
    words = [vocab.word_index.get(w, 2) for w in view.words(sent)[:3]]
    assert first[0] == 1  # s1 = ROOT
    assert list(first[1:3]) == [0, 0]  # s2, s3 NULL
    assert list(first[3:6]) == words
    assert list(first[6:18]) == [0] * 12
    assert first[18] == 1 and list(first[36:48]) == [0] * 12
    assert gold[0] == 0 and gold[1] == 0  # two shifts before any arc is possible


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoding_always_yields_trees(train_sentences, vocab, ewt_dev, seed):
    torch.manual_seed(seed)
    dev = read_treebank(ewt_dev)[:400]
    model = ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions
    )
    with torch.no_grad():  # random weights, scaled up so illegal moves would often win unmasked
        for p in model.parameters():
            p.mul_(5)
    corpus = encode(dev, vocab)
    heads, rels = parse(model, corpus)
    for k, sent in enumerate(dev):
        n = len(sent)
        h = heads[k, 1 : n + 1]
        assert (h == 0).sum() == 1
        assert ((h >= 0) & (h <= n) & (h != np.arange(1, n + 1))).all()
        for start in range(1, n + 1):  # following heads reaches ROOT within n steps
            node, hops = start, 0
            while node != 0 and hops <= n:
                node, hops = h[node - 1], hops + 1
            assert node == 0
        assert ((rels[k, 1 : n + 1] >= 0) & (rels[k, 1 : n + 1] < len(vocab.relations))).all()


def test_precomputed_first_layer_gives_the_same_parses(train_sentences, vocab, ewt_test):
    torch.manual_seed(0)
    test = read_treebank(ewt_test)[:300]
    model = ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions
    )
    corpus = encode(test, vocab)
    fast = parse(model, corpus, precompute=True)
    direct = parse(model, corpus, precompute=False)
    assert np.array_equal(fast[0], direct[0]) and np.array_equal(fast[1], direct[1])


def test_a_small_model_learns_its_training_sentences(train_sentences):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sents = [s for s in train_sentences[:80] if s.is_projective()][:50]
    vocab = Vocab.build(sents, TreebankView(), min_word_freq=1)
    corpus = encode(sents, vocab)
    features, gold = oracle_examples(corpus, len(vocab.relations))
    x, y = torch.from_numpy(features), torch.from_numpy(gold.astype(np.int64))
    model = ChenManningParser(
        len(vocab.words), len(vocab.tags), len(vocab.labels), vocab.n_transitions, dropout=0.0
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    heads, rels = parse(model, corpus)
    pred_heads = [heads[k, 1 : len(s) + 1].tolist() for k, s in enumerate(sents)]
    pred_rels = [[vocab.relations[r] for r in rels[k, 1 : len(s) + 1]] for k, s in enumerate(sents)]
    scores = attachment_scores(sents, pred_heads, pred_rels, labels="full")
    assert scores["uas_micro"] >= 0.95, scores
    assert scores["las_micro"] >= 0.90, scores
