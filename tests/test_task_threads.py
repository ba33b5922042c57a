"""The per-task path on a CPU with T > 1 intra-op threads runs T tasks at once, one thread each: its loss,
accuracies and meta-gradients equal the one-thread run bit for bit, and the thread count is restored."""
from __future__ import annotations

import torch

from bench.meta_gradient import meta_gradients
from tests.meta_gradcheck import tiny_episodes, tiny_learner


def _run(threads: int, regularizer: str):
    learner = tiny_learner(regularizer, dtype=torch.float32)
    ep = tiny_episodes(batch=3)
    ep = type(ep)(ep.x_support.float(), ep.y_support, ep.x_query.float(), ep.y_query)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = meta_gradients(learner, ep, "per_task")
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    return result


def test_tasks_on_threads_equal_one_thread_bit_for_bit():
    for regularizer in ("none", "meta_dropout"):
        (loss_1, acc_1, grads_1), (loss_2, acc_2, grads_2) = _run(1, regularizer), _run(2, regularizer)
        assert torch.equal(loss_1, loss_2) and torch.equal(acc_1, acc_2)
        assert all(torch.equal(a, b) for a, b in zip(grads_1, grads_2)), regularizer
