"""Test helper: diffusers UNet2DModels at the configurations of published DDPM models, random
weights, saved in each diffusers layout by diffusers itself (save_pretrained)."""
from __future__ import annotations

from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers", reason="diffusers builds the foreign checkpoints")
torch = pytest.importorskip("torch", reason="diffusers needs torch")

# google/ddpm-cifar10-32's config.json (the DDPM paper's CIFAR-10 model, 35.7M parameters)
CIFAR10 = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 256],
               down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
               up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], layers_per_block=2,
               attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
               norm_eps=1e-6, norm_num_groups=32, act_fn="silu", center_input_sample=False,
               mid_block_scale_factor=1, time_embedding_type="positional")
# the same layout at 64x64, narrow (the celebahq/church models' block pattern, shrunk)
SMALL64 = dict(CIFAR10, sample_size=64, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
               norm_num_groups=8)
# class-conditional (num_class_embeds), with diffusers' newer defaults and FiLM-style resnets
CLASS_CONDITIONAL = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[32, 64],
                         down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                         up_block_types=["AttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                         attention_head_dim=16, norm_num_groups=8, num_class_embeds=10,
                         resnet_time_scale_shift="scale_shift", mid_block_scale_factor=1.414)
CONFIGS = {"cifar10": CIFAR10, "small64": SMALL64, "class": CLASS_CONDITIONAL}
SCHEDULERS = {"cifar10": dict(), "small64": dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
              "class": dict(beta_schedule="linear", num_train_timesteps=500)}


def build(name: str, seed: int = 0):
    """(UNet2DModel in eval mode, DDPMScheduler) for CONFIGS[name], random weights."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**CONFIGS[name]).eval()
    with torch.no_grad():   # diffusers zero-initialises nothing here, but make every tensor matter
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return unet, diffusers.DDPMScheduler(**SCHEDULERS[name])


def save(unet, scheduler, folder: Path, layout: str) -> Path:
    """bare: config.json + weights + scheduler_config.json; subfolders: unet/ + scheduler/;
    pipeline: DDPMPipeline.save_pretrained (adds model_index.json)."""
    if layout == "bare":
        unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    elif layout == "subfolders":
        unet.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    else:
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder
