"""Run diffusers' schedulers as references for our samplers (test helper, not product code).

The same fixed model function and the same starting noise drive both; where a scheduler draws
noise, diffusers' `randn_tensor` is replaced by draws from the same seeded NumPy generator our
`NoiseSource` uses, so stochastic samplers are compared step for step too.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

diffusers = __import__("pytest").importorskip("diffusers", reason="diffusers is the reference; "
                                              "install requirements.txt")
torch = __import__("torch")

from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler,
                       UniPCMultistepScheduler)

from diffusion_core.ops import NumpyOps  # noqa: E402
from diffusion_core.samplers import noise_generators  # noqa: E402
from diffusion_core.schedules import make_schedule  # noqa: E402

_MODULES = [getattr(diffusers.schedulers, m) for m in (
    "scheduling_ddpm", "scheduling_ddim", "scheduling_euler_ancestral_discrete",
    "scheduling_euler_discrete", "scheduling_dpmsolver_multistep", "scheduling_heun_discrete",
    "scheduling_unipc_multistep")]

PREDICTION_NAMES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def fixed_model(shape, prediction_type, seed=1234):
    """A deterministic, nonlinear stand-in for a network: output depends on x and t everywhere.
    It keeps the input's dtype, so float64 runs stay float64."""
    w = np.random.default_rng(seed).uniform(0.5, 1.5, size=shape[1:])

    def model(x, t, x_self_cond=None):
        x = np.asarray(x)
        t = float(t)
        out = np.tanh(w * x) * (0.8 + 0.2 * math.cos(t / 300.0)) + 0.05 * math.sin(t / 250.0) * x
        if prediction_type == "eps":
            out = out + 0.3 * x  # eps-models see mostly noise: keep a linear part
        return out.astype(x.dtype)
    return model


class _Float64Module:
    """`torch` or `numpy` as seen by a diffusers scheduler module, with float32 meaning float64.

    diffusers casts samples and sigmas to float32 (torch.float32 and np.float32). From sigma_max
    ~ 2e4 (cosine schedule) the first Heun step amplifies differences in x0 by s / (2 s_next) ~
    1300, so float32 rounding of sigma alone moves results by ~1e-3. To compare definitions
    rather than rounding, the reference runs entirely in float64.
    """

    def __init__(self, module, float64):
        self._module, self.float32 = module, float64

    def __getattr__(self, name):
        return getattr(self._module, name)


class Float64Ops(NumpyOps):
    name = "numpy-float64"

    def asarray(self, a):
        return np.asarray(a, dtype=np.float64)

    def to_numpy(self, x):
        return np.asarray(x, dtype=np.float64)


def our_schedule(name, T=1000, zero_snr=False):
    return make_schedule(name, T, zero_terminal_snr=zero_snr)


def scheduler_kwargs(schedule_name, T, zero_snr, prediction_type):
    kw = {"num_train_timesteps": T, "prediction_type": PREDICTION_NAMES[prediction_type]}
    if schedule_name == "linear" and T == 1000:
        kw.update(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    elif schedule_name == "cosine":
        kw.update(beta_schedule="squaredcos_cap_v2")
    else:  # sigmoid (lucidrains'), scaled linear at other T, ...: hand over our betas
        kw.update(trained_betas=our_schedule(schedule_name, T).betas)
    if zero_snr:
        kw["rescale_betas_zero_snr"] = True
    return kw


@contextlib.contextmanager
def patched_diffusers(seed, float64):
    """Make every diffusers scheduler draw its noise from our per-step stream for `seed` (the same
    float32 draws our NoiseSource makes) and, if float64, compute in float64."""
    rng = noise_generators(seed)[1]  # the per-step stream our samplers use
    dtype = torch.float64 if float64 else torch.float32

    def fake_randn(shape, generator=None, device=None, dtype_=None, layout=None, **_):
        return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32)).to(dtype)

    saved = [(m, getattr(m, "randn_tensor", None), m.torch, m.np) for m in _MODULES]
    try:
        for m in _MODULES:
            m.randn_tensor = fake_randn
            if float64:
                m.torch = _Float64Module(torch, torch.float64)
                m.np = _Float64Module(np, np.float64)
        yield
    finally:
        for m, randn, t, n in saved:
            if randn is not None:
                m.randn_tensor = randn
            m.torch, m.np = t, n


def run_loop(scheduler, model, latents, step_kwargs=None):
    """The usual diffusers loop: scale input, call the model, step."""
    x = torch.from_numpy(latents)
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(x, t)
        out = torch.from_numpy(model(inp.numpy(), float(t)))
        x = scheduler.step(out, t, x, **(step_kwargs or {})).prev_sample
    return x.numpy()


SCHEDULER_CLASSES = {
    "ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler, "euler_ancestral": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler, "dpmpp_3m": DPMSolverMultistepScheduler,
    "dpmpp_2m_sde": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler,
}


def diffusers_sample(sampler, *, model, x_T, steps, schedule_name, T=1000, zero_snr=False,
                     prediction_type="eps", spacing="trailing", options=None, seed=0, float64=False):
    """Sample with diffusers' scheduler for `sampler`, configured to match our options."""
    options = dict(options or {})
    kw = scheduler_kwargs(schedule_name, T, zero_snr, prediction_type)
    step_kwargs = {}
    set_kwargs = {"num_inference_steps": steps}
    clip = options.get("clip_x0", False)
    if sampler in ("ddpm", "ddim"):
        kw.update(timestep_spacing=spacing, clip_sample=clip and options.get("threshold_ratio") is None)
    if sampler == "ddpm":
        kw["variance_type"] = options.get("variance", "fixed_small")
    if sampler == "ddim":
        step_kwargs = {"eta": options.get("eta", 0.0), "use_clipped_model_output": True}
    if options.get("threshold_ratio") is not None:
        kw.update(thresholding=True, dynamic_thresholding_ratio=options["threshold_ratio"],
                  sample_max_value=options.get("threshold_max", 1.0))
    if sampler in ("euler", "euler_ancestral", "heun"):
        kw["timestep_spacing"] = spacing
        if options.get("karras_sigmas"):
            kw["use_karras_sigmas"] = True
    if sampler == "heun" and clip:
        kw["clip_sample"] = True
    if sampler in ("dpmpp_3m", "unipc"):
        kw["solver_order"] = options.get("solver_order") or (3 if sampler == "dpmpp_3m" else 2)
        kw["lower_order_final"] = options.get("lower_order_final", True)
    if sampler == "dpmpp_2m_sde":
        kw["algorithm_type"] = "sde-dpmsolver++"
    if sampler == "unipc":
        kw["timestep_spacing"] = spacing
        if options.get("karras_sigmas"):
            kw["use_karras_sigmas"] = True
    if sampler in ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde"):
        from diffusion_core.timesteps import spaced_timesteps
        set_kwargs = {"timesteps": spaced_timesteps(spacing, T, steps).tolist()}
        if options.get("karras_sigmas"):
            kw["use_karras_sigmas"] = True
            set_kwargs = {"num_inference_steps": steps}
            kw["timestep_spacing"] = spacing
    with patched_diffusers(seed, float64):
        scheduler = SCHEDULER_CLASSES[sampler](**kw)
        scheduler.set_timesteps(**set_kwargs)
        latents = np.asarray(x_T, dtype=np.float64 if float64 else np.float32)
        if sampler in ("euler", "euler_ancestral", "heun"):
            # Our sigma-space samplers start from unit noise scaled to std sqrt(1 + sigma_max^2),
            # the exact VE marginal; diffusers' init_noise_sigma is sigma_max for some spacings.
            # Start both from the same point.
            sigma_max = float(scheduler.sigmas.max())
            latents = latents * latents.dtype.type(math.sqrt(1.0 + sigma_max ** 2))
        return run_loop(scheduler, model, latents, step_kwargs)
