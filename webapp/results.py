"""What the service hands back: plain data the page shows and the tests check."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class GenerateResult:
    grid: np.ndarray                          # uint8 image grid, upscaled for the screen
    frames: list[tuple[np.ndarray, str]]      # (x0 grid at a step, caption)
    images: np.ndarray                        # float32 (N, C, H, W) in about [-1, 1]
    seconds: float
    summary: str


@dataclass(frozen=True)
class BackendRun:
    """One backend's part of a comparison; `reason` is set (and the rest empty) if it cannot run."""

    name: str
    title: str
    reason: str = ""
    images: Optional[np.ndarray] = None
    grid: Optional[np.ndarray] = None
    load_seconds: float = 0.0                 # 0 when the model was already loaded
    seconds: float = 0.0                      # sampling only
    max_abs_diff: Optional[float] = None      # vs the reference, in [-1, 1] units
    max_diff_levels: Optional[int] = None     # vs the reference, in 8-bit levels


@dataclass(frozen=True)
class CompareResult:
    runs: list[BackendRun]
    reference: str
    steps: int
    batch_size: int

    HEADERS = ("backend", "total s", "ms / step", "images / s", "max |diff| [-1,1]",
               "max diff (8-bit levels)", "load s", "note")

    def table(self) -> list[list]:
        """One row per backend, numbers rounded for reading; a backend that cannot run says why."""
        rows = []
        for run in self.runs:
            if run.reason:
                rows.append([run.title, None, None, None, None, None, None, run.reason])
                continue
            note = "reference" if run.name == self.reference else ""
            rows.append([run.title, round(run.seconds, 3), round(1000 * run.seconds / self.steps, 2),
                         round(self.batch_size / run.seconds, 2) if run.seconds > 0 else None,
                         float(f"{run.max_abs_diff:.3g}"), run.max_diff_levels,
                         round(run.load_seconds, 2), note])
        return rows
