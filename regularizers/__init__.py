"""Regularizer registry: one file per family; add a class here to make it selectable by name."""
from __future__ import annotations

from typing import Any

from bench.util.errors import UserError
from bench.core.regularizer import Regularizer
from regularizers.fgsm import FGSM
from regularizers.information import VIB, InformationDropout
from regularizers.meta_dropout import MetaDropout
from regularizers.mixup import Mixup
from regularizers.noise_ablations import (DeterministicMetaDropout, FixedGaussian, IndependentGaussian,
                                          MetaDropoutAdditive, MetaDropoutLearnedVariance, WeightGaussian)
from regularizers.none import NoRegularizer

REGISTRY: dict[str, type[Regularizer]] = {cls.name: cls for cls in (
    NoRegularizer,
    MetaDropout,
    FixedGaussian,
    IndependentGaussian,
    WeightGaussian,
    DeterministicMetaDropout,
    MetaDropoutLearnedVariance,
    MetaDropoutAdditive,
    Mixup,
    VIB,
    InformationDropout,
    FGSM,
)}


def build_regularizer(name: str, hyper: dict[str, Any] | None = None) -> Regularizer:
    """Instantiate a registered regularizer; an unknown name raises UserError listing what exists."""
    if name not in REGISTRY:
        raise UserError(f"unknown regularizer '{name}'; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**(hyper or {}))
