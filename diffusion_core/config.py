"""Typed, frozen configuration of a model and of its diffusion process, and its config.json form.

config.json, format version 2:

    {"format_version": 2,
     "architecture": "unet",             a name in the architecture registry
     "network": {...},                   that architecture's typed config
     "diffusion": {...},                 DiffusionConfig: the forward process and the objective
     "notes": {...},                     provenance: dataset, steps, command, licence, ...
     "fitted_timesteps": {...}}          optional: {sampler: {steps: [t, ...]}} fitted on this model
                                         (diffusion_core/samplers/fit.py; spacing "optimized")

Version 1 (the first release) had "unet" where version 2 has "architecture" + "network"; it is
read as architecture "unet" with the same weights, so every v1 checkpoint loads unchanged.
Saving always writes version 2.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .architectures import Architecture, ModelInput, UnetConfig, architecture_of, get_architecture
from .parsing import ConfigError, as_json, check_keys, parse_dataclass, require
from .prediction import PREDICTION_TYPES
from .samplers.base import VARIANCE_TYPES
from .schedules import SCHEDULES, SCHEDULES_WITH_BETA_RANGE

TRAINED = "trained"   # DiffusionConfig.schedule when the betas are listed in trained_betas

FORMAT_VERSION = 2        # what save_checkpoint writes; bump when config.json or names change
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process a model was trained with, and what its output means."""

    num_train_timesteps: int = 1000  # T
    schedule: str = "linear"         # linear | scaled_linear | cosine | sigmoid
    beta_start: float = 1e-4         # linear / scaled_linear, at T = 1000 (rescaled for other T)
    beta_end: float = 0.02
    zero_terminal_snr: bool = False  # Lin et al. 2023: rescale so that alphas_cumprod[T-1] = 0
    prediction_type: str = "eps"     # eps | x0 | v
    # schedule "trained": the betas as a list of T numbers (diffusers' trained_betas, or a foreign
    # schedule this toolkit has no name for), rescaled like any schedule if zero_terminal_snr
    trained_betas: Optional[tuple[float, ...]] = None
    # What the samplers assume unless a call says otherwise (foreign schedulers record them):
    clip_x0: bool = True             # the images live in [-1, 1], so x0 estimates may be clipped
    variance: str = "fixed_small"    # DDPM's posterior variance: fixed_small | fixed_large

    def __post_init__(self) -> None:
        if self.trained_betas is not None:
            betas = self.trained_betas
            require(isinstance(betas, (list, tuple)) and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas),
                "trained_betas must be a list of numbers, one beta per training timestep")
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in betas))
            require(self.schedule == TRAINED, f"trained_betas are given, so schedule must be "
                                              f"{TRAINED!r}, got {self.schedule!r}")
            require(len(self.trained_betas) == self.num_train_timesteps,
                    f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is "
                    f"{self.num_train_timesteps}; give one beta per training timestep")
        require(self.schedule in SCHEDULES or (self.schedule == TRAINED and self.trained_betas is not None),
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}, or "
                f"{TRAINED!r} with trained_betas")
        require(self.variance in VARIANCE_TYPES,
                f"unknown variance {self.variance!r}; choose one of {', '.join(VARIANCE_TYPES)}")
        require(self.prediction_type in PREDICTION_TYPES,
                f"unknown prediction_type {self.prediction_type!r}; choose one of "
                f"{', '.join(PREDICTION_TYPES)}")
        require(2 <= self.num_train_timesteps <= 100_000,
                f"num_train_timesteps must be between 2 and 100000, got {self.num_train_timesteps}")
        require(0 < self.beta_start < self.beta_end < 1,
                f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        default = DiffusionConfig.__dataclass_fields__
        if self.schedule not in SCHEDULES_WITH_BETA_RANGE and (
                self.beta_start != default["beta_start"].default or self.beta_end != default["beta_end"].default):
            raise ConfigError(f"the {self.schedule} schedule has no beta range, but beta_start/beta_end "
                              f"are {self.beta_start}/{self.beta_end}; leave them at their defaults or "
                              f"use one of {', '.join(SCHEDULES_WITH_BETA_RANGE)}")

    def make_schedule(self):
        from .schedules import NoiseSchedule, make_schedule, rescale_zero_terminal_snr
        if self.schedule == TRAINED:
            betas = np.asarray(self.trained_betas, dtype=np.float64)
            if self.zero_terminal_snr:
                return NoiseSchedule(betas=rescale_zero_terminal_snr(betas), name="trained+zero_terminal_snr")
            return NoiseSchedule(betas=betas, name="trained")
        betas = ({"beta_start": self.beta_start, "beta_end": self.beta_end}
                 if self.schedule in SCHEDULES_WITH_BETA_RANGE else {})
        return make_schedule(self.schedule, self.num_train_timesteps,
                             zero_terminal_snr=self.zero_terminal_snr, **betas)


    def sampler_defaults(self, reads: frozenset[str]) -> dict[str, Any]:
        """The options this model recommends, among those a sampler `reads`, where they differ
        from the samplers' own defaults (so a sampler that does not read one never sees it)."""
        wanted = {"clip_x0": self.clip_x0, "variance": self.variance}
        base = DiffusionConfig()
        return {name: value for name, value in wanted.items()
                if name in reads and value != getattr(base, name)}


@dataclass(frozen=True)
class ModelConfig:
    """Everything config.json holds: the network (of a registered architecture), the diffusion
    process, provenance notes."""

    network: Any = field(default_factory=UnetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    notes: dict = field(default_factory=dict, hash=False, compare=False)  # dataset, steps, ...
    # {sampler: {steps: (t, ...)}}: sampling settings fitted on the weights, not part of the network
    fitted_timesteps: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        architecture_of(self.network)  # a config of a registered architecture, or ConfigError
        from .timesteps import check_fitted_table
        try:
            table = check_fitted_table(self.fitted_timesteps, self.diffusion.num_train_timesteps)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        object.__setattr__(self, "fitted_timesteps", table)
        if not isinstance(self.notes, dict):
            raise ConfigError(f"notes must be a JSON object of provenance notes, got "
                              f"{type(self.notes).__name__}")

    # --- what the rest of the toolkit asks of a model ---------------------------------------
    @property
    def architecture(self) -> Architecture:
        return architecture_of(self.network)

    @property
    def inputs(self) -> tuple[ModelInput, ...]:
        """The network's declared inputs, x and t first."""
        return self.architecture.inputs(self.network)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return self.architecture.sample_shape(self.network)

    def network_json(self) -> str:
        """The network config as canonical JSON text (ONNX provenance stamps compare it)."""
        return json.dumps(self.architecture.config_to_dict(self.network), sort_keys=True)

    # --- config.json -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        arch = self.architecture
        data = {"format_version": FORMAT_VERSION, "architecture": arch.name,
                "network": arch.config_to_dict(self.network), "diffusion": as_json(self.diffusion),
                "notes": dict(self.notes)}
        if self.fitted_timesteps:
            data["fitted_timesteps"] = {name: {str(n): list(ts) for n, ts in sorted(per.items())}
                                        for name, per in self.fitted_timesteps.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config.json must hold a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ConfigError(_version_message(version))
        if version == 1:
            check_keys(data, {"format_version", "unet", "diffusion", "notes"}, "config.json")
            arch, network = get_architecture("unet"), data.get("unet", {})
        else:
            check_keys(data, {"format_version", "architecture", "network", "diffusion", "notes",
                              "fitted_timesteps"}, "config.json")
            if "architecture" not in data:
                raise ConfigError("config.json (format 2) names no architecture; add "
                                  "\"architecture\": \"unet\" (or the name of its network)")
            arch, network = get_architecture(data["architecture"]), data.get("network", {})
        return cls(network=arch.parse_config(network, "network" if version == 2 else "unet"),
                   diffusion=parse_dataclass(DiffusionConfig, data.get("diffusion", {}), "diffusion"),
                   notes=data.get("notes", {}), fitted_timesteps=data.get("fitted_timesteps", {}))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        check_json_size(text, "config.json")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json is not valid JSON ({e})") from None
        return cls.from_dict(data)


MAX_JSON_BYTES = 1_000_000   # a config.json is a few kB; anything this large is not one
MAX_JSON_DEPTH = 32          # the deepest real config nests 3 levels


def check_json_size(text: str, where: str) -> None:
    """Refuse huge or deeply nested JSON before parsing it (json.loads recurses per level)."""
    if len(text) > MAX_JSON_BYTES:
        raise ConfigError(f"{where} is {len(text):,} characters, more than a config holds "
                          f"({MAX_JSON_BYTES:,} at most); it is not a checkpoint's config")
    depth, deepest, in_string, escaped = 0, 0, False, False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise ConfigError(f"{where} nests more than {MAX_JSON_DEPTH} levels deep; it is not a "
                                  "checkpoint's config")
        elif char in "]}":
            depth -= 1


def _version_message(version: Any) -> str:
    readable = " and ".join(map(str, READABLE_VERSIONS))
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return (f"config.json has format_version {version}, written by a newer diffusion toolkit; this "
                f"one reads versions {readable}: upgrade the toolkit to load it")
    return (f"config.json has format_version {version!r}; this toolkit reads versions {readable} "
            "(a checkpoint folder written by save_checkpoint has it)")
