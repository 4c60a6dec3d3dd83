"""The denoiser wrappers, each one small job, composed by denoise.build_denoiser.

A wrapper is a callable `layer(x_t, t, alpha_bar, inputs) -> Prediction`, where `inputs` are the
model's optional inputs as backend tensors, keyed by their declared names. Data flows:

    SelfConditioning      supplies the previous x0 estimate as the declared self-condition input
      -> ProcessX0        clips or thresholds x0, re-derives eps so the pair stays consistent
        -> guidance       combines conditional and unconditional predictions (guidance.py)
          -> ModelPrediction   calls model(x_t, t, **inputs), turns raw output into (eps, x0)

Only SelfConditioning keeps state (its last x0), and only for the one sample() call that built it.
It sits outside the others because what it feeds back is the final, processed x0: what the
trainers feed back (clamped to [-1, 1]) and what lucidrains' samplers do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ..ops import Ops, Tensor
from ..prediction import Prediction, _check, dynamic_threshold, eps_from_x0, to_eps_x0

Inputs = Mapping[str, Tensor]
Layer = Callable[[Tensor, float, float, Inputs], Prediction]


class ModelPrediction:
    """The backend model behind the prediction-type adapter: raw output -> (eps, x0).

    Counts model calls (a guided call of a doubled batch counts once: it is one forward).
    """

    def __init__(self, model: Callable[..., Any], prediction_type: str):
        _check(prediction_type)
        self.model, self.prediction_type = model, prediction_type
        self.evaluations = 0

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        raw = self.model(x_t, float(t), **inputs)
        self.evaluations += 1
        eps, x0 = to_eps_x0(raw, x_t, alpha_bar, self.prediction_type)
        return Prediction(eps=eps, x0=x0)


@dataclass(frozen=True)
class X0Processing:
    """What happens to an x0 estimate before a sampler uses it."""

    clip: bool = True                       # clamp to [-1, 1] (images live there)
    threshold_ratio: Optional[float] = None  # dynamic thresholding percentile, e.g. 0.995
    threshold_max: float = 1.0              # largest s dynamic thresholding may divide by

    def __post_init__(self) -> None:
        if self.threshold_ratio is not None and not 0.0 < self.threshold_ratio <= 1.0:
            raise ValueError(f"threshold_ratio must be in (0, 1], got {self.threshold_ratio}")
        if self.threshold_max < 1.0:
            raise ValueError(f"threshold_max must be >= 1, got {self.threshold_max}")

    @property
    def active(self) -> bool:
        return self.clip or self.threshold_ratio is not None


class ProcessX0:
    """Clip or dynamically threshold x0 (Saharia et al. 2022), then re-derive eps from it."""

    def __init__(self, inner: Layer, processing: X0Processing, ops: Ops):
        self.inner, self.processing, self.ops = inner, processing, ops

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        pred = self.inner(x_t, t, alpha_bar, inputs)
        proc = self.processing
        if not proc.active:
            return pred
        if proc.threshold_ratio is not None:
            x0 = dynamic_threshold(pred.x0, self.ops, proc.threshold_ratio, proc.threshold_max)
        else:
            x0 = self.ops.clip(pred.x0, -1.0, 1.0)
        eps = eps_from_x0(x_t, x0, alpha_bar) if alpha_bar < 1.0 else pred.eps
        return Prediction(eps=eps, x0=x0)


class SelfConditioning:
    """Chen et al. 2022 (Analog Bits), Sec. 3.2: feed the previous x0 estimate back as an input,
    zeros before the first one. `input_name` is the name the architecture declared for it."""

    def __init__(self, inner: Layer, input_name: str, ops: Ops):
        self.inner, self.input_name, self.ops = inner, input_name, ops
        self._last_x0: Optional[Tensor] = None

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        previous = self._last_x0 if self._last_x0 is not None else self.ops.zeros_like(x_t)
        pred = self.inner(x_t, t, alpha_bar, {**inputs, self.input_name: previous})
        self._last_x0 = pred.x0
        return pred
