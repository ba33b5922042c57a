"""On a GPU: the meta-training step replayed as a CUDA graph equals the eager step on the same episodes and noise,
for MAML and Meta-SGD with every regularizer, in float32 and float64; each replay draws fresh noise; a graphed
run killed and resumed ends where an uninterrupted one does. Skipped without a CUDA device."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from bench.execution.cuda_graph import GraphedStep, use_graph
from bench.util.errors import UserError
from bench.core.learner import ALGORITHMS, LearnerConfig, MetaLearner
from bench.core.train import make_optimizer, outer_step
from regularizers import REGISTRY, build_regularizer
from tests.meta_gradcheck import TINY, tiny_episodes

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (run bench/benchmarks/gpu_check.sh)")
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def test_graph_mode_on_needs_a_gpu():
    assert use_graph("off", torch.device("cpu")) is False and use_graph("auto", torch.device("cpu")) is False
    with pytest.raises(UserError, match="cuda"):
        use_graph("on", torch.device("cpu"))


def _learner(algorithm: str, regularizer: str, dtype: torch.dtype) -> MetaLearner:
    config = LearnerConfig(algorithm=algorithm, inner_lr=0.1, inner_steps=2, mc_train=2)
    return MetaLearner(TINY, build_regularizer(regularizer), config, seed=3, device="cuda", dtype=dtype)


def _batches(dtype: torch.dtype, count: int = 3):
    out = []
    for seed in range(count):
        ep = tiny_episodes(seed=seed)
        out.append(type(ep)(ep.x_support.to("cuda", dtype), ep.y_support.cuda(), ep.x_query.to("cuda", dtype),
                            ep.y_query.cuda()))
    return out


@pytest.fixture
def deterministic_cudnn():
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


@needs_gpu
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("regularizer", sorted(REGISTRY))
def test_graphed_step_equals_eager_step(regularizer, algorithm, dtype):
    batches = _batches(dtype)
    eager, graphed = _learner(algorithm, regularizer, dtype), _learner(algorithm, regularizer, dtype)
    eager_opt = make_optimizer(eager, 1e-2, capturable=True)
    graphed_opt = make_optimizer(graphed, 1e-2, capturable=True)
    expected = [outer_step(eager, eager_opt, ep) for ep in batches]
    step = GraphedStep(graphed, graphed_opt, partial(outer_step, graphed, graphed_opt), batches[0])
    for ep, (loss, accuracy) in zip(batches, expected):
        got_loss, got_accuracy = step(ep)
        torch.testing.assert_close(got_loss, loss, **TOLERANCE[dtype])
        torch.testing.assert_close(got_accuracy, accuracy)
    for (name, p), q in zip(eager.named_parameters().items(), graphed.parameters()):
        torch.testing.assert_close(q, p, **TOLERANCE[dtype], msg=name)
    assert any((p - q).abs().max() > 0 for p, q in zip(eager.parameters(), _learner(algorithm, regularizer,
                                                                                     dtype).parameters()))
    if graphed.reg.draws_noise:                       # each replay advanced the noise stream like an eager step
        assert torch.equal(graphed.noise_generator.get_state(), eager.noise_generator.get_state())


@needs_gpu
def test_graphed_training_resumes_where_it_stopped(tmp_path, deterministic_cudnn):
    from bench.api import build_experiment
    from bench.store.protocol import load_protocol

    def experiment():
        protocol = load_protocol("omniglot_20w1s", "smoke", {"iterations": 6, "checkpoint_every": 2})
        return build_experiment(protocol, "maml", "meta_dropout", seed=0, device="cuda")

    straight = experiment()
    summary = straight.train(tmp_path / "a.pt", progress=False)
    assert summary["cuda_graph"] is True and summary["execution"] == "vectorized"

    class Kill(Exception):
        pass

    def kill_at_3(iteration):
        if iteration == 3:
            raise Kill

    with pytest.raises(Kill):
        experiment().train(tmp_path / "b.pt", progress=False, on_iteration=kill_at_3)
    resumed = experiment()
    assert resumed.train(tmp_path / "b.pt", progress=False)["resumed_from"] == 2
    for (name, p), q in zip(straight.learner.named_parameters().items(), resumed.learner.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)


@needs_gpu
@pytest.mark.parametrize("regularizer", sorted(REGISTRY))
def test_every_execution_path_equals_the_reference_on_the_gpu(regularizer):
    """float64 on CUDA (cuDNN kernels, elementary batch norm under vmap, the stock one per task): the vectorized
    and per-task meta-gradients equal the per-task reference loop's."""
    from tests.meta_gradcheck import meta_gradients as path_gradients
    learner = _learner("maml", regularizer, torch.float64)
    episodes = _batches(torch.float64, 1)[0]
    loss_ref, ref = path_gradients(learner, episodes, "reference")
    for execution in ("vectorized", "per_task"):
        loss, grads = path_gradients(learner, episodes, execution)
        torch.testing.assert_close(loss, loss_ref, rtol=1e-10, atol=1e-12, msg=execution)
        for name, g in grads.items():
            torch.testing.assert_close(g, ref[name], rtol=1e-8, atol=1e-11, msg=f"{execution}: {name}")


@needs_gpu
def test_test_episodes_are_the_same_on_the_gpu():
    from bench.data.registry import load_bank
    from bench.data.episodes import FixedEpisodes
    banks = {d: load_bank("synthetic", "test", device=d, n_classes=12, n_per_class=8, image_shape=(1, 16, 16))
             for d in ("cpu", "cuda")}
    draws = {d: FixedEpisodes(bank, 5, 1, 3, seed=4, count=6) for d, bank in banks.items()}
    assert draws["cpu"].fingerprint() == draws["cuda"].fingerprint()
    cpu, gpu = draws["cpu"].sample(6), draws["cuda"].sample(6)
    assert torch.equal(cpu.x_support, gpu.x_support.cpu()) and torch.equal(cpu.y_query, gpu.y_query.cpu())
