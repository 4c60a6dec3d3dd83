"""The denoiser wrappers, each alone and composed: prediction adapter, self-conditioning, the
guidance slot, x0 processing (diffusion_core/denoise)."""
from __future__ import annotations

import numpy as np
import pytest

from diffusion_core.architectures.inputs import class_label_input, self_condition_input
from diffusion_core.denoise import (Guided, ModelPrediction, ProcessX0, SelfConditioning, X0Processing,
                                    build_denoiser, no_guidance)
from diffusion_core.ops import NUMPY
from diffusion_core.prediction import Prediction, from_eps_x0
from diffusion_core import make_schedule, sample

RNG = np.random.default_rng(0)
X_T = RNG.standard_normal((3, 1, 4, 4)).astype(np.float32)
SELF_COND = self_condition_input(1, 4, 4)


class Recorder:
    """A model that returns a fixed function of x and records every call's inputs."""

    def __init__(self, scale: float = 0.3):
        self.calls, self.scale = [], scale

    def __call__(self, x, t, **inputs):
        self.calls.append((t, {k: np.array(v) for k, v in inputs.items()}))
        return self.scale * x


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_model_prediction_converts_raw_output_and_counts(kind):
    abar = 0.36
    model = Recorder()
    layer = ModelPrediction(model, kind)
    pred = layer(X_T, 10.0, abar, {})
    raw = 0.3 * X_T
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    # whatever the objective, the pair is consistent with x_t = a x0 + s eps and reproduces raw
    np.testing.assert_allclose(a * pred.x0 + s * pred.eps, X_T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_eps_x0(pred.eps, pred.x0, abar, kind), raw, rtol=1e-5, atol=1e-6)
    assert layer.evaluations == 1 and model.calls[0][0] == 10.0


def test_process_x0_clips_and_re_derives_eps():
    abar = 0.25
    x_t = np.full((1, 1, 2, 2), 3.0)
    layer = ProcessX0(ModelPrediction(lambda x, t: np.zeros_like(x), "eps"), X0Processing(clip=True), NUMPY)
    p = layer(x_t, 10.0, abar, {})
    assert np.all(p.x0 == 1.0)  # 3 / 0.5 = 6, clipped
    np.testing.assert_allclose(np.sqrt(abar) * p.x0 + np.sqrt(1 - abar) * p.eps, x_t)
    # off: the prediction passes through untouched
    raw = ModelPrediction(lambda x, t: np.zeros_like(x), "eps")(x_t, 10.0, abar, {})
    off = ProcessX0(ModelPrediction(lambda x, t: np.zeros_like(x), "eps"), X0Processing(clip=False), NUMPY)
    np.testing.assert_array_equal(off(x_t, 10.0, abar, {}).x0, raw.x0)


def test_self_conditioning_feeds_back_the_previous_estimate_under_the_declared_name():
    seen = []

    def inner(x_t, t, abar, inputs):
        seen.append(np.array(inputs[SELF_COND.name]))
        return Prediction(eps=x_t, x0=np.full_like(x_t, t))
    layer = SelfConditioning(inner, SELF_COND.name, NUMPY)
    layer(X_T, 7.0, 0.5, {})
    layer(X_T, 3.0, 0.5, {})
    assert np.all(seen[0] == 0.0) and np.all(seen[1] == 7.0)
    # a fresh wrapper (a new sample() call) starts from zeros again: no state crosses calls
    SelfConditioning(inner, SELF_COND.name, NUMPY)(X_T, 1.0, 0.5, {})
    assert np.all(seen[2] == 0.0)


def test_identity_guidance_changes_nothing():
    model = Recorder()
    plain = ProcessX0(ModelPrediction(model, "v"), X0Processing(), NUMPY)
    guided = ProcessX0(Guided(ModelPrediction(model, "v"), no_guidance), X0Processing(), NUMPY)
    a, b = plain(X_T, 500.0, 0.4, {}), guided(X_T, 500.0, 0.4, {})
    np.testing.assert_array_equal(a.x0, b.x0)
    np.testing.assert_array_equal(a.eps, b.eps)
    assert len(model.calls) == 2  # one model call each
    # and whole sampling loops agree bit for bit
    s = make_schedule("cosine")
    one = sample(model, s, sampler="dpmpp_2m", steps=6, shape=(2, 1, 4, 4), seed=3, prediction_type="v")
    two = sample(model, s, sampler="dpmpp_2m", steps=6, shape=(2, 1, 4, 4), seed=3, prediction_type="v")
    np.testing.assert_array_equal(one, two)


def test_a_guidance_sees_the_layer_below_and_the_inputs():
    calls = []

    def halve_eps(inner, x_t, t, abar, inputs):
        calls.append(sorted(inputs))
        pred = inner(x_t, t, abar, inputs)
        return Prediction(eps=0.5 * pred.eps, x0=pred.x0)
    labels = class_label_input(10)
    d = build_denoiser(Recorder(), "eps", NUMPY, model_inputs=(labels,), guidance=halve_eps,
                       inputs={labels.name: np.zeros(3, np.int64)}, x0_processing=X0Processing(clip=False))
    pred = d(X_T, 5.0, 0.5)
    np.testing.assert_allclose(pred.eps, 0.15 * X_T, rtol=1e-6)
    assert calls == [[labels.name]] and d.evaluations == 1


def test_build_denoiser_wires_self_conditioning_from_the_declaration_only():
    model = Recorder()
    d = build_denoiser(model, "eps", NUMPY, model_inputs=(SELF_COND,))
    d(X_T, 9.0, 0.5)
    d(X_T, 8.0, 0.5)
    assert [sorted(c[1]) for c in model.calls] == [[SELF_COND.name]] * 2
    assert np.all(model.calls[0][1][SELF_COND.name] == 0.0)
    assert np.abs(model.calls[1][1][SELF_COND.name]).max() > 0
    plain = Recorder()
    build_denoiser(plain, "eps", NUMPY)(X_T, 9.0, 0.5)
    assert plain.calls[0][1] == {}


def test_build_denoiser_refuses_inputs_the_model_does_not_declare():
    with pytest.raises(ValueError, match="takes no input"):
        build_denoiser(Recorder(), "eps", NUMPY, inputs={"class_labels": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="takes no input"):  # the chain feeds self-conditioning itself
        build_denoiser(Recorder(), "eps", NUMPY, model_inputs=(SELF_COND,),
                       inputs={SELF_COND.name: np.zeros((3, 1, 4, 4), np.float32)})
