"""Shared meta-test episodes: fixed per (split, shape, seed, index), whatever the batch size, chunking or
regularizer; a fingerprint in each result proves the pairing."""
import pytest
import torch

from bench.api import build_experiment
from bench.data.episodes import FixedEpisodes
from bench.store.protocol import load_protocol
from tests.data.test_episodes import id_bank

TINY = {"iterations": 2, "checkpoint_every": 2, "test_episodes": 6}


def _ids(episodes):
    """(class, image) ids of every support and query item, from the id bank's pixels."""
    return (episodes.x_support.round().long()[..., 0, 0], episodes.x_query.round().long()[..., 0, 0])


def test_episodes_do_not_depend_on_batch_size_or_count():
    bank = id_bank()
    whole = FixedEpisodes(bank, 5, 2, 3, seed=4, count=7).sample(7)
    pieces = FixedEpisodes(bank, 5, 2, 3, seed=4, count=7)
    parts = [pieces.sample(3), pieces.sample(4)]
    for got, want in zip(zip(*(_ids(p) for p in parts)), _ids(whole)):
        assert torch.equal(torch.cat(got), want)
    fewer = FixedEpisodes(bank, 5, 2, 3, seed=4, count=3).sample(3)
    assert torch.equal(_ids(fewer)[0], _ids(whole)[0][:3]) and torch.equal(_ids(fewer)[1], _ids(whole)[1][:3])
    assert torch.equal(fewer.y_query, whole.y_query[:3])


def test_fixed_episodes_are_valid_tasks_and_seeded():
    n, k, q = 5, 2, 3
    fixed = FixedEpisodes(id_bank(), n, k, q, seed=0, count=8)
    episodes = fixed.sample(8)
    support, query = _ids(episodes)
    for b in range(8):
        pairs = [tuple(p) for p in torch.cat([support[b], query[b]]).tolist()]
        assert len(set(pairs)) == n * (k + q)                          # distinct images, support apart from query
        assert len({c for c, _ in pairs}) == n                         # n distinct classes
        labels = torch.cat([episodes.y_support[b], episodes.y_query[b]]).tolist()
        assert len({(c, y) for (c, _), y in zip(pairs, labels)}) == n  # one label per class
    with pytest.raises(ValueError, match="fixed episodes"):
        fixed.sample(1)
    assert FixedEpisodes(id_bank(), n, k, q, seed=0, count=8).fingerprint() == fixed.fingerprint()
    assert FixedEpisodes(id_bank(), n, k, q, seed=1, count=8).fingerprint() != fixed.fingerprint()
    assert FixedEpisodes(id_bank(), n, k, q, seed=0, count=9).fingerprint() != fixed.fingerprint()


def _test(regularizer, seed=0, **overrides):
    protocol = load_protocol("omniglot_20w1s", "smoke", {**TINY, **overrides})
    return build_experiment(protocol, "maml", regularizer, seed=seed).test(progress=False)


def test_cells_with_different_regularizers_and_batches_share_episodes():
    plain = _test("none", test_batch=6)
    other = _test("meta_dropout", test_batch=4, test_sample_chunk=1)
    mixup = _test("mixup", test_batch=1, test_queries=2, queries=1)
    fingerprints = {r["episodes"]["fingerprint"] for r in (plain, other, mixup)}
    assert len(fingerprints) == 1 and plain["episodes"]["count"] == 6
    assert _test("none", seed=1)["episodes"]["fingerprint"] != plain["episodes"]["fingerprint"]
    assert _test("none", test_queries=1)["episodes"]["fingerprint"] != plain["episodes"]["fingerprint"]


def test_test_queries_shape_the_test_episodes_only():
    protocol = load_protocol("omniglot_20w1s", "smoke", {**TINY, "queries": 1, "test_queries": 3})
    experiment = build_experiment(protocol, "maml", "none", seed=0)
    fixed = FixedEpisodes(experiment.test_bank, protocol.ways, protocol.shots, protocol.test_queries, 0, 1)
    assert fixed.sample(1).x_query.shape[1] == protocol.ways * 3
    assert experiment.train(progress=False)["iterations"] == 2
