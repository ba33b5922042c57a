"""bench.benchmarks.peers' reference implementations compute the suite's meta-gradient (float64, same noise), so the
benchmark compares equal work; the driver writes its table. Peers that are not installed are skipped."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from bench.core.meta_gradient import meta_gradients
from bench.benchmarks.peer_models import INSTALL, PEERS, PeerStep, not_installed
from tests.meta_gradcheck import tiny_episodes, tiny_learner

REPO = Path(__file__).resolve().parents[2]


def _noise(learner, episodes):
    batch, n = episodes.x_support.shape[:2]
    return [learner.reg.sample_noise(learner.spec, n, (batch, 1), learner.noise_generator, learner.device,
                                     learner.dtype) if learner.reg.draws_noise else {}
            for _ in range(learner.config.inner_steps)]


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("regularizer", ["none", "meta_dropout"])
def test_peer_meta_gradients_equal_the_suite(peer, regularizer):
    module = PEERS[peer][0]
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(not_installed(module))
    learner, episodes = tiny_learner(regularizer), tiny_episodes()
    state = learner.noise_generator.get_state()
    _, _, grads = meta_gradients(learner, episodes, "reference")
    learner.noise_generator.set_state(state)
    noise = _noise(learner, episodes)
    step = PeerStep(peer, learner, 1e-3)
    step.gradients(episodes, noise)
    expected = dict(zip(learner.named_parameters(), grads))
    got = step.named_gradients()
    assert set(got) == set(expected)
    for name, g in got.items():
        torch.testing.assert_close(g, expected[name], rtol=1e-9, atol=1e-12, msg=name)


def test_install_hints_say_what_the_peers_extra_installs():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["peers"]
    modules = {module for module, _ in PEERS.values() if module}
    assert set(INSTALL) == modules
    for module in modules:
        in_extra = any(re.match(rf"{module}\b", dep) for dep in extra)
        assert ("'.[peers]'" in not_installed(module)) == in_extra, module
    assert "numpy < 2" in not_installed("learn2learn")


def test_driver_writes_its_table(tmp_path, monkeypatch):
    import bench.benchmarks.peers as peers
    monkeypatch.setitem(peers.CONFIGS, "tiny", ({"ways": 3, "meta_batch": 2, "channels": 4, "queries": 2,
                                                 "inner_steps": 1}, 1))
    monkeypatch.setattr(peers, "TEST_CONFIG", ({"ways": 3, "meta_batch": 2, "channels": 4, "queries": 2,
                                                "inner_steps": 1, "mc_test": 3, "test_batch": 2}, 1))
    out = tmp_path / "peers.json"
    assert peers.main(["--configs", "tiny", "--reps", "1", "--test-episodes", "2", "--no-memory",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["regularizer"] for r in report["rows"]] == ["none", "meta_dropout"]
    for row in report["rows"]:
        assert row["times"]["suite"]["ms_median"] > 0 and row["execution"] == "per_task"
        assert all(d < 1e-9 for d in row["gradient_rel_diff"].values())        # checked in float64
    assert report["meta_test"]["episodes"] == 2 and len(report["meta_test"]["naive_accuracies"]) == 2
    assert report["meta_test"]["same_accuracies_float64"] is True
