"""Prediction types and the one contract samplers see: (x_t, t, alpha_bar) -> (eps, x0).

With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar) and x_t = a x0 + s eps:
  eps-prediction (Ho et al. 2020):      x0 = (x_t - s eps) / a
  x0-prediction:                        eps = (x_t - a x0) / s
  v-prediction (Salimans & Ho 2022, Eq. 9 and App. D): v = a eps - s x0, so
                                        x0 = a x_t - s v,  eps = s x_t + a v
Samplers never branch on the prediction type: `Denoiser` absorbs it at the edge, as dpm-solver's
model_wrapper and k-diffusion's external.py do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

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
class X0Processing:
    """What happens to an x0 estimate before a sampler uses it."""

    clip: bool = True                       # clamp to [-1, 1] (images live there)
    threshold_ratio: float | None = None    # dynamic thresholding percentile, e.g. 0.995
    threshold_max: float = 1.0              # largest s dynamic thresholding may divide by

    def __post_init__(self) -> None:
        if self.threshold_ratio is not None and not 0.0 < self.threshold_ratio <= 1.0:
            raise ValueError(f"threshold_ratio must be in (0, 1], got {self.threshold_ratio}")
        if self.threshold_max < 1.0:
            raise ValueError(f"threshold_max must be >= 1, got {self.threshold_max}")

    @property
    def active(self) -> bool:
        return self.clip or self.threshold_ratio is not None


@dataclass(frozen=True)
class Prediction:
    eps: Tensor
    x0: Tensor


class Denoiser:
    """Adapts a backend model `model(x, t, x_self_cond=None) -> raw` to `(x_t, t, alpha_bar) ->
    Prediction`, for one sampling call.

    One Denoiser lives for one `sample()` call and is then dropped: the only state it keeps is the
    previous x0 for self-conditioning (Chen et al. 2022) and an evaluation count, both per call.
    When x0 is clipped or thresholded, eps is re-derived from it so the pair stays consistent.
    """

    def __init__(self, model: Callable[..., Any], prediction_type: str, ops: Ops,
                 x0_processing: X0Processing = X0Processing(), self_condition: bool = False):
        _check(prediction_type)
        self.model = model
        self.prediction_type = prediction_type
        self.ops = ops
        self.x0_processing = x0_processing
        self.self_condition = self_condition
        self.evaluations = 0
        self._last_x0 = None

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float) -> Prediction:
        if self.self_condition:
            cond = self._last_x0 if self._last_x0 is not None else self.ops.zeros_like(x_t)
            raw = self.model(x_t, float(t), cond)
        else:
            raw = self.model(x_t, float(t))
        self.evaluations += 1
        eps, x0 = to_eps_x0(raw, x_t, alpha_bar, self.prediction_type)
        proc = self.x0_processing
        if proc.threshold_ratio is not None:
            x0 = dynamic_threshold(x0, self.ops, proc.threshold_ratio, proc.threshold_max)
        elif proc.clip:
            x0 = self.ops.clip(x0, -1.0, 1.0)
        if proc.active and alpha_bar < 1.0:
            eps = eps_from_x0(x_t, x0, alpha_bar)
        self._last_x0 = x0
        return Prediction(eps=eps, x0=x0)
