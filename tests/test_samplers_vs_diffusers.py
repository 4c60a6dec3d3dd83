"""Whole sampling loops agree with diffusers' schedulers where their definitions coincide."""
from __future__ import annotations

import numpy as np
import pytest

from diffusers_reference import SCHEDULER_CLASSES, DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, \
    Float64Ops, diffusers_sample, fixed_model, our_schedule
from diffusion_core.ops import NUMPY
from diffusion_core.samplers import SAMPLERS, sample
from diffusion_core.timesteps import sigma_at, spaced_timesteps

# Every registered sampler is compared with diffusers unless listed here with the reason.
NO_DIFFUSERS_COUNTERPART: dict[str, str] = {}
COMPARED = [name for name in SAMPLERS if name not in NO_DIFFUSERS_COUNTERPART]
# samplers that draw noise after x_T (compared with diffusers fed the same draws)
STOCHASTIC = {"ddpm", "euler_ancestral", "dpmpp_2m_sde"}
MULTISTEP = [name for name in COMPARED if "solver_order" in SAMPLERS[name].options]

SHAPE = (2, 1, 5, 5)
# Both sides run in float64 by default, so the bound tests the definitions, not rounding; the
# float32 test below uses 2e-5 (float32 epsilon is 1.2e-7, amplified over tens of steps).
RTOL = {True: 1e-5, False: 2e-5}


def compare(sampler, *, steps, schedule="linear", prediction="eps", spacing="trailing", T=1000,
            zero_snr=False, float64=True, **options):
    model = fixed_model(SHAPE, prediction)
    x_T = np.random.default_rng(7).standard_normal(SHAPE, dtype=np.float32)
    options.setdefault("clip_x0", False)  # diffusers' sigma-space schedulers never clip
    # the definitions are compared, not our recommended settings: switch those off unless asked
    if "karras_sigmas" in SAMPLERS[sampler].options:
        options.setdefault("karras_sigmas", False)
    ours = sample(model, our_schedule(schedule, T, zero_snr), sampler=sampler, steps=steps, x_T=x_T,
                  seed=3, prediction_type=prediction, spacing=spacing,
                  ops=Float64Ops() if float64 else NUMPY, **options)
    ref = diffusers_sample(sampler, model=model, x_T=x_T, steps=steps, schedule_name=schedule, T=T,
                           zero_snr=zero_snr, prediction_type=prediction, spacing=spacing,
                           options=options, seed=3, float64=float64)
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(ours - ref).max()) / scale
    assert err < RTOL[float64], f"{sampler} differs from diffusers by {err:.2e} (relative)"
    assert np.isfinite(ours).all() and np.abs(ours).max() > 1e-3  # a real image, not zeros


def test_every_sampler_has_a_reference_or_a_reason():
    for name in SAMPLERS:
        assert name in SCHEDULER_CLASSES or NO_DIFFUSERS_COUNTERPART.get(name), \
            f"sampler {name!r} has no diffusers counterpart in tests/diffusers_reference.py and no reason"


# ---- timestep lists -------------------------------------------------------------------------

TRAILING_BUG = [n for n in range(1, 1001) if len(np.arange(1000, 0, -1000 / n)) != n]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_integer_timesteps_match_diffusers(spacing, cls):
    checked = 0
    for n in list(range(1, 60)) + [64, 99, 100, 250, 333, 500, 999, 1000]:
        if spacing == "trailing" and n in TRAILING_BUG:
            continue
        s = cls(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" and n < 500 else 0)
        s.set_timesteps(n)
        ours = spaced_timesteps(spacing, 1000, n, steps_offset=s.config.steps_offset)
        np.testing.assert_array_equal(ours, s.timesteps.numpy(), err_msg=f"{spacing} n={n}")
        checked += 1
    assert checked > 50


def test_fractional_linspace_matches_euler():
    for n in (1, 7, 10, 20, 50, 333):
        s = EulerDiscreteScheduler(timestep_spacing="linspace")
        s.set_timesteps(n)
        ours = spaced_timesteps("linspace", 1000, n, fractional=True)
        np.testing.assert_allclose(ours, s.timesteps.numpy(), rtol=1e-6)


def test_trailing_never_visits_negative_timesteps():
    # diffusers' float arange yields n + 1 steps ending at t = -1 for some n (e.g. 61); ours keeps n.
    assert 61 in TRAILING_BUG
    s = DDIMScheduler(timestep_spacing="trailing")
    s.set_timesteps(61)
    assert len(s.timesteps) == 62 and int(s.timesteps[-1]) == -1
    ours = spaced_timesteps("trailing", 1000, 61)
    assert len(ours) == 61 and ours.min() >= 0 and ours[0] == 999
    np.testing.assert_array_equal(ours, s.timesteps.numpy()[:61])


# ---- whole loops ----------------------------------------------------------------------------

SCHEDULES = ["linear", "cosine", "sigmoid", "scaled_linear"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler", [name for name in COMPARED if name not in STOCHASTIC])
def test_deterministic_samplers(sampler, prediction, schedule):
    # diffusers' DDIM steps from t to t - T//n; with trailing spacing that is the next listed
    # timestep only when n divides T, so DDIM is compared at n = 10 and the others at n = 12.
    compare(sampler, steps=10 if sampler == "ddim" else 12, schedule=schedule, prediction=prediction)


# diffusers' DDIM steps to t - T//n, which is not the next linspace timestep; ours steps to the
# next listed timestep, so that pair is not compared here (test_ddim_linspace_is_consistent)
# diffusers' UniPC defines leading and linspace over n + 1 points and drops the last, and takes no
# timestep list, so only trailing spacing coincides with ours.
NOT_COINCIDING = {("ddim", "linspace"), ("unipc", "leading"), ("unipc", "linspace")}
SPACING_CASES = [(sampler, spacing) for sampler in COMPARED
                 for spacing in ["leading", "trailing", "linspace"] if (sampler, spacing) not in NOT_COINCIDING]


@pytest.mark.parametrize("sampler,spacing", SPACING_CASES)
def test_spacings(sampler, spacing):
    compare(sampler, steps=10, spacing=spacing, prediction="v", schedule="cosine")


def test_ddim_linspace_is_consistent():
    # DDIM with eta=0 steps exactly like Euler on x / sqrt(alpha_bar) when both visit the same
    # integer timesteps: an internal identity that holds for linspace spacing too. The Euler
    # loop is written out here in the VE variable y = x / sqrt(abar), dy = eps dsigma.
    model = fixed_model(SHAPE, "eps")
    x_T = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32).astype(np.float64)
    sch = our_schedule("linear")
    a = sample(model, sch, sampler="ddim", steps=9, x_T=x_T, spacing="linspace", clip_x0=False,
               ops=Float64Ops())
    ts = spaced_timesteps("linspace", 1000, 9)
    sigmas = np.append(sigma_at(sch, ts), 0.0)
    y = x_T / np.sqrt(sch.alphas_cumprod[ts[0]])
    for i, t in enumerate(ts):
        eps = model(y / np.sqrt(1.0 + sigmas[i] ** 2), float(t))
        y = y + (sigmas[i + 1] - sigmas[i]) * eps
    np.testing.assert_allclose(a, y, rtol=1e-10, atol=1e-10)
    ref = diffusers_sample("ddim", model=model, x_T=x_T.astype(np.float32), steps=9,
                           schedule_name="linear", spacing="linspace")
    assert np.abs(a - ref).max() > 1e-3  # diffusers' DDIM steps to t - T//n here, not to ts[i+1]


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm(prediction, variance):
    compare("ddpm", steps=25, prediction=prediction, variance=variance, spacing="leading")


def test_ddpm_full_chain():
    compare("ddpm", steps=1000, prediction="eps", spacing="leading")


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_eta(eta):
    compare("ddim", steps=15, eta=eta, prediction="eps", spacing="leading")


@pytest.mark.parametrize("sampler", COMPARED)
def test_float32_default_setting(sampler):
    compare(sampler, steps=20, float64=False, prediction="eps", schedule="linear")


@pytest.mark.parametrize("prediction", ["eps", "v"])  # diffusers' Euler-a has no x0 prediction
def test_euler_ancestral(prediction):
    compare("euler_ancestral", steps=15, prediction=prediction, schedule="linear")


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_karras_sigmas(sampler, spacing):
    compare(sampler, steps=10, karras_sigmas=True, spacing=spacing, prediction="eps")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_clipping(sampler):
    compare(sampler, steps=10, clip_x0=True, prediction="eps", spacing="leading")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
def test_dynamic_thresholding(sampler):
    compare(sampler, steps=10, threshold_ratio=0.9, threshold_max=1.5, prediction="x0", spacing="leading")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "euler_ancestral", "dpmpp_2m"])
def test_zero_terminal_snr(sampler):
    compare(sampler, steps=10, zero_snr=True, prediction="v", spacing="trailing")


def test_other_T():
    compare("ddim", steps=10, T=500, schedule="sigmoid", prediction="v")
    compare("dpmpp_2m", steps=10, T=200, schedule="cosine", prediction="eps")


@pytest.mark.parametrize("steps", [3, 5, 8, 14, 15, 25])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sampler", MULTISTEP)
def test_multistep_orders(sampler, order, steps):
    # lower_order_final's rules differ in the step count (DPM-Solver++ below 15 steps only), so
    # the sweep crosses 15
    compare(sampler, steps=steps, solver_order=order, prediction="eps", schedule="cosine")


def test_dpmpp_3m_without_lower_order_final():
    # (diffusers' UniPC without lower_order_final extrapolates into sigma = 0 and returns NaN;
    # ours returns x0 on that step, so UniPC is not compared here)
    compare("dpmpp_3m", steps=10, lower_order_final=False, solver_order=3, prediction="x0")


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpmpp_2m_sde(prediction, schedule):
    compare("dpmpp_2m_sde", steps=15, prediction=prediction, schedule=schedule)


def test_sde_noise_matters():
    # the SDE comparison is informative: another noise stream gives another image
    model = fixed_model(SHAPE, "eps")
    x_T = np.random.default_rng(7).standard_normal(SHAPE, dtype=np.float32)
    a, b = (sample(model, our_schedule("linear"), sampler="dpmpp_2m_sde", steps=10, x_T=x_T, seed=seed)
            for seed in (3, 4))
    assert np.abs(a - b).max() > 1e-2

# Karras sigmas are not compared for the DPM-Solver++ family and UniPC: diffusers rounds the
# timesteps of Karras sigmas to integers there, while ours evaluates at the exact fractional ones.
