"""Typed, frozen configuration of a model and of its diffusion process, and its config.json form.

Parsing of JSON / CLI / UI values happens here, at the edge; everything inside the toolkit sees
validated dataclasses. Unknown keys and impossible values are refused with a message that names
the key, what was found and what is accepted.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1  # bump when config.json or the weight names change incompatibly

PREDICTION_TYPES = ("eps", "x0", "v")
SCHEDULE_NAMES = ("linear", "scaled_linear", "cosine", "sigmoid")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and what to use instead."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class UnetConfig:
    """Shape of the time-conditioned Unet (Ho et al. 2020, as in lucidrains' package)."""

    image_size: int = 28             # height = width, in pixels
    channels: int = 1                # 1 for grayscale, 3 for colour
    dim: int = 32                    # channel width of the first level
    dim_mults: tuple[int, ...] = (1, 2, 2)  # width multiplier per level; len-1 down-samplings
    full_attn: tuple[bool, ...] = (False, False, True)  # full attention at a level (else linear)
    linear_attn: bool = True         # linear attention at levels without full attention
    attn_heads: int = 4
    attn_dim_head: int = 16
    resnet_block_groups: int = 8     # GroupNorm groups; must divide every level's width
    dropout: float = 0.0
    self_condition: bool = False     # Chen et al. 2022: the model also sees its last x0 estimate

    def __post_init__(self) -> None:
        _require(self.channels in (1, 3, 4), f"channels must be 1, 3 or 4, got {self.channels}")
        _require(self.dim > 0 and self.attn_heads > 0 and self.attn_dim_head > 0,
                 "dim, attn_heads and attn_dim_head must be positive")
        _require(len(self.dim_mults) >= 1 and all(m > 0 for m in self.dim_mults),
                 f"dim_mults must be a non-empty list of positive integers, got {list(self.dim_mults)}")
        _require(len(self.full_attn) == len(self.dim_mults),
                 f"full_attn needs one entry per level ({len(self.dim_mults)} levels from dim_mults "
                 f"{list(self.dim_mults)}), got {len(self.full_attn)}")
        for m in (1,) + tuple(self.dim_mults):  # the init conv and final block run at width dim
            _require((self.dim * m) % self.resnet_block_groups == 0,
                     f"resnet_block_groups={self.resnet_block_groups} must divide every level's width "
                     f"(dim * dim_mult = {self.dim * m}); pick groups that divide {self.dim}")
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        factor = 2 ** (len(self.dim_mults) - 1)
        if self.image_size <= 0 or self.image_size % factor != 0:
            ok = [s for s in (8, 16, 28, 32, 64, 128, 256) if s % factor == 0]
            raise ConfigError(
                f"image_size {self.image_size} cannot be halved {len(self.dim_mults) - 1} times "
                f"(dim_mults has {len(self.dim_mults)} levels): use a multiple of {factor} "
                f"(e.g. {', '.join(map(str, ok))}) or fewer levels in dim_mults")

    @property
    def level_widths(self) -> tuple[int, ...]:
        return tuple(self.dim * m for m in self.dim_mults)


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process a model was trained with, and what its output means."""

    num_train_timesteps: int = 1000  # T
    schedule: str = "linear"         # linear | scaled_linear | cosine | sigmoid
    beta_start: float = 1e-4         # linear / scaled_linear, at T = 1000 (rescaled for other T)
    beta_end: float = 0.02
    zero_terminal_snr: bool = False  # Lin et al. 2023: rescale so that alphas_cumprod[T-1] = 0
    prediction_type: str = "eps"     # eps | x0 | v

    def __post_init__(self) -> None:
        _require(self.schedule in SCHEDULE_NAMES,
                 f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULE_NAMES)}")
        _require(self.prediction_type in PREDICTION_TYPES,
                 f"unknown prediction_type {self.prediction_type!r}; choose one of "
                 f"{', '.join(PREDICTION_TYPES)}")
        _require(2 <= self.num_train_timesteps <= 100_000,
                 f"num_train_timesteps must be between 2 and 100000, got {self.num_train_timesteps}")
        _require(0 < self.beta_start < self.beta_end < 1,
                 f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def make_schedule(self):
        from .schedules import make_schedule
        return make_schedule(self.schedule, self.num_train_timesteps, beta_start=self.beta_start,
                             beta_end=self.beta_end, zero_terminal_snr=self.zero_terminal_snr)


@dataclass(frozen=True)
class ModelConfig:
    """Everything config.json holds: the network, the diffusion process, provenance notes."""

    unet: UnetConfig = field(default_factory=UnetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    format_version: int = FORMAT_VERSION
    notes: dict = field(default_factory=dict, hash=False, compare=False)  # dataset, steps, ...

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "unet": _as_json(self.unet),
                "diffusion": _as_json(self.diffusion), "notes": dict(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config.json must hold a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"config.json has format_version {version!r}; this toolkit reads version "
                f"{FORMAT_VERSION}. Re-export the checkpoint with a matching toolkit version.")
        _check_keys(data, {"format_version", "unet", "diffusion", "notes"}, "config.json")
        return cls(unet=parse_dataclass(UnetConfig, data.get("unet", {}), "unet"),
                   diffusion=parse_dataclass(DiffusionConfig, data.get("diffusion", {}), "diffusion"),
                   notes=dict(data.get("notes", {})))

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json is not valid JSON ({e})") from None
        return cls.from_dict(data)


def _as_json(obj) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


def _check_keys(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")


def parse_dataclass(cls, data: dict[str, Any], where: str):
    """Build a frozen config dataclass from JSON values; lists become tuples, types are checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    defaults = cls()
    _check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
    kwargs = {name: _coerce(value, getattr(defaults, name), f"{where}.{name}")
              for name, value in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Return value in the type of default, or raise a ConfigError naming the key."""
    def fits(v, d):
        if isinstance(d, bool):
            return isinstance(v, bool)
        if isinstance(d, int):
            return isinstance(v, int) and not isinstance(v, bool)
        if isinstance(d, float):
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if isinstance(d, str):
            return isinstance(v, str)
        return True
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)) and all(fits(v, default[0]) for v in value):
            return tuple(type(default[0])(v) for v in value)
    elif fits(value, default):
        return float(value) if isinstance(default, float) else value
    raise ConfigError(f"{where} = {value!r} has the wrong type; expected a value like {default!r}")
