"""Backend registry: a name a user picks -> a lazily imported backend that says if it can run here.

Nothing heavy is imported until a backend is used: listing backends and asking why one is
unavailable only looks for the packages it needs. Other packages add backends through the Python
entry-point group `diffusion_toolkit.backends`; each entry point names a zero-argument callable
(usually the class) that returns a `Backend`.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from diffusion_core.config import ModelConfig
from diffusion_core.ops import Ops

ENTRY_POINT_GROUP = "diffusion_toolkit.backends"
# Marks this module as the diffusion toolkit's `backends`: a generic top-level name that another
# project might install too; diffusion_core.paths.toolkit_backends() refuses any other.
TOOLKIT_BACKENDS = True


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to sample: the core's model contract, its tensor ops and its config."""

    model: Callable[..., Any]      # model(x, t, **inputs) -> raw output; inputs as config.inputs declares
    ops: Ops
    config: ModelConfig
    backend: str
    device: str = "cpu"

    def sample(self, batch_size: int = 1, **kwargs: Any) -> np.ndarray:
        """`diffusion_core.sample` with this model's schedule, prediction type, declared inputs
        and ops filled in."""
        from diffusion_core.samplers import get_sampler, sample
        cfg = self.config
        if kwargs.get("options") is None:  # the model's own defaults (e.g. an imported scheduler's)
            reads = get_sampler(kwargs.get("sampler", "ddim")).options
            for name, value in cfg.diffusion.sampler_defaults(reads).items():
                kwargs.setdefault(name, value)
        if kwargs.get("x_T") is None:
            kwargs.setdefault("shape", (batch_size, *cfg.sample_shape))
        kwargs.setdefault("fitted_timesteps", cfg.fitted_timesteps)  # spacing "optimized"
        return sample(self.model, cfg.diffusion.make_schedule(), ops=self.ops,
                      prediction_type=cfg.diffusion.prediction_type, model_inputs=cfg.inputs, **kwargs)


def build_network(framework: str, network_config: Any) -> Any:
    """A freshly initialised network of the architecture `network_config` belongs to, built by the
    callable the architecture's registry entry names for `framework`."""
    from diffusion_core.architectures import architecture_of
    arch = architecture_of(network_config)
    target = arch.networks.get(framework)
    if target is None:
        raise BackendUnavailable(_not_implemented(arch, framework))
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)(network_config)


def _not_implemented(arch: Any, framework: str) -> str:
    others = ", ".join(sorted(arch.networks)) or "no framework"
    return (f"the {arch.name} architecture has no {framework} network (it is implemented for "
            f"{others}); pick another backend")


class Backend:
    """Base class: a name, the modules it needs, and `load(checkpoint) -> LoadedModel`."""

    name: str = ""
    title: str = ""                     # shown in dropdowns
    requires: tuple[str, ...] = ()      # importable module names
    # The key of this backend's networks in an architecture's registry entry (`networks`), or
    # None for a backend that runs exported graphs of any architecture (ONNX Runtime).
    framework: Optional[str] = None

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def unavailable_reason(self, checkpoint=None, device: Optional[str] = None) -> Optional[str]:
        """None when this backend can run here (with this checkpoint and device, if given), else
        why not, in words a user can act on."""
        missing = self.missing_packages()
        if missing:
            return (f"{self.title or self.name} needs {', '.join(missing)}, which is not installed "
                    f"here; install it with `pip install -r requirements.txt`")
        if checkpoint is not None and self.framework is not None:
            arch = checkpoint.config.architecture
            if self.framework not in arch.networks:
                return _not_implemented(arch, self.framework)
        return None

    def load(self, checkpoint, device: Optional[str] = None) -> LoadedModel:
        raise NotImplementedError

    # Reduced precisions this backend can sample in (load(..., precision=...)); fp32 is always there.
    precisions: tuple[str, ...] = ()
    no_bf16_reason = "it has no bf16 path in this toolkit"


@dataclass(frozen=True)
class BackendSpec:
    """What the registry knows of a backend before importing it: enough to say whether it can run
    a checkpoint here, so that listing backends imports no framework (a page's first load)."""

    name: str
    title: str
    target: str                      # "module:attribute" of the Backend class, imported on use
    requires: tuple[str, ...] = ()   # importable module names, looked for without importing
    framework: Optional[str] = None  # its key in an architecture's networks (None: any, via a graph)
    needs_onnx: bool = False         # runs a checkpoint's model.onnx

    def load(self) -> "Backend":
        module_name, attr = self.target.split(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise BackendUnavailable(f"the {self.title} backend cannot be loaded here ({e}); "
                                     f"reinstall with `pip install -r requirements.txt`") from None
        return factory()

    def reason(self, checkpoint=None) -> Optional[str]:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{self.title} needs {', '.join(missing)}, which is not installed here; install "
                    f"it with `pip install -r requirements.txt`")
        if checkpoint is not None and self.framework is not None:
            arch = checkpoint.config.architecture
            if self.framework not in arch.networks:
                return _not_implemented(arch, self.framework)
        if checkpoint is not None and self.needs_onnx and getattr(checkpoint, "onnx_path", None) is None:
            if getattr(checkpoint, "layout", "toolkit") != "toolkit":
                return (f"this {checkpoint.layout} folder has no model.onnx; convert it into a checkpoint "
                        f"folder with `python -m diffusion_core.convert import {checkpoint.folder} OUT`, "
                        "then export it with `python -m backends.onnx.export OUT`")
            return (f"this checkpoint has no model.onnx; export it with "
                    f"`python -m backends.onnx.export {checkpoint.folder}`")
        return None


def _registry() -> dict[str, Any]:
    """name -> BackendSpec (built-ins, and plugins that declare one) or a plugin's entry point.

    Every backend, the built-in ones included, is declared in the entry-point group (this
    distribution's pyproject.toml); a source checkout that was never installed has no entry
    points, so the built-ins are added from backends/builtin.py there."""
    from .builtin import BUILTIN
    found: dict[str, Any] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.startswith("backends.builtin:"):
            found[ep.name] = BUILTIN[ep.name]
        else:
            found.setdefault(ep.name, ep)
    for name, spec in BUILTIN.items():
        found.setdefault(name, spec)
    order = list(BUILTIN) + sorted(n for n in found if n not in BUILTIN)
    return {name: found[name] for name in order}


def backend_names() -> list[str]:
    """Built-in backends first, then those added by other packages."""
    return list(_registry())


def get_backend(name: str) -> Backend:
    """The backend called `name` (importing its module now); ValueError lists the valid names."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(registry)}")
    entry = registry[name]
    if isinstance(entry, BackendSpec):
        reason = entry.reason()
        if reason:
            raise BackendUnavailable(reason)
        return entry.load()
    loaded = entry.load()
    if isinstance(loaded, BackendSpec):
        return loaded.load()
    return loaded() if isinstance(loaded, type) else loaded


@dataclass(frozen=True)
class BackendStatus:
    name: str
    title: str
    available: bool
    reason: str = ""        # why not, when not available


def backend_status(name: str, checkpoint=None) -> BackendStatus:
    """Whether `name` can run here, without raising: for dropdowns and `--help` texts. A built-in
    (or any BackendSpec) answers without importing its framework."""
    checkpoint = _as_checkpoint(checkpoint)
    entry = _registry().get(name)
    if isinstance(entry, BackendSpec):
        reason = entry.reason(checkpoint)
        return BackendStatus(name, entry.title, reason is None, reason or "")
    try:
        backend = get_backend(name)
    except (BackendUnavailable, ValueError) as e:
        return BackendStatus(name, name, False, str(e))
    reason = backend.unavailable_reason(checkpoint)
    return BackendStatus(name, backend.title or name, reason is None, reason or "")


def _as_checkpoint(checkpoint):
    """A Checkpoint from a Checkpoint, a folder of any layout diffusion_core.convert reads, or a
    Hub repo id ("owner/name", pulled into huggingface_hub's cache) when no such folder exists."""
    from pathlib import Path

    from diffusion_core.checkpoint import Checkpoint
    from diffusion_core.convert import open_checkpoint
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    if isinstance(checkpoint, str) and not Path(checkpoint).expanduser().exists() and _looks_like_repo(checkpoint):
        from diffusion_core import hub
        return open_checkpoint(hub.pull(checkpoint), source=checkpoint)
    return open_checkpoint(checkpoint)


def _looks_like_repo(text: str) -> bool:
    import re
    return re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not text.startswith((".", "/"))


def list_backends(checkpoint=None) -> list[BackendStatus]:
    """Every backend with whether it can run `checkpoint` (a folder or a Checkpoint) here."""
    checkpoint = _as_checkpoint(checkpoint)
    return [backend_status(n, checkpoint) for n in backend_names()]


PRECISIONS = ("fp32", "bf16")


def load_model(name: str, checkpoint, device: Optional[str] = None, precision: str = "fp32",
               compile: bool = False) -> LoadedModel:
    """Load `checkpoint` (a folder of the toolkit's or a diffusers layout, a Hub repo id, or a
    diffusion_core.checkpoint.Checkpoint) on backend `name`;
    BackendUnavailable says why it cannot run here (a missing framework, GPU or graph).

    precision: "fp32" (the default: exact, the same images on every backend) or "bf16", a fast
    path where the backend has one (PyTorch: autocast on CPUs with bf16 instructions and on CUDA);
    it trades a fraction of an 8-bit level per pixel for speed (README, "bf16 sampling").
    compile: PyTorch only, the network through torch.compile (bench/unet_forward.py: on a par with
    diffusers' UNet2DModel at equal FLOPs, where eager is ~1.2x slower); the first call of each
    batch size compiles (tens of seconds on a CPU) and needs a C++ compiler."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    from diffusion_core.allocator import tune_allocator
    tune_allocator()  # the API's first use: before the weights and activations are allocated
    checkpoint = _as_checkpoint(checkpoint)
    backend = get_backend(name)
    reason = backend.unavailable_reason(checkpoint, device=device)
    if reason:
        raise BackendUnavailable(reason)
    if compile:
        if not getattr(backend, "compiles", False):
            raise BackendUnavailable(f"{backend.title or backend.name} has no compiled path; "
                                     "use compile=False or the PyTorch backend")
        return backend.load(checkpoint, device=device, precision=precision, compile=True)
    if precision == "fp32":
        return backend.load(checkpoint, device=device)
    if precision not in backend.precisions:
        raise BackendUnavailable(f"{backend.title or backend.name} cannot sample in {precision}: "
                                 f"{backend.no_bf16_reason}; use precision='fp32' or the PyTorch backend")
    return backend.load(checkpoint, device=device, precision=precision)


def __getattr__(name: str):
    # The pipeline API, imported on first use like the backends themselves.
    if name == "DiffusionPipeline":
        from .pipeline import DiffusionPipeline
        return DiffusionPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
