"""Checkpoints of lvyufeng's denoising-diffusion-mindspore (package `ddm`) as lucidrains_unet_v0.

Its Trainer.save writes `mindspore.save_checkpoint(diffusion, "model-N.ckpt", append_dict=
optimizer state + step)` right after copying the EMA weights into the model (ema.synchronize()),
so the model entries are the EMA weights. With the EMA wrapper built, they are named
`online_model.model.<unet name>`; a GaussianDiffusion saved by hand has `model.<unet name>`.
The rest (moment1.*, moment2.*, beta1_power, ..., step) is optimizer state and is skipped. A Unet
saved on its own cannot be read: MindSpore names its parameters by Parameter.name, which the
port leaves ambiguous ("0.0.mlp.1.weight" for every level).

Two things change on the way in:
- GroupNorm gamma/beta become weight/bias (the one MindSpore -> canonical rule, ms_checkpoint.py);
- the ResnetBlocks' WeightStandardizedConv2d weights are standardised once, as the port does on
  every forward (ddm/modules.py): w' = (w - mean(w)) / sqrt(var(w) + 1e-5), mean and (biased)
  variance over each output channel's (in, kh, kw). The result is a plain conv with the same output.
GaussianDiffusion's schedule and objective are not in the file (they are plain Tensors, not
Parameters); the port's defaults are the cosine schedule, T = 1000 and pred_noise.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

from ..architectures import LucidrainsUnetV0Config
from ..config import DiffusionConfig, ModelConfig
from ..parsing import ConfigError
from .lucidrains import detect_config
from .ms_checkpoint import canonical_name, read_ckpt

PREFIXES = ("online_model.model.", "model.")
WS_EPS = 1e-5   # ddm/modules.py WeightStandardizedConv2d.construct
STANDARDISED = re.compile(r"\.block[12]\.proj\.weight$")


def standardise(weight: np.ndarray, eps: float = WS_EPS) -> np.ndarray:
    """Weight standardisation (Qiao et al. 2019) per output channel, as the port computes it."""
    w = weight.astype(np.float64)
    mean = w.mean(axis=(1, 2, 3), keepdims=True)
    var = w.var(axis=(1, 2, 3), keepdims=True)
    return ((w - mean) / np.sqrt(var + eps)).astype(np.float32)


def unet_weights(entries: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The Unet's canonical weights from a port checkpoint's entries (WS convs baked)."""
    prefix = next((p for p in PREFIXES if any(k.startswith(p) for k in entries)), None)
    if prefix is None:
        if any(re.match(r"\d", k) for k in entries):
            raise ConfigError(f"{where} holds a Unet saved on its own, whose parameter names the port leaves "
                              "ambiguous (e.g. 0.0.mlp.1.weight at every level); save the GaussianDiffusion, "
                              "or use a Trainer milestone (model-N.ckpt)")
        raise ConfigError(f"{where} has no online_model.model.* or model.* entries; it is not a "
                          "denoising-diffusion-mindspore checkpoint")
    out = {}
    for name, array in entries.items():
        if not name.startswith(prefix):
            continue
        canonical = canonical_name(name[len(prefix):])
        array = np.asarray(array, dtype=np.float32)
        out[canonical] = standardise(array) if STANDARDISED.search(canonical) else array
    return out


def read_port_checkpoint(path: str | os.PathLike, *, image_size: int, schedule: str = "cosine",
                         num_train_timesteps: int = 1000, prediction_type: str = "eps",
                         attn_heads: Optional[int] = None, resnet_block_groups: int = 8
                         ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """ModelConfig and canonical weights of a denoising-diffusion-mindspore .ckpt. The settings the
    file does not record default to the port's own defaults; give them if training changed them."""
    weights = unet_weights(read_ckpt(path), str(path))
    network = detect_config({k: v.shape for k, v in weights.items()}, image_size, attn_heads=attn_heads,
                            resnet_block_groups=resnet_block_groups)
    if not isinstance(network, LucidrainsUnetV0Config):
        raise ConfigError(f"{path} has the 2.x lucidrains layout, not the MindSpore port's; convert it as a "
                          "lucidrains checkpoint")
    diffusion = DiffusionConfig(schedule=schedule, num_train_timesteps=num_train_timesteps,
                                prediction_type=prediction_type)
    notes = {"imported_from": {"format": "denoising-diffusion-mindspore checkpoint", "source": str(path),
                               "weights": "the EMA weights the port's Trainer saves",
                               "not in the file": "schedule, T, objective, GroupNorm groups, attention heads: "
                                                  f"{schedule}, {num_train_timesteps}, {prediction_type}, "
                                                  f"{network.resnet_block_groups}, {network.attn_heads}"}}
    return ModelConfig(network=network, diffusion=diffusion, notes=notes), weights
