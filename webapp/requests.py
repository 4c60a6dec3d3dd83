"""A visitor's request, checked before any model runs: numbers, the class, the cost, images.

Every check raises a ServiceError with one sentence a visitor can act on; nothing here runs a
model, so a refused request costs the server nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from diffusion_core import SAMPLERS
from diffusion_core.samplers import SamplerOptions, fitted_for, recommended_settings
from diffusion_core.timesteps import OPTIMIZED, SPACINGS
from diffusion_core.architectures import CLASS_LABEL, find_role, optional_inputs
from diffusion_core.checkpoint import Checkpoint

from .settings import ServerSettings, ServiceError
from .text import plain

ANY_CLASS = "any"


def whole_number(value, name: str) -> int:
    """A UI number (Gradio sends floats like 20.0) as an int; fractions and text are errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or not float(value).is_integer():
        raise ServiceError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise ServiceError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def class_names(checkpoint: Checkpoint) -> list[str]:
    """The model's class names (from its notes when they fit, else the numbers), [] if unconditional."""
    spec = find_role(checkpoint.config.inputs, CLASS_LABEL)
    if spec is None or spec.fill is None:  # unconditional, or labels the page cannot choose (no null class)
        return []
    count = int(spec.fill)
    names = checkpoint.config.notes.get("class_names")
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return [" ".join(n.split())[:40] or str(i) for i, n in enumerate(names)]
    return [str(i) for i in range(count)]


def class_choices(checkpoint: Optional[Checkpoint]) -> list[tuple[str, str]]:
    """(label shown, value) for the class dropdown: "any" first, then each class."""
    names = class_names(checkpoint) if checkpoint is not None else []
    return [("any (unconditional)", ANY_CLASS)] + [(name, str(i)) for i, name in enumerate(names)]


@dataclass(frozen=True)
class Request:
    sampler: str
    steps: int
    seed: int
    batch_size: int
    label: Optional[int]          # None: the null class (unconditional)
    guidance_scale: float
    settings: Optional["SamplerSettings"] = None   # spacing and Karras sigmas (check_sampler_settings)

    def option_overrides(self) -> dict[str, Any]:
        """The sampler options the visitor chose; sample() takes the recommended ones for the rest."""
        return dict(self.settings.overrides) if self.settings else {}

    def describe_settings(self) -> str:
        return self.settings.describe() if self.settings else ""

    def sample_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of LoadedModel.sample for the class and guidance parts."""
        if self.label is None:
            return {}
        return {"class_labels": self.label, "guidance_scale": self.guidance_scale}

    def describe(self, checkpoint: Checkpoint) -> str:
        if self.label is None:
            return ""
        name = class_names(checkpoint)[self.label]
        guided = f", guidance {self.guidance_scale:g}" if self.guidance_scale != 1.0 else ""
        return f", class {plain(name)}{guided}"


def check_request(checkpoint: Checkpoint, settings: ServerSettings, max_batch: int, sampler: str,
                  steps, seed, batch_size, class_label=ANY_CLASS, guidance_scale=1.0) -> Request:
    if sampler not in SAMPLERS:
        raise ServiceError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    steps, seed, batch_size = (whole_number(steps, "steps"), whole_number(seed, "seed"),
                               whole_number(batch_size, "batch size"))
    if not 0 <= seed < 2 ** 63:
        raise ServiceError(f"seed must be from 0 to 2^63 - 1, got {seed}")
    if not 1 <= batch_size <= max_batch:
        raise ServiceError(f"batch size must be between 1 and {max_batch} (this server's limit for this "
                           f"model), got {batch_size}; ask for fewer images")
    required = [i.name for i in optional_inputs(checkpoint.config.inputs) if not i.optional]
    if required:   # e.g. an imported class-conditional diffusers model: no null class to fall back on
        raise ServiceError(f"this model needs {', '.join(required)} for every image, which the page cannot "
                           "choose yet; sample it from Python with model.sample(inputs={...})")
    total = checkpoint.config.diffusion.num_train_timesteps
    if not 1 <= steps <= total:  # the core's own words, before any model is loaded
        raise ServiceError(f"steps must be an integer between 1 and the number of training "
                           f"timesteps T = {total}, got {steps}")
    label = None
    names = class_names(checkpoint)
    if class_label not in (None, "", ANY_CLASS):
        if not names:
            raise ServiceError("this model is not class-conditional; pick 'any' as the class")
        if str(class_label) not in {str(i) for i in range(len(names))}:
            raise ServiceError(f"class {plain(class_label, 40)} is not one of this model's classes "
                               f"0..{len(names) - 1}")
        label = int(class_label)
    guidance = number(1.0 if guidance_scale is None else guidance_scale, "guidance scale", 0.0, 20.0)
    if guidance != 1.0 and not names:
        raise ServiceError("classifier-free guidance needs a class-conditional model; this one is "
                           "unconditional: leave the guidance scale at 1")
    if guidance != 1.0 and label is None:
        guidance = 1.0  # "any" class: nothing to steer towards; unconditional samples
    request = Request(sampler, steps, seed, batch_size, label, guidance)
    check_cost(checkpoint, settings, request)
    return request


def check_cost(checkpoint: Checkpoint, settings: ServerSettings, request: Request) -> None:
    """Model compute of the request (evaluations x images x FLOPs per image, doubled by guidance)
    against the server's per-request budget."""
    config = checkpoint.config
    evaluations = SAMPLERS[request.sampler].model_evaluations(request.steps)
    images = request.batch_size * (2 if request.guidance_scale != 1.0 else 1)
    flops = evaluations * config.architecture.forward_flops(config.network, images)
    if flops > settings.max_tflop * 1e12:
        raise ServiceError(f"this request needs {flops / 1e12:,.1f} TFLOP ({evaluations} model calls on "
                           f"{images} images), more than this server's {settings.max_tflop:g} TFLOP per "
                           "request; ask for fewer images or steps")


def model_image(image: Any, checkpoint: Checkpoint, what: str = "image") -> np.ndarray:
    """An uploaded picture (H, W[, C]) uint8 or float as the model's (C, H, W) in [-1, 1]."""
    from PIL import Image
    if image is None:
        raise ServiceError(f"upload or pick an {what} first")
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.size == 0 or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ServiceError(f"the {what} must be a picture (height x width, gray or colour), got shape "
                           f"{array.shape}")
    channels, height, width = checkpoint.config.sample_shape
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float64)) * (255.0 if array.max() <= 1.0 else 1.0),
                        0, 255).astype(np.uint8)
    picture = Image.fromarray(array[..., :3] if array.ndim == 3 and array.shape[2] == 4 else array.squeeze())
    picture = picture.convert("L" if channels == 1 else "RGB").resize((width, height), Image.LANCZOS)
    pixels = np.asarray(picture, np.float32) / 127.5 - 1.0
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def model_mask(mask: Any, checkpoint: Checkpoint) -> Optional[np.ndarray]:
    """A drawn mask (H, W[, C]): anything drawn (non-zero, or opaque in an alpha channel) is to be
    generated, as (1, H, W) in {0, 1} at the model's size; None when nothing is drawn."""
    from PIL import Image
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., 3] if array.shape[2] == 4 else array.max(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise ServiceError(f"the mask must be a drawing the size of the image, got shape {np.shape(mask)}")
    drawn = (array > 0).astype(np.uint8) * 255
    if not drawn.any():
        return None
    _, height, width = checkpoint.config.sample_shape
    small = np.asarray(Image.fromarray(drawn).resize((width, height), Image.BOX), np.float32)
    return (small > 0)[None].astype(np.float32)


# --- advanced sampler options: timestep spacing and Karras sigmas ------------------------------
RECOMMENDED = "recommended"
SPACING_CHOICES = (RECOMMENDED, *SPACINGS)
KARRAS_CHOICES = (RECOMMENDED, "on", "off")


@dataclass(frozen=True)
class SamplerSettings:
    """The page's spacing and Karras choices, checked against the sampler: `overrides` go to
    `sample()` (which fills the rest from the registry's recommended settings), `spacing` and
    `karras` are what the sampler then uses (karras None: the sampler does not read it)."""

    overrides: dict[str, Any]
    spacing: str
    karras: Optional[bool]

    def describe(self) -> str:
        karras = "" if self.karras is None else f", Karras sigmas {'on' if self.karras else 'off'}"
        return f", {self.spacing} spacing{karras}"


def sampler_reads(sampler: str, option: str) -> bool:
    return sampler in SAMPLERS and option in SAMPLERS[sampler].options


def check_sampler_settings(sampler: str, spacing=RECOMMENDED, karras=RECOMMENDED, steps: Optional[int] = None,
                           fitted_timesteps: Optional[dict] = None) -> SamplerSettings:
    """Spacing and Karras sigmas as the page offers them; "recommended" (or nothing) leaves the
    core's choice for the sampler (samplers.recommended_settings: the registry's, or timesteps
    fitted on the model at this step count)."""
    spacing = spacing or RECOMMENDED
    karras = karras or RECOMMENDED
    if spacing not in SPACING_CHOICES:
        raise ServiceError(f"unknown timestep spacing {plain(spacing, 40)}; choose one of "
                           f"{', '.join(SPACING_CHOICES)}")
    if karras not in KARRAS_CHOICES:
        raise ServiceError(f"Karras sigmas must be one of {', '.join(KARRAS_CHOICES)}, got {plain(karras, 40)}")
    spec = SAMPLERS[sampler]
    if spacing != RECOMMENDED and "spacing" not in spec.options:
        raise ServiceError(f"{spec.title} does not read the timestep spacing; leave it at {RECOMMENDED}")
    if karras == "on" and "karras_sigmas" not in spec.options:
        raise ServiceError(f"{spec.title} does not use Karras sigmas (only the samplers that work in "
                           f"sigma do); leave it at {RECOMMENDED}")
    overrides: dict[str, Any] = {}
    if spacing != RECOMMENDED:
        overrides["spacing"] = spacing
    if karras != RECOMMENDED and "karras_sigmas" in spec.options:
        overrides["karras_sigmas"] = karras == "on"
    if not overrides:
        chosen = recommended_settings(sampler, steps, fitted_timesteps)
    else:
        chosen = {**spec.recommended, **overrides}
    if chosen.get("spacing") == OPTIMIZED and fitted_for(fitted_timesteps, sampler,
                                                         steps or spec.default_steps) is None:
        raise ServiceError(f"this model has no timesteps fitted for {spec.title} at "
                           f"{steps or spec.default_steps} steps; pick another spacing")
    uses_karras = "karras_sigmas" in spec.options
    return SamplerSettings(overrides, chosen.get("spacing", SamplerOptions().spacing),
                           bool(chosen.get("karras_sigmas", SamplerOptions().karras_sigmas)) if uses_karras
                           else None)
