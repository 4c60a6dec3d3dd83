"""What an architecture entry provides; the registry (architectures/__init__.py) holds them by name.

An entry is everything the framework-neutral code needs to know about a network without building
one: its typed config, the canonical parameter names and shapes (what a checkpoint must hold), the
declared model inputs, FLOPs per forward, and which backends implement it, named as
"module:callable" strings that a backend imports only when it builds the network.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ..parsing import as_json, parse_dataclass
from .inputs import ModelInput


class Architecture:
    """Base class of registry entries; subclasses fill in the class attributes and methods."""

    name: str = ""                       # the value of "architecture" in config.json
    title: str = ""                      # for people: "Unet (Ho et al. 2020)"
    config_class: type = object          # a frozen dataclass; its defaults make a valid config
    # backend framework -> "module:callable" that builds the network from a config; the network's
    # parameter names (after the framework's name map) are parameter_shapes()'s names.
    networks: Mapping[str, str] = {}

    # --- config ----------------------------------------------------------------------------
    def parse_config(self, data: dict[str, Any], where: str = "network"):
        return parse_dataclass(self.config_class, data, where)

    def config_to_dict(self, cfg) -> dict[str, Any]:
        return as_json(cfg)

    # --- what a checkpoint and a backend need ----------------------------------------------
    def parameter_shapes(self, cfg) -> dict[str, tuple[int, ...]]:
        """Canonical name -> shape of every float32 parameter, in a stable order."""
        raise NotImplementedError

    def inputs(self, cfg) -> tuple[ModelInput, ...]:
        """Every input of the network in the order it takes them: x, t, then optional ones."""
        raise NotImplementedError

    def sample_shape(self, cfg) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        raise NotImplementedError

    def forward_flops(self, cfg, batch: int) -> int:
        """FLOPs (2 per multiply-add) of one forward pass on `batch` images."""
        raise NotImplementedError

    def activation_bytes(self, cfg, batch: int) -> Optional[int]:
        """An estimate of the peak float32 activation memory of one forward on `batch` images
        (what a server checks against its memory budget before running a model); None: unknown."""
        return None

    def card_rows(self, cfg) -> list[tuple[str, str]]:
        """(setting, value) rows that describe the network in a model card."""
        return [("Architecture", self.title or self.name)]

    def summary(self, cfg) -> str:
        """One line for error messages and banners."""
        return self.title or self.name

    def parameter_count(self, cfg) -> int:
        total = 0
        for shape in self.parameter_shapes(cfg).values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def __repr__(self) -> str:
        return f"<architecture {self.name!r}>"
