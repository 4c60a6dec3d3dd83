"""Euler and Euler-ancestral steps on the variance-exploding form x_VE = x_VP / sqrt(alpha_bar).

Karras et al. 2022 write the probability-flow ODE as dx/dsigma = (x - D(x; sigma)) / sigma, with
D the denoiser's x0 and sigma = sqrt((1 - alpha_bar) / alpha_bar). The model itself sees the VP
sample x_VE / sqrt(1 + sigma^2) at the timestep whose sigma this is.
"""
from __future__ import annotations

import math

from ..timesteps import alpha_bar_from_sigma, sigma_plan
from .base import SamplerContext


def _vp(x_ve, sigma: float):
    """x_VP = x_VE * sqrt(alpha_bar) = x_VE / sqrt(1 + sigma^2)."""
    return x_ve / math.sqrt(1.0 + sigma * sigma)


def denoised(ctx: SamplerContext, x_ve, t: float, sigma: float):
    """D(x; sigma): the x0 estimate for a VE sample."""
    return ctx.denoise(_vp(x_ve, sigma), t, alpha_bar_from_sigma(sigma))


def euler_step(x_ve, x0, sigma: float, sigma_to: float):
    """x + (sigma_to - sigma) (x - x0) / sigma, written as a blend of x and x0: the same number,
    without subtracting two values of size sigma_max (~2e4 for the cosine schedule) in float32."""
    ratio = sigma_to / sigma
    return ratio * x_ve + (1.0 - ratio) * x0


def sample_euler(ctx: SamplerContext, x):
    """Karras et al. 2022, Algorithm 2 with S_churn = 0: Euler's method on the probability-flow ODE."""
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    x = x * math.sqrt(1.0 + float(sigmas[0]) ** 2)  # unit noise -> x_VE at sigma_max
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = denoised(ctx, x, t, s)
        x = euler_step(x, pred.x0, s, s_next)      # dx/dsigma = (x - x0) / sigma
        ctx.report(i, t, _vp(x, s_next), pred.x0)
    return x


def sample_euler_ancestral(ctx: SamplerContext, x):
    """Euler ancestral (k-diffusion, eta = 1): an Euler step down to sigma_down, then fresh noise
    sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2 so the marginal matches DDPM's."""
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    x = x * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = denoised(ctx, x, t, s)
        sigma_up = math.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
        sigma_down = math.sqrt(s_next ** 2 - sigma_up ** 2)
        x = euler_step(x, pred.x0, s, sigma_down)
        if s_next > 0.0:
            x = x + sigma_up * ctx.noise(tuple(x.shape))
        ctx.report(i, t, _vp(x, s_next), pred.x0)
    return x
