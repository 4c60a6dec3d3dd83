"""DPM-Solver++(2M): multistep second-order solver of the diffusion ODE in data prediction (Lu et al. 2022)."""
from __future__ import annotations

import math

from ..timesteps import alpha_bar_from_sigma, sigma_plan
from .base import SamplerContext


def sample_dpmpp_2m(ctx: SamplerContext, x):
    """Lu et al. 2022 (DPM-Solver++), Algorithm 2, with the midpoint form of the second-order term.

    With lambda = log(alpha / sigma) = -log(sigma_VE) and h = lambda_next - lambda:
      x_next = (sigma_next / sigma) x - alpha_next (exp(-h) - 1) D,
      D = x0 (first step) or x0 + (x0 - x0_prev) / (2 r), r = h_prev / h.
    The final step goes to sigma = 0, where the update is exactly x0.
    """
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = ctx.denoise(x, t, alpha_bar_from_sigma(s))
        if s_next == 0.0:
            x = pred.x0
        else:
            # 1. VP quantities of this and the next noise level
            alpha, alpha_next = math.sqrt(alpha_bar_from_sigma(s)), math.sqrt(alpha_bar_from_sigma(s_next))
            h = math.log(s) - math.log(s_next)
            # 2. data-prediction term: first order on the first step, then the 2M correction
            d = pred.x0
            if x0_prev is not None:
                r = h_prev / h
                d = pred.x0 + (0.5 / r) * (pred.x0 - x0_prev)
            # 3. exact linear part times x plus the exponential integrator of the x0 term
            x = ((s_next * alpha_next) / (s * alpha)) * x - (alpha_next * math.expm1(-h)) * d
            x0_prev, h_prev = pred.x0, h
        ctx.report(i, t, x, pred.x0)
    return x
