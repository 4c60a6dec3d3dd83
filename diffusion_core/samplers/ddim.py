"""Denoising Diffusion Implicit Models (Song et al. 2021)."""
from __future__ import annotations

import math

from .base import SamplerContext


def sample_ddim(ctx: SamplerContext, x):
    """Song et al. 2021, Eq. 12; eta scales sigma_t of Eq. 16 (0: deterministic, 1: DDPM posterior)."""
    abar, ts, n, eta = ctx.schedule.alphas_cumprod, ctx.timesteps, len(ctx.timesteps), ctx.options.eta
    for i, t in enumerate(ts):
        # 1. alpha_bar at this step and at the next visited one (1.0 after the last)
        a_t = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < n else 1.0
        # 2. the model's estimates of x0 and of the noise
        pred = ctx.denoise(x, t, a_t)
        # 3. sigma_t(eta), Eq. 16
        sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        # 4. x_{t-1} = sqrt(abar_prev) x0 + "direction pointing to x_t" + random noise, Eq. 12
        direction = math.sqrt(max(1.0 - a_prev - sigma * sigma, 0.0))
        x = math.sqrt(a_prev) * pred.x0 + direction * pred.eps
        if sigma > 0.0 and i + 1 < n:
            x = x + sigma * ctx.noise(tuple(x.shape))
        ctx.report(i, t, x, pred.x0)
    return x
