"""What the app does, as a plain object: generate, image-to-image, compare backends, pull, push.

`DiffusionService` knows nothing about Gradio. Each public method takes the values the page's
inputs hold (plus the visitor's `session`, a progress callback and a cancel token) and returns
plain results, so it is tested without a browser, and app.py only lays out the page and wires
events to these methods.

Every visitor is a stranger: a session (models.py) is the visitor's own model, a pull changes only
it, the server's token never pulls and pushes only when the operator allows it, and every request
is checked against the server's limits (settings.py) before a model runs, then stopped at its next
step if it is cancelled, abandoned or runs past the time limit.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from backends import BackendStatus
from diffusion_core import SAMPLERS
from diffusion_core.cancel import Cancelled, CancelToken
from diffusion_core.checkpoint import Checkpoint, CheckpointError
from diffusion_core.hub import DEFAULT_COMMIT_MESSAGE, HubError
from diffusion_core.paths import default_model_dir

from .images import X0Recorder, display_grid, pixel_difference
from .models import ModelStore, Session
from .pulls import HubPulls
from .requests import (ANY_CLASS, RECOMMENDED, Request, check_request, check_sampler_settings, class_choices,
                       model_image, model_mask)
from .results import BackendRun, CompareResult, GenerateResult
from .settings import ServerSettings, ServiceError, model_dir_from_env
from .text import plain
from .text import code, mask_token

DEFAULT_MODEL_DIR = default_model_dir()
TRAIN_HINT = ("train one with `python -m backends.pytorch.train --data fashion-mnist --steps 20000 "
              "--out runs/fashion` and serve runs/fashion/model (--model-dir or DIFFUSION_MODEL_DIR), "
              "or pull one from the Hub in the Hub tab")

Progress = Callable[[float, str], None]   # (fraction done, what is happening)


def shown_path(folder: Path) -> str:
    """A folder as the page shows it: relative to the repository when inside it (models/default)."""
    try:
        return str(folder.absolute().relative_to(DEFAULT_MODEL_DIR.parent.parent))
    except ValueError:
        return str(folder)


class DiffusionService:
    """The server's default model, its loaded models and Hub pulls, and what a visitor can do."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, settings: Optional[ServerSettings] = None,
                 max_batch: Optional[int] = None, torch_threads: Optional[int] = None,
                 hub_cache_dir: str | os.PathLike | None = None, endpoint: Optional[str] = None):
        """model_dir: the checkpoint every new session starts with (default $DIFFUSION_MODEL_DIR,
        else models/default); it may be missing, and the page then says how to get one."""
        self.settings = settings or ServerSettings.from_env(max_batch=max_batch, torch_threads=torch_threads)
        self.endpoint = endpoint
        folder = Path(model_dir).expanduser() if model_dir else (model_dir_from_env() or DEFAULT_MODEL_DIR)
        self.default_session = Session(folder, shown_path(folder))
        self.store = ModelStore(self.settings)
        self.pulls = HubPulls(self.settings, Path(hub_cache_dir) if hub_cache_dir else None, endpoint)
        # torch's thread count is set by the store before the first model loads (not here: importing
        # torch at start-up delayed the first page)

    @property
    def max_batch(self) -> int:
        return self.settings.max_batch

    # --- the session's checkpoint ------------------------------------------------------------
    def session(self, session: Optional[Session] = None) -> Session:
        return session or self.default_session

    def checkpoint(self, session: Optional[Session] = None) -> Checkpoint:
        """The checkpoint this session uses; ServiceError saying how to get one if there is none."""
        session = self.session(session)
        try:
            return self.store.checkpoint(session.folder)
        except ServiceError as error:
            if session is self.default_session:
                raise ServiceError(f"no model to sample from: {error}. To get one, {TRAIN_HINT}") from None
            raise

    def model_summary(self, session: Optional[Session] = None) -> str:
        """Markdown for the top of the page; everything read from the checkpoint is escaped."""
        session = self.session(session)
        try:
            checkpoint = self.checkpoint(session)
        except ServiceError as error:
            return f"**No model loaded.** {plain(error, 600)}"
        config = checkpoint.config
        (channels, height, width), diffusion = config.sample_shape, config.diffusion
        dataset = config.notes.get("dataset")
        classes = len(class_choices(checkpoint)) - 1
        origin = config.notes.get("imported_from") or {}
        imported = (f" (imported from {plain(origin.get('format'), 40)}: {code(origin.get('source'), 120)})"
                    if isinstance(origin, dict) and origin.get("format") else "")
        return (f"**Model:** {code(session.source)}{imported}: {plain(config.architecture.title)} "
                f"({code(config.architecture.name)}), {height}x{width}, "
                f"{channels} channel{'s' if channels > 1 else ''}, T = {diffusion.num_train_timesteps} "
                f"({plain(diffusion.schedule)} schedule, predicts {plain(diffusion.prediction_type)})"
                + (f", {classes} classes" if classes else "")
                + (f", trained on {plain(dataset, 80)}" if dataset else "")
                + ("" if checkpoint.onnx_path else ". No model.onnx, so ONNX Runtime cannot run it"))

    def backend_statuses(self, session: Optional[Session] = None) -> list[BackendStatus]:
        try:
            checkpoint = self.checkpoint(session)
        except ServiceError:
            checkpoint = None
        return self.store.statuses(checkpoint)

    def class_choices(self, session: Optional[Session] = None) -> list[tuple[str, str]]:
        try:
            return class_choices(self.checkpoint(session))
        except ServiceError:
            return class_choices(None)

    @staticmethod
    def sampler_choices() -> list[tuple[str, str]]:
        """(title, name) of every sampler of the core, for a dropdown."""
        return [(spec.title, name) for name, spec in SAMPLERS.items()]

    @staticmethod
    def sampler_uses_eta(sampler: str) -> bool:
        return sampler in SAMPLERS and "eta" in SAMPLERS[sampler].options

    def _request(self, checkpoint: Checkpoint, sampler, steps, seed, batch_size, class_label,
                 guidance_scale, spacing=RECOMMENDED, karras=RECOMMENDED) -> Request:
        request = check_request(checkpoint, self.settings, self.store.max_batch(checkpoint), sampler, steps,
                                seed, batch_size, class_label, guidance_scale)
        return replace(request, settings=check_sampler_settings(sampler, spacing, karras, request.steps,
                                                                checkpoint.config.fitted_timesteps))

    def _token(self, cancel: Optional[CancelToken]) -> CancelToken:
        return cancel or CancelToken(self.settings.time_limit_s)

    # --- what a visitor can do ---------------------------------------------------------------
    def generate(self, backend: str, sampler: str, steps, eta, seed, batch_size, class_label=ANY_CLASS,
                 guidance_scale=1.0, spacing=RECOMMENDED, karras=RECOMMENDED, bf16=False, *,
                 session: Optional[Session] = None, progress: Optional[Progress] = None,
                 cancel: Optional[CancelToken] = None) -> GenerateResult:
        """Sample batch_size images; eta is read only by samplers that have it (DDIM); spacing and
        karras ("recommended": the registry's choice for the sampler) only by those that read them;
        bf16: the fast path (PyTorch autocast), which moves pixels by a fraction of a level."""
        checkpoint = self.checkpoint(session)  # once: a pull during this request does not change it
        request = self._request(checkpoint, sampler, steps, seed, batch_size, class_label, guidance_scale,
                                spacing, karras)
        if not isinstance(bf16, bool):
            raise ServiceError(f"bf16 must be true or false, got {plain(repr(bf16), 40)}")
        options = {"eta": float(eta)} if self.sampler_uses_eta(sampler) and eta is not None else {}
        return self._run(backend, checkpoint, request, options, progress, cancel, what="",
                         precision="bf16" if bf16 else "fp32")

    def image_to_image(self, backend: str, sampler: str, steps, seed, image, strength, mask=None,
                       class_label=ANY_CLASS, guidance_scale=1.0, batch_size=4, spacing=RECOMMENDED,
                       karras=RECOMMENDED, *, session: Optional[Session] = None,
                       progress: Optional[Progress] = None, cancel: Optional[CancelToken] = None) -> GenerateResult:
        """SDEdit from `image` at `strength`; with a drawn `mask`, inpaint what is drawn."""
        checkpoint = self.checkpoint(session)
        request = self._request(checkpoint, sampler, steps, seed, batch_size, class_label, guidance_scale,
                                spacing, karras)
        from .requests import number
        strength = number(strength, "strength", 0.01, 1.0)
        init, drawn = model_image(image, checkpoint), model_mask(mask, checkpoint)
        options: dict[str, Any] = {"init_image": init, "strength": strength}
        what = f", strength {strength:g}"
        if drawn is not None:
            options["mask"] = drawn
            what += f", inpainting {int(drawn.sum())} of {drawn.size} pixels"
        return self._run(backend, checkpoint, request, options, progress, cancel, what=what)

    def _run(self, backend, checkpoint, request: Request, options, progress, cancel, what: str,
             precision: str = "fp32") -> GenerateResult:
        token = self._token(cancel)
        token.check()  # cancelled while it waited in the queue
        model, _ = self.store.model(backend, checkpoint, precision)
        if precision != "fp32":
            what += f", {precision}"
        recorder = X0Recorder(model.ops.to_numpy, progress=_step_progress(progress, "sampling"))
        try:
            images = model.sample(batch_size=request.batch_size, sampler=request.sampler, steps=request.steps,
                                  seed=request.seed, callback=recorder, cancel=token,
                                  **request.sample_kwargs(), **request.option_overrides(), **options)
        except Cancelled as error:
            raise ServiceError(str(error)) from None
        except ValueError as error:  # the core's own checks (strength too small for the steps, ...)
            raise ServiceError(str(error)) from None
        seconds = recorder.seconds
        eta = f", eta {options['eta']:g}" if "eta" in options else ""
        summary = (f"{request.batch_size} image{'s' if request.batch_size > 1 else ''} with "
                   f"{SAMPLERS[request.sampler].title}, {request.steps} steps{request.describe_settings()}, "
                   f"seed {request.seed}{eta}"
                   f"{request.describe(checkpoint)}{what}, on {self.store.title(backend, checkpoint)} "
                   f"({model.device}): {seconds:.2f} s, {1000 * seconds / request.steps:.1f} ms per step, "
                   f"{request.batch_size / max(seconds, 1e-9):.1f} images/s")
        return GenerateResult(grid=display_grid(images), frames=recorder.captioned_frames(),
                              images=images, seconds=seconds, summary=summary)

    def compare(self, backends: Sequence[str], sampler: str, steps, seed, batch_size, reference: str,
                class_label=ANY_CLASS, guidance_scale=1.0, spacing=RECOMMENDED, karras=RECOMMENDED, *,
                session: Optional[Session] = None, progress: Optional[Progress] = None,
                cancel: Optional[CancelToken] = None) -> CompareResult:
        """The same request (same seed) on several backends, one after another, timed, and each
        compared pixel by pixel with the reference backend (which is run too if not picked)."""
        checkpoint = self.checkpoint(session)
        request = self._request(checkpoint, sampler, steps, seed, batch_size, class_label, guidance_scale,
                                spacing, karras)
        if not reference:
            raise ServiceError("pick a reference backend to measure the differences from")
        names = list(dict.fromkeys([reference, *(backends or [])]))  # reference first, no repeats
        if len(names) < 2:
            raise ServiceError("pick at least one backend besides the reference to compare with it")
        statuses = {s.name: s for s in self.store.statuses(checkpoint)}
        token = self._token(cancel)
        runs: list[BackendRun] = []
        reference_images: Optional[np.ndarray] = None
        for position, name in enumerate(names):
            status = statuses.get(name)
            if status is None or not status.available:
                if name == reference:
                    why = status.reason if status else f"unknown backend {name!r}"
                    raise ServiceError(f"the reference backend cannot run here: {why}; pick another")
                runs.append(BackendRun(name, status.title if status else plain(name, 40),
                                       reason=status.reason if status else "unknown backend"))
                continue
            step_progress = _step_progress(progress, status.title, position, len(names))
            if step_progress:
                step_progress(0, request.steps)
            model, load_seconds = self.store.model(name, checkpoint)
            recorder = X0Recorder(model.ops.to_numpy, progress=step_progress, record=False)
            try:
                images = model.sample(batch_size=request.batch_size, sampler=request.sampler,
                                      steps=request.steps, seed=request.seed, callback=recorder,
                                      cancel=token, **request.sample_kwargs(), **request.option_overrides())
            except Cancelled as error:
                raise ServiceError(str(error)) from None
            if reference_images is None:
                reference_images = images
            difference = pixel_difference(images, reference_images)
            runs.append(BackendRun(name, status.title, images=images, grid=display_grid(images),
                                   load_seconds=load_seconds, seconds=recorder.seconds,
                                   max_abs_diff=difference.max_abs, max_diff_levels=difference.max_levels))
        return CompareResult(runs=runs, reference=reference, steps=request.steps, batch_size=request.batch_size)

    def pull(self, repo_id: str, revision: str, token: str = "", *,
             session: Optional[Session] = None) -> tuple[Session, str]:
        """Download a checkpoint (the visitor's token only) and make it this session's model."""
        folder, source = self.pulls.pull(repo_id, revision, token)
        try:
            self.store.checkpoint(folder)  # validated, and within this server's memory budget
        except ServiceError as error:
            raise ServiceError(f"{plain(repo_id, 100)}: {error}") from None
        return Session(folder, source), f"Pulled {plain(source, 120)}; your requests now use it."

    def push(self, repo_id: str, token: str, private: bool, message: str, *,
             session: Optional[Session] = None) -> str:
        """Upload this session's checkpoint to repo_id and return the commit URL.

        token: typed in the page; the server's HF_TOKEN only where the operator allows it
        (DIFFUSION_ALLOW_SECRET_PUSH). It is never logged, returned or put in a message.
        """
        from diffusion_core import hub
        typed = (token or "").strip()
        token = typed or (os.environ.get("HF_TOKEN") if self.settings.allow_secret_push else None)
        if not token:
            raise ServiceError("pushing needs your own Hugging Face token with write access: paste it "
                               "in the token field (this server does not push with its own)")
        folder = self.checkpoint(session).folder
        try:
            return hub.push(folder, (repo_id or "").strip(), token=token, private=bool(private),
                            commit_message=(message or "").strip()[:200] or DEFAULT_COMMIT_MESSAGE,
                            endpoint=self.endpoint)
        except (HubError, CheckpointError) as error:
            raise ServiceError(mask_token(str(error), token)) from None


def _step_progress(progress: Optional[Progress], what: str, position: int = 0,
                   parts: int = 1) -> Optional[Callable[[int, int], None]]:
    """Turn (steps done, total) of one of `parts` runs into the page's (fraction, description)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((position + done / total) / parts, f"{what}: step {done}/{total}")
    return report
