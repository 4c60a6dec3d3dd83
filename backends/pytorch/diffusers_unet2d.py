"""diffusers' own UNet2DModel behind the toolkit's network contract: network(x, t, *declared inputs).

A well-kept library beats a re-implementation, so PyTorch runs diffusers' module itself; diffusers
is imported here, when a network of this architecture is built, and nowhere else in the backend.
The wrapper registers the UNet's children as its own, so its parameter names are diffusers'
state_dict names (the architecture's canonical names) and a repo's safetensors load unrenamed.
"""
from __future__ import annotations

import torch
from torch import nn

from diffusion_core.architectures import DiffusersUnet2DConfig


def _unet2d_class():
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise ImportError("the diffusers_unet2d architecture runs diffusers' UNet2DModel on PyTorch; "
                          "install it with `pip install diffusers` (see requirements.txt)") from e
    return UNet2DModel


def build_unet2d(cfg: DiffusersUnet2DConfig):
    """A randomly initialised diffusers.UNet2DModel with this config."""
    return _unet2d_class()(**{k: v for k, v in cfg.to_diffusers().items() if not k.startswith("_")})


class DiffusersUnet2D(nn.Module):
    """UNet2DModel with the toolkit's signature: forward(x, t, [class_labels]) -> output tensor."""

    def __init__(self, cfg: DiffusersUnet2DConfig):
        super().__init__()
        self.config = cfg
        unet = build_unet2d(cfg)
        unet.eval()
        # Not a submodule (that would prefix every name with "unet."): its children are ours.
        object.__setattr__(self, "unet", unet)
        for name, child in unet.named_children():
            self.add_module(name, child)

    def train(self, mode: bool = True):
        super().train(mode)
        self.unet.train(mode)  # the UNet object itself is not in our module tree
        return self

    def forward(self, x: torch.Tensor, time: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        labels = inputs[0] if inputs else None  # the only optional input this architecture declares
        return self.unet(x, time, class_labels=labels, return_dict=False)[0]
