"""UniPC: unified predictor-corrector multistep solver, B(h) = e^h - 1 ("bh2") (Zhao et al. 2023)."""
from __future__ import annotations

import math

import numpy as np

from ..timesteps import alpha_bar_from_sigma, sigma_plan
from .base import SamplerContext, multistep_order, vp_levels


def _rhs(hh: float, order: int) -> tuple[np.ndarray, float]:
    """(b, B(h)) of Zhao et al. 2023, Eq. 8 / Algorithm 2 in data prediction, with hh = -h.

    b_k = k! phi_{k+1}(hh) / B(h) for k = 1..order, where phi_1 = (e^hh - 1) / hh - 1 is
    continued by phi_{k+1} = phi_k / hh - 1 / (k+1)!; bh2 takes B(h) = e^hh - 1.
    """
    h_phi_k = math.expm1(hh) / hh - 1.0
    b_h = math.expm1(hh)
    b, factorial = [], 1.0
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.asarray(b), b_h


def _rks(lams: list[float], lam0: float, h: float) -> np.ndarray:
    """r_k = (lambda_{s_k} - lambda_{s_0}) / h of the earlier outputs (negative: they are older)."""
    return np.asarray([(lk - lam0) / h for lk in lams] + [1.0])


def _weighted(terms: list, weights) -> object:
    out = terms[0] * float(weights[0])
    for term, w in zip(terms[1:], weights[1:]):
        out = out + term * float(w)
    return out


def _predict(x, m, lams, lam_next, sig_ratio, alpha_next, order):
    """UniP-p (Algorithm 2): x_next from x at lams[-1] with the x0 estimates m (newest last)."""
    lam0, m0 = lams[-1], m[-1]
    h = lam_next - lam0
    hh = -h
    b, b_h = _rhs(hh, order)
    x_next = sig_ratio * x - (alpha_next * math.expm1(hh)) * m0
    if order == 1:
        return x_next
    older = list(range(len(m) - 2, len(m) - order - 1, -1))         # m_{s_1}, m_{s_2}, ...
    rks = _rks([lams[k] for k in older], lam0, h)
    d1s = [(m[k] - m0) * (1.0 / rk) for k, rk in zip(older, rks)]
    if order == 2:
        rhos = [0.5]                                                # Zhao et al. Sec. 3.2, bh2 p=2
    else:
        R = np.vander(rks, order, increasing=True).T                 # R[i, k] = r_k^i
        rhos = np.linalg.solve(R[:-1, :-1], b[:-1])
    return x_next - (alpha_next * b_h) * _weighted(d1s, rhos)


def _correct(x, m, lams, m_new, lam_new, sig_ratio, alpha_new, order):
    """UniC-p (Algorithm 2): re-solve the step x (at lams[-1]) -> lam_new using the model output
    at the new point as one more node, r = 1; costs no extra model call."""
    lam0, m0 = lams[-1], m[-1]
    h = lam_new - lam0
    hh = -h
    b, b_h = _rhs(hh, order)
    older = list(range(len(m) - 2, len(m) - order - 1, -1))
    rks = _rks([lams[k] for k in older], lam0, h)
    if order == 1:
        rhos = [0.5]
    else:
        R = np.vander(rks, order, increasing=True).T
        rhos = np.linalg.solve(R, b)
    x_new = sig_ratio * x - (alpha_new * math.expm1(hh)) * m0
    d1s = [(m[k] - m0) * (1.0 / rk) for k, rk in zip(older, rks)] + [m_new - m0]
    return x_new - (alpha_new * b_h) * _weighted(d1s, rhos)


def sample_unipc(ctx: SamplerContext, x):
    """Zhao et al. 2023 (UniPC), Algorithm 2 with B(h) = e^h - 1: after each model call the
    corrector UniC refines the point the call was made at, then the predictor UniP takes the step.

    The corrector reuses that call's x0, so UniPC-p costs one call per step like DPM-Solver++.
    A step to sigma = 0 returns x0; with `lower_order_final` the order is capped by the steps left.
    """
    ts, sigmas = sigma_plan(ctx.schedule, ctx.timesteps, karras=ctx.options.karras_sigmas)
    n = len(ts)
    m, lams, x_prev, prev_order = [], [], None, 1
    for i, t in enumerate(ts):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        pred = ctx.denoise(x, t, alpha_bar_from_sigma(s))
        alpha, sigma_vp, lam = vp_levels(s)
        # 1. UniC: correct the point this call was made at (not after the first call)
        if x_prev is not None:
            _, sigma_vp_prev, _ = vp_levels(float(sigmas[i - 1]))
            x = _correct(x_prev, m, lams, pred.x0, lam, sigma_vp / sigma_vp_prev, alpha, prev_order)
        m, lams = (m + [pred.x0])[-3:], (lams + [lam])[-3:]
        # 2. UniP: predict the next point
        if s_next == 0.0:
            x_next = pred.x0
        else:
            order = multistep_order(ctx.options, 2, i, n, len(m) - 1)
            alpha_next, sigma_vp_next, lam_next = vp_levels(s_next)
            x_next = _predict(x, m, lams, lam_next, sigma_vp_next / sigma_vp, alpha_next, order)
            prev_order = order
        x_prev, x = x, x_next
        ctx.report(i, t, x, pred.x0)
    return x
