"""Learning is real: MAML on real Omniglot 5-way 1-shot, trained briefly on CPU, is far above chance (20%).
This budget reached 78% (CI 2.5) when written; the bound leaves a wide margin."""
from bench.api import build_experiment
from bench.store.protocol import load_protocol

BUDGET = {"ways": 5, "shots": 1, "queries": 5, "channels": 16, "inner_steps": 2, "meta_batch": 4,
          "iterations": 200, "test_episodes": 100, "test_batch": 25, "mc_test": 1}


def test_maml_learns_real_omniglot_5way_1shot(omniglot_root):
    protocol = load_protocol("omniglot_20w1s", "paper", {**BUDGET, "inner_lr": 0.4, "meta_lr": 3e-3})
    experiment = build_experiment(protocol, "maml", "none", seed=0, data_root=omniglot_root)
    experiment.train(progress=False)
    result = experiment.test(progress=False)
    assert result["mean"] - result["ci95"] > 60.0, result["mean"]
