"""DPM-Solver++(2M) SDE: the second-order multistep solver of the diffusion SDE (Lu et al. 2022)."""
from __future__ import annotations

import math

from ..timesteps import alpha_bar_from_sigma, sigma_plan
from .base import SamplerContext, vp_levels


def sample_dpmpp_2m_sde(ctx: SamplerContext, x):
    """Lu et al. 2022 (DPM-Solver++), Appendix: the SDE solver in data prediction, midpoint form.

    With h = lambda_next - lambda, the exact solution of the linear part of the reverse SDE is
      x_next = (sigma_next / sigma) e^-h x + alpha_next (1 - e^-2h) D + sigma_next sqrt(1 - e^-2h) z,
    D = x0 (first step), or x0 + (x0 - x0_prev) / (2 r), r = h_prev / h; z is fresh unit noise,
    drawn at every step (also the last, so the stream matches diffusers'). A step to sigma = 0
    returns x0. `lower_order_final` changes nothing here: the only lowered step is that last one.
    """
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    max_order = min(ctx.options.solver_order or 2, 2)
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = ctx.denoise(x, t, alpha_bar_from_sigma(s))
        z = ctx.noise(tuple(x.shape))
        if s_next == 0.0:
            x = pred.x0
        else:
            # 1. VP quantities of this and the next noise level
            _, sigma_vp, lam = vp_levels(s)
            alpha_next, sigma_vp_next, lam_next = vp_levels(s_next)
            h = lam_next - lam
            one_minus = -math.expm1(-2.0 * h)                    # 1 - e^-2h
            # 2. data-prediction term: first order on the first step, then the 2M correction
            d = pred.x0
            if x0_prev is not None and max_order == 2:
                d = pred.x0 + (pred.x0 - x0_prev) * (0.5 * h / h_prev)
            # 3. exact linear part, the x0 integral and the injected noise
            x = ((sigma_vp_next / sigma_vp) * math.exp(-h)) * x + (alpha_next * one_minus) * d \
                + (sigma_vp_next * math.sqrt(one_minus)) * z
            x0_prev, h_prev = pred.x0, h
        ctx.report(i, t, x, pred.x0)
    return x
