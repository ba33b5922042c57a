"""No perturbation: plain MAML / Meta-SGD."""
from bench.core.regularizer import Regularizer, register


@register
class NoRegularizer(Regularizer):
    """Every hook is the identity; no parameters, no noise."""

    name = "none"
