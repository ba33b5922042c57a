"""Regularizers register themselves: a class with @register in a new file of regularizers/ is selectable by name
and is checked by the tests that cover every regularizer, with no other edit; bad registrations fail loudly."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.regularizer import REGISTRY, Regularizer, register
from regularizers import build_regularizer

REPO = Path(__file__).resolve().parents[2]

NEW_FILE = '''"""A user's regularizer: multiplicative Gaussian noise with a learned per-channel scale."""
import torch

from bench.core.regularizer import ForwardContext, Params, Regularizer, register


@register
class ChannelNoise(Regularizer):
    """f <- f * softplus(s + eps) per channel; s meta-learned; the query path uses eps = 0."""

    name = "channel_noise"
    draws_noise = True
    acts_per_example = True

    def init_params(self, spec, generator, dtype):
        return {f"phi.s{l}": torch.zeros(spec.channels, dtype=dtype) for l in range(1, 5)}, {}

    def sample_noise(self, spec, n, sample_shape, generator, device, dtype):
        return {f"eps{l}": torch.randn(*sample_shape, n, spec.channels, 1, 1, generator=generator, device=device,
                                       dtype=dtype) for l in range(1, 5)}

    def on_preactivation(self, block, h_in, f, ctx: ForwardContext):
        a = ctx.params[f"phi.s{block}"].view(-1, 1, 1)
        if ctx.stochastic:
            a = a + ctx.noise[f"eps{block}"]
        return ctx.ops.mul_softplus(f, a)
'''


def test_a_new_file_is_selectable_and_checked_by_the_registry_wide_tests(tmp_path):
    """A copy of regularizers/ with one more file, first on the path: the new class is in the registry, builds by
    name, and the float64 gradient tests over the registry run on it (and pass)."""
    shutil.copytree(REPO / "regularizers", tmp_path / "regularizers", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "regularizers" / "channel_noise.py").write_text(NEW_FILE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=append"]   # the copy first
    out = subprocess.run([*pytest, "-k", "channel_noise",
                          str(REPO / "tests" / "regularizers" / "test_gradients.py"),
                          str(REPO / "tests" / "regularizers" / "test_behaviour.py"),
                          str(REPO / "tests" / "execution" / "test_samples_as_batch.py")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 6, summary     # FD, vectorized = reference, MC, ...


def test_every_registered_class_is_built_by_its_name():
    for name, cls in REGISTRY.items():
        assert type(build_regularizer(name)) is cls and cls.name == name


def test_a_class_without_a_name_or_with_a_taken_one_is_refused():
    class Nameless(Regularizer):
        pass
    with pytest.raises(TypeError, match="needs a class attribute `name`"):
        register(Nameless)

    class Clash(Regularizer):
        name = "meta_dropout"
    with pytest.raises(TypeError, match="taken by regularizers.meta_dropout.MetaDropout"):
        register(Clash)
    assert "meta_dropout" in REGISTRY and REGISTRY["meta_dropout"] is not Clash


def test_an_activation_hook_must_be_declared():
    """The forward calls on_activation only where a regularizer states needs_full_activation: a hook without
    the statement would silently never run."""
    class Undeclared(Regularizer):
        name = "undeclared_activation_test"

        def on_activation(self, block, h_in, a, ctx):
            return 2 * a
    with pytest.raises(TypeError, match="needs_full_activation = True"):
        register(Undeclared)
    assert "undeclared_activation_test" not in REGISTRY
