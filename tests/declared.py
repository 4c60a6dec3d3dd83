"""Test helper: keyword arguments for a model's optional inputs, named by its architecture's
declaration (so no test spells an input name the declaration owns)."""
from __future__ import annotations

from diffusion_core.architectures import SELF_CONDITION, architecture_of, find_role


def self_cond(network_config, value) -> dict:
    """{declared self-conditioning name: value}, or {} when value is None or there is none."""
    spec = find_role(architecture_of(network_config).inputs(network_config), SELF_CONDITION)
    return {} if value is None or spec is None else {spec.name: value}
