"""DPM-Solver++(3M): multistep third-order solver of the diffusion ODE in data prediction (Lu et al. 2022)."""
from __future__ import annotations

import math

from ..timesteps import alpha_bar_from_sigma, sigma_plan
from .base import SamplerContext, vp_levels

# Below this many steps, `lower_order_final` also caps the second-to-last step at second order
# (Lu et al. 2022, Sec. 5: third order is unstable in the few, long final steps); diffusers uses 15.
_FEW_STEPS = 15


def sample_dpmpp_3m(ctx: SamplerContext, x):
    """Lu et al. 2022 (DPM-Solver++), the multistep third-order update (their Eq. 11 in x0 form).

    With h = lambda_next - lambda, r0 = h_prev / h, r1 = h_prev2 / h and the x0 estimates m0, m1, m2
    (newest first), the divided differences
      D1_0 = (m0 - m1) / r0,  D1_1 = (m1 - m2) / r1,
      D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r0 + r1)
    enter x_next = (sigma_next / sigma) x - alpha_next [phi1 m0 - phi2 D1 + phi3 D2] with
    phi1 = e^-h - 1, phi2 = phi1 / h + 1, phi3 = (phi1 + h) / h^2 - 1/2 (Taylor terms of e^-h).
    The first steps use the second- and first-order updates; a step to sigma = 0 returns x0.
    """
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    opts, n = ctx.options, len(ts)
    max_order = opts.solver_order or 3
    x0s, hs = [], []                      # newest last; hs[k] is the lambda step that ended at x0s[k]
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = ctx.denoise(x, t, alpha_bar_from_sigma(s))
        if s_next == 0.0:
            x = pred.x0
        else:
            # 1. VP quantities of this and the next noise level
            alpha, sigma_vp, lam = vp_levels(s)
            alpha_next, sigma_vp_next, lam_next = vp_levels(s_next)
            h = lam_next - lam
            # 2. the order this step can afford
            order = min(max_order, len(x0s) + 1)
            if opts.lower_order_final and n < _FEW_STEPS and i == n - 2:
                order = min(order, 2)
            phi1 = math.expm1(-h)
            m0 = pred.x0
            # 3. exponential integrator of the x0 polynomial (first, second or third order)
            x = (sigma_vp_next / sigma_vp) * x - (alpha_next * phi1) * m0
            if order == 2:
                r0 = hs[-1] / h
                x = x - (0.5 * alpha_next * phi1 / r0) * (m0 - x0s[-1])
            elif order == 3:
                r0, r1 = hs[-1] / h, hs[-2] / h
                d1_0 = (m0 - x0s[-1]) * (1.0 / r0)
                d1_1 = (x0s[-1] - x0s[-2]) * (1.0 / r1)
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1))
                phi2 = phi1 / h + 1.0
                phi3 = (phi1 + h) / (h * h) - 0.5
                x = x + (alpha_next * phi2) * d1 - (alpha_next * phi3) * d2
            x0s, hs = (x0s + [m0])[-2:], (hs + [h])[-2:]
        ctx.report(i, t, x, pred.x0)
    return x
