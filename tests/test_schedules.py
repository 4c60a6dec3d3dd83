"""Closed-form facts about the noise schedules, and agreement with diffusers' beta schedules."""
from __future__ import annotations

import numpy as np
import pytest

from diffusion_core.samplers.ddpm import posterior
from diffusion_core.schedules import (SCHEDULES, NoiseSchedule, linear_betas, make_schedule,
                                      rescale_zero_terminal_snr)
from diffusion_core.timesteps import karras_sigmas, sigma_at, spaced_timesteps, t_from_sigma

ALL = [(name, zero) for name in SCHEDULES for zero in (False, True)]


@pytest.mark.parametrize("name,zero", ALL)
def test_alphas_cumprod_decreasing_in_unit_interval(name, zero):
    s = make_schedule(name, 1000, zero_terminal_snr=zero)
    abar = s.alphas_cumprod
    assert abar.dtype == np.float64
    assert np.all(np.diff(abar) < 0)
    assert 0.99 < abar[0] < 1.0
    assert abar[-1] == 0.0 if zero else 0.0 < abar[-1] < 0.01
    np.testing.assert_allclose(abar, np.cumprod(1.0 - s.betas), rtol=1e-12)
    assert s.zero_terminal_snr == zero


@pytest.mark.parametrize("name,zero", ALL)
def test_posterior_identities(name, zero):
    s = make_schedule(name, 1000, zero_terminal_snr=zero)
    abar = s.alphas_cumprod
    for t, prev in [(1, 0), (500, 499), (998, 997), (900, 400), (10, 0)]:  # full and respaced steps
        c1, c2, var, beta = posterior(float(abar[t]), float(abar[prev]))
        a_t, a_prev = float(abar[t]), float(abar[prev])
        # noiseless x_t = sqrt(abar_t) x0 must map to mean sqrt(abar_prev) x0
        assert c1 + c2 * np.sqrt(a_t) == pytest.approx(np.sqrt(a_prev), rel=1e-10)
        # law of total variance: Var(x_prev | x0) = c2^2 Var(x_t | x0) + posterior variance
        assert c2 ** 2 * (1 - a_t) + var == pytest.approx(1 - a_prev, rel=1e-9)
        if prev == t - 1:  # DDPM Eq. 7 at the full schedule
            assert var == pytest.approx(s.betas[t] * (1 - a_prev) / (1 - a_t), rel=1e-9)
            assert beta == pytest.approx(s.betas[t], rel=1e-9)
    np.testing.assert_allclose(s.snr[:-1], abar[:-1] / (1 - abar[:-1]))
    np.testing.assert_allclose(s.sqrt_alphas_cumprod ** 2 + s.sqrt_one_minus_alphas_cumprod ** 2, 1.0)


def test_schedules_refuse_a_beta_range_they_do_not_read():
    with pytest.raises(ValueError, match="cosine schedule does not read beta_start"):
        make_schedule("cosine", beta_start=1e-3)
    assert make_schedule("linear", beta_start=1e-3).betas[0] == pytest.approx(1e-3)


def test_arrays_are_frozen():
    s = make_schedule("linear")
    with pytest.raises(ValueError):
        s.alphas_cumprod[0] = 0.5


def test_match_diffusers_betas():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference")
    for ours, theirs in (("linear", "linear"), ("cosine", "squaredcos_cap_v2"),
                         ("scaled_linear", "scaled_linear")):
        kw = {"beta_start": 0.00085, "beta_end": 0.012} if ours == "scaled_linear" else {}
        ref = diffusers.DDPMScheduler(beta_schedule=theirs, **kw).betas.numpy()
        np.testing.assert_allclose(make_schedule(ours, **kw).betas, ref, rtol=2e-6, atol=1e-9)
    ref = diffusers.DDIMScheduler(rescale_betas_zero_snr=True).alphas_cumprod.numpy()
    np.testing.assert_allclose(make_schedule("linear", zero_terminal_snr=True).alphas_cumprod, ref,
                               rtol=5e-5, atol=1e-7)


def test_linear_scaling_with_T():
    # beta_start / beta_end are given for T = 1000 and scaled by 1000 / T
    b = linear_betas(250)
    assert b[0] == pytest.approx(4e-4) and b[-1] == pytest.approx(0.08)
    # the total noise injected stays comparable: alpha_bar at the end is tiny for both
    assert make_schedule("linear", 250).alphas_cumprod[-1] < 1e-4


def test_sigmoid_schedule_formula():
    # lucidrains' sigmoid schedule: alpha_bar from a shifted, normalised sigmoid (start -3, end 3)
    s = make_schedule("sigmoid", 1000)
    t = np.linspace(0, 1, 1001)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    abar = (sig(3.0) - sig(t * 6 - 3)) / (sig(3.0) - sig(-3.0))
    np.testing.assert_allclose(s.alphas_cumprod[:-1], (abar / abar[0])[1:-1], rtol=1e-9)
    # the formula reaches alpha_bar = 0 at t = 1; the 0.999 cap on beta keeps the last step finite
    assert s.betas[-1] == 0.999 and s.alphas_cumprod[-1] > 0


def test_zero_terminal_snr_keeps_first_step():
    base = make_schedule("linear")
    z = rescale_zero_terminal_snr(base.betas)
    assert z[0] == pytest.approx(base.betas[0], rel=1e-12) and z[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("betas,msg", [([0.1], "at least 2"), ([0.1, -0.2, 0.3], "betas\\[1\\]"),
                                        ([0.1, 1.0, 0.2], "betas\\[1\\]"), ([0.1, np.nan], "betas\\[1\\]")])
def test_bad_betas(betas, msg):
    with pytest.raises(ValueError, match=msg):
        NoiseSchedule(np.array(betas))


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="linear, scaled_linear, cosine, sigmoid"):
        make_schedule("quadratic")


def test_spacing_errors_name_the_limits():
    with pytest.raises(ValueError, match="between 1 and .*T = 1000"):
        spaced_timesteps("trailing", 1000, 1001)
    with pytest.raises(ValueError, match="between 1 and"):
        spaced_timesteps("trailing", 1000, 0)
    with pytest.raises(ValueError, match="leading, trailing, linspace"):
        spaced_timesteps("uniform", 1000, 10)


def test_spacings_visit_the_right_ends():
    assert spaced_timesteps("trailing", 1000, 10)[0] == 999       # starts from pure noise
    assert spaced_timesteps("leading", 1000, 10)[0] == 900        # Lin et al.: never sees T-1
    assert spaced_timesteps("linspace", 1000, 10)[-1] == 0
    for sp in ("trailing", "leading", "linspace"):
        ts = spaced_timesteps(sp, 1000, 37)
        assert len(ts) == 37 and np.all(np.diff(ts) < 0) and ts.min() >= 0 and ts.max() <= 999


def test_sigma_interpolation_round_trip():
    s = make_schedule("cosine")
    grid = np.arange(1000.0)
    sigmas = np.sqrt((1 - s.alphas_cumprod) / s.alphas_cumprod)
    np.testing.assert_allclose(sigma_at(s, grid), sigmas, rtol=1e-12)
    np.testing.assert_allclose(t_from_sigma(s, sigmas), grid, atol=1e-9)
    # between grid points sigma is interpolated linearly but t from log sigma, so a round trip
    # is only close; it stays inside the same unit interval and keeps the order
    t = np.array([3.5, 500.25, 998.9])
    back = t_from_sigma(s, sigma_at(s, t))
    assert np.all(np.floor(back) == np.floor(t)) and np.all(np.abs(back - t) < 0.1)


def test_karras_sigmas_end_points_and_rho():
    k = karras_sigmas(0.002, 80.0, 10)
    assert k[0] == pytest.approx(80.0) and k[-1] == pytest.approx(0.002)
    assert np.all(np.diff(k) < 0)
    # equal steps in sigma^(1/rho)
    np.testing.assert_allclose(np.diff(k ** (1 / 7)), np.diff(k ** (1 / 7))[0], rtol=1e-9)
