"""Prediction types and the one contract samplers see: (x_t, t, alpha_bar) -> (eps, x0).

With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar) and x_t = a x0 + s eps:
  eps-prediction (Ho et al. 2020):      x0 = (x_t - s eps) / a
  x0-prediction:                        eps = (x_t - a x0) / s
  v-prediction (Salimans & Ho 2022, Eq. 9 and App. D): v = a eps - s x0, so
                                        x0 = a x_t - s v,  eps = s x_t + a v
Samplers never branch on the prediction type: the denoiser wrappers (denoise/) absorb it at the
edge, as dpm-solver's model_wrapper and k-diffusion's external.py do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ops import Ops, Tensor

PREDICTION_TYPES = ("eps", "x0", "v")


def _check(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose one of "
                         f"{', '.join(PREDICTION_TYPES)}")


def to_eps_x0(raw: Tensor, x_t: Tensor, alpha_bar: float, prediction_type: str) -> tuple[Tensor, Tensor]:
    """Turn a model's raw output into (eps, x0) at noise level alpha_bar (equations above)."""
    _check(prediction_type)
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if prediction_type == "eps":
        return raw, (x_t - s * raw) / a
    if prediction_type == "x0":
        return (x_t - a * raw) / s, raw
    return s * x_t + a * raw, a * x_t - s * raw


def from_eps_x0(eps: Tensor, x0: Tensor, alpha_bar: float, prediction_type: str) -> Tensor:
    """The target a model of this prediction type should output, given the true (eps, x0)."""
    _check(prediction_type)
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    return math.sqrt(alpha_bar) * eps - math.sqrt(1.0 - alpha_bar) * x0


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: float) -> Tensor:
    """eps implied by an x0 estimate: (x_t - a x0) / s."""
    return (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1.0 - alpha_bar)


def dynamic_threshold(x0: Tensor, ops: Ops, ratio: float, max_value: float) -> Tensor:
    """Saharia et al. 2022 (Imagen), Sec. 2.3: s = clamp(quantile_ratio(|x0|), 1, max_value) per
    sample, then x0 <- clamp(x0, -s, s) / s. With max_value = 1 this is a plain clip to [-1, 1]."""
    s = ops.clip(ops.abs_quantile(x0, ratio), 1.0, max_value)
    return ops.clip(x0, -s, s) / s


@dataclass(frozen=True)
class Prediction:
    """What a denoiser gives a sampler: the noise and the clean-image estimates of x_t."""

    eps: Tensor
    x0: Tensor
