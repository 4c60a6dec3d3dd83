"""Which model a visitor uses, and the models the server has loaded.

A `Session` is a visitor's own: the page keeps it in gr.State, so one visitor's pull changes that
visitor's model and nobody else's. The `ModelStore` is the server's: checkpoints validated once
(against the memory budget too) and loaded models shared by every session that uses the same
folder on the same backend; the samplers keep no state, so sharing a loaded model is safe. Both
caches are bounded, least recently used first out, so strangers pulling models cannot fill memory.
"""
from __future__ import annotations

import importlib.util

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backends import BackendStatus, BackendUnavailable, LoadedModel, backend_names, load_model
from diffusion_core.checkpoint import Checkpoint, CheckpointError
from diffusion_core.cpu import bf16_instructions
from diffusion_core.convert import open_checkpoint  # the toolkit's layout or a diffusers one

from .settings import ServerSettings, ServiceError

# bf16 on a CPU without bf16 arithmetic is emulated: a training step of the default model took 13 s
# against 1.7 s in fp32 on an AVX2-only EPYC, so a public server refuses it rather than queue it
BF16_EMULATED = ("this server's CPU has no bf16 instructions (AVX-512 bf16 or AMX), where bf16 is "
                 "emulated and several times slower than fp32; leave bf16 off")
MODELS_KEPT = 6        # loaded (folder, backend, precision) triples; each is a few MB for the default model
CHECKPOINTS_KEPT = 16


@dataclass(frozen=True)
class Session:
    """A visitor's model: the checkpoint folder and what the page calls it (a path or repo@rev)."""

    folder: Path
    source: str


class ModelStore:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._checkpoints: OrderedDict[str, Checkpoint] = OrderedDict()
        self._models: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
        self._statuses: dict[str, list[BackendStatus]] = {}
        self._load_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._torch_threads_set = False

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, folder: Path) -> Checkpoint:
        """The validated checkpoint in folder; ServiceError with the reason if it cannot serve."""
        key = str(folder)
        with self._lock:
            found = self._checkpoints.get(key)
            if found is not None:
                self._checkpoints.move_to_end(key)
                return found
        try:
            checkpoint = open_checkpoint(folder)
        except CheckpointError as error:
            raise ServiceError(str(error)) from None
        self.check_budget(checkpoint)
        with self._lock:
            self._checkpoints[key] = checkpoint
            while len(self._checkpoints) > CHECKPOINTS_KEPT:
                self._checkpoints.popitem(last=False)
        return checkpoint

    def check_budget(self, checkpoint: Checkpoint) -> None:
        """Refuse a model one image of which needs more memory than a request may take (a config
        may claim any image size next to small weights: a convolutional network loads at any)."""
        config = checkpoint.config
        need = config.architecture.activation_bytes(config.network, 1)
        budget = self.settings.memory_budget_mb * 2 ** 20
        if need is not None and need > budget:
            channels, height, width = config.sample_shape
            raise ServiceError(f"this model needs about {need / 2 ** 20:,.0f} MB for a single "
                               f"{height}x{width} image, more than this server's "
                               f"{self.settings.memory_budget_mb:,} MB per request; run it on your own machine")

    def max_batch(self, checkpoint: Checkpoint) -> int:
        """The batch a request may ask for: the server's limit, lowered by the memory budget."""
        config = checkpoint.config
        per_image = config.architecture.activation_bytes(config.network, 1)
        if not per_image:
            return self.settings.max_batch
        fits = int(self.settings.memory_budget_mb * 2 ** 20 // per_image)
        return max(1, min(self.settings.max_batch, fits))

    # --- backends and loaded models ----------------------------------------------------------
    def statuses(self, checkpoint: Optional[Checkpoint]) -> list[BackendStatus]:
        from backends import backend_status
        key = str(checkpoint.folder) if checkpoint else ""
        with self._lock:
            cached = self._statuses.get(key)
        if cached is None:
            cached = [backend_status(name, checkpoint) for name in backend_names()]
            with self._lock:
                self._statuses[key] = cached
                while len(self._statuses) > CHECKPOINTS_KEPT:
                    self._statuses.pop(next(iter(self._statuses)))
        return cached

    def model(self, backend: str, checkpoint: Checkpoint, precision: str = "fp32") -> tuple[LoadedModel, float]:
        """The loaded model for (checkpoint, backend, precision) and the seconds spent loading it now."""
        statuses = {s.name: s for s in self.statuses(checkpoint)}
        if backend not in statuses:
            raise ServiceError(f"unknown backend {backend!r}; choose one of {', '.join(statuses)}")
        if not statuses[backend].available:
            raise ServiceError(f"{statuses[backend].title} cannot run here: {statuses[backend].reason}")
        key = (str(checkpoint.folder), backend, precision)
        with self._lock:
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per key, while other keys load or sample in parallel
            with self._lock:
                model = self._models.get(key)
                if model is not None:
                    self._models.move_to_end(key)
                    return model, 0.0
            start = time.perf_counter()
            self._set_torch_threads()
            try:
                model = load_model(backend, checkpoint, precision=precision)
                if precision == "bf16" and model.device.startswith("cpu") and not bf16_instructions():
                    raise BackendUnavailable(BF16_EMULATED)
            except BackendUnavailable as error:
                raise ServiceError(f"{statuses[backend].title} cannot run here: {error}") from None
            with self._lock:
                self._models[key] = model
                while len(self._models) > MODELS_KEPT:  # requests running keep their own reference
                    self._models.popitem(last=False)
            return model, time.perf_counter() - start

    def _set_torch_threads(self) -> None:
        """torch's thread count, a process-wide setting, made before the first model loads rather
        than at start-up: importing torch there cost the first page ~3 s (bench/startup.py)."""
        with self._lock:
            if self._torch_threads_set or importlib.util.find_spec("torch") is None:
                return
            import torch
            torch.set_num_threads(self.settings.torch_threads)
            self._torch_threads_set = True

    def title(self, backend: str, checkpoint: Optional[Checkpoint]) -> str:
        return next((s.title for s in self.statuses(checkpoint) if s.name == backend), backend)
