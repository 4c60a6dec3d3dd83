"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022)."""
from __future__ import annotations

from ..timesteps import sigma_plan
from .base import SamplerContext
from .euler import _vp, denoised, euler_step


def sample_heun(ctx: SamplerContext, x):
    """Karras et al. 2022, Algorithm 1 with S_churn = 0: an Euler step, then the trapezoidal
    correction with the slope at the new point; the last step to sigma = 0 stays Euler (2n - 1 calls)."""
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    x = x * (1.0 + float(sigmas[0]) ** 2) ** 0.5
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = denoised(ctx, x, t, s)
        x_euler = euler_step(x, pred.x0, s, s_next)
        if s_next == 0.0:
            x = x_euler
        else:
            # Trapezoid: average the slopes dx/dsigma = (x - x0) / sigma at both ends. That slope
            # is exactly the eps estimate, so take it from the denoiser instead of subtracting two
            # sigma_max-sized values in float32, and add the correction to the Euler point:
            # x + (s_next - s) (d + d_next) / 2 = x_euler + (s_next - s) (d_next - d) / 2.
            d = pred.eps
            pred = denoised(ctx, x_euler, ts[i + 1], s_next)
            x = x_euler + (0.5 * (s_next - s)) * (pred.eps - d)
        ctx.report(i, t, _vp(x, s_next), pred.x0)
    return x
