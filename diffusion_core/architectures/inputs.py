"""Declared model inputs: what a network takes besides the noisy sample and the timestep.

An architecture declares its inputs once, as a tuple of `ModelInput`, and every consumer reads
that declaration: the PyTorch and MindSpore adapters (which fill in defaults), the denoiser
wrappers (which find an input by its role), both ONNX exporters (graph input names, dtypes and
the dynamic batch axis), the ONNX Runtime session check, and the trainers. A network takes the
declared inputs positionally, in declaration order: `network(x, t, *optional_inputs)`.

Shapes are concrete except for the batch axis, which is the symbol "batch" everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

BATCH = "batch"

# Roles: what an input means to the core. A wrapper or trainer looks an input up by its role and
# uses the declared name, so no input name is written twice.
SAMPLE = "sample"                   # x_t, the noisy image
TIMESTEP = "timestep"               # t, float, one per image
SELF_CONDITION = "self_condition"   # the model's previous x0 estimate (Chen et al. 2022)
CLASS_LABEL = "class_label"         # an integer class per image

DTYPES = ("float32", "int64")


@dataclass(frozen=True)
class ModelInput:
    """One input of a network: its name (the keyword and the ONNX input name), dtype and shape."""

    name: str
    dtype: str                          # float32 | int64
    shape: tuple[int | str, ...]        # BATCH first, then fixed sizes
    role: str
    fill: Optional[float] = None        # value used when a caller has none (None: required)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"input {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not self.shape or self.shape[0] != BATCH:
            raise ValueError(f"input {self.name!r}: the first axis must be {BATCH!r}, got {self.shape}")

    @property
    def optional(self) -> bool:
        return self.fill is not None

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return (int(batch),) + tuple(int(d) for d in self.shape[1:])

    def default(self, batch: int) -> np.ndarray:
        """The value a caller that has none passes (zeros for an x0 estimate, the null class)."""
        if self.fill is None:
            raise ValueError(f"model input {self.name!r} is required")
        return np.full(self.concrete_shape(batch), self.fill, dtype=self.dtype)


def sample_input(channels: int, height: int, width: int) -> ModelInput:
    return ModelInput("x", "float32", (BATCH, channels, height, width), SAMPLE)


def timestep_input() -> ModelInput:
    return ModelInput("t", "float32", (BATCH,), TIMESTEP)


def self_condition_input(*image_shape: int) -> ModelInput:
    """The previous x0 estimate, shaped like x, zeros before there is one (Chen et al. 2022)."""
    return ModelInput("x_self_cond", "float32", (BATCH, *image_shape), SELF_CONDITION, fill=0.0)


def class_label_input(num_classes: int) -> ModelInput:
    """An int64 label per image; the extra row `num_classes` is the null (unconditional) class."""
    return ModelInput("class_labels", "int64", (BATCH,), CLASS_LABEL, fill=float(num_classes))


def optional_inputs(declared: Sequence[ModelInput]) -> tuple[ModelInput, ...]:
    """The declared inputs beyond x and t, in declaration order."""
    return tuple(i for i in declared if i.role not in (SAMPLE, TIMESTEP))


def find_role(declared: Sequence[ModelInput], role: str) -> Optional[ModelInput]:
    return next((i for i in declared if i.role == role), None)


def complete_inputs(declared: Sequence[ModelInput], given: Mapping[str, Any], batch: int,
                    ops) -> list[Any]:
    """The optional inputs a network takes, in declaration order, as backend tensors.

    given: {name: backend tensor} of the inputs the caller has; missing optional inputs get
    their declared default (converted with ops.asarray). Unknown names are an error that lists
    the declared ones.
    """
    extra = optional_inputs(declared)
    known = {i.name for i in extra}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"this model takes no input(s) {unknown}; it declares "
                         f"{sorted(known) or 'none besides x and t'}")
    values = []
    for spec in extra:
        value = given.get(spec.name)
        if value is None:
            value = ops.asarray(spec.default(batch))
        elif tuple(value.shape) != spec.concrete_shape(batch):
            raise ValueError(f"input {spec.name!r} must have shape {spec.concrete_shape(batch)}, "
                             f"got {tuple(value.shape)}")
        values.append(value)
    return values
