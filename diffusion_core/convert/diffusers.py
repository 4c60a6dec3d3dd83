"""diffusers layouts, read and written with json and safetensors only (no diffusers, no torch).

Three layouts hold a UNet2DModel, all recognised by `find_layout`:

    bare       config.json (UNet2DModel) + diffusion_pytorch_model.safetensors [+ scheduler_config.json]
    subfolders unet/{config.json, diffusion_pytorch_model.safetensors} + scheduler/scheduler_config.json
    pipeline   the subfolders plus model_index.json naming the pipeline (DDPMPipeline, DDIMPipeline, ...)

The weights keep diffusers' names (the diffusers_unet2d architecture's canonical names); the
attention names of checkpoints saved before diffusers 0.14 (query/key/value/proj_attn) are mapped
to today's, as diffusers itself does at load. scheduler_config.json becomes a DiffusionConfig:
what the model was trained with (betas, T, prediction type, zero SNR, clip range, DDPM variance) is
read; what only chooses how to sample (timestep_spacing, solver_order, ...) is kept in the notes,
since here those are options of each sampler call; anything else is refused by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..architectures import DiffusersUnet2DConfig
from ..config import TRAINED, DiffusionConfig, ModelConfig, check_json_size
from ..parsing import ConfigError, require

WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_FP16 = "diffusion_pytorch_model.fp16.safetensors"
PICKLED = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.ckpt", "diffusion_pytorch_model.pt",
           "diffusion_pytorch_model.fp16.bin")
UNET_CONFIG, SCHEDULER_CONFIG, MODEL_INDEX = "config.json", "scheduler_config.json", "model_index.json"
# Files a diffusers repo may hold that this module reads (hub.py downloads only these).
READ_FILES = (UNET_CONFIG, WEIGHTS, WEIGHTS_FP16, SCHEDULER_CONFIG, MODEL_INDEX,
              f"unet/{UNET_CONFIG}", f"unet/{WEIGHTS}", f"unet/{WEIGHTS_FP16}", f"scheduler/{SCHEDULER_CONFIG}")

# Pixel-space DDPM-family schedulers; their betas define the same forward process.
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
              "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "HeunDiscreteScheduler", "LMSDiscreteScheduler", "UniPCMultistepScheduler",
              "DEISMultistepScheduler", "KDPM2DiscreteScheduler")
# Scheduler fields that choose how to sample, not what was trained: kept in the notes.
SAMPLING_FIELDS = ("algorithm_type", "disable_corrector", "dynamic_thresholding_ratio", "euler_at_final",
                   "final_sigmas_type", "interpolation_type", "lambda_min_clipped", "lower_order_final",
                   "predict_x0", "sample_max_value", "set_alpha_to_one", "sigma_max", "sigma_min",
                   "skip_prk_steps", "solver_order", "solver_p", "solver_type", "steps_offset",
                   "thresholding", "timestep_spacing", "timestep_type", "use_beta_sigmas",
                   "use_exponential_sigmas", "use_karras_sigmas", "use_lu_lambdas", "flow_shift",
                   "shift_terminal", "time_shift_type", "use_dynamic_shifting", "use_flow_sigmas")
# Early diffusers (<= 0.3) schedulers took tensor_format ("np" | "pt"): how they stored their own
# tensors, nothing about the process. Kept in the notes like the sampling fields.
SAMPLING_FIELDS += ("tensor_format",)
TRAINING_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                   "prediction_type", "rescale_betas_zero_snr", "clip_sample", "clip_sample_range",
                   "variance_type")
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small",   # same variance, in logs
             "fixed_large": "fixed_large", "fixed_large_log": "fixed_large"}
# diffusers' defaults where a scheduler_config.json leaves a field out
DDPM_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                 "beta_schedule": "linear", "prediction_type": "epsilon"}
CLIPS_BY_DEFAULT = ("DDPMScheduler", "DDIMScheduler")   # clip_sample defaults to True in these


class LayoutError(ValueError):
    """A folder that is not a readable diffusers layout; the message says why and what to do."""


@dataclass(frozen=True)
class DiffusersLayout:
    """Where a UNet2DModel's files are in a folder."""

    kind: str                       # bare | subfolders | pipeline
    root: Path
    unet: Path                      # the folder with config.json and the weights
    scheduler: Optional[Path]       # scheduler_config.json, if there is one
    pipeline: Optional[str] = None  # model_index.json's _class_name


def _json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        check_json_size(text, path.name)  # huge or deeply nested JSON refused before parsing
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path} is not readable JSON ({e}); download it again") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path} must hold a JSON object")
    return data


def find_layout(folder: Path) -> Optional[DiffusersLayout]:
    """The diffusers layout of folder, or None when it holds none (e.g. a toolkit checkpoint)."""
    folder = Path(folder)
    if (folder / MODEL_INDEX).is_file():
        index = _json(folder / MODEL_INDEX)
        name = index.get("_class_name", "a pipeline")
        components = {k: v for k, v in index.items() if not k.startswith("_")}
        unet = components.get("unet")
        if not (isinstance(unet, list) and unet[-1] == "UNet2DModel"):
            raise LayoutError(f"{folder} holds a diffusers {name} whose unet is {unet!r}; only "
                              "pipelines of a UNet2DModel (DDPMPipeline, DDIMPipeline) can be read")
        others = sorted(k for k, v in components.items() if k not in ("unet", "scheduler") and v)
        if others:
            raise LayoutError(f"{folder} holds a diffusers {name} with {', '.join(others)} besides the "
                              "unet and scheduler (a latent or conditioned pipeline); only pixel-space "
                              "pipelines of a UNet2DModel and a scheduler can be read")
        scheduler = folder / "scheduler" / SCHEDULER_CONFIG
        return DiffusersLayout("pipeline", folder, folder / "unet", scheduler if scheduler.is_file() else None, name)
    if (folder / "unet" / UNET_CONFIG).is_file():
        scheduler = folder / "scheduler" / SCHEDULER_CONFIG
        return DiffusersLayout("subfolders", folder, folder / "unet", scheduler if scheduler.is_file() else None)
    config = folder / UNET_CONFIG
    if config.is_file():
        data = _json(config)
        if "format_version" in data or "_class_name" not in data:
            return None  # the toolkit's own config.json
        scheduler = folder / SCHEDULER_CONFIG
        return DiffusersLayout("bare", folder, folder, scheduler if scheduler.is_file() else None)
    return None


# --- scheduler_config.json -> DiffusionConfig -----------------------------------------------

def diffusion_from_scheduler(data: Optional[dict], where: str = SCHEDULER_CONFIG) -> tuple[DiffusionConfig, dict]:
    """The forward process a scheduler config describes, and the sampling settings it held
    (for the notes). None: diffusers' DDPMScheduler defaults, as DDPMPipeline would use."""
    if data is None:
        data = {"_class_name": "DDPMScheduler"}
    kind = data.get("_class_name", "DDPMScheduler")
    require(kind in SCHEDULERS, f"{where} describes a {kind}; this toolkit reads the DDPM-family "
                                f"schedulers ({', '.join(SCHEDULERS)})")
    unknown = sorted(k for k in data if not k.startswith("_") and k not in TRAINING_FIELDS + SAMPLING_FIELDS)
    require(not unknown, f"{where} has field(s) {unknown} that this toolkit does not read; it reads "
                         f"{', '.join(TRAINING_FIELDS)} and keeps {', '.join(SAMPLING_FIELDS)} as notes")
    require(not data.get("use_flow_sigmas") and not data.get("use_dynamic_shifting"),
            f"{where} configures flow-matching sigmas, which are not a DDPM forward process")
    get = lambda key: data[key] if data.get(key) is not None else DDPM_DEFAULTS.get(key)  # noqa: E731
    T, start, end, kind_of_betas = get("num_train_timesteps"), get("beta_start"), get("beta_end"), get("beta_schedule")
    prediction = PREDICTION_TYPES.get(get("prediction_type"))
    require(prediction is not None, f"{where}: prediction_type {get('prediction_type')!r} is not one of "
                                    f"{', '.join(PREDICTION_TYPES)}")
    variance = VARIANCES.get(data.get("variance_type") or "fixed_small")
    require(variance is not None, f"{where}: variance_type {data.get('variance_type')!r} is learned by the "
                                  f"model; supported: {', '.join(VARIANCES)}")
    clip = data.get("clip_sample")
    clip = (kind in CLIPS_BY_DEFAULT) if clip is None else bool(clip)
    clip_range = data.get("clip_sample_range")
    require(not clip or clip_range in (None, 1, 1.0),
            f"{where}: clip_sample_range {clip_range} is not 1; the samplers here clip x0 to [-1, 1]")
    common = dict(num_train_timesteps=int(T), prediction_type=prediction, variance=variance, clip_x0=clip,
                  zero_terminal_snr=bool(data.get("rescale_betas_zero_snr", False)))
    if data.get("trained_betas") is not None:
        diffusion = DiffusionConfig(schedule=TRAINED, trained_betas=tuple(data["trained_betas"]), **common)
    elif kind_of_betas in ("linear", "scaled_linear"):
        # Our linear schedules are given at T = 1000 and scaled by 1000 / T; diffusers' are not.
        scale = T / 1000.0
        diffusion = DiffusionConfig(schedule=kind_of_betas, beta_start=start * scale, beta_end=end * scale, **common)
    elif kind_of_betas == "squaredcos_cap_v2":   # Nichol & Dhariwal's cosine; reads no beta range
        diffusion = DiffusionConfig(schedule="cosine", **common)
    elif kind_of_betas == "sigmoid":             # diffusers' own sigmoid, not lucidrains': listed
        betas = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T))) * (end - start) + start
        diffusion = DiffusionConfig(schedule=TRAINED, trained_betas=tuple(betas.tolist()), **common)
    else:
        raise ConfigError(f"{where}: beta_schedule {kind_of_betas!r} is not supported; supported: linear, "
                          "scaled_linear, squaredcos_cap_v2, sigmoid, or trained_betas")
    sampling = {k: data[k] for k in SAMPLING_FIELDS if k in data}
    return diffusion, {"scheduler": kind, **({"scheduler_sampling_settings": sampling} if sampling else {})}


def scheduler_from_diffusion(diffusion: DiffusionConfig) -> dict[str, Any]:
    """A DDPMScheduler config.json describing the same forward process (for export)."""
    names = {v: k for k, v in PREDICTION_TYPES.items()}
    out: dict[str, Any] = {"_class_name": "DDPMScheduler", "num_train_timesteps": diffusion.num_train_timesteps,
                           "prediction_type": names[diffusion.prediction_type],
                           "clip_sample": diffusion.clip_x0, "variance_type": diffusion.variance,
                           "rescale_betas_zero_snr": diffusion.zero_terminal_snr}
    scale = 1000.0 / diffusion.num_train_timesteps
    if diffusion.schedule in ("linear", "scaled_linear"):
        out.update(beta_schedule=diffusion.schedule, beta_start=diffusion.beta_start * scale,
                   beta_end=diffusion.beta_end * scale)
    elif diffusion.schedule == "cosine":
        out.update(beta_schedule="squaredcos_cap_v2")
    else:  # trained, sigmoid (lucidrains'): the betas themselves, before any zero-SNR rescale
        plain = DiffusionConfig(**{**diffusion.__dict__, "zero_terminal_snr": False})
        out.update(beta_schedule="linear", trained_betas=plain.make_schedule().betas.tolist())
    return out


# --- weights ---------------------------------------------------------------------------------

DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def modern_name(name: str) -> str:
    """diffusers < 0.14 attention names (attentions.0.query.weight) as today's (attentions.0.to_q.weight)."""
    parts = name.split(".")
    if len(parts) >= 3 and "attentions" in parts and parts[-2] in DEPRECATED_ATTENTION:
        parts[-2:-1] = DEPRECATED_ATTENTION[parts[-2]].split(".")
    return ".".join(parts)


def pickle_only_message(where: str, names: list[str]) -> str:
    return (f"{where} holds its weights only as pickle files ({', '.join(names)}), and this toolkit never "
            "unpickles a download: on a machine you trust, load it with diffusers and save it again with "
            "`UNet2DModel.from_pretrained(folder).save_pretrained(folder)` (which writes safetensors), "
            "then load that folder")


def read_weights(unet_folder: Path) -> tuple[dict[str, np.ndarray], str]:
    """The UNet's float32 weights under today's diffusers names, and the file they came from."""
    from safetensors import SafetensorError, safe_open

    for name in (WEIGHTS, WEIGHTS_FP16):
        path = unet_folder / name
        if path.is_file():
            break
    else:
        pickled = [p for p in PICKLED if (unet_folder / p).is_file()]
        if pickled:
            raise LayoutError(pickle_only_message(str(unet_folder), pickled))
        raise LayoutError(f"{unet_folder} has a UNet2DModel config.json but no {WEIGHTS}; download "
                          "the weights too")
    weights = {}
    try:
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():
                array = f.get_tensor(key)
                if not np.issubdtype(array.dtype, np.floating):
                    raise LayoutError(f"{path}: tensor {key} is {array.dtype}, not floating point")
                weights[modern_name(key)] = np.ascontiguousarray(array, dtype=np.float32)
    except SafetensorError as e:
        raise LayoutError(f"{path} is truncated or corrupt ({e}); download it again") from None
    return weights, name


def read_layout(layout: DiffusersLayout, source: Optional[str] = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """ModelConfig and weights of a diffusers layout; the notes say where it came from."""
    network = DiffusersUnet2DConfig.parse(_json(layout.unet / UNET_CONFIG), str(layout.unet / UNET_CONFIG))
    scheduler = _json(layout.scheduler) if layout.scheduler else None
    diffusion, settings = diffusion_from_scheduler(scheduler, str(layout.scheduler or SCHEDULER_CONFIG))
    weights, weights_file = read_weights(layout.unet)
    origin = {"format": "diffusers UNet2DModel", "layout": layout.kind, "source": source or str(layout.root),
              "weights": weights_file, **settings}
    if layout.pipeline:
        origin["pipeline"] = layout.pipeline
    if scheduler is None:
        origin["scheduler"] = "none given: diffusers' DDPMScheduler defaults"
    return ModelConfig(network=network, diffusion=diffusion, notes={"imported_from": origin}), weights


# --- export ----------------------------------------------------------------------------------

def export_pipeline(config: ModelConfig, weights: dict[str, np.ndarray], folder: Path) -> Path:
    """Write a DDPMPipeline folder (model_index.json, unet/, scheduler/) that diffusers'
    DDPMPipeline.from_pretrained opens. Only the diffusers_unet2d architecture maps exactly."""
    from safetensors.numpy import save as safetensors_bytes

    from ..files import write_atomically

    arch = config.architecture
    if arch.name != "diffusers_unet2d":
        raise ConfigError(f"the {arch.name} architecture has no exact diffusers counterpart (its blocks differ "
                          "from UNet2DModel's), so it cannot be exported to diffusers; only diffusers_unet2d "
                          "checkpoints can")
    folder = Path(folder)
    files = {MODEL_INDEX: {"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1",
                           "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]},
             f"unet/{UNET_CONFIG}": config.network.to_diffusers(),
             f"scheduler/{SCHEDULER_CONFIG}": scheduler_from_diffusion(config.diffusion)}
    for name, data in files.items():
        write_atomically(folder / name, (json.dumps(data, indent=2) + "\n").encode())
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    write_atomically(folder / "unet" / WEIGHTS, safetensors_bytes(tensors, metadata={"format": "pt"}))
    return folder
