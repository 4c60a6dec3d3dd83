"""Pictures for the page: sample grids big enough to see, x0 frames, and pixel differences.

Everything here is NumPy in, NumPy out, so the service and its tests need no Gradio.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from diffusion_core.data import viewable_grid

FRAMES_SHOWN = 8  # x0 estimates kept per request: enough to watch the image form, cheap to send


def display_grid(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> one uint8 (H', W'[, C]) grid, upscaled for the screen
    (diffusion_core.data.viewable_grid); grayscale comes back as (H', W') so that every image
    library treats it as grayscale."""
    grid = viewable_grid(images)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def to_8bit(images: np.ndarray) -> np.ndarray:
    """The 8-bit levels make_grid shows for images in [-1, 1] (int16, so differences fit)."""
    return np.round((np.nan_to_num(images).clip(-1, 1) + 1.0) * 127.5).astype(np.int16)


@dataclass(frozen=True)
class PixelDifference:
    max_abs: float    # largest |a - b| in the samplers' [-1, 1] units
    max_levels: int   # largest difference in the 8-bit levels a viewer sees (0..255)


def pixel_difference(images: np.ndarray, reference: np.ndarray) -> PixelDifference:
    """How far two batches drawn from the same noise end up apart."""
    if images.shape != reference.shape:
        raise ValueError(f"cannot compare images of shape {images.shape} with {reference.shape}")
    max_abs = float(np.max(np.abs(images.astype(np.float64) - reference.astype(np.float64))))
    max_levels = int(np.max(np.abs(to_8bit(images) - to_8bit(reference))))
    return PixelDifference(max_abs=max_abs, max_levels=max_levels)


def frame_steps(total: int, count: int = FRAMES_SHOWN) -> set[int]:
    """Which step indices to keep x0 of: evenly spread, always the first and the last."""
    if total <= 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, total - 1, min(count, total))}


@dataclass
class X0Recorder:
    """A per-step callback that keeps x0 at a few steps and reports progress.

    One is made per request (samplers keep no state, and neither does the service), so nothing
    recorded here is ever seen by another visitor.
    """

    to_numpy: Callable[[Any], np.ndarray]                 # the backend's ops.to_numpy
    progress: Callable[[int, int], None] | None = None    # (steps done, total)
    record: bool = True
    frames: list[tuple[int, int, float, np.ndarray]] = field(default_factory=list)  # index, total, t, x0
    started: float = field(default_factory=time.perf_counter)   # made just before sampling starts
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        """From this recorder's creation to the last step reported (the sampling time)."""
        return max(0.0, self.finished - self.started)

    def __call__(self, info) -> None:
        self.finished = time.perf_counter()
        if self.record and info.index in frame_steps(info.total):
            self.frames.append((info.index, info.total, info.t, self.to_numpy(info.x0)))
        if self.progress is not None:
            self.progress(info.index + 1, info.total)

    def captioned_frames(self) -> list[tuple[np.ndarray, str]]:
        """(grid of x0 over the batch, 'step i/N, t = ...') for each kept step."""
        return [(display_grid(x0), f"step {index + 1}/{total}, t = {t:.0f}")
                for index, total, t, x0 in self.frames]
