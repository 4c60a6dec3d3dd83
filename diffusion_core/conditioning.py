"""Steering a sample() call: class labels, classifier-free guidance, image-to-image, inpainting.

Everything a caller passes is validated here, at the edge, into plain NumPy, with one sentence
per mistake; sample() then turns it into declared model inputs, a guidance wrapper, a truncated
timestep list and a known-region wrapper (denoise/).

    class_labels       int or (B,) ints in [0, num_classes): a class-conditional model's labels
                       (None: unconditional, the null class)
    guidance_scale     w of classifier-free guidance (Ho & Salimans 2022); 1: no guidance
    guidance_rescale   phi of Lin et al. 2023, Sec. 3.4, in [0, 1]
    guidance_interval  (t_low, t_high): guide only there (Kynkaanniemi et al. 2024)
    init_image         (C, H, W) or (B, C, H, W) in [-1, 1]: start from it (SDEdit, Meng et al. 2022)
    strength           in (0, 1]: the share of the sampler's steps run from the noised image
    mask               (H, W), (1 | C, H, W) or (B, 1 | C, H, W), 1 = generate, 0 = keep init_image
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .architectures.inputs import CLASS_LABEL, ModelInput, find_role
from .schedules import NoiseSchedule


@dataclass(frozen=True)
class Conditioning:
    """A validated request: arrays shaped for the batch, or None where not asked for."""

    class_labels: Optional[np.ndarray] = None      # int64 (B,)
    guidance_scale: float = 1.0
    guidance_rescale: float = 0.0
    guidance_interval: Optional[tuple[float, float]] = None
    init_image: Optional[np.ndarray] = None        # float32 (B, C, H, W)
    strength: float = 1.0
    mask: Optional[np.ndarray] = None              # float32 (B, 1 | C, H, W)


def _number(value: Any, name: str, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (low < value if low_open else low <= value) or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return value


def _labels(value: Any, spec: Optional[ModelInput], batch: int) -> Optional[np.ndarray]:
    if value is None:
        return None
    if spec is None:
        raise ValueError("this model is not class-conditional (it declares no class labels); "
                         "sample it without class_labels")
    classes = int(spec.fill)  # the null class is the row after the real ones
    labels = np.asarray(value)
    if labels.dtype.kind not in "iu" or labels.ndim > 1:
        raise ValueError(f"class_labels must be an integer or a list of integers, got {value!r}")
    labels = np.broadcast_to(labels.astype(np.int64), (batch,)) if labels.ndim == 0 else labels.astype(np.int64)
    if labels.shape != (batch,):
        raise ValueError(f"class_labels needs one label per image ({batch}), got {labels.shape[0]}")
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        raise ValueError(f"class label {int(bad[0])} is outside this model's classes 0..{classes - 1}")
    return np.ascontiguousarray(labels)


def _image(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    image = np.asarray(value, dtype=np.float32)
    if image.ndim == len(shape) - 1:
        image = image[None]
    if image.ndim != len(shape) or image.shape[1:] != tuple(shape[1:]) or image.shape[0] not in (1, shape[0]):
        raise ValueError(f"{name} must have shape {tuple(shape[1:])} or {tuple(shape)}, got {np.shape(value)}")
    if not np.isfinite(image).all():
        raise ValueError(f"{name} holds NaN or Inf values")
    return np.ascontiguousarray(np.broadcast_to(image, shape))


def _mask(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(value, dtype=np.float32)
    batch, channels, height, width = shape
    while mask.ndim < 4:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[2:] != (height, width) or mask.shape[1] not in (1, channels) \
            or mask.shape[0] not in (1, batch):
        raise ValueError(f"mask must be (H, W) = ({height}, {width}), or (1 or {channels}, {height}, {width}) "
                         f"with an optional batch axis, got shape {np.shape(value)}")
    if not np.isfinite(mask).all() or mask.min() < 0.0 or mask.max() > 1.0:
        raise ValueError("mask values must lie in [0, 1] (1 = generate, 0 = keep the image)")
    return np.ascontiguousarray(np.broadcast_to(mask, (batch,) + mask.shape[1:]))


def prepare(model_inputs: Sequence[ModelInput], shape: tuple[int, ...], *, class_labels: Any = None,
            guidance_scale: Any = 1.0, guidance_rescale: Any = 0.0,
            guidance_interval: Optional[Sequence[float]] = None, init_image: Any = None,
            strength: Any = 1.0, mask: Any = None) -> Conditioning:
    """Check a request against the model's declared inputs and the batch shape (B, C, H, W)."""
    spec = find_role(model_inputs, CLASS_LABEL)
    labels = _labels(class_labels, spec, shape[0])
    scale = _number(guidance_scale, "guidance_scale", 0.0, 100.0)
    if scale != 1.0 and spec is None:
        raise ValueError("classifier-free guidance needs a class-conditional model; this one is "
                         "unconditional: leave guidance_scale at 1")
    if scale != 1.0 and labels is None:
        raise ValueError("guidance steers towards a class: give class_labels with guidance_scale")
    rescale = _number(guidance_rescale, "guidance_rescale", 0.0, 1.0)
    interval = None
    if guidance_interval is not None:
        interval = tuple(float(v) for v in guidance_interval)
        if len(interval) != 2 or not interval[0] <= interval[1]:
            raise ValueError(f"guidance_interval must be (t_low, t_high) with t_low <= t_high, got "
                             f"{guidance_interval!r}")
    image = None if init_image is None else _image(init_image, shape, "init_image")
    strength = _number(strength, "strength", 0.0, 1.0, low_open=True)
    if image is None and strength != 1.0:
        raise ValueError("strength applies to image-to-image: give init_image too")
    if mask is not None and image is None:
        raise ValueError("a mask marks what to repaint in init_image: give init_image too")
    return Conditioning(labels, scale, rescale, interval, image, strength,
                        None if mask is None else _mask(mask, shape))


def truncate(cond: Conditioning, timesteps: np.ndarray, steps: int) -> np.ndarray:
    """SDEdit (Meng et al. 2022): keep the last round(strength * steps) of the sampler's timesteps."""
    if cond.init_image is None or cond.strength == 1.0:
        return timesteps
    keep = int(round(cond.strength * steps))
    if keep < 1:
        raise ValueError(f"strength {cond.strength:g} keeps no step of {steps}; raise the strength "
                         f"or the steps (strength x steps must reach at least 0.5)")
    return timesteps[len(timesteps) - keep:]


def noised_start(cond: Conditioning, schedule: NoiseSchedule, t0: float, x_T: np.ndarray) -> np.ndarray:
    """x_t0 = sqrt(abar) x_init + sqrt(1 - abar) z at the first kept timestep (Ho et al. 2020,
    Eq. 4), with z the call's starting noise; x_T itself when there is no init_image."""
    if cond.init_image is None:
        return x_T
    from .timesteps import alpha_bar_from_sigma, sigma_at
    abar = alpha_bar_from_sigma(float(sigma_at(schedule, np.array([t0]))[0]))
    return (math.sqrt(abar) * cond.init_image + math.sqrt(1.0 - abar) * x_T).astype(np.float32)


def wrappers(cond: Conditioning, model_inputs: Sequence[ModelInput], x_T: np.ndarray, ops):
    """(model inputs as backend tensors, the guidance, the inpainting known region or None)."""
    from .denoise import ClassifierFreeGuidance, no_guidance
    spec = find_role(model_inputs, CLASS_LABEL)
    inputs, guidance, known = {}, no_guidance, None
    if cond.class_labels is not None:
        inputs[spec.name] = ops.asarray(cond.class_labels)
        if cond.guidance_scale != 1.0:
            guidance = ClassifierFreeGuidance(cond.guidance_scale, spec.name, int(spec.fill), ops,
                                              cond.guidance_rescale, cond.guidance_interval)
    if cond.mask is not None:
        known = (ops.asarray(cond.init_image), ops.asarray(cond.mask), ops.asarray(x_T))
    return inputs, guidance, known
