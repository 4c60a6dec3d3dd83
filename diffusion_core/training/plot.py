"""The run's loss curve as a PNG (train_log.jsonl drawn with Pillow: no plotting library needed),
rewritten atomically whenever the trainer writes a grid or a checkpoint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..data import save_png

WIDTH, HEIGHT, MARGIN = 720, 360, 48


def read_losses(log: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line a kill cut short
            if isinstance(row.get("loss"), (int, float)) and math.isfinite(row["loss"]) and row["loss"] > 0:
                steps.append(int(row["step"]))
                losses.append(float(row["loss"]))
    return steps, losses


def plot_losses(log: Path, path: Path) -> Path | None:
    """Loss (log scale) against step; None when there is nothing to draw yet."""
    from PIL import Image, ImageDraw
    steps, losses = read_losses(log)
    if len(steps) < 2:
        return None
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    draw.rectangle([x0, y0, x1, y1], outline="black")
    lo, hi = math.log10(min(losses)), math.log10(max(losses))
    hi = hi if hi > lo else lo + 1e-3
    first, last = steps[0], max(steps[-1], steps[0] + 1)
    points = [(x0 + (s - first) / (last - first) * (x1 - x0),
               y1 - (math.log10(v) - lo) / (hi - lo) * (y1 - y0)) for s, v in zip(steps, losses)]
    draw.line(points, fill=(31, 119, 180), width=2)
    draw.text((x0, y1 + 8), f"step {first}", fill="black")
    draw.text((x1 - 90, y1 + 8), f"step {steps[-1]}", fill="black")
    draw.text((4, y0), f"{10 ** hi:.4g}", fill="black")
    draw.text((4, y1 - 12), f"{10 ** lo:.4g}", fill="black")
    draw.text((x0 + 8, y0 + 6), f"training loss (log scale), last {losses[-1]:.4f}", fill="black")
    return save_png(path, np.asarray(image))
