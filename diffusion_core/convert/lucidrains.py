"""lucidrains' Unet configs detected from tensor shapes, and denoising-diffusion-pytorch milestones.

A trainer milestone (`Trainer.save`: results/model-N.pt) is a dict {step, model, opt, ema, scaler,
version}: `model` is the GaussianDiffusion state_dict (the Unet under "model.", and float32
buffers betas, alphas_cumprod, loss_weight, ...), `ema` the ema_pytorch state (the EMA copy
under "ema_model."). Neither records the Unet's arguments, the image size or the objective:
the Unet config is read off the shapes, the schedule off `betas`, the objective off `loss_weight`
(which GaussianDiffusion derives from it), and the image size must be given.

Reading a .pt needs torch and is done with torch.load(weights_only=True), which refuses anything
but tensors and plain containers; it is meant for a user's own local files.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ..architectures import LucidrainsUnetConfig, LucidrainsUnetV0Config, get_architecture
from ..config import TRAINED, DiffusionConfig, ModelConfig
from ..parsing import ConfigError
from ..schedules import make_schedule


class ShapeMismatch(ConfigError):
    """Tensors that fit no supported layout; the message names the first that does not fit."""


def _levels(shapes: dict, prefix: str) -> int:
    found = {int(m.group(1)) for name in shapes if (m := re.match(rf"{prefix}\.(\d+)\.", name))}
    return max(found) + 1 if found else 0


def _need(shapes: dict, name: str, what: str) -> tuple[int, ...]:
    if name not in shapes:
        raise ShapeMismatch(f"the weights have no {name}, which every {what} has; they are not from a "
                            "supported lucidrains Unet")
    return shapes[name]


def detect_config(shapes: dict[str, tuple[int, ...]], image_size: int, *, attn_heads: Optional[int] = None,
                  resnet_block_groups: int = 8):
    """The Unet config (LucidrainsUnetConfig for 2.x names, LucidrainsUnetV0Config for the 0.x /
    MindSpore-port names) whose canonical shapes are exactly `shapes`; ShapeMismatch otherwise."""
    v0 = any(".fn.fn." in name for name in shapes)
    what = "lucidrains Unet"
    if "time_mlp.0.weights" in shapes:
        raise ShapeMismatch("time_mlp.0.weights is a learned sinusoidal time embedding, which "
                            "GaussianDiffusion refuses and this toolkit does not support")
    init = _need(shapes, "init_conv.weight", what)
    if len(init) != 4 or init[2:] != (7, 7):
        raise ShapeMismatch(f"init_conv.weight has shape {list(init)}; a lucidrains Unet's is (init_dim, in, 7, 7)")
    dim = _need(shapes, "time_mlp.1.weight", what)[1]
    channels = _need(shapes, "final_conv.weight", what)[0]
    levels = _levels(shapes, "downs")
    if levels == 0:
        raise ShapeMismatch("the weights have no downs.0.* tensors; they are not from a lucidrains Unet")
    widths = [_need(shapes, f"downs.{i}.0.block1.proj.weight", what)[0] for i in range(levels)]
    widths.append(_need(shapes, "mid_block1.block1.proj.weight", what)[0])
    mults = tuple(w // dim for w in widths[1:])
    if any(w % dim for w in widths[1:]):
        raise ShapeMismatch(f"level widths {widths[1:]} are not multiples of dim {dim} (time_mlp.1.weight)")
    common = dict(image_size=image_size, channels=channels, dim=dim, dim_mults=mults,
                  self_condition=init[1] == 2 * channels)
    if v0:
        hidden = _need(shapes, "downs.0.2.fn.fn.to_qkv.weight", what)[0] // 3
        heads = attn_heads or 4
        if hidden % heads:
            raise ShapeMismatch(f"downs.0.2.fn.fn.to_qkv.weight has {hidden} channels per q/k/v, not divisible "
                                f"by {heads} heads; give the right number of heads")
        cfg = LucidrainsUnetV0Config(**common, resnet_block_groups=resnet_block_groups, attn_heads=heads,
                                     attn_dim_head=hidden // heads)
    else:
        full, heads, dim_head, memory = [], [], [], set()
        for i in range(levels):
            is_full = f"downs.{i}.2.to_out.weight" in shapes
            mem = _need(shapes, f"downs.{i}.2.mem_kv", what)
            if len(mem) != 4:
                raise ShapeMismatch(f"downs.{i}.2.mem_kv has shape {list(mem)}; expected (2, heads, ., .)")
            full.append(is_full)
            heads.append(mem[1])
            dim_head.append(mem[3] if is_full else mem[2])
            memory.add(mem[2] if is_full else mem[3])
        if len(memory) != 1:
            raise ShapeMismatch(f"the levels' mem_kv hold different numbers of memory key/values {sorted(memory)}")
        cfg = LucidrainsUnetConfig(**common, init_dim=None if init[0] == dim else init[0], full_attn=tuple(full),
                                   attn_heads=tuple(heads), attn_dim_head=tuple(dim_head), num_mem_kv=memory.pop())
    check_shapes(cfg, shapes)
    return cfg


def check_shapes(cfg, shapes: dict[str, tuple[int, ...]]) -> None:
    """ShapeMismatch naming the first tensor (in canonical order) that differs, is missing or is extra."""
    arch = get_architecture("lucidrains_unet_v0" if isinstance(cfg, LucidrainsUnetV0Config) else "lucidrains_unet")
    expected = arch.parameter_shapes(cfg)
    for name, shape in expected.items():
        if name not in shapes:
            raise ShapeMismatch(f"the weights have no {name} {list(shape)}, which {arch.summary(cfg)} needs")
        if tuple(shapes[name]) != shape:
            raise ShapeMismatch(f"{name} has shape {list(shapes[name])}, but {arch.summary(cfg)} needs "
                                f"{list(shape)}: the layout differs from every supported lucidrains Unet")
    extra = [name for name in shapes if name not in expected]
    if extra:
        raise ShapeMismatch(f"{extra[0]} {list(shapes[extra[0]])} has no place in {arch.summary(cfg)} "
                            f"({len(extra)} such tensor(s)); this layout is not supported")


# --- schedule and objective from GaussianDiffusion's buffers ----------------------------------

def schedule_from_betas(betas: np.ndarray) -> dict:
    """DiffusionConfig fields for betas stored in float32: a named schedule if one matches to float32
    rounding, else the betas themselves."""
    T = len(betas)
    for name in ("linear", "cosine", "sigmoid"):
        if np.allclose(make_schedule(name, T).betas, betas, rtol=2e-6, atol=0):
            return {"schedule": name, "num_train_timesteps": T}
    return {"schedule": TRAINED, "trained_betas": tuple(np.asarray(betas, np.float64).tolist()), "num_train_timesteps": T}


def objective_from_loss_weight(loss_weight: np.ndarray, alphas_cumprod: np.ndarray) -> Optional[str]:
    """GaussianDiffusion's loss_weight is clipped_snr / snr (pred_noise), clipped_snr (pred_x0) or
    clipped_snr / (snr + 1) (pred_v), clipped_snr = min(snr, gamma) with min-SNR weighting: the
    objective whose implied clipped_snr has that form, or None."""
    abar = np.asarray(alphas_cumprod, np.float64)
    snr = abar / (1 - abar)
    weight = np.asarray(loss_weight, np.float64)
    for objective, clipped in (("eps", weight * snr), ("x0", weight), ("v", weight * (snr + 1))):
        if np.allclose(clipped, np.minimum(snr, clipped.max()), rtol=1e-4, atol=1e-7):
            return objective
    return None


def _numpy(tensors: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v.detach().cpu().float().numpy() for k, v in tensors.items() if k.startswith(prefix)}


def read_milestone(path: str | os.PathLike, *, image_size: int, weights: str = "ema",
                   prediction_type: Optional[str] = None) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """ModelConfig and canonical weights of a denoising-diffusion-pytorch milestone (or of a saved
    GaussianDiffusion state_dict). weights: "ema" (the default, what their Trainer samples from)
    or "model" (the raw weights)."""
    try:
        import torch
    except ImportError as e:
        raise ConfigError("reading a lucidrains .pt milestone needs torch (pip install torch)") from e
    if weights not in ("ema", "model"):
        raise ConfigError(f"weights must be 'ema' or 'model', got {weights!r}")
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:   # weights_only refuses pickled code; a truncated file fails too
        raise ConfigError(f"{path} cannot be read as a milestone with torch.load(weights_only=True) "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if isinstance(data, dict) and ("model" in data or "ema" in data) and not any(
            isinstance(k, str) and k.startswith("model.") for k in data):
        if weights == "ema":
            if not data.get("ema"):
                raise ConfigError(f"{path} has no EMA weights ('ema'); convert the raw ones with weights='model'")
            state = _numpy(data["ema"], "ema_model.")
        else:
            state = _numpy(data["model"], "")
        origin = {"step": data.get("step"), "version": data.get("version")}
    elif isinstance(data, dict):
        state, origin = _numpy(data, ""), {}
    else:
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a milestone dict")
    unet = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not unet:
        raise ConfigError(f"{path} has no Unet weights (model.*); is it a denoising-diffusion-pytorch milestone?")
    network = detect_config({k: tuple(v.shape) for k, v in unet.items()}, image_size)
    if "betas" not in state:
        raise ConfigError(f"{path} has no betas buffer, so its schedule is unknown")
    schedule = schedule_from_betas(state["betas"])
    detected = objective_from_loss_weight(state["loss_weight"], state["alphas_cumprod"]) if "loss_weight" in state else None
    objective = prediction_type or detected
    if objective is None:
        raise ConfigError(f"the objective of {path} cannot be told from its loss_weight; give the "
                          "prediction type (eps for pred_noise, x0 for pred_x0, v for pred_v)")
    diffusion = DiffusionConfig(prediction_type=objective, **schedule)
    notes = {"imported_from": {"format": "denoising-diffusion-pytorch milestone", "source": str(path),
                               "weights": weights, "objective": f"{objective} ("
                               + ("given" if prediction_type else "read off loss_weight") + ")",
                               "schedule": f"{schedule['schedule']} (read off betas)", **origin}}
    return ModelConfig(network=network, diffusion=diffusion, notes=notes), unet
