"""MindSpore beside PyTorch in one process: Unet forward, sampling and a training step, CPU.

    python bench/mindspore_vs_pytorch.py                     # default Unet, batch 16x1x28x28
    python bench/mindspore_vs_pytorch.py --repeats 10 --sample-steps 20 --json out.json

Both frameworks get the same canonical weights and inputs. Each figure is the median of --repeats
timed calls after warm-up (MindSpore graph compilation is reported apart). The training step is
each framework's own trainer (backends/*/train.py) doing one optimizer step: draws, forward,
backward, clipping, AdamW and EMA. PyTorch runs first, then MindSpore (prepare() pins the oneDNN
ISA only for MindSpore). Thread counts are the frameworks' defaults unless --threads is given.

Measured (2026-11, shared 2-core AMD EPYC, AVX2 only, MindSpore 2.10.0, torch 2.13, --threads 1,
four runs): MindSpore/PyTorch forward 1.2-2.0x, 10 DDIM steps 1.55-1.8x, training step 2.1-2.4x.
With default threads PyTorch's two OpenMP threads stall when another process holds a core (one
run: forward 3460 ms vs MindSpore 357 ms), so compare with --threads 1 on a busy machine.
Where MindSpore's time goes (mindspore.Profiler, training step): Conv2DBackpropFilter 42%,
Conv2DBackpropInput 17%, Conv2D 10%, GroupNorm + GroupNormGrad 14%. ONEDNN_VERBOSE shows why:
MindSpore runs its CPU convolutions in plain NCHW through oneDNN's gemm (im2col) kernels
(`x64:gemm:jit`), where PyTorch gets blocked `jit:avx2` kernels; MindSpore's NHWC format is
GPU-only. Its GroupNorm kernel is ~20x PyTorch's (6 ms vs 0.3 ms on 16x32x28x28), and spelling it
out with reshape/mean/sqrt is no faster. Not fixable from Python; graph mode (jit) already gives
3-4x over PyNative, and the optimizer step was made one flat-vector graph (train_step.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import build_network  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.training.loop import TrainingLoop  # noqa: E402
from diffusion_core.data import Dataset  # noqa: E402
from diffusion_core.samplers import sample  # noqa: E402
from diffusion_core.training.config import TrainConfig  # noqa: E402
from timing import timed  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--threads", type=int, default=0, help="threads per framework (0: default)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    import backends.pytorch as bt
    from backends.pytorch import distributed
    from backends.pytorch.engine import TorchEngine

    cfg = UnetConfig()
    model_cfg = ModelConfig(network=cfg)
    schedule = model_cfg.diffusion.make_schedule()
    shape = (args.batch, cfg.channels, cfg.image_size, cfg.image_size)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    images = np.clip(rng.standard_normal((256,) + shape[1:], dtype=np.float32), -1, 1)
    dataset = Dataset(images=images, labels=None, name="random")
    train_cfg = TrainConfig(model=model_cfg, batch_size=args.batch, out="/tmp/bench-unused")
    results: dict = {"config": "UnetConfig() default", "batch": list(shape),
                     "sampler": args.sampler, "sample_steps": args.sample_steps}

    # --- PyTorch ----------------------------------------------------------------------------
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = build_network("pytorch", cfg).eval()
    weights = bt.state_to_numpy(reference)
    torch_model = bt.TorchDenoiserModel(reference)
    tx = torch_model.ops.asarray(x)
    torch_model(tx, 500.0)
    results["pytorch_forward_s"] = timed(lambda: torch_model(tx, 500.0), args.repeats)
    sample_kwargs = dict(sampler=args.sampler, steps=args.sample_steps, shape=shape, seed=1)
    results["pytorch_sampling_s"] = timed(
        lambda: sample(torch_model, schedule, ops=torch_model.ops, **sample_kwargs),
        max(1, args.repeats // 2))
    trainer = TrainingLoop(train_cfg, dataset, TorchEngine(train_cfg, dataset, distributed.Dist(),
                                                           torch.device("cpu")), "bench")
    trainer.train_step()
    results["pytorch_train_step_s"] = timed(lambda: trainer.engine.mean_loss([trainer.train_step()[0]]),
                                            args.repeats)

    # --- MindSpore --------------------------------------------------------------------------
    import backends.mindspore as bm
    from backends.mindspore.engine import MindSporeEngine
    bm.prepare(num_threads=args.threads)
    unet = bm.build_network(cfg)
    bm.load_state_from_numpy(unet, weights)
    graph_model = bm.MindSporeDenoiserModel(unet, graph=True)
    pynative_model = bm.MindSporeDenoiserModel(unet, graph=False)
    mx = graph_model.ops.asarray(x)
    start = time.perf_counter()
    graph_model(mx, 500.0).asnumpy()
    results["mindspore_compile_forward_s"] = time.perf_counter() - start
    results["mindspore_forward_s"] = timed(lambda: graph_model(mx, 500.0).asnumpy(), args.repeats)
    pynative_model(mx, 500.0).asnumpy()
    results["mindspore_pynative_forward_s"] = timed(lambda: pynative_model(mx, 500.0).asnumpy(),
                                                    args.repeats)
    diff = np.abs(graph_model(mx, 500.0).asnumpy() - torch_model(tx, 500.0).numpy()).max()
    results["forward_max_abs_diff"] = float(diff)
    results["mindspore_sampling_s"] = timed(
        lambda: sample(graph_model, schedule, ops=graph_model.ops, **sample_kwargs),
        max(1, args.repeats // 2))
    ms_trainer = TrainingLoop(train_cfg, dataset, MindSporeEngine(train_cfg, dataset), "bench")
    start = time.perf_counter()
    ms_trainer.train_step()
    results["mindspore_compile_train_step_s"] = time.perf_counter() - start
    results["mindspore_train_step_s"] = timed(ms_trainer.train_step, args.repeats)

    print(f"Unet {cfg.dim}x{list(cfg.dim_mults)}, batch {'x'.join(map(str, shape))}, median of "
          f"{args.repeats}; MindSpore graph mode (mindspore.jit)")
    print(f"{'':24s}{'PyTorch':>10s}{'MindSpore':>11s}{'ratio':>8s}")
    for what in ("forward", "sampling", "train_step"):
        t, m = results[f"pytorch_{what}_s"], results[f"mindspore_{what}_s"]
        label = what if what != "sampling" else f"sampling ({args.sample_steps} {args.sampler})"
        print(f"{label:24s}{t * 1e3:8.1f}ms{m * 1e3:9.1f}ms{m / t:7.2f}x")
    print(f"MindSpore PyNative forward {results['mindspore_pynative_forward_s'] * 1e3:.1f} ms; "
          f"compiling: forward {results['mindspore_compile_forward_s']:.1f} s, training step "
          f"{results['mindspore_compile_train_step_s']:.1f} s; forward max |diff| "
          f"{results['forward_max_abs_diff']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
