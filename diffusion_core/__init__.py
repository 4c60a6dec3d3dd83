"""diffusion_core: the maths of denoising diffusion, written once, framework-neutral.

Imports NumPy only; safetensors and huggingface_hub are imported by checkpoint.py and hub.py
when those are used. The stable public surface:

    make_schedule(name, T, zero_terminal_snr=False) -> NoiseSchedule
    list_samplers() -> ["ddpm", "ddim", "dpmpp_2m", "euler", "euler_ancestral", "heun"]
    sample(model, schedule, sampler=..., steps=..., shape=..., seed=..., ops=..., ...) -> np.ndarray
    ModelConfig / DiffusionConfig                  (config.json)
    ARCHITECTURES, get_architecture, UnetConfig    (the architecture registry and its first entry)
    SamplerOptions, StepInfo                       (sampler settings, per-step callback record)
"""
from .architectures import ARCHITECTURES, ModelInput, UnetConfig, get_architecture
from .config import ConfigError, DiffusionConfig, ModelConfig
from .ops import NUMPY, NumpyOps, Ops
from .prediction import PREDICTION_TYPES
from .samplers import SAMPLERS, SamplerOptions, StepInfo, get_sampler, list_samplers, sample
from .schedules import SCHEDULES, NoiseSchedule, make_schedule
from .timesteps import SPACINGS, spaced_timesteps

__all__ = ["ARCHITECTURES", "ModelInput", "get_architecture", "ConfigError", "DiffusionConfig", "ModelConfig",
           "NUMPY", "NoiseSchedule", "NumpyOps", "Ops",
           "PREDICTION_TYPES", "SAMPLERS", "SCHEDULES", "SPACINGS", "SamplerOptions", "StepInfo",
           "UnetConfig", "get_sampler", "list_samplers", "make_schedule", "sample", "spaced_timesteps"]
