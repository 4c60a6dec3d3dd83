"""Training throughput of the PyTorch trainer: images/s, achieved GFLOP/s, and the share of the
machine's own matmul rate that this is.

    python bench/train_throughput.py                               # default Unet, 28x28, batch 64
    python bench/train_throughput.py --device cuda --batch-size 128 --bf16 --compile
    python bench/train_throughput.py --dim 8 --dim-mults 1,2 --groups 4 --image-size 16 --threads 1
    python bench/train_throughput.py --threads 1 --lucidrains     # + lucidrains' step, same run

It times the real `Trainer.train_step` (NumPy draws, host-to-device copies, forward, backward,
clipping, AdamW, EMA) on random images, so what it reports is what a run gets, minus sample grids
and checkpoints. FLOPs come from diffusion_core.architectures.unet.forward_flops; a training step costs
about 3 forward passes (the backward pass computes two products per forward product). The
reference is a large float32 torch.matmul measured in the same process under the same settings
(TF32 on CUDA, as the trainer enables it; bf16 too when --bf16), so the ratio says how much of the
machine the Unet uses: small convolutions and GroupNorms are far from matmul speed.

--lucidrains times, in the same process and on the same images, a training step of
denoising-diffusion-pytorch 2.x as its Trainer runs it (GaussianDiffusion's loss on their Unet of
the same layout: dim, dim_mults, full attention at the last level, the same heads; backward, grad-norm
clipping, Adam, their ema_pytorch EMA) and prints our GFLOP/s over theirs, each on its own
architecture's FLOPs (diffusion_core/architectures), i.e. the time ratio at equal FLOPs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # foreign_packages: lucidrains' import

import numpy as np  # noqa: E402
import torch  # noqa: E402

from backends.pytorch import distributed  # noqa: E402
from backends.pytorch.engine import TorchEngine  # noqa: E402
from backends.pytorch.train import configure_torch  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.architectures.unet import count_parameters, forward_flops  # noqa: E402
from diffusion_core.data import Dataset  # noqa: E402
from diffusion_core.training.config import TrainConfig  # noqa: E402
from diffusion_core.training.loop import TrainingLoop  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Sustained rate of an n x n x n matrix product (2 n^3 FLOPs), after one warm-up product."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
        if device.type == "cuda" and count % 10:
            continue
        _sync(device)
    _sync(device)
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def main() -> None:
    u = UnetConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--dim", type=int, default=u.dim)
    p.add_argument("--dim-mults", default=",".join(map(str, u.dim_mults)))
    p.add_argument("--groups", type=int, default=u.resnet_block_groups)
    p.add_argument("--self-condition", action="store_true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core this process may use)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--matmul-size", type=int, default=0, help="0: 2048 on CPU, 8192 on GPU")
    p.add_argument("--lucidrains", action="store_true", help="also time lucidrains' training step")
    args = p.parse_args()

    device = distributed.pick_device(args.device)
    threads = configure_torch(device, args.threads, 1)
    mults = tuple(int(m) for m in args.dim_mults.split(","))
    unet = UnetConfig(image_size=args.image_size, channels=args.channels, dim=args.dim, dim_mults=mults,
                      full_attn=(False,) * (len(mults) - 1) + (True,), resnet_block_groups=args.groups,
                      self_condition=args.self_condition)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(data="random", out=out, model=ModelConfig(network=unet), batch_size=args.batch_size,
                             bf16=args.bf16, device=str(device), sample_every=0, checkpoint_every=0)
        rng = np.random.default_rng(0)
        images = rng.uniform(-1, 1, (max(1024, 2 * args.batch_size), args.channels, args.image_size,
                                     args.image_size)).astype(np.float32)
        dataset = Dataset(images, None, "random")
        trainer = TrainingLoop(config, dataset, TorchEngine(config, dataset, distributed.Dist(), device,
                                                            compile_model=args.compile), "bench")
        for _ in range(args.warmup):
            trainer.train_step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            loss, _ = trainer.train_step()
        loss.item()
        _sync(device)
        elapsed = time.perf_counter() - start

    images_per_s = args.batch_size * args.steps / elapsed
    train_gflops = 3 * forward_flops(unet, args.batch_size) * args.steps / elapsed / 1e9
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    ref32 = matmul_gflops(device, torch.float32, n)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} thread(s)"
    print(f"device            {name} (torch {torch.__version__}, {os.cpu_count()} cores seen)")
    print(f"model             {unet.image_size}x{unet.image_size}x{unet.channels}, dim {unet.dim}, dim_mults "
          f"{list(mults)}, {count_parameters(unet) / 1e6:.2f} M parameters, "
          f"{forward_flops(unet, 1) / 1e9:.3f} GFLOP per image forward")
    print(f"step              batch {args.batch_size}, bf16 {args.bf16}, compile {args.compile}: "
          f"{1e3 * elapsed / args.steps:.1f} ms/step")
    print(f"training          {images_per_s:,.0f} images/s, {train_gflops:,.1f} GFLOP/s achieved")
    print(f"matmul fp32{'/tf32' if device.type == 'cuda' else ''} {n}^3  {ref32:,.1f} GFLOP/s  ->  "
          f"training reaches {100 * train_gflops / ref32:.1f}% of it")
    if args.bf16:
        ref16 = matmul_gflops(device, torch.bfloat16, n)
        print(f"matmul bf16 {n}^3  {ref16:,.1f} GFLOP/s  ->  training reaches {100 * train_gflops / ref16:.1f}%")
    if args.lucidrains:
        theirs = lucidrains_step_gflops(unet, images, args, device)
        print(f"lucidrains        {theirs:,.1f} GFLOP/s achieved on their Unet of the same layout  ->  "
              f"ours {train_gflops / theirs:.2f}x theirs at equal FLOPs")


def lucidrains_step_gflops(unet: UnetConfig, images: np.ndarray, args, device: torch.device) -> float:
    """GFLOP/s of denoising-diffusion-pytorch's training step (3 forwards' FLOPs per step, as ours)."""
    from foreign_packages import lucidrains
    from ema_pytorch import EMA
    from diffusion_core.architectures import get_architecture
    from diffusion_core.architectures.lucidrains_unet import LucidrainsUnetConfig
    ddp = lucidrains()
    n = len(unet.dim_mults)
    kw = dict(dim=unet.dim, dim_mults=unet.dim_mults, channels=unet.channels, full_attn=unet.full_attn,
              attn_heads=(unet.attn_heads,) * n, attn_dim_head=(unet.attn_dim_head,) * n)
    torch.manual_seed(0)
    net = ddp.Unet(**kw).to(device)
    diffusion = ddp.GaussianDiffusion(net, image_size=unet.image_size, timesteps=1000,
                                      objective="pred_v", beta_schedule="cosine").to(device)
    opt = torch.optim.Adam(diffusion.parameters(), lr=3e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.999, update_every=1).to(device)
    batches = torch.from_numpy(images).to(device).split(args.batch_size)

    def step(i: int) -> torch.Tensor:
        loss = diffusion(batches[i % (len(batches) - 1)])  # their loss takes images in [0, 1] ...
        loss.backward()                                    # ... and rescales; the cost is the same
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        return loss

    for i in range(args.warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    loss.item()
    _sync(device)
    elapsed = time.perf_counter() - start
    cfg = LucidrainsUnetConfig(image_size=unet.image_size, **kw)
    flops = get_architecture("lucidrains_unet").forward_flops(cfg, args.batch_size)
    return 3 * flops * args.steps / elapsed / 1e9


if __name__ == "__main__":
    main()
