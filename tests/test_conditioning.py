"""Class labels, classifier-free guidance, image-to-image and inpainting on a closed-form model.

Data: per pixel, class k draws x0 ~ N(mu_k, s0^2). The exact denoisers are known: E[x0 | x_t, k]
for a label, and for the null class the posterior mean under the mixture of the classes. So
every wrapper can be checked against numbers, not just run.
"""
from __future__ import annotations

import numpy as np
import pytest

from diffusion_core import list_samplers, make_schedule, sample
from diffusion_core.architectures.inputs import class_label_input
from diffusion_core.prediction import from_eps_x0

SCHEDULE = make_schedule("cosine", 1000)
MUS = np.array([-0.6, 0.0, 0.6])
S0 = 0.1
LABELS = class_label_input(len(MUS))
SHAPE = (6, 1, 4, 4)


def abar_at(t: float) -> float:
    return float(np.interp(t, np.arange(1000), SCHEDULE.alphas_cumprod))


def posterior_x0(x, a, s, label):
    """E[x0 | x_t] for class `label`, or under the uniform mixture for the null class."""
    def given(mu):
        return mu + a * S0 ** 2 / (a * a * S0 ** 2 + s * s) * (x - a * mu)
    if label < len(MUS):
        return given(MUS[label])
    var = a * a * S0 ** 2 + s * s
    logw = np.stack([-(x - a * mu) ** 2 / (2 * var) for mu in MUS])
    w = np.exp(logw - logw.max(axis=0))
    w /= w.sum(axis=0)
    return sum(w[i] * given(mu) for i, mu in enumerate(MUS))


class ClassModel:
    """An exact model of the data above, for any prediction type; records each call's batch."""

    def __init__(self, kind: str = "eps"):
        self.kind, self.batches = kind, []

    def __call__(self, x, t, class_labels=None):
        self.batches.append(len(x))
        if class_labels is None:  # what the backends' adapters fill in: the null class
            class_labels = np.full(len(x), len(MUS))
        abar = abar_at(t)
        a, s = np.sqrt(abar), np.sqrt(1 - abar)
        x0 = np.stack([posterior_x0(x[i], a, s, int(class_labels[i])) for i in range(len(x))])
        eps = (x - a * x0) / s
        return from_eps_x0(eps, x0, abar, self.kind).astype(np.float32)


def run(model, **kwargs):
    kwargs = {"sampler": "ddim", "steps": 20, "shape": SHAPE, "seed": 0, "clip_x0": False, **kwargs}
    return sample(model, SCHEDULE, prediction_type=model.kind, model_inputs=(LABELS,), **kwargs)


def test_labels_condition_and_the_null_class_is_the_default():
    model = ClassModel()
    out = run(model, class_labels=[0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), np.tile(MUS, 2), atol=0.08)
    assert set(model.batches) == {6}  # w = 1: one forward of the batch per step
    uncond = run(ClassModel()).ravel()  # no labels: the null class, the per-pixel mixture
    nearest = np.abs(uncond[:, None] - MUS[None]).min(axis=1)
    assert np.mean(nearest < 3 * S0) > 0.95  # every pixel lands in one of the classes' modes
    assert len({int(np.argmin(np.abs(v - MUS))) for v in uncond}) == 3  # and all of them occur


def test_guidance_is_one_doubled_forward_and_follows_the_formula():
    model = ClassModel()
    labels = np.array([0, 1, 2, 0, 1, 2])
    run(model, class_labels=labels, guidance_scale=3.0, steps=5)
    assert model.batches == [12] * 5  # conditional and unconditional halves together
    # one step by hand: eps_u + w (eps_c - eps_u), then DDIM from t = 999 to the next timestep
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    one = run(ClassModel(), class_labels=labels, guidance_scale=3.0, steps=1, x_T=x, shape=None)
    eps_c = ClassModel()(x, 999.0, labels)
    eps_u = ClassModel()(x, 999.0, np.full(6, 3))
    eps = eps_u + 3.0 * (eps_c - eps_u)
    a = np.sqrt(abar_at(999.0))
    np.testing.assert_allclose(one, (x - np.sqrt(1 - a * a) * eps) / a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["x0", "v"])
def test_guidance_gives_the_same_images_for_every_prediction_type(kind):
    labels = [2, 1, 0, 2, 1, 0]
    want = run(ClassModel("eps"), class_labels=labels, guidance_scale=4.0, steps=8)
    got = run(ClassModel(kind), class_labels=labels, guidance_scale=4.0, steps=8)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_stronger_guidance_tightens_towards_the_class():
    labels = np.array([1] * 6)
    plain = run(ClassModel(), class_labels=labels, steps=30)
    guided = run(ClassModel(), class_labels=labels, guidance_scale=4.0, steps=30)
    assert np.abs(guided.mean() - MUS[1]) < 0.05
    assert guided.std() < plain.std()  # the usual trade: less diversity as w grows


def test_interval_guides_only_inside_it():
    model = ClassModel()
    run(model, class_labels=[0, 1, 2, 0, 1, 2], guidance_scale=3.0, steps=10, guidance_interval=(300, 700))
    ts = np.round(np.arange(1000, 0, -100)) - 1  # the trailing timesteps of 10 steps
    assert model.batches == [12 if 300 <= t <= 700 else 6 for t in ts]


@pytest.mark.parametrize("phi", [0.0, 0.5, 1.0])
def test_rescale_matches_the_conditional_spread(phi):
    """Lin et al. 2023, Sec. 3.4 on x0: phi = 1 gives the conditional x0's per-image std."""
    from diffusion_core.denoise import ClassifierFreeGuidance, ModelPrediction
    from diffusion_core.ops import NUMPY
    labels = np.array([0, 1, 2, 0, 1, 2])
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(np.float32)
    inner = ModelPrediction(ClassModel(), "eps")
    abar = abar_at(500.0)
    guided = ClassifierFreeGuidance(7.5, LABELS.name, 3, NUMPY, rescale=phi)(
        inner, x, 500.0, abar, {LABELS.name: labels})
    plain = ClassifierFreeGuidance(7.5, LABELS.name, 3, NUMPY)(inner, x, 500.0, abar, {LABELS.name: labels})
    cond = inner(x, 500.0, abar, {LABELS.name: labels})
    std = lambda v: v.reshape(6, -1).std(axis=1)  # noqa: E731
    matched = plain.x0 * (std(cond.x0) / std(plain.x0))[:, None, None, None]
    np.testing.assert_allclose(guided.x0, phi * matched + (1 - phi) * plain.x0, rtol=1e-4, atol=1e-5)
    if phi == 1.0:
        np.testing.assert_allclose(std(guided.x0), std(cond.x0), rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(abar) * guided.x0 + np.sqrt(1 - abar) * guided.eps, x, atol=1e-4)


def test_image_to_image_runs_the_last_share_of_the_steps():
    init = np.full((1, 4, 4), 0.6, np.float32)
    distances = []
    for strength in (0.2, 0.5, 1.0):
        model = ClassModel()
        out = run(model, init_image=init, strength=strength, steps=20)
        assert len(model.batches) == round(20 * strength)
        distances.append(float(np.abs(out - init).mean()))
    assert distances[0] < distances[1] < distances[2]  # the more noise, the further from the input


@pytest.mark.parametrize("sampler", list_samplers())
def test_inpainting_keeps_the_known_region_exactly(sampler):
    init = np.random.default_rng(2).uniform(-1, 1, (1, 4, 4)).astype(np.float32)
    mask = np.zeros((4, 4), np.float32)
    mask[:, 2:] = 1.0                               # generate the right half
    out = run(ClassModel(), sampler=sampler, init_image=init, mask=mask, steps=8)
    np.testing.assert_allclose(out[:, :, :, :2], np.broadcast_to(init[:, :, :2], (6, 1, 4, 2)), atol=1e-5)
    assert np.abs(out[:, :, :, 2:] - init[:, :, 2:]).max() > 0.1


def test_the_model_sees_the_known_region_at_its_noise_level():
    init = np.full((1, 4, 4), 0.6, np.float32)
    mask = np.ones((4, 4), np.float32)
    mask[0, 0] = 0.0
    seen = []

    class Spy(ClassModel):
        def __call__(self, x, t, class_labels=None):
            seen.append((t, x[:, 0, 0, 0].copy()))
            return super().__call__(x, t, class_labels)
    x_T = np.random.default_rng(3).standard_normal(SHAPE).astype(np.float32)
    run(Spy(), init_image=init, mask=mask, x_T=x_T, shape=None, steps=4)
    for t, pixel in seen:
        a = np.sqrt(abar_at(t))
        np.testing.assert_allclose(pixel, a * 0.6 + np.sqrt(1 - a * a) * x_T[:, 0, 0, 0], atol=1e-5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(class_labels=3), "class label 3 is outside this model's classes 0..2"),
    (dict(class_labels=[0, 1]), "one label per image"),
    (dict(class_labels=0.5), "an integer"),
    (dict(guidance_scale=2.0), "give class_labels with guidance_scale"),
    (dict(class_labels=0, guidance_scale=-1.0), r"guidance_scale must be in \[0, 100\]"),
    (dict(class_labels=0, guidance_rescale=2.0), r"guidance_rescale must be in \[0, 1\]"),
    (dict(init_image=np.zeros((1, 8, 8))), r"init_image must have shape \(1, 4, 4\)"),
    (dict(init_image=np.zeros((1, 4, 4)), strength=0.0), r"strength must be in \(0, 1\]"),
    (dict(strength=0.5), "give init_image too"),
    (dict(mask=np.ones((4, 4))), "give init_image too"),
    (dict(init_image=np.zeros((1, 4, 4)), mask=np.ones((3, 3))), r"mask must be \(H, W\) = \(4, 4\)"),
    (dict(init_image=np.zeros((1, 4, 4)), mask=np.full((4, 4), 2.0)), r"mask values must lie in \[0, 1\]"),
    (dict(init_image=np.zeros((1, 4, 4)), strength=0.01), "keeps no step"),
])
def test_bad_requests_get_one_sentence(kwargs, words):
    with pytest.raises(ValueError, match=words):
        run(ClassModel(), **kwargs)


def test_an_unconditional_model_refuses_labels_and_guidance():
    def plain(x, t):
        return 0.1 * x
    with pytest.raises(ValueError, match="not class-conditional"):
        sample(plain, SCHEDULE, steps=3, shape=SHAPE, class_labels=1)
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        sample(plain, SCHEDULE, steps=3, shape=SHAPE, guidance_scale=3.0)
