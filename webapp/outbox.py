"""PNG files for the page's images, written by us instead of by Gradio.

Why: Gradio caches a NumPy image under the hash of its bytes and writes it there in place
(gradio 6, processing_utils.save_pil_to_cache). The same seed gives the same bytes, so two
visitors who ask for the same thing at once write one cache file together, and one of them can be
sent a file that the other has just truncated (seen as "Too little data for declared
Content-Length" with eight concurrent requests). A file path instead goes through Gradio's
save_file_to_cache, which copies under a temporary name and renames into place. Each image here
gets a name of its own, so no two requests ever share a file before that copy.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from diffusion_core.data import save_png

KEEP_SECONDS = 600   # Gradio copies a returned file at once; ours are kept a while for safety
KEEP_FILES = 512     # and never more than this many, however busy the server is


class PngOutbox:
    """A private folder of uniquely named PNGs; files older than keep_seconds are removed."""

    def __init__(self, folder: str | os.PathLike | None = None, keep_seconds: float = KEEP_SECONDS,
                 keep_files: int = KEEP_FILES):
        # Under the system temp folder by default: Gradio serves returned files from there.
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="diffusion-toolkit-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep_seconds, self.keep_files = keep_seconds, keep_files

    def save(self, image: np.ndarray) -> str:
        """(H, W) or (H, W, C) uint8 -> the path of a new PNG holding it."""
        path = str(save_png(self.folder / f"{uuid.uuid4().hex}.png", image))   # written atomically
        self.prune()
        return path

    def prune(self) -> None:
        """Remove files older than keep_seconds, and the oldest beyond keep_files; a file Gradio
        has not copied yet is seconds old, so it is never among them."""
        cutoff = time.time() - self.keep_seconds
        entries = []
        for entry in self.folder.glob("*.png"):
            try:
                entries.append((entry.stat().st_mtime, entry))
            except FileNotFoundError:   # a concurrent prune got there first
                pass
        entries.sort(reverse=True)
        for position, (mtime, entry) in enumerate(entries):
            if mtime < cutoff or position >= self.keep_files:
                entry.unlink(missing_ok=True)
