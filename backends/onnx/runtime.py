"""ONNX Runtime inference: a session tuned on purpose, and the core's model contract around it.

Imports NumPy and onnxruntime only (never torch or mindspore), so a machine with neither framework
can sample from a checkpoint's model.onnx. Any exporter's graph loads here if its inputs are the
ones the checkpoint's architecture declares (diffusion_core.architectures: names, dtypes, shapes;
`x` and `t` first) and it has one output shaped like x, ideally with a dynamic batch (a fixed one
works, in chunks): the PyTorch export in export.py, or the MindSpore one.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from diffusion_core.architectures import SAMPLE, TIMESTEP, ModelInput
from diffusion_core.config import ModelConfig

# metadata_props written by the exporter: what the graph was made from, so a stale or foreign
# model.onnx is caught at load time instead of sampling silently from the wrong weights.
META_FORMAT_VERSION = "diffusion_toolkit.format_version"
META_WEIGHTS_SHA256 = "diffusion_toolkit.weights_sha256"
META_ARCHITECTURE = "diffusion_toolkit.architecture"
META_NETWORK_CONFIG = "diffusion_toolkit.network_config"
META_UNET_CONFIG = "diffusion_toolkit.unet_config"   # format 1 exports: the Unet config only
META_EXPORTER = "diffusion_toolkit.exporter"

EXPORT_COMMAND = "python -m backends.onnx.export <folder>"

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64}
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "layout", "all")


class OnnxModelMismatch(ValueError):
    """A model.onnx that does not fit the checkpoint's config or weights; says how to fix it."""


def weights_fingerprint(weights: Mapping[str, np.ndarray]) -> str:
    """sha256 of the canonical float32 weights (names, shapes and bytes, in name order).

    Framework-neutral on purpose: the PyTorch and MindSpore exporters and this loader all hash
    the checkpoint's safetensors arrays, so any of them can tell whether a graph is stale.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], dtype="<f4")
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def graph_type(spec: ModelInput) -> dict[str, type]:
    """The ONNX element types a graph input may have for a declared input, and their NumPy types."""
    return _FLOAT_TYPES if spec.dtype == "float32" else _INT_TYPES


def physical_cores() -> int:
    """Physical cores this process may use. Hyper-threads share one core's FPUs, so an extra
    intra-op thread per hyper-thread mostly adds synchronisation, not arithmetic; and threads
    beyond the CPU affinity or a container's CPU quota only queue for the same cores."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil
        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = _physical_cores_from_proc()
    return max(1, min(allowed, physical or allowed, _cgroup_cpu_quota() or allowed))


def _cgroup_cpu_quota() -> Optional[int]:
    """CPUs granted by a cgroup v2 quota (docker --cpus, Kubernetes limits), rounded up."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def _physical_cores_from_proc() -> Optional[int]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores, socket = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            socket = value.strip()
        elif key.strip() == "core id":
            cores.add((socket, value.strip()))
    return len(cores) or None


@dataclass(frozen=True)
class RuntimeOptions:
    """How an ONNX Runtime session runs. The defaults were chosen with bench/onnx_speed.py
    (default Unet, 16x1x28x28, 2 threads, a shared 2-core machine: figures in its docstring)."""

    threads: Optional[int] = None    # intra-op threads; None = physical cores (see physical_cores)
    # Spinning keeps idle worker threads busy-waiting for the next operator: a little lower latency
    # on a machine of our own, but on a shared one (CI, a Gradio server next to training, tests in
    # parallel) the spinning threads steal the cores that other processes, or our own other
    # threads, need (measured 1.7x slower there). So it is off unless asked for.
    allow_spinning: bool = False
    # Denormal floats (tiny values late in sampling) are several times slower on x86; flushing
    # them to zero changes results by less than float32 rounding. PyTorch's adapter does the same.
    flush_denormals: bool = True
    # Graph optimisation: disabled | basic | extended | layout | all. Only "all" adds the NCHWc
    # convolution layout, worth ~1.5x over "extended" and "basic" on the Unet.
    optimization: str = "all"
    # Where ORT writes its optimised graph (once, at session creation). Such a file holds
    # machine-specific fused kernels: load it with optimization="disabled", on the same machine.
    # It only saves start-up time (tens of ms here); inference speed is the same.
    save_optimized_to: Optional[str] = None
    device: Optional[str] = None     # "cpu", "cuda", "cuda:N"; None = CUDA when ORT has it

    def __post_init__(self) -> None:
        if self.optimization not in _OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {', '.join(_OPTIMIZATION_LEVELS)}, "
                             f"got {self.optimization!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def cuda_available() -> bool:
    import onnxruntime as ort
    return "CUDAExecutionProvider" in ort.get_available_providers()


def choose_providers(device: Optional[str]) -> list[Any]:
    """ORT execution providers for `device`: CUDA first when wanted and installed, CPU always last
    (ORT runs there whatever the GPU provider cannot)."""
    wants_cuda = device.startswith("cuda") if device else cuda_available()
    if not wants_cuda:
        return ["CPUExecutionProvider"]
    if not cuda_available():
        raise RuntimeError("device 'cuda' needs onnxruntime-gpu (the installed onnxruntime has no "
                           "CUDAExecutionProvider); install it or use device 'cpu'")
    index = int(device.split(":", 1)[1]) if device and ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def session_options(options: RuntimeOptions):
    """onnxruntime.SessionOptions from our options; every setting here is a decision, not a default."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads or physical_cores()
    # One graph branch at a time: a Unet is a chain, so a second pool would only add threads.
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if options.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if options.flush_denormals:
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, {
        "disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
        "extended": "ORT_ENABLE_EXTENDED", "layout": "ORT_ENABLE_LAYOUT",
        "all": "ORT_ENABLE_ALL"}[options.optimization])
    if options.save_optimized_to:
        so.optimized_model_filepath = str(options.save_optimized_to)
    return so


def make_session(model: str | os.PathLike | bytes, options: RuntimeOptions = RuntimeOptions()):
    """An InferenceSession for a model file (or its bytes) with our options and providers."""
    import onnxruntime as ort
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(options),
                                providers=choose_providers(options.device))


def _describe(arg) -> str:
    dims = ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in arg.shape)
    return f"{arg.name} ({dims}) {arg.type}"


def _fixed_batch(arg) -> Optional[int]:
    """The batch size a graph was exported with, or None when its batch is dynamic."""
    return arg.shape[0] if arg.shape and isinstance(arg.shape[0], int) else None


def check_session(session, config: ModelConfig, *, where: str = "model.onnx") -> None:
    """Refuse a graph whose inputs/outputs cannot serve this config, naming what differs.

    Only the interface is checked, against the architecture's declared inputs (names, ranks, fixed
    sizes, dynamic batch, element types), so graphs from any exporter pass if they keep it.
    """
    declared = config.inputs
    graph_inputs = {arg.name: arg for arg in session.get_inputs()}
    problems = []
    missing = [i.name for i in declared if i.name not in graph_inputs]
    extra = [n for n in graph_inputs if n not in {i.name for i in declared}]
    if missing:
        problems.append(f"missing input(s) {missing}")
    if extra:
        problems.append(f"unexpected input(s) {extra}")
    sample = declared[0]
    fixed_batch = _fixed_batch(graph_inputs[sample.name]) if sample.name in graph_inputs else None

    def check_shape(arg, spec_shape, what: str) -> None:
        shape = list(arg.shape)
        if len(shape) != len(spec_shape):
            problems.append(f"{what} has rank {len(shape)}, expected {len(spec_shape)}: {_describe(arg)}")
            return
        if isinstance(shape[0], int) and fixed_batch is not None and shape[0] != fixed_batch:
            problems.append(f"{what} has a fixed batch of {shape[0]}, input {sample.name!r} of {fixed_batch}")
        for axis, (got, want) in enumerate(zip(shape[1:], spec_shape[1:]), start=1):
            if isinstance(got, int) and got != want:
                problems.append(f"{what} has size {got} on axis {axis}, the config needs {want}")

    for spec in declared:
        arg = graph_inputs.get(spec.name)
        if arg is None:
            continue
        what = f"input {spec.name!r}"
        if spec.role == TIMESTEP:  # (batch,) or (batch, 1), float: fractional t is part of the contract
            if len(arg.shape) not in (1, 2) or (len(arg.shape) == 2 and arg.shape[1] not in (1, None, "1")):
                problems.append(f"{what} must be shaped (batch,) or (batch, 1): {_describe(arg)}")
        else:
            check_shape(arg, spec.shape, what)
        if arg.type not in graph_type(spec):
            problems.append(f"{what} has type {arg.type}, expected {spec.dtype}")
    outputs = session.get_outputs()
    if len(outputs) != 1:
        problems.append(f"the graph has {len(outputs)} outputs, expected one")
    else:
        check_shape(outputs[0], sample.shape, f"output {outputs[0].name!r}")
        if outputs[0].type not in _FLOAT_TYPES:
            problems.append(f"output {outputs[0].name!r} has type {outputs[0].type}, expected float32")
    if problems:
        raise OnnxModelMismatch(
            f"{where} does not fit this checkpoint ({config.architecture.summary(config.network)}, "
            f"inputs {[i.name for i in declared]}): {'; '.join(problems)}. Graph: inputs "
            f"{[_describe(a) for a in session.get_inputs()]}, outputs "
            f"{[_describe(a) for a in outputs]}. Re-export it with `{EXPORT_COMMAND}`")


def recorded_network(meta: Mapping[str, str]) -> Optional[tuple[str, str]]:
    """(architecture, network config JSON) a graph was stamped with; format-1 stamps name the Unet."""
    if META_NETWORK_CONFIG in meta:
        return meta.get(META_ARCHITECTURE, "unet"), meta[META_NETWORK_CONFIG]
    if META_UNET_CONFIG in meta:
        return "unet", meta[META_UNET_CONFIG]
    return None


def check_provenance(session, config: ModelConfig, weights: Optional[Mapping[str, np.ndarray]],
                     *, where: str = "model.onnx") -> None:
    """Refuse a graph whose metadata says it was exported from another config or other weights.

    A graph without our metadata (another tool's export) loads with a warning: its interface was
    checked, but nothing can prove its weights are the checkpoint's.
    """
    meta = session.get_modelmeta().custom_metadata_map
    if META_WEIGHTS_SHA256 not in meta:
        warnings.warn(f"{where} carries no {META_WEIGHTS_SHA256} metadata, so it cannot be checked "
                      f"against model.safetensors; re-export with `{EXPORT_COMMAND}` to make it "
                      "checkable", stacklevel=3)
        return
    fix = f"model.safetensors changed after the export; re-export with `{EXPORT_COMMAND}`"
    recorded = recorded_network(meta)
    if recorded is not None and not _same_network(recorded, config):
        raise OnnxModelMismatch(f"{where} was exported from a different network ({recorded[0]}: "
                                f"{recorded[1]}) than config.json's ({config.architecture.name}: "
                                f"{config.network_json()}); {fix}")
    if weights is not None:
        found = weights_fingerprint(weights)
        if meta[META_WEIGHTS_SHA256] != found:
            raise OnnxModelMismatch(
                f"{where} was exported from other weights (sha256 {meta[META_WEIGHTS_SHA256][:12]}...) "
                f"than model.safetensors (sha256 {found[:12]}...); {fix}")


def _same_network(recorded: tuple[str, str], config: ModelConfig) -> bool:
    """Whether a stamp describes config's network; parsed, so that fields added to a config since
    the export (at their defaults) still match."""
    name, text = recorded
    if name != config.architecture.name:
        return False
    try:
        return config.architecture.parse_config(json.loads(text)) == config.network
    except (ValueError, TypeError):  # unparsable, or a ConfigError: not this network
        return False


class OnnxDenoiserModel:
    """An ONNX Runtime session behind the model contract: `model(x, t, **inputs) -> raw`.

    x is a float32 NumPy array (B, C, H, W) (the core's NumpyOps tensors), t a Python float,
    possibly fractional, shared by the batch; inputs are the optional inputs the config declares
    (missing ones get their declared defaults: the graph takes all of them). `session.run` is
    thread-safe and nothing else is kept between calls, so one instance serves concurrent requests.
    """

    def __init__(self, session, config: ModelConfig):
        check_session(session, config)
        self.session, self.config = session, config
        self.declared = config.inputs
        graph_inputs = {arg.name: arg for arg in session.get_inputs()}
        self._types = {spec.name: graph_type(spec)[graph_inputs[spec.name].type] for spec in self.declared}
        timestep = next(spec for spec in self.declared if spec.role == TIMESTEP)
        self._t_name, self._t_rank = timestep.name, len(graph_inputs[timestep.name].shape)
        self._sample = next(spec for spec in self.declared if spec.role == SAMPLE)
        self._extra = [spec for spec in self.declared if spec.role not in (SAMPLE, TIMESTEP)]
        self.fixed_batch = _fixed_batch(graph_inputs[self._sample.name])
        self.output_name = session.get_outputs()[0].name
        self.providers = session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: np.ndarray, t: float, **inputs: np.ndarray) -> np.ndarray:
        if x.ndim != len(self._sample.shape) or tuple(x.shape) != self._sample.concrete_shape(x.shape[0]):
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self._sample.shape[1:]))}) "
                             f"for this model, got {tuple(x.shape)}")
        unknown = sorted(set(inputs) - {spec.name for spec in self._extra})
        if unknown:
            raise ValueError(f"this model takes no input(s) {unknown}; it declares "
                             f"{[spec.name for spec in self._extra] or 'none besides x and t'}")
        feeds = {spec.name: (np.asarray(inputs[spec.name]) if inputs.get(spec.name) is not None
                             else spec.default(x.shape[0])) for spec in self._extra}
        for spec in self._extra:
            if tuple(feeds[spec.name].shape) != spec.concrete_shape(x.shape[0]):
                raise ValueError(f"input {spec.name!r} must have shape {spec.concrete_shape(x.shape[0])}, "
                                 f"got {tuple(feeds[spec.name].shape)}")
        feeds[self._sample.name] = x
        n = self.fixed_batch
        if n is None or x.shape[0] == n:
            return self._run(feeds, t)
        # A graph with a fixed batch (some exporters cannot emit a dynamic one) runs in chunks of
        # its size; the last chunk is padded with zeros, harmless since samples never mix in eval.
        chunks = []
        for start in range(0, x.shape[0], n):
            part = {name: a[start:start + n] for name, a in feeds.items()}
            real = part[self._sample.name].shape[0]
            part = {name: np.concatenate([a, np.zeros((n - real,) + a.shape[1:], a.dtype)])
                    for name, a in part.items()}
            chunks.append(self._run(part, t)[:real])
        return np.concatenate(chunks)

    def _run(self, feeds: dict[str, np.ndarray], t: float) -> np.ndarray:
        batch = feeds[self._sample.name].shape[0]
        run_feeds = {name: np.ascontiguousarray(a, dtype=self._types[name]) for name, a in feeds.items()}
        run_feeds[self._t_name] = np.full((batch,) if self._t_rank == 1 else (batch, 1), t,
                                          dtype=self._types[self._t_name])
        out = self.session.run([self.output_name], run_feeds)[0]
        return out.astype(np.float32, copy=False)


def load_onnx_model(model_path: str | os.PathLike | bytes, config: ModelConfig,
                    weights: Optional[Mapping[str, np.ndarray]] = None,
                    options: RuntimeOptions = RuntimeOptions(), *,
                    where: Optional[str] = None) -> OnnxDenoiserModel:
    """Session + checks + adapter. weights: the checkpoint's, to prove the graph is not stale."""
    where = where or (str(model_path) if not isinstance(model_path, bytes) else "the ONNX graph")
    choose_providers(options.device)  # a missing GPU provider is the installation's fault, not the file's
    try:
        session = make_session(model_path, options)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise OnnxModelMismatch(f"ONNX Runtime cannot load {where} ({type(e).__name__}: {e}); the "
                                f"file is corrupt or from a newer exporter: re-export with "
                                f"`{EXPORT_COMMAND}`") from e
    model = OnnxDenoiserModel(session, config)  # the interface first: its errors are plainer
    check_provenance(session, config, weights, where=where)
    return model


__all__ = ["EXPORT_COMMAND", "OnnxDenoiserModel", "OnnxModelMismatch", "RuntimeOptions",
           "check_provenance", "check_session", "choose_providers", "cuda_available", "graph_type",
           "load_onnx_model", "make_session", "physical_cores", "recorded_network",
           "weights_fingerprint"]
