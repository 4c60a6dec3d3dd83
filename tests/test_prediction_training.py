"""Prediction-type conversions, x0 processing and the framework-neutral training half."""
from __future__ import annotations

import numpy as np
import pytest

from diffusion_core.ops import NUMPY
from diffusion_core.prediction import dynamic_threshold, from_eps_x0, to_eps_x0
from diffusion_core.schedules import make_schedule
from diffusion_core.training import (LossConfig, draw, loss_weight, q_sample, target, weighted_mse,
                                     x0_from_output)

RNG = np.random.default_rng(0)
X0 = RNG.uniform(-1, 1, (4, 1, 3, 3))
EPS = RNG.standard_normal((4, 1, 3, 3))


# at zero SNR (abar = 0) an eps-prediction carries no information about x0 (Lin et al. 2023)
@pytest.mark.parametrize("kind,abar", [(k, a) for k in ("eps", "x0", "v") for a in (0.9999, 0.5, 1e-4, 0.0)
                                       if (k, a) != ("eps", 0.0)])
def test_conversions_round_trip(kind, abar):
    x_t = np.sqrt(abar) * X0 + np.sqrt(1 - abar) * EPS
    raw = from_eps_x0(EPS, X0, abar, kind)
    eps, x0 = to_eps_x0(raw, x_t, abar, kind)
    np.testing.assert_allclose(x0, X0, atol=1e-9 / max(np.sqrt(abar), 1e-3))
    if abar > 0:
        np.testing.assert_allclose(eps, EPS, atol=1e-7)


def test_v_definition():
    abar = 0.3
    v = from_eps_x0(EPS, X0, abar, "v")
    np.testing.assert_allclose(v, np.sqrt(abar) * EPS - np.sqrt(1 - abar) * X0)


def test_dynamic_threshold():
    x = np.array([[3.0, -2.0, 0.5, 0.1]]).reshape(1, 1, 2, 2)
    # max_value 1: a plain clip to [-1, 1]
    np.testing.assert_allclose(dynamic_threshold(x, NUMPY, 0.9, 1.0), np.clip(x, -1, 1))
    # larger max: s = quantile(|x|, ratio) capped at max_value, then clamp and divide
    s = min(np.quantile(np.abs(x), 0.9), 2.5)
    np.testing.assert_allclose(dynamic_threshold(x, NUMPY, 0.9, 2.5), np.clip(x, -s, s) / s, rtol=1e-6)


def test_q_sample_and_targets():
    s = make_schedule("cosine")
    rng = np.random.default_rng(3)
    x0 = rng.uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32)
    for kind in ("eps", "x0", "v"):
        d = draw(s, np.random.default_rng(1), x0.shape, kind)
        x_t = q_sample(x0, d.noise, d.signal_coef, d.noise_coef)
        a = s.sqrt_alphas_cumprod[d.t].reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(x_t, a * x0 + np.sqrt(1 - a ** 2) * d.noise, rtol=1e-5, atol=1e-6)
        goal = target(x0, d.noise, d.target_x0, d.target_eps)
        for i in range(len(x0)):
            ref = from_eps_x0(d.noise[i], x0[i], float(s.alphas_cumprod[d.t[i]]), kind)
            np.testing.assert_allclose(goal[i], ref, rtol=1e-5, atol=1e-6)
        # a perfect model's output recovers x0
        np.testing.assert_allclose(x0_from_output(goal, x_t, d.signal_coef, d.noise_coef, kind), x0,
                                   atol=2e-3)


def test_draws_are_reproducible_and_offset_noise_is_per_channel():
    s = make_schedule("linear")
    a = draw(s, np.random.default_rng(9), (5, 3, 4, 4), "eps", LossConfig(offset_noise=0.1))
    b = draw(s, np.random.default_rng(9), (5, 3, 4, 4), "eps", LossConfig(offset_noise=0.1))
    np.testing.assert_array_equal(a.noise, b.noise)
    np.testing.assert_array_equal(a.t, b.t)
    plain = draw(s, np.random.default_rng(9), (5, 3, 4, 4), "eps")
    shift = a.noise - plain.noise  # the offset: constant over each (sample, channel) image
    assert np.allclose(shift, shift[:, :, :1, :1]) and np.abs(shift).max() > 0
    assert a.t.dtype == np.int64 and a.t.min() >= 0 and a.t.max() < 1000


def test_loss_weights():
    s = make_schedule("linear")
    t = np.array([0, 100, 500, 999])
    snr = s.snr[t]
    assert np.all(loss_weight(s, t, "eps", LossConfig()) == 1.0)
    # min-SNR-gamma (Hang et al. 2023): eps min(snr, g)/snr, x0 min(snr, g), v min(snr, g)/(snr+1)
    cfg = LossConfig(weighting="min_snr", min_snr_gamma=5.0)
    np.testing.assert_allclose(loss_weight(s, t, "eps", cfg), np.minimum(snr, 5) / snr)
    np.testing.assert_allclose(loss_weight(s, t, "x0", cfg), np.minimum(snr, 5))
    np.testing.assert_allclose(loss_weight(s, t, "v", cfg), np.minimum(snr, 5) / (snr + 1))
    # p2 (Choi et al. 2022) on the eps loss; the same weighting seen from x0 is multiplied by snr
    p2 = LossConfig(weighting="p2", p2_gamma=1.0, p2_k=1.0)
    np.testing.assert_allclose(loss_weight(s, t, "eps", p2), 1 / (1 + snr))
    np.testing.assert_allclose(loss_weight(s, t, "x0", p2), snr / (1 + snr))
    with pytest.raises(ValueError, match="none, p2, min_snr"):
        LossConfig(weighting="snr")


def test_weighted_mse():
    out = np.ones((2, 1, 2, 2), np.float32)
    goal = np.zeros_like(out)
    goal[1] = 3.0
    loss = weighted_mse(NUMPY, out, goal, np.array([1.0, 0.5], np.float32))
    assert float(loss) == pytest.approx((1.0 * 1 + 0.5 * 4) / 2)
