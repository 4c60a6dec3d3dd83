"""The architecture registry: a name in config.json -> the entry that describes that network.

Built-in entries are registered below; other packages add theirs through the entry-point group
`diffusion_toolkit.architectures` (each entry point names an `Architecture` instance or class),
looked up only when a name is not built in. `register()` adds one at run time (tests do).
Nothing here imports a framework: an entry names its networks as "module:callable" strings.
"""
from __future__ import annotations

import importlib.metadata

from ..parsing import ConfigError
from .base import Architecture
from .diffusers_unet2d import DiffusersUnet2DArchitecture, DiffusersUnet2DConfig
from .lucidrains_unet import (LucidrainsUnetArchitecture, LucidrainsUnetConfig, LucidrainsUnetV0Architecture,
                              LucidrainsUnetV0Config)
from .inputs import (BATCH, CLASS_LABEL, SAMPLE, SELF_CONDITION, TIMESTEP, ModelInput, complete_inputs,
                     find_role, optional_inputs)
from .unet import UnetArchitecture, UnetConfig

ENTRY_POINT_GROUP = "diffusion_toolkit.architectures"

ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an entry (its name must be new, its config class unused by another entry)."""
    if not architecture.name:
        raise ValueError("an architecture needs a name")
    existing = ARCHITECTURES.get(architecture.name)
    if existing is not None and existing is not architecture:
        raise ValueError(f"architecture {architecture.name!r} is already registered")
    for other in ARCHITECTURES.values():
        if other is not architecture and other.config_class is architecture.config_class:
            raise ValueError(f"{architecture.name!r} and {other.name!r} share the config class "
                             f"{architecture.config_class.__name__}; give each its own")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def _from_entry_points(name: str) -> Architecture | None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            found = ep.load()
            return register(found() if isinstance(found, type) else found)
    return None


def get_architecture(name: str) -> Architecture:
    """The entry called `name`; ConfigError lists the known names."""
    if not isinstance(name, str):
        raise ConfigError(f"architecture must be a name like 'unet', got {name!r}")
    found = ARCHITECTURES.get(name) or _from_entry_points(name)
    if found is None:
        raise ConfigError(f"unknown architecture {name!r}; this toolkit knows "
                          f"{', '.join(sorted(ARCHITECTURES))} (others come with the packages that "
                          f"register them under the entry point group {ENTRY_POINT_GROUP})")
    return found


def architecture_of(network_config) -> Architecture:
    """The entry whose config class `network_config` is an instance of."""
    for arch in ARCHITECTURES.values():
        if type(network_config) is arch.config_class:
            return arch
    raise ConfigError(f"no registered architecture has the config class "
                      f"{type(network_config).__name__}; register its entry first")


def declared_inputs(network) -> tuple[ModelInput, ...]:
    """The inputs a built network takes, from the architecture of its `config` attribute."""
    config = getattr(network, "config", None)
    if config is None:
        raise ValueError(f"{type(network).__name__} has no `config` of a registered architecture; "
                         "pass its declared inputs explicitly")
    return architecture_of(config).inputs(config)


register(UnetArchitecture())
register(DiffusersUnet2DArchitecture())
register(LucidrainsUnetArchitecture())
register(LucidrainsUnetV0Architecture())

__all__ = ["ARCHITECTURES", "Architecture", "BATCH", "CLASS_LABEL", "DiffusersUnet2DConfig", "ENTRY_POINT_GROUP",
           "LucidrainsUnetConfig", "LucidrainsUnetV0Config", "ModelInput",
           "SAMPLE", "SELF_CONDITION", "TIMESTEP", "UnetArchitecture", "UnetConfig", "architecture_of",
           "complete_inputs", "declared_inputs", "find_role", "get_architecture", "optional_inputs", "register"]
