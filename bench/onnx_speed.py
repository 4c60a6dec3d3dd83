"""ONNX Runtime beside PyTorch eager on the same weights: forward latency, sampling speed, accuracy.

    python bench/onnx_speed.py                          # default Unet, 16x1x28x28, 2 threads each
    python bench/onnx_speed.py --sections core          # only ORT vs PyTorch
    python bench/onnx_speed.py --checkpoint runs/fashion/model --json out.json

Sections:
  core       forward latency and DDIM images/s, ORT (default RuntimeOptions) vs PyTorch eager
             (torch.set_flush_denormal(True)), as ratios; parity of outputs and of final images
             for 20- and 50-step DDIM and DPM++(2M) with the same seed.
  options    graph optimisation levels, spinning, thread count, and a pre-optimised model file
             (saved once by ORT, loaded with optimisations disabled): session start-up and latency.
  precision  fp16 (weights and activations, float32 inputs/outputs), int8 dynamic, int8 static
             (calibrated on a real sampling trajectory), bf16: speed and accuracy cost against
             float32 (max abs difference of outputs and of final 20-step DDIM images).

Timings interleave the variants round by round and report medians, so a load spike on a shared
machine hits every variant alike; the load average is printed. On a shared machine PyTorch's
OpenMP threads busy-wait by default and lose 3x or more to the other processes; ORT does not spin
(RuntimeOptions.allow_spinning=False). For PyTorch without spinning run with
OMP_WAIT_POLICY=PASSIVE (read when torch is imported; the first line says which was used).
Without --checkpoint the weights
are PyTorch's initialisation (seed 0): speed does not depend on them, and accuracy costs are shown
against outputs of ~0.2 standard deviation.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from backends.onnx.export import add_metadata, export_pytorch_network, serialize_checked  # noqa: E402
from backends.onnx.runtime import RuntimeOptions, load_onnx_model  # noqa: E402
from backends import build_network  # noqa: E402
from backends.pytorch import TorchDenoiserModel, load_state_from_numpy, state_to_numpy  # noqa: E402
from diffusion_core import sample  # noqa: E402
from diffusion_core.config import ModelConfig  # noqa: E402

RESULTS: dict = {}
ort.set_default_logger_severity(3)  # ORT's notes (e.g. "hardware specific optimisations") are known
# numpy notices the flush-to-zero mode set below whenever it builds float32 limits: expected here.
warnings.filterwarnings("ignore", message="The value of the smallest subnormal")


def interleaved_ms(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median milliseconds per call of each fn, timing them in turn each round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def machine_line(threads: int) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu}; {os.cpu_count()} logical CPUs, load average {load[0]:.1f} "
            f"({'shared: expect noise' if load[0] > 1.5 else 'quiet'}); {threads} threads each; "
            f"torch {torch.__version__} (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
            f"onnxruntime {ort.__version__}, numpy {np.__version__}")


class Setup:
    """The weights, the PyTorch model, the float32 ONNX file and shared inputs."""

    def __init__(self, args, folder: Path):
        if args.checkpoint:
            from diffusion_core.checkpoint import load_checkpoint
            ck = load_checkpoint(args.checkpoint)
            self.config, self.weights = ck.config, ck.weights
        else:
            self.config = ModelConfig()
            torch.manual_seed(0)
            self.weights = state_to_numpy(build_network("pytorch", self.config.network))
        unet = build_network("pytorch", self.config.network)
        load_state_from_numpy(unet, self.weights)
        self.torch_model = TorchDenoiserModel(unet, self.config.inputs, "cpu")
        start = time.perf_counter()
        proto = export_pytorch_network(unet, self.config)
        add_metadata(proto, self.config, self.weights, exporter=f"torch {torch.__version__}")
        self.onnx_path = folder / "model.onnx"
        self.onnx_path.write_bytes(serialize_checked(proto))
        self.export_s = time.perf_counter() - start
        self.threads, self.folder, self.args = args.threads, folder, args
        self.shape = (args.batch_size, *self.config.sample_shape)
        self.x = np.random.default_rng(0).standard_normal(self.shape, dtype=np.float32)

    def ort_model(self, path=None, **options):
        options = RuntimeOptions(**{"threads": self.threads, "device": "cpu", **options})
        return load_onnx_model(path or self.onnx_path, self.config, None, options)

    def torch_forward(self, x, t):
        return self.torch_model(torch.from_numpy(x), t).numpy()

    def images(self, model, ops=None, sampler="ddim", steps=20, batch=4, seed=0, record=None):
        fn = model if record is None else (lambda x, t, **c: (record.append((x.copy(), t)), model(x, t, **c))[1])
        kwargs = {} if ops is None else {"ops": ops}
        return sample(fn, self.config.diffusion.make_schedule(), sampler=sampler, steps=steps,
                      shape=(batch, *self.config.sample_shape), seed=seed,
                      prediction_type=self.config.diffusion.prediction_type,
                      model_inputs=self.config.inputs, **kwargs)


def report(section: str, name: str, line: str, **values) -> None:
    RESULTS.setdefault(section, {})[name] = values
    print(f"  {name:<34} {line}")


def core(s: Setup) -> None:
    print(f"\n[core] {s.shape} float32, export took {s.export_s:.1f} s")
    ours, ref = s.ort_model(), s.torch_model
    t = 500.0
    ms = interleaved_ms({"pytorch": lambda: s.torch_forward(s.x, t), "ort": lambda: ours(s.x, t)},
                        s.args.repeats)
    report("core", "forward ms, PyTorch eager", f"{ms['pytorch']:8.1f}", ms=ms["pytorch"])
    report("core", "forward ms, ONNX Runtime", f"{ms['ort']:8.1f}  ({ms['pytorch'] / ms['ort']:.2f}x "
           "PyTorch's speed)", ms=ms["ort"], speedup=ms["pytorch"] / ms["ort"])
    batch, steps = s.shape[0], s.args.steps
    runs = {"pytorch": lambda: s.images(ref, ref.ops, steps=steps, batch=batch),
            "ort": lambda: s.images(ours, steps=steps, batch=batch)}
    sec = {k: v / 1e3 for k, v in interleaved_ms(runs, s.args.sampling_repeats, warmup=1).items()}
    for name, label in (("pytorch", "PyTorch eager"), ("ort", "ONNX Runtime")):
        report("core", f"DDIM {steps} steps, {label}", f"{batch / sec[name]:8.1f} images/s",
               images_per_s=batch / sec[name])
    report("core", "sampling speed ratio ORT/PyTorch", f"{sec['pytorch'] / sec['ort']:8.2f}x",
           ratio=sec["pytorch"] / sec["ort"])
    worst = max(float(np.abs(ours(s.x, tt) - s.torch_forward(s.x, tt)).max()) for tt in (0.0, 500.5, 999.0))
    report("core", "max |ORT - PyTorch|, one forward", f"{worst:.2e}", max_abs=worst)
    for sampler in ("ddim", "dpmpp_2m"):
        for n in (20, 50):
            diff = float(np.abs(s.images(ours, sampler=sampler, steps=n)
                                - s.images(ref, ref.ops, sampler=sampler, steps=n)).max())
            report("core", f"max |image diff|, {sampler} {n} steps", f"{diff:.2e}", max_abs=diff)


def options(s: Setup) -> None:
    print("\n[options] session start-up (median of 3) and forward latency, ONNX Runtime")
    variants = {"all (default)": {}, "extended": {"optimization": "extended"},
                "basic": {"optimization": "basic"}, "disabled": {"optimization": "disabled"},
                "all + spinning": {"allow_spinning": True}, "all, 1 thread": {"threads": 1},
                "all, denormals kept": {"flush_denormals": False}}
    pre = s.folder / "model.ort-optimized.onnx"
    s.ort_model(save_optimized_to=str(pre))  # ORT writes its optimised graph once, here
    opset21 = s.folder / "model.opset21.onnx"  # GroupNormalization as one op instead of 5
    unet = s.torch_model.network
    proto = export_pytorch_network(unet, s.config, opset=21)
    add_metadata(proto, s.config, s.weights, exporter=f"torch {torch.__version__}")
    opset21.write_bytes(serialize_checked(proto))
    files = {"pre-optimised file, disabled": (pre, {"optimization": "disabled"}),
             "opset 21 export, all": (opset21, {})}
    models, startup = {}, {}
    for name in list(variants) + list(files):
        path, kw = files[name] if name in files else (None, variants[name])
        times = []
        for _ in range(3):
            start = time.perf_counter()
            models[name] = s.ort_model(path, **kw)
            times.append((time.perf_counter() - start) * 1e3)
        startup[name] = float(np.median(times))
    ms = interleaved_ms({n: (lambda m=m: m(s.x, 500.0)) for n, m in models.items()}, s.args.repeats)
    for name in models:
        report("options", name, f"start {startup[name]:6.0f} ms   forward {ms[name]:7.1f} ms",
               startup_ms=startup[name], forward_ms=ms[name])


@contextlib.contextmanager
def inside(folder: Path):
    """ORT's quantisation tools drop temporary files into the working directory: keep them there."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def converted(s: Setup, kind: str, calibration) -> Path:
    """The float32 graph converted to `kind`; returns the new file."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out = s.folder / f"model.{kind}.onnx"
    prepared = s.folder / "model.prepared.onnx"
    if kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        onnx.save(convert_float_to_float16(onnx.load(s.onnx_path), keep_io_types=True), out)
        return out
    if not prepared.exists():  # shape inference + folding, as ORT recommends before quantising
        quant_pre_process(str(s.onnx_path), str(prepared), skip_symbolic_shape=True)
    if kind == "int8_dynamic":
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, per_channel=True)
        return out

    class Trajectory(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": x, "t": np.full((x.shape[0],), t, np.float32)} for x, t in calibration])

        def get_next(self):
            return next(self.feeds, None)
    formats = {"int8_static_qdq_conv": dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"]),
               "int8_static_qop_all": dict(quant_format=QuantFormat.QOperator)}
    quantize_static(prepared, out, Trajectory(), per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8, **formats[kind])
    return out


def bf16_note() -> str:
    """Whether ORT's CPU provider runs a bfloat16 Conv at all (the Unet is mostly Conv)."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "bf16_conv",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 1, 4, 4]),
         helper.make_tensor_value_info("w", TensorProto.BFLOAT16, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 1, 4, 4])])
    try:
        ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
                             .SerializeToString(), providers=["CPUExecutionProvider"])
        return "a bf16 Conv loads on the CPU provider"
    except Exception as e:  # noqa: BLE001 - the message is the finding
        return f"ORT CPU cannot run a bf16 Conv: {str(e).split('Type Error:')[-1].strip()[:110]}"


def precision(s: Setup) -> None:
    print("\n[precision] against float32 ONNX Runtime; images: DDIM 20 steps, batch 4, same seed")
    base = s.ort_model()
    calibration = []
    base_images = s.images(base, record=calibration)  # 20 (x_t, t) pairs of a real trajectory
    ts = (999.0, 500.0, 10.0)
    base_out = [base(s.x, t) for t in ts]
    spread = float(np.std(base_out[1]))
    models = {"fp32": base}
    for kind in ("fp16", "int8_dynamic", "int8_static_qdq_conv", "int8_static_qop_all"):
        start = time.perf_counter()
        try:
            with inside(s.folder):
                path = converted(s, kind, calibration)
            models[kind] = s.ort_model(path)
        except Exception as e:  # noqa: BLE001 - a failed conversion is a result to report
            report("precision", kind, f"failed: {type(e).__name__}: {str(e)[:120]}", error=str(e))
            continue
        RESULTS.setdefault("convert_s", {})[kind] = time.perf_counter() - start
    ms = interleaved_ms({n: (lambda m=m: m(s.x, 500.0)) for n, m in models.items()}, s.args.repeats)
    for name, model in models.items():
        out_diff = max(float(np.abs(model(s.x, t) - b).max()) for t, b in zip(ts, base_out))
        img_err = np.abs(s.images(model) - base_images)
        img_diff, img_mean = float(img_err.max()), float(img_err.mean())
        report("precision", name, f"forward {ms[name]:7.1f} ms ({ms['fp32'] / ms[name]:.2f}x)  "
               f"max|out diff| {out_diff:.1e} (out std {spread:.2f})  image diff max {img_diff:.1e} "
               f"mean {img_mean:.1e}", forward_ms=ms[name], out_diff=out_diff, image_diff=img_diff,
               image_mean_diff=img_mean)
    report("precision", "bf16 (ONNX Runtime)", bf16_note())
    # bf16's accuracy cost, measured where bf16 runs: PyTorch autocast on the same weights.
    xt = torch.from_numpy(s.x)
    unet = s.torch_model.network

    def bf16_forward(t):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return unet(xt, torch.full((xt.shape[0],), t)).float().numpy()
    out_diff = max(float(np.abs(bf16_forward(t) - b).max()) for t, b in zip(ts, base_out))
    bf_ms = interleaved_ms({"bf16": lambda: bf16_forward(500.0)}, max(3, s.args.repeats // 4))["bf16"]
    report("precision", "bf16 (PyTorch autocast)", f"forward {bf_ms:7.1f} ms  max|out diff| "
           f"{out_diff:.1e}", forward_ms=bf_ms, out_diff=out_diff)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (default: default config, seed-0 weights)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="threads for PyTorch and ORT alike")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per variant")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps for images/s")
    p.add_argument("--sampling-repeats", type=int, default=3)
    p.add_argument("--sections", default="core,options,precision")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before any parallel work
        torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)
    print(machine_line(args.threads))
    with tempfile.TemporaryDirectory() as folder:
        s = Setup(args, Path(folder))
        for section in args.sections.split(","):
            {"core": core, "options": options, "precision": precision}[section](s)
    RESULTS["machine"] = machine_line(args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
