"""The one map between canonical parameter names (PyTorch's) and the MindSpore Unet's.

Module paths are the same in both frameworks (unet_spec.py names them); only the last part of a
parameter name can differ, and it depends on the kind of layer alone:

    layer kind   canonical   MindSpore
    norm         weight      gamma       GroupNorm's affine scale
    norm         bias        beta        GroupNorm's affine shift
    conv         weight      weight      (c_out, c_in, k, k) in both
    conv         bias        bias
    linear       weight      weight      nn.Dense stores (out, in) like nn.Linear: no transpose
    linear       bias        bias

Shapes are identical, so a weight moves between frameworks by name alone.
"""
from __future__ import annotations

from diffusion_core.config import UnetConfig
from diffusion_core.unet_spec import layers, parameter_shapes

# layer kind -> {canonical suffix: MindSpore suffix}
SUFFIXES: dict[str, dict[str, str]] = {
    "norm": {"weight": "gamma", "bias": "beta"},
    "conv": {"weight": "weight", "bias": "bias"},
    "linear": {"weight": "weight", "bias": "bias"},
}


def canonical_to_mindspore(cfg: UnetConfig) -> dict[str, str]:
    """Canonical name -> MindSpore parameter name, for every parameter, in canonical order."""
    kind_of = {layer.name: layer.kind for layer in layers(cfg)}
    mapping = {}
    for name in parameter_shapes(cfg):
        module, suffix = name.rsplit(".", 1)
        mapping[name] = f"{module}.{SUFFIXES[kind_of[module]][suffix]}"
    return mapping


def mindspore_to_canonical(cfg: UnetConfig) -> dict[str, str]:
    """MindSpore parameter name -> canonical name (the inverse of canonical_to_mindspore)."""
    return {ms_name: name for name, ms_name in canonical_to_mindspore(cfg).items()}
