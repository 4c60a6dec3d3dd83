"""Samplers are right, not just self-consistent: data from known distributions, exact denoisers.

For Gaussian data N(mu, s0^2) and for a mixture of points, E[x0 | x_t] is known in closed form, so
each sampler can be fed the optimal model and its samples checked against the data distribution.
"""
from __future__ import annotations

import numpy as np
import pytest

from diffusers_reference import Float64Ops
from diffusion_core.samplers import SAMPLERS, sample
from diffusion_core.schedules import make_schedule
from diffusion_core.timesteps import sigma_at, spaced_timesteps

SCHEDULE = make_schedule("linear")
MU, S0 = 0.3, 0.5


def _levels(t):
    """(a, s) = (sqrt(abar), sqrt(1 - abar)) at a possibly fractional t, as the samplers see it."""
    abar = 1.0 / (1.0 + float(sigma_at(SCHEDULE, t)) ** 2)
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def gaussian_eps_model(x, t):
    """Optimal eps-prediction for x0 ~ N(MU, S0^2) per pixel: E[x0|x_t] is linear in x_t."""
    a, s = _levels(t)
    x0 = MU + a * S0 ** 2 / (a * a * S0 ** 2 + s * s) * (x - a * MU)
    return (x - a * x0) / s


POINTS = np.array([[0.8, -0.5, 0.2, -0.9], [-0.6, 0.7, -0.3, 0.4], [0.1, 0.1, 0.9, 0.5]])
WEIGHTS = np.array([0.2, 0.3, 0.5])


def mixture_v_model(x, t):
    """Optimal v-prediction for data = one of POINTS (4 pixels) with probabilities WEIGHTS."""
    a, s = _levels(t)
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    logits = np.log(WEIGHTS)[None] - ((flat[:, None, :] - a * POINTS[None]) ** 2).sum(-1) / (2 * s * s)
    p = np.exp(logits - logits.max(1, keepdims=True))
    x0 = (p / p.sum(1, keepdims=True)) @ POINTS
    eps = (flat - a * x0) / s
    return (a * eps - s * x0).reshape(x.shape).astype(x.dtype)


# Steps at which each registered sampler is checked: every sampler in SAMPLERS must be listed
# (test_every_sampler_is_checked), so a new one cannot slip past these tests. Ancestral samplers
# and first-order solvers need many steps to reach the data statistics (DDIM at 50: std off by
# 0.031), higher-order solvers far fewer.
GAUSSIAN_STEPS = {"ddpm": 1000, "ddim": 500, "euler_ancestral": 1000, "dpmpp_2m": 50, "dpmpp_3m": 50,
                  "dpmpp_2m_sde": 100, "unipc": 50, "euler": 500, "heun": 50}
# the mixture: at 10 trailing steps the last visited t (99) is too noisy for any solver to land
# on the points (measured: 98% quantile 0.65 for dpmpp_2m), so the multistep solvers use 20
MIXTURE_STEPS = {"ddpm": 1000, "ddim": 50, "dpmpp_2m": 20, "dpmpp_3m": 20, "dpmpp_2m_sde": 50,
                 "unipc": 20, "euler": 50, "heun": 20, "euler_ancestral": 100}


def test_every_sampler_is_checked():
    assert set(GAUSSIAN_STEPS) == set(SAMPLERS) == set(MIXTURE_STEPS)


@pytest.mark.parametrize("sampler,steps", GAUSSIAN_STEPS.items())
def test_gaussian_statistics(sampler, steps):
    # 20k values: the standard error of the std is S0 / sqrt(2 * 20000) = 0.0025, of the mean
    # 0.0035; 0.012 is ~4 standard errors plus the measured discretisation bias (< 0.003 here).
    out = sample(gaussian_eps_model, SCHEDULE, sampler=sampler, steps=steps, shape=(5000, 1, 2, 2),
                 seed=0, clip_x0=False)
    assert abs(out.mean() - MU) < 0.012
    assert abs(out.std() - S0) < 0.012


@pytest.mark.parametrize("sampler,steps", MIXTURE_STEPS.items())
def test_mixture_of_points(sampler, steps):
    n = 4000
    out = sample(mixture_v_model, SCHEDULE, sampler=sampler, steps=steps, shape=(n, 1, 2, 2), seed=1,
                 prediction_type="v", clip_x0=False).reshape(n, -1)
    dist = np.sqrt(((out[:, None, :] - POINTS[None]) ** 2).sum(-1))
    # samples land on the data points, not between them
    assert np.quantile(dist.min(1), 0.98) < 0.01
    # each point is drawn as often as its weight: binomial SE <= 0.008 at n = 4000; 0.03 allows
    # ~4 SE plus the bias toward the heaviest point measured for the ODE samplers at these steps
    # (<= 0.021); at 10 steps DDIM's bias reaches 0.047, so this bound does bite.
    freq = np.bincount(dist.argmin(1), minlength=3) / n
    np.testing.assert_allclose(freq, WEIGHTS, atol=0.03)


def test_ddim_is_exact_for_a_single_point():
    # one data point: the optimal denoiser returns it at every step, and deterministic DDIM
    # lands exactly on it whatever the number of steps (Song et al. 2021, the ODE is then exact)
    target = np.array([0.25, -0.75, 0.5, 0.0], dtype=np.float32).reshape(1, 1, 2, 2)

    def model(x, t):
        a, s = _levels(t)
        return (x - a * target) / s
    out = sample(model, SCHEDULE, sampler="ddim", steps=3, shape=(8, 1, 2, 2), seed=2, clip_x0=False)
    np.testing.assert_allclose(out, np.broadcast_to(target, out.shape), atol=1e-5)


def _ode_endpoint(x_T, t):
    """The exact probability-flow ODE from x_T to time t for Gaussian data: x_t - a_t MU keeps its
    standard score, (x_t - a_t MU) / sqrt(a_t^2 S0^2 + s_t^2) = const."""
    a_T, s_T = SCHEDULE.sqrt_alphas_cumprod[-1], SCHEDULE.sqrt_one_minus_alphas_cumprod[-1]
    a, s = SCHEDULE.sqrt_alphas_cumprod[t], SCHEDULE.sqrt_one_minus_alphas_cumprod[t]
    return a * MU + np.sqrt(a * a * S0 ** 2 + s * s) * (x_T - a_T * MU) / np.sqrt(a_T ** 2 * S0 ** 2 + s_T ** 2)


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("euler", 1), ("dpmpp_2m", 2), ("heun", 2)])
def test_convergence_order(sampler, order):
    """Halving the step size divides the error by 2^order (DDIM/Euler first order, DPM-Solver++(2M)
    and Heun second order). The error is measured where the last solver step lands (the final jump
    to sigma = 0 returns x0 and is first order for every sampler), with uniform `linspace` steps."""
    x_T = np.random.default_rng(0).standard_normal((64, 1, 2, 2))
    errors = []
    for steps in (50, 100, 200):
        seen = {}
        sample(gaussian_eps_model, SCHEDULE, sampler=sampler, steps=steps, x_T=x_T, spacing="linspace",
               clip_x0=False, ops=Float64Ops(), callback=lambda info: seen.__setitem__(info.index, info.x))
        t_last = spaced_timesteps("linspace", 1000, steps)[-1]
        errors.append(np.abs(seen[steps - 2] - _ode_endpoint(x_T, t_last)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all(np.abs(np.log2(ratios) - order) < 0.35), f"errors {errors}, ratios {ratios}"


def test_logsnr_spacing_is_uniform_in_lambda():
    for name in ("linear", "cosine"):
        sch = make_schedule(name)
        ts = spaced_timesteps("logsnr", 1000, 12, fractional=True, schedule=sch)
        lam = -np.log(sigma_at(sch, ts))
        assert (ts[0] == 999 if name == "linear" else ts[0] > 990) and abs(ts[-1]) < 1e-9
        # t is found by interpolating log sigma, sigma at t by interpolating sigma (diffusers'
        # pair of conventions), so the steps the samplers take are uniform to 0.3%, not exactly;
        # on the cosine schedule sigma grows ~10x within the last integer step (beta capped at
        # 0.999), where that interpolation mismatch is large, so only the order is checked there
        if name == "linear":
            np.testing.assert_allclose(np.diff(lam), np.full(11, (lam[-1] - lam[0]) / 11), rtol=5e-3)
        assert np.all(np.diff(lam) > 0)
        ints = spaced_timesteps("logsnr", 1000, 12, schedule=sch)
        assert ints.dtype == np.int64 and np.all(np.diff(ints) < 0)
    with pytest.raises(ValueError, match="needs the noise schedule"):
        spaced_timesteps("logsnr", 1000, 12)


def _mixture_miss(sampler, steps, spacing):
    n = 2000
    out = sample(mixture_v_model, SCHEDULE, sampler=sampler, steps=steps, shape=(n, 1, 2, 2), seed=1,
                 prediction_type="v", clip_x0=False, spacing=spacing).reshape(n, -1)
    return np.quantile(np.sqrt(((out[:, None, :] - POINTS[None]) ** 2).sum(-1)).min(1), 0.98)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "dpmpp_3m", "unipc"])
def test_logsnr_spacing_lands_on_the_points_at_10_steps(sampler):
    # trailing's last visited t = 99 is too noisy to land (98% quantile of the miss ~0.65);
    # uniform-lambda steps end at t = 0
    assert _mixture_miss(sampler, 10, "logsnr") < 0.05 < _mixture_miss(sampler, 10, "trailing")
