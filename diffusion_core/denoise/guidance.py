"""The guidance slot of the denoiser chain.

A guidance is `guidance(inner, x_t, t, alpha_bar, inputs) -> Prediction`, where `inner` is the
layer below (the model behind its prediction-type adapter). It may call `inner` once on a batch of
its own making (classifier-free guidance runs the conditional and unconditional halves as one
doubled batch) and combine the results. Samplers never see it: they get (eps, x0) as always.
"""
from __future__ import annotations

from typing import Protocol

from ..ops import Tensor
from ..prediction import Prediction
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
