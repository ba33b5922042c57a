"""No perturbation: plain MAML / Meta-SGD."""
from bench.hooks import Regularizer


class NoRegularizer(Regularizer):
    """Every hook is the identity; no parameters, no noise."""

    name = "none"
