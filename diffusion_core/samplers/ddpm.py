"""Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2), on any subsequence of timesteps."""
from __future__ import annotations

import math

from .base import SamplerContext


def posterior(a_t: float, a_prev: float) -> tuple[float, float, float, float]:
    """q(x_prev | x_t, x0) between two visited noise levels alpha_bar a_t < a_prev (Ho et al. 2020,
    Eq. 6-7, respaced as in Nichol & Dhariwal 2021, Sec. 4: alpha_t -> a_t / a_prev).

    Returns (coef_x0, coef_xt, variance, beta): mean = coef_x0 x0 + coef_xt x_t, variance is
    beta~_t ("fixed_small"), beta the respaced beta_t ("fixed_large" uses it as the variance).
    """
    alpha = a_t / a_prev
    beta = 1.0 - alpha
    coef_x0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
    coef_xt = math.sqrt(alpha) * (1.0 - a_prev) / (1.0 - a_t)
    return coef_x0, coef_xt, beta * (1.0 - a_prev) / (1.0 - a_t), beta


def sample_ddpm(ctx: SamplerContext, x):
    """Ho et al. 2020, Algorithm 2 with the respaced posterior above."""
    abar, ts, n = ctx.schedule.alphas_cumprod, ctx.timesteps, len(ctx.timesteps)
    large = ctx.options.variance == "fixed_large"
    for i, t in enumerate(ts):
        # 1. alpha_bar at this step and the next visited one (1.0 after the last: x_0 itself)
        a_t = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < n else 1.0
        # 2. predict x0 (and eps) from the model, whatever it was trained to output
        pred = ctx.denoise(x, t, a_t)
        # 3. posterior mean mu~_t(x_t, x0), Eq. 7
        coef_x0, coef_xt, small, beta = posterior(a_t, a_prev)
        x = coef_x0 * pred.x0 + coef_xt * x
        # 4. add noise except on the last step (which lands on x0): sigma_t^2 = beta~_t or beta_t
        if i + 1 < n:
            variance = beta if large else max(small, 1e-20)
            x = x + math.sqrt(variance) * ctx.noise(tuple(x.shape))
        ctx.report(i, t, x, pred.x0)
    return x
