"""The guidance slot of the denoiser chain.

A guidance is `guidance(inner, x_t, t, alpha_bar, inputs) -> Prediction`, where `inner` is the
layer below (the model behind its prediction-type adapter). It may call `inner` once on a batch of
its own making (classifier-free guidance runs the conditional and unconditional halves as one
doubled batch) and combine the results. Samplers never see it: they get (eps, x0) as always.
"""
from __future__ import annotations

from typing import Protocol

from ..ops import Tensor
from ..prediction import Prediction, eps_from_x0
from .wrappers import Inputs, Layer


class Guidance(Protocol):
    def __call__(self, inner: Layer, x_t: Tensor, t: float, alpha_bar: float,
                 inputs: Inputs) -> Prediction:
        ...


def no_guidance(inner: Layer, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
    """The identity guidance: one call of the layer below, its prediction unchanged."""
    return inner(x_t, t, alpha_bar, inputs)


class Guided:
    """Binds a guidance to the layer below, so that it composes like any other wrapper."""

    def __init__(self, inner: Layer, guidance: Guidance = no_guidance):
        self.inner, self.guidance = inner, guidance

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        return self.guidance(self.inner, x_t, t, alpha_bar, inputs)


class ClassifierFreeGuidance:
    """Ho & Salimans 2022, Eq. 6: eps~ = eps(x, null) + w (eps(x, c) - eps(x, null)).

    The conditional and unconditional halves run as ONE forward of a doubled batch (labels, then
    the null class), and w = 1 is a plain conditional call. Because (eps, x0) are affine in the
    model's raw output for a fixed x_t, combining eps, x0 or the raw v-prediction with weights
    (w, 1 - w) gives the same result: the guided pair stays consistent for every prediction type.

    rescale (Lin et al. 2023, Sec. 3.4, their phi): the guided x0 is scaled to the per-image standard
    deviation of the conditional x0 and blended with weight phi, against the over-exposure of large
    w; applied to x0, the quantity that over-saturates (diffusers' rescale_noise_cfg applies the
    same to eps). interval: guide only for timesteps t_low <= t <= t_high (Kynkaanniemi et al. 2024,
    "Applying guidance in a limited interval"), a plain conditional call elsewhere.
    """

    def __init__(self, scale: float, label_name: str, null_label: int, ops, rescale: float = 0.0,
                 interval: tuple[float, float] | None = None):
        self.scale, self.label_name, self.null_label = float(scale), label_name, int(null_label)
        self.ops, self.rescale, self.interval = ops, float(rescale), interval
        self._null: dict[int, Tensor] = {}

    def _null_labels(self, batch: int):
        if batch not in self._null:  # one tensor per batch size, made once per sample() call
            import numpy as np
            self._null[batch] = self.ops.asarray(np.full(batch, self.null_label, np.int64))
        return self._null[batch]

    def __call__(self, inner: Layer, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        outside = self.interval is not None and not self.interval[0] <= t <= self.interval[1]
        if self.scale == 1.0 or outside:
            return inner(x_t, t, alpha_bar, inputs)
        ops, batch = self.ops, x_t.shape[0]
        doubled = {name: ops.concat([value, value]) for name, value in inputs.items()}
        doubled[self.label_name] = ops.concat([inputs[self.label_name], self._null_labels(batch)])
        both = inner(ops.concat([x_t, x_t]), t, alpha_bar, doubled)
        eps_c, eps_u = ops.split_batch(both.eps, batch)
        x0_c, x0_u = ops.split_batch(both.x0, batch)
        w = self.scale
        eps, x0 = eps_u + w * (eps_c - eps_u), x0_u + w * (x0_c - x0_u)
        if self.rescale > 0.0 and alpha_bar < 1.0:
            matched = x0 * (ops.std_per_sample(x0_c) / (ops.std_per_sample(x0) + 1e-12))
            x0 = self.rescale * matched + (1.0 - self.rescale) * x0
            eps = eps_from_x0(x_t, x0, alpha_bar)
        return Prediction(eps=eps, x0=x0)
