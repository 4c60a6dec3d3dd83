"""Which training timesteps a sampler visits, and the noise levels (sigmas) at them.

Spacing is its own concept (as `space_timesteps` is in improved-diffusion), not a branch inside a
sampler. The three spacings of Lin et al. 2023, Table 2, give exactly the lists of diffusers'
DDPMScheduler / DDIMScheduler (integer) and EulerDiscreteScheduler (fractional `linspace`).
"""
from __future__ import annotations

import numpy as np

from .schedules import NoiseSchedule

SPACINGS = ("leading", "trailing", "linspace", "logsnr", "optimized")
# "optimized": timesteps fitted on a model for one sampler and step count (samplers/fit.py) and
# stored in its config.json; the only spacing that is not a formula of (T, steps).
OPTIMIZED = "optimized"

# Where alpha_bar is exactly 0 (zero terminal SNR) sigma is infinite; like diffusers, samplers that
# work in sigma use alpha_bar = 2**-24 there instead (sigma ~ 4096), the smallest step away from 0.
_ZERO_SNR_ALPHA_BAR = 2.0 ** -24
# logsnr spacing starts no higher than this sigma: the cosine schedule's beta cap puts sigma ~2e4
# at t = T-1 and ~10x less one step before, so uniform lambda from there would spend several steps
# inside that last interval. 160 keeps the linear schedule's full range (sigma(T-1) = 157); beyond
# it the noise outweighs an image in [-1, 1] more than 100 times.
LOGSNR_SIGMA_MAX = 160.0


def spaced_timesteps(spacing: str, num_train_timesteps: int, steps: int, *, steps_offset: int = 0,
                     fractional: bool = False, schedule: NoiseSchedule | None = None) -> np.ndarray:
    """Descending timesteps for `steps` model evaluations out of T (Lin et al. 2023, Table 2).

    leading:  0, T//n, 2 T//n, ... (+ steps_offset), reversed; never reaches t = T-1.
    trailing: round(T, T - T/n, ..., T/n) - 1; always starts at t = T-1 (recommended).
    linspace: linspace(0, T-1, n) rounded (or kept fractional, as diffusers' Euler schedulers do).
    logsnr:   uniform in lambda = -log(sigma) from t = T-1 to t = 0, the steps DPM-Solver takes
              (Lu et al. 2022, Sec. 3.4 "uniform logSNR"); needs `schedule`.
    Returns int64, or float64 when `fractional` and spacing is linspace or logsnr.
    """
    T = num_train_timesteps
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if spacing == OPTIMIZED:
        raise ValueError("optimized spacing is not a formula: it comes from a model's fitted timesteps "
                         "(`diffusion-toolkit fit-timesteps`), which sample() looks up")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer between 1 and the number of training timesteps "
                         f"T = {T}, got {steps!r}")
    if spacing == "leading":
        if not 0 <= steps_offset < T:
            raise ValueError(f"steps_offset must be in [0, {T - 1}], got {steps_offset}")
        ts = np.arange(steps, dtype=np.int64) * (T // steps) + steps_offset
        ts = np.minimum(ts, T - 1)
        return ts[::-1].copy()
    if spacing == "trailing":
        return (np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1)[:steps]
    if spacing == "logsnr":
        return _logsnr_timesteps(schedule, T, steps, fractional)
    ts = np.linspace(0, T - 1, steps, dtype=np.float64)[::-1].copy()
    return ts if fractional else np.round(ts).astype(np.int64)


def _logsnr_timesteps(schedule: NoiseSchedule | None, T: int, steps: int, fractional: bool) -> np.ndarray:
    if schedule is None or schedule.num_train_timesteps != T:
        raise ValueError("logsnr spacing needs the noise schedule (pass schedule=) with the same T")
    sigmas = _finite_sigmas(schedule)
    sigma_max = min(float(sigmas[-1]), LOGSNR_SIGMA_MAX)
    log_sigmas = np.linspace(np.log(sigma_max), np.log(sigmas[0]), steps)    # lambda = -log sigma
    ts = t_from_sigma(schedule, np.exp(log_sigmas))
    if sigma_max == sigmas[-1]:
        ts[0] = T - 1                                                         # exactly, not ~T-1
    if fractional:
        return ts
    ts = np.round(ts).astype(np.int64)
    if np.any(np.diff(ts) >= 0):
        raise ValueError(f"logsnr spacing with {steps} steps visits some integer timestep twice; "
                         f"use fewer steps or a sampler that takes fractional timesteps")
    return ts


def check_timesteps(timesteps, num_train_timesteps: int, *, integer: bool = False) -> np.ndarray:
    """A user's (or a fit's) own timesteps, validated: strictly descending, in [0, T-1], finite.

    integer: for samplers that index the schedule (ddpm, ddim); fractional values are rounded and
    must stay distinct.
    """
    ts = np.asarray(timesteps, dtype=np.float64)
    T = num_train_timesteps
    if ts.ndim != 1 or ts.size < 1 or not np.all(np.isfinite(ts)):
        raise ValueError(f"timesteps must be a non-empty list of finite numbers, got {timesteps!r}")
    if np.any(ts < 0) or np.any(ts > T - 1):
        raise ValueError(f"timesteps must lie in [0, {T - 1}] (the training timesteps), got "
                         f"{ts.min():.4g} to {ts.max():.4g}")
    if integer:
        ts = np.round(ts)
    if np.any(np.diff(ts) >= 0):
        raise ValueError("timesteps must be strictly descending (from noise to image)"
                         + (" after rounding to integers" if integer else ""))
    return ts.astype(np.int64) if integer else ts


def check_fitted_table(table, num_train_timesteps: int) -> dict[str, dict[int, tuple[float, ...]]]:
    """config.json's "fitted_timesteps": {sampler: {steps: [descending timesteps, `steps` long]}}."""
    if not isinstance(table, dict):
        raise ValueError(f"fitted_timesteps must be an object {{sampler: {{steps: [timesteps]}}}}, "
                         f"got {type(table).__name__}")
    out: dict[str, dict[int, tuple[float, ...]]] = {}
    for sampler, per_steps in table.items():
        if not isinstance(per_steps, dict):
            raise ValueError(f"fitted_timesteps[{sampler!r}] must map a step count to timesteps")
        out[str(sampler)] = {}
        for steps, ts in per_steps.items():
            if not str(steps).isdigit() or int(steps) < 1:
                raise ValueError(f"fitted_timesteps[{sampler!r}]: {steps!r} is not a step count")
            checked = check_timesteps(ts, num_train_timesteps)
            if checked.size != int(steps):
                raise ValueError(f"fitted_timesteps[{sampler!r}][{steps}] holds {checked.size} timesteps, "
                                 f"not {steps}")
            out[str(sampler)][int(steps)] = tuple(float(t) for t in checked)
    return out


def sigma_at(schedule: NoiseSchedule, t: np.ndarray) -> np.ndarray:
    """VE noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) at (possibly fractional) timesteps.

    Linear interpolation in sigma between integer timesteps, as diffusers' Euler/Heun/DPM schedulers do.
    """
    return np.interp(np.asarray(t, dtype=np.float64), np.arange(schedule.num_train_timesteps),
                     _finite_sigmas(schedule))


def t_from_sigma(schedule: NoiseSchedule, sigma: np.ndarray) -> np.ndarray:
    """Fractional timestep whose sigma matches, by linear interpolation in log sigma."""
    log_sigmas = np.log(_finite_sigmas(schedule))
    return np.interp(np.log(np.maximum(sigma, 1e-10)), log_sigmas,
                     np.arange(schedule.num_train_timesteps, dtype=np.float64))


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, Eq. 5: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho."""
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_plan(schedule: NoiseSchedule, timesteps: np.ndarray, *, karras: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, sigmas) for samplers that integrate in sigma; sigmas end with a final 0.

    With `karras`, the n sigmas follow Eq. 5 of Karras et al. 2022 between the sigmas of the first
    and last spaced timestep (diffusers' `use_karras_sigmas`), and the model is evaluated at the
    fractional timesteps that have those sigmas.
    """
    sigmas = sigma_at(schedule, timesteps)
    if karras:
        sigmas = karras_sigmas(float(sigmas[-1]), float(sigmas[0]), len(sigmas))
        timesteps = t_from_sigma(schedule, sigmas)
    return np.asarray(timesteps, dtype=np.float64), np.concatenate([sigmas, [0.0]])


def _finite_sigmas(schedule: NoiseSchedule) -> np.ndarray:
    abar = schedule.alphas_cumprod
    abar = np.where(abar > 0.0, abar, _ZERO_SNR_ALPHA_BAR)
    return np.sqrt((1.0 - abar) / abar)


def alpha_bar_from_sigma(sigma: float) -> float:
    """alpha_bar = 1 / (1 + sigma^2): the VP level that matches a VE noise level."""
    return 1.0 / (1.0 + sigma * sigma)
