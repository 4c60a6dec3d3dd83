"""Inpainting by replacing the known region at every model call: the denoiser wrapper that holds
the pixels a user keeps while the sampler generates the rest.

Which method, and why: the model always sees the known region noised to its own level,
a x_known + s z (one fixed z, the starting noise, so the known pixels follow one consistent noise
path), and its x0 and eps there are replaced by the known image and z. Every sampler then steps
the known region along that path and lands on the known image exactly at the last step (each
sampler's final update is x0), with no extra model calls. This is the "replace the known region"
baseline (Song et al. 2021, score-SDE imputation; the baseline of Lugmayr et al. 2022). RePaint's
resampling (jump back by re-noising, r = 10 times per step in the paper) harmonises the seam
better but multiplies the model calls by r and is written for DDPM's ancestral step; at the
5-20-call budgets this toolkit aims at, and across every sampler, the baseline is the one that fits.
"""
from __future__ import annotations

import math

from ..ops import Tensor
from ..prediction import Prediction
from .wrappers import Inputs, Layer


class KnownRegion:
    """mask: 1 where to generate, 0 where the known image is kept (diffusers' convention: white
    is repainted), broadcastable to x; known: the image in [-1, 1]; noise: the fixed z."""

    def __init__(self, inner: Layer, known: Tensor, mask: Tensor, noise: Tensor):
        self.inner, self.known, self.mask, self.noise = inner, known, mask, noise
        self.keep = 1.0 - mask

    def __call__(self, x_t: Tensor, t: float, alpha_bar: float, inputs: Inputs) -> Prediction:
        a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        known_t = a * self.known + s * self.noise
        pred = self.inner(self.mask * x_t + self.keep * known_t, t, alpha_bar, inputs)
        return Prediction(eps=self.mask * pred.eps + self.keep * self.noise,
                          x0=self.mask * pred.x0 + self.keep * self.known)
