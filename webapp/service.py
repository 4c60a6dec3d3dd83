"""What the app does, as a plain object: generate, compare backends, pull and push through the Hub.

`DiffusionService` knows nothing about Gradio. Each public method takes exactly the values the
page's inputs hold (plus an optional progress callback) and returns plain results, so it is
tested without a browser, and app.py only lays out the page and wires events to these methods.

Concurrency: one service serves every visitor. Loaded models are cached per (checkpoint folder,
backend), loaded lazily, once, and shared: the core's samplers keep no state between calls, so
one model serves concurrent requests, and a request's seed alone decides its images.
"""
from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from backends import BackendStatus, BackendUnavailable, LoadedModel, list_backends, load_model
from diffusion_core import SAMPLERS
from diffusion_core.architectures import optional_inputs
from diffusion_core.checkpoint import Checkpoint, CheckpointError
from diffusion_core.convert import open_checkpoint  # the toolkit's layout or a diffusers one
from diffusion_core.hub import DEFAULT_COMMIT_MESSAGE, HubError

from .images import X0Recorder, display_grid, pixel_difference
from .results import BackendRun, CompareResult, GenerateResult

MODEL_DIR_ENV = "DIFFUSION_MODEL_DIR"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
MAX_BATCH_ENV = "DIFFUSION_MAX_BATCH"
# Measured on one busy CPU core, the default 28x28 UnetConfig evaluates 16 images in ~0.5 s and
# 64 in ~2.6 s: 64 images at 25 steps already take a minute, and hold every other visitor's turn.
DEFAULT_MAX_BATCH = 64
TORCH_THREADS_ENV = "DIFFUSION_TORCH_THREADS"
# One intra-op thread per request. These models are small (28x28), so a second thread mostly
# waits on the first; measured on a 2-core machine with the other core busy, 2 threads made
# PyTorch sampling ~10x slower than 1. Concurrent requests (the queue) use the other cores.
DEFAULT_TORCH_THREADS = 1
TRAIN_HINT = ("train one with `python -m backends.pytorch.train --data fashion-mnist --steps 20000 "
              "--out runs/fashion` and copy runs/fashion/model to models/default (or set "
              f"{MODEL_DIR_ENV}=runs/fashion/model), or pull one from the Hub in the Hub tab")

Progress = Callable[[float, str], None]   # (fraction done, what is happening)


class ServiceError(ValueError):
    """A request that cannot be served; the message says what was wrong and what to do."""


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ServiceError(f"environment variable {name}={value!r} is not a whole number") from None


def shown_path(folder: Path) -> str:
    """A folder as the page shows it: relative to the repository when inside it (models/default)."""
    try:
        return str(folder.absolute().relative_to(DEFAULT_MODEL_DIR.parent.parent))
    except ValueError:
        return str(folder)


def whole_number(value, name: str) -> int:
    """A UI number (Gradio sends floats like 20.0) as an int; fractions and text are errors."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not float(value).is_integer():
        raise ServiceError(f"{name} must be a whole number, got {value!r}")
    return int(value)


class DiffusionService:
    """The current checkpoint, the models loaded from it, and the four things a visitor can do."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, max_batch: Optional[int] = None,
                 torch_threads: Optional[int] = None, hub_cache_dir: str | os.PathLike | None = None,
                 endpoint: Optional[str] = None):
        """model_dir: a checkpoint folder (default $DIFFUSION_MODEL_DIR, else models/default); it may
        be missing, and the page then says how to get one. hub_cache_dir / endpoint: for pull and
        push (default: huggingface_hub's cache, and HF_ENDPOINT read at each call)."""
        self.max_batch = max_batch or env_int(MAX_BATCH_ENV, DEFAULT_MAX_BATCH)
        self.torch_threads = torch_threads or env_int(TORCH_THREADS_ENV, DEFAULT_TORCH_THREADS)
        self.hub_cache_dir = hub_cache_dir
        self.endpoint = endpoint
        self._folder = Path(model_dir or os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR).expanduser()
        self._source = shown_path(self._folder)   # what the page calls the model: a path or a repo
        self._lock = threading.Lock()             # guards everything below
        self._checkpoint: Optional[Checkpoint] = None
        self._statuses: dict[str, list[BackendStatus]] = {}
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._set_torch_threads()

    def _set_torch_threads(self) -> None:
        # A process-wide setting, made once here rather than left to torch's default of every core.
        if importlib.util.find_spec("torch") is not None:
            import torch
            torch.set_num_threads(self.torch_threads)

    # --- the current checkpoint ---------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """The checkpoint requests use now; ServiceError saying how to get one if there is none."""
        with self._lock:
            if self._checkpoint is None:   # retried each time: the folder may appear later
                try:
                    self._checkpoint = open_checkpoint(self._folder)
                except CheckpointError as error:
                    raise ServiceError(f"no model to sample from: {error}. To get one, {TRAIN_HINT}") from None
            return self._checkpoint

    def use_checkpoint(self, folder: str | os.PathLike, source: Optional[str] = None) -> Checkpoint:
        """Switch every later request to the checkpoint in folder (validated first)."""
        try:
            checkpoint = open_checkpoint(folder)
        except CheckpointError as error:
            raise ServiceError(str(error)) from None
        with self._lock:
            self._folder, self._checkpoint = checkpoint.folder, checkpoint
            self._source = source or shown_path(checkpoint.folder)
            # Requests already running keep their own reference to the old models.
            self._models = {key: m for key, m in self._models.items() if key[0] == str(checkpoint.folder)}
        return checkpoint

    def model_summary(self) -> str:
        """Markdown for the top of the page: which model is loaded, or how to get one."""
        try:
            checkpoint = self.checkpoint()
        except ServiceError as error:
            return f"**No model loaded.** {error}"
        config = checkpoint.config
        (channels, height, width), diffusion = config.sample_shape, config.diffusion
        dataset = config.notes.get("dataset")
        origin = config.notes.get("imported_from") or {}
        imported = f" (imported from {origin['format']}: {origin['source']})" if origin.get("format") else ""
        return (f"**Model:** `{self._source}`{imported}: {config.architecture.title or config.architecture.name} "
                f"(`{config.architecture.name}`), {height}x{width}, {channels} "
                f"channel{'s' if channels > 1 else ''}, T = {diffusion.num_train_timesteps} "
                f"({diffusion.schedule} schedule, predicts {diffusion.prediction_type})"
                + (f", trained on {dataset}" if dataset else "")
                + ("" if checkpoint.onnx_path else ". No model.onnx, so ONNX Runtime cannot run it"))

    def backend_statuses(self, checkpoint: Optional[Checkpoint] = None) -> list[BackendStatus]:
        """Every backend with whether it can run checkpoint (default: the current one) here, and
        if not, why."""
        if checkpoint is None:
            try:
                checkpoint = self.checkpoint()
            except ServiceError:
                pass
        key = str(checkpoint.folder) if checkpoint else ""
        with self._lock:
            cached = self._statuses.get(key)
        if cached is None:  # looked up outside the lock: it imports frameworks the first time
            cached = list_backends(checkpoint)
            with self._lock:
                self._statuses[key] = cached
        return cached

    @staticmethod
    def sampler_choices() -> list[tuple[str, str]]:
        """(title, name) of every sampler of the core, for a dropdown."""
        return [(spec.title, name) for name, spec in SAMPLERS.items()]

    @staticmethod
    def sampler_uses_eta(sampler: str) -> bool:
        return sampler in SAMPLERS and "eta" in SAMPLERS[sampler].options

    # --- models ------------------------------------------------------------------------------
    def _model(self, backend: str, checkpoint: Checkpoint) -> tuple[LoadedModel, float]:
        """The loaded model for (checkpoint, backend) and the seconds spent loading it now."""
        statuses = {s.name: s for s in self.backend_statuses(checkpoint)}
        if backend not in statuses:
            raise ServiceError(f"unknown backend {backend!r}; choose one of {', '.join(statuses)}")
        if not statuses[backend].available:
            raise ServiceError(f"{statuses[backend].title} cannot run here: {statuses[backend].reason}")
        key = (str(checkpoint.folder), backend)
        with self._lock:
            load_lock = self._load_locks.setdefault(key, threading.Lock())
        with load_lock:  # one load per key, while other keys load or sample in parallel
            with self._lock:
                model = self._models.get(key)
            if model is not None:
                return model, 0.0
            start = time.perf_counter()
            try:
                model = load_model(backend, checkpoint)
            except BackendUnavailable as error:
                raise ServiceError(f"{statuses[backend].title} cannot run here: {error}") from None
            with self._lock:
                if str(self._folder) == key[0]:  # not cached if the model was switched meanwhile
                    self._models[key] = model
            return model, time.perf_counter() - start

    def _check_request(self, checkpoint: Checkpoint, sampler: str, steps, seed, batch_size
                       ) -> tuple[int, int, int]:
        if sampler not in SAMPLERS:
            raise ServiceError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        steps, seed, batch_size = (whole_number(steps, "steps"), whole_number(seed, "seed"),
                                   whole_number(batch_size, "batch size"))
        if seed < 0:
            raise ServiceError(f"seed must be 0 or more, got {seed}")
        if not 1 <= batch_size <= self.max_batch:
            raise ServiceError(f"batch size must be between 1 and {self.max_batch} (this server's limit, "
                               f"set by {MAX_BATCH_ENV}), got {batch_size}; ask for fewer images")
        required = [i.name for i in optional_inputs(checkpoint.config.inputs) if not i.optional]
        if required:   # e.g. an imported class-conditional diffusers model: no null class to fall back on
            raise ServiceError(f"this model needs {', '.join(required)} for every image, which the page cannot "
                               "choose yet; sample it from Python with model.sample(inputs={...})")
        total = checkpoint.config.diffusion.num_train_timesteps
        if not 1 <= steps <= total:  # the core's own words, before any model is loaded
            raise ServiceError(f"steps must be an integer between 1 and the number of training "
                               f"timesteps T = {total}, got {steps}")
        return steps, seed, batch_size

    # --- what a visitor can do ---------------------------------------------------------------
    def generate(self, backend: str, sampler: str, steps, eta, seed, batch_size,
                 progress: Optional[Progress] = None) -> GenerateResult:
        """Sample batch_size images; eta is read only by samplers that have it (DDIM)."""
        checkpoint = self.checkpoint()  # once: a pull during this request does not change it
        steps, seed, batch_size = self._check_request(checkpoint, sampler, steps, seed, batch_size)
        options = {"eta": float(eta)} if self.sampler_uses_eta(sampler) and eta is not None else {}
        model, _ = self._model(backend, checkpoint)
        recorder = X0Recorder(model.ops.to_numpy, progress=_step_progress(progress, "sampling"))
        start = time.perf_counter()
        images = model.sample(batch_size=batch_size, sampler=sampler, steps=steps, seed=seed,
                              callback=recorder, **options)
        seconds = time.perf_counter() - start
        title = next(s.title for s in self.backend_statuses(checkpoint) if s.name == backend)
        summary = (f"{batch_size} image{'s' if batch_size > 1 else ''} with {SAMPLERS[sampler].title}, "
                   f"{steps} steps, seed {seed}" + (f", eta {options['eta']:g}" if options else "")
                   + f", on {title} ({model.device}): {seconds:.2f} s, "
                   f"{1000 * seconds / steps:.1f} ms per step, {batch_size / seconds:.1f} images/s")
        return GenerateResult(grid=display_grid(images), frames=recorder.captioned_frames(),
                              images=images, seconds=seconds, summary=summary)

    def compare(self, backends: Sequence[str], sampler: str, steps, seed, batch_size, reference: str,
                progress: Optional[Progress] = None) -> CompareResult:
        """The same request (same seed) on several backends, one after another, timed, and each
        compared pixel by pixel with the reference backend (which is run too if not picked)."""
        checkpoint = self.checkpoint()  # once: a pull during this request does not change it
        steps, seed, batch_size = self._check_request(checkpoint, sampler, steps, seed, batch_size)
        if not reference:
            raise ServiceError("pick a reference backend to measure the differences from")
        names = list(dict.fromkeys([reference, *(backends or [])]))  # reference first, no repeats
        if len(names) < 2:
            raise ServiceError("pick at least one backend besides the reference to compare with it")
        statuses = {s.name: s for s in self.backend_statuses(checkpoint)}
        runs: list[BackendRun] = []
        reference_images: Optional[np.ndarray] = None
        for position, name in enumerate(names):
            status = statuses.get(name)
            if status is None or not status.available:
                if name == reference:
                    why = status.reason if status else f"unknown backend {name!r}"
                    raise ServiceError(f"the reference backend cannot run here: {why}; pick another")
                runs.append(BackendRun(name, status.title if status else name,
                                       reason=status.reason if status else "unknown backend"))
                continue
            step_progress = _step_progress(progress, status.title, position, len(names))
            if step_progress:
                step_progress(0, steps)
            model, load_seconds = self._model(name, checkpoint)
            recorder = X0Recorder(model.ops.to_numpy, progress=step_progress, record=False)
            start = time.perf_counter()
            images = model.sample(batch_size=batch_size, sampler=sampler, steps=steps, seed=seed,
                                  callback=recorder)
            seconds = time.perf_counter() - start
            if reference_images is None:
                reference_images = images
            difference = pixel_difference(images, reference_images)
            runs.append(BackendRun(name, status.title, images=images, grid=display_grid(images),
                                   load_seconds=load_seconds, seconds=seconds,
                                   max_abs_diff=difference.max_abs, max_diff_levels=difference.max_levels))
        return CompareResult(runs=runs, reference=reference, steps=steps, batch_size=batch_size)

    def pull(self, repo_id: str, revision: str) -> str:
        """Download a checkpoint from the Hub (or find it in the cache) and switch to it now."""
        from diffusion_core import hub
        repo_id, revision = (repo_id or "").strip(), (revision or "").strip() or None
        from .imports import imports_root, servable_folder
        try:
            folder = hub.pull(repo_id, revision=revision, cache_dir=self.hub_cache_dir, endpoint=self.endpoint)
            folder = servable_folder(folder, repo_id, imports_root(self.hub_cache_dir))  # diffusers repos
        except (HubError, CheckpointError) as error:
            raise ServiceError(str(error)) from None
        self.use_checkpoint(folder, source=f"{repo_id}@{revision or 'main'}")
        return f"Pulled {repo_id} (revision {revision or 'main'}); every request now uses it."

    def push(self, repo_id: str, token: str, private: bool, message: str) -> str:
        """Upload the current checkpoint to repo_id and return the commit URL.

        token: typed in the page, else the HF_TOKEN secret. It is never logged, returned or put
        in a message: hub.py scrubs it from its errors, and so does this method.
        """
        from diffusion_core import hub
        token = (token or "").strip() or os.environ.get("HF_TOKEN") or None
        folder = self.checkpoint().folder
        try:
            return hub.push(folder, (repo_id or "").strip(), token=token, private=bool(private),
                            commit_message=(message or "").strip() or DEFAULT_COMMIT_MESSAGE,
                            endpoint=self.endpoint)
        except (HubError, CheckpointError) as error:
            text = str(error)
            raise ServiceError(text.replace(token, "***") if token else text) from None


def _step_progress(progress: Optional[Progress], what: str, position: int = 0,
                   parts: int = 1) -> Optional[Callable[[int, int], None]]:
    """Turn (steps done, total) of one of `parts` runs into the page's (fraction, description)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((position + done / total) / parts, f"{what}: step {done}/{total}")
    return report
