"""Sampler registry, keyed by the name a user picks, and the one `sample()` entry point."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from ..architectures.inputs import SELF_CONDITION, ModelInput, find_role, self_condition_input
from .. import conditioning
from ..denoise import X0Processing, build_denoiser
from ..ops import NUMPY, Ops
from ..schedules import NoiseSchedule
from ..timesteps import OPTIMIZED, check_fitted_table, check_timesteps, spaced_timesteps
from .base import (COMMON_OPTIONS, MULTISTEP_OPTIONS, Callback, NoiseSource, SamplerContext, SamplerOptions,
                   SamplerSpec, StepInfo, noise_generators)
from .ddim import sample_ddim
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m
from .dpm_solver_3m import sample_dpmpp_3m
from .dpm_solver_sde import sample_dpmpp_2m_sde
from .euler import sample_euler, sample_euler_ancestral
from .heun import sample_heun
from .unipc import sample_unipc

# samplers that index the schedule at integer timesteps (the others interpolate sigma)
INTEGER_TIMESTEPS = {"ddpm", "ddim"}
_SIGMA = COMMON_OPTIONS | {"karras_sigmas"}
_MULTISTEP = COMMON_OPTIONS | MULTISTEP_OPTIONS

# Recommended settings, from the measurements in tests/ and bench/:
# - Heun on the cosine schedule starts at sigma_max ~ 2e4, where its trapezoidal correction
#   amplifies x0 errors ~1e3 times (the app drew noise at 20 steps); Karras sigmas (rho = 7)
#   keep the first steps short.
# - the multistep solvers end their uniform-lambda steps at t = 0, and on the 3-point mixture
#   at 10 calls land on the points where trailing spacing (last t = 99) does not
#   (tests/test_samplers_closed_form.py::test_logsnr_spacing_lands_on_the_points_at_10_steps).
_LOGSNR = {"spacing": "logsnr"}

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ddpm", sample_ddpm, "DDPM, ancestral (Ho et al. 2020)", COMMON_OPTIONS | {"variance"}),
    SamplerSpec("ddim", sample_ddim, "DDIM (Song et al. 2021)", COMMON_OPTIONS | {"eta"}),
    # Recommended settings from bench/sampler_quality.py on the shipped model (FD, 500 samples, ONNX
    # Runtime): log-SNR steps beat trailing ones at 10 calls for every multistep solver (DPM++(2M)
    # 8.42 vs 13.40, (3M) 7.19 vs 13.35); 20 steps is ~1 s for 16 images on 2 cores.
    SamplerSpec("dpmpp_2m", sample_dpmpp_2m, "DPM-Solver++(2M) (Lu et al. 2022)", _SIGMA,
                recommended=_LOGSNR, default_steps=20),
    SamplerSpec("dpmpp_3m", sample_dpmpp_3m, "DPM-Solver++(3M) (Lu et al. 2022)", _MULTISTEP,
                recommended=_LOGSNR, default_steps=20),
    SamplerSpec("dpmpp_2m_sde", sample_dpmpp_2m_sde, "DPM-Solver++(2M) SDE (Lu et al. 2022)",
                COMMON_OPTIONS | {"karras_sigmas"}, recommended=_LOGSNR, default_steps=20),
    SamplerSpec("unipc", sample_unipc, "UniPC, bh2 (Zhao et al. 2023)", _MULTISTEP,
                recommended=_LOGSNR, default_steps=20),
    SamplerSpec("euler", sample_euler, "Euler (Karras et al. 2022)", _SIGMA, fractional_timesteps=True),
    SamplerSpec("euler_ancestral", sample_euler_ancestral, "Euler ancestral (k-diffusion)", _SIGMA,
                fractional_timesteps=True),
    SamplerSpec("heun", sample_heun, "Heun, 2nd order (Karras et al. 2022)", _SIGMA,
                # Karras sigmas: on the cosine schedule its own sigmas draw noise at 20 steps (README);
                # 20 steps = 39 calls, FD 5.52 with Karras sigmas there
                fractional_timesteps=True, evals_per_step=lambda steps: 2 * steps - 1,
                recommended={"karras_sigmas": True}, default_steps=20),
)}


def list_samplers() -> list[str]:
    """Names accepted by `sample(sampler=...)`, in a stable order."""
    return list(SAMPLERS)


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def fitted_for(fitted_timesteps: Optional[Mapping], sampler: str, steps: int) -> Optional[tuple[float, ...]]:
    """The timesteps fitted for `sampler` at `steps` (a model's config.fitted_timesteps), or None."""
    return ((fitted_timesteps or {}).get(sampler) or {}).get(int(steps))


def recommended_settings(sampler: str, steps: Optional[int] = None,
                         fitted_timesteps: Optional[Mapping] = None) -> dict[str, Any]:
    """What sample() uses when the caller sets neither spacing nor Karras sigmas: the registry's
    recommended settings, or the model's fitted timesteps where it has them for this sampler and
    step count (bench/sampler_quality.py measures both on the shipped model)."""
    spec = get_sampler(sampler)
    steps = spec.default_steps if steps is None else steps
    chosen = dict(spec.recommended)
    if fitted_for(fitted_timesteps, sampler, steps) is not None:
        chosen.pop("karras_sigmas", None)
        chosen["spacing"] = OPTIMIZED
    return chosen


def make_options(sampler: str, options: Optional[SamplerOptions] = None, **overrides: Any) -> SamplerOptions:
    """Validated options for `sampler`: unknown names and options the sampler ignores are errors."""
    spec = get_sampler(sampler)
    known = {f.name for f in fields(SamplerOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown sampler option(s) {unknown}; known options: {sorted(known)}")
    base = options or SamplerOptions()
    opts = SamplerOptions(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **overrides})
    unused = sorted(opts.changed() - spec.options)
    if unused:
        raise ValueError(f"option(s) {unused} do not apply to sampler {sampler!r}; it reads "
                         f"{sorted(spec.options)}")
    return opts


def sample(model: Callable[..., Any], schedule: NoiseSchedule, *, sampler: str = "ddim",
           steps: Optional[int] = None,
           shape: Optional[tuple[int, ...]] = None, seed: Optional[int] = None,
           x_T: Optional[np.ndarray] = None, ops: Ops = NUMPY, prediction_type: str = "eps",
           model_inputs: Sequence[ModelInput] = (), inputs: Optional[Mapping[str, np.ndarray]] = None,
           self_condition: bool = False, class_labels: Any = None, guidance_scale: float = 1.0,
           guidance_rescale: float = 0.0, guidance_interval: Optional[Sequence[float]] = None,
           init_image: Optional[np.ndarray] = None, strength: float = 1.0,
           mask: Optional[np.ndarray] = None, options: Optional[SamplerOptions] = None,
           timesteps: Optional[Sequence[float]] = None, fitted_timesteps: Optional[Mapping] = None,
           callback: Optional[Callback] = None, cancel: Optional[Any] = None,
           **option_overrides: Any) -> np.ndarray:
    """Draw images with a trained model; returns a float32 NumPy array shaped like x_T (~[-1, 1]).

    model:   `model(x, t, **inputs) -> raw output` on the backend `ops` belongs to; t is a Python
             float timestep in [0, T-1] shared by the whole batch; inputs are the optional inputs
             the model declares (`model_inputs`), as backend tensors keyed by their names.
    model_inputs: the model's declared inputs (`ModelConfig.inputs`); a declared self-conditioning
             input is fed the previous x0 estimate. `self_condition=True` is the short form for
             a model that takes the standard one (`architectures.inputs.self_condition_input`).
    inputs:  {declared name: NumPy array} held fixed for the call (e.g. class labels).
    seed:    seeds two NumPy streams: one draws x_T (unless given), the other every later noise.
    x_T:     explicit starting noise, unit Gaussian, shape (B, C, H, W).
    class_labels, guidance_scale, guidance_rescale, guidance_interval, init_image, strength, mask:
             class-conditional sampling, classifier-free guidance, image-to-image and inpainting
             (diffusion_core/conditioning.py says what each means and accepts).
    steps:   model steps; None takes the sampler's `default_steps`.
    timesteps: the caller's own descending timesteps (then `steps` is their number), instead of a
             spacing.
    fitted_timesteps: {sampler: {steps: timesteps}} fitted on this model (its config's
             `fitted_timesteps`, samplers/fit.py); spacing "optimized" reads them, and they are the
             recommended spacing where they exist for this sampler and step count.
    options / option_overrides: `SamplerOptions` fields, e.g. eta=0.5, spacing="leading". Without
             `options`, `recommended_settings` fill what the overrides leave out.
    callback: called with a `StepInfo` after every step (progress bars, x0 previews).
    cancel:  a diffusion_core.cancel.CancelToken checked after every step (raises Cancelled).
    """
    spec = get_sampler(sampler)
    if timesteps is not None:
        timesteps = check_timesteps(timesteps, schedule.num_train_timesteps,
                                    integer=spec.name in INTEGER_TIMESTEPS)
        if steps is not None and steps != len(timesteps):
            raise ValueError(f"steps={steps} disagrees with the {len(timesteps)} timesteps given")
        steps = len(timesteps)
    steps = spec.default_steps if steps is None else steps
    fitted = check_fitted_table(fitted_timesteps or {}, schedule.num_train_timesteps)
    if options is not None:
        recommended = {}
    elif timesteps is not None:   # the caller placed the steps: nothing may move them
        recommended = {k: v for k, v in spec.recommended.items() if k not in ("spacing", "karras_sigmas")}
    elif {"spacing", "karras_sigmas"} & set(option_overrides):
        recommended = spec.recommended   # the caller chose a spacing: no fitted one behind their back
    else:
        recommended = recommended_settings(sampler, steps, fitted)
    opts = make_options(sampler, options, **{**recommended, **option_overrides})
    if schedule.zero_terminal_snr and prediction_type == "eps":
        raise ValueError("this schedule has zero terminal SNR, where an eps-prediction model cannot "
                         "recover x0 (Lin et al. 2023, Sec. 3.2); use a v- or x0-prediction model")
    if timesteps is None and opts.spacing == OPTIMIZED:
        found = fitted_for(fitted, sampler, steps)
        if found is None:
            have = ", ".join(f"{name} at {sorted(per)}" for name, per in fitted.items()) or "none"
            raise ValueError(f"this model has no timesteps fitted for {sampler} at {steps} steps (it has "
                             f"{have}); fit them with `diffusion-toolkit fit-timesteps` or pick "
                             "another spacing")
        timesteps = check_timesteps(found, schedule.num_train_timesteps,
                                    integer=spec.name in INTEGER_TIMESTEPS)
    if timesteps is not None and opts.karras_sigmas:
        raise ValueError("karras_sigmas places its own noise levels; it cannot be combined with given "
                         "or optimized timesteps")
    if timesteps is None:
        timesteps = spaced_timesteps(opts.spacing, schedule.num_train_timesteps, steps,
                                     steps_offset=opts.steps_offset, schedule=schedule,
                                     fractional=spec.fractional_timesteps or opts.spacing == "logsnr"
                                     and spec.name not in INTEGER_TIMESTEPS)
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    initial_rng, step_rng = noise_generators(seed)
    if x_T is None:
        if shape is None or len(shape) < 2 or any(int(d) <= 0 for d in shape):
            raise ValueError(f"give shape=(batch, channels, height, width) or x_T; got shape={shape!r}")
        x_T = initial_rng.standard_normal(tuple(int(d) for d in shape), dtype=np.float32)
    elif shape is not None and tuple(shape) != tuple(np.shape(x_T)):
        raise ValueError(f"shape {tuple(shape)} disagrees with x_T's shape {np.shape(x_T)}")
    if self_condition and find_role(model_inputs, SELF_CONDITION) is None:
        model_inputs = tuple(model_inputs) + (self_condition_input(*np.shape(x_T)[1:]),)
    cond = conditioning.prepare(model_inputs, tuple(np.shape(x_T)), class_labels=class_labels,
                                guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                                guidance_interval=guidance_interval, init_image=init_image,
                                strength=strength, mask=mask)
    timesteps = conditioning.truncate(cond, timesteps, steps)
    steered, guidance, known = conditioning.wrappers(cond, model_inputs, x_T, ops)
    given = {k: ops.asarray(np.asarray(v)) for k, v in (inputs or {}).items()}
    denoise = build_denoiser(model, prediction_type, ops, model_inputs=model_inputs,
                             inputs={**given, **steered}, guidance=guidance, known=known,
                             x0_processing=X0Processing(opts.clip_x0, opts.threshold_ratio,
                                                        opts.threshold_max))
    ctx = SamplerContext(denoise=denoise, schedule=schedule, timesteps=timesteps,
                         noise=NoiseSource(step_rng, ops), options=opts, callback=callback, cancel=cancel)
    x_start = conditioning.noised_start(cond, schedule, float(timesteps[0]), np.asarray(x_T, np.float32))
    return ops.to_numpy(spec.fn(ctx, ops.asarray(x_start)))


__all__ = ["fitted_for", "noise_generators", "recommended_settings",
           "SAMPLERS", "SamplerOptions", "SamplerSpec", "StepInfo", "get_sampler", "list_samplers",
           "make_options", "sample"]
