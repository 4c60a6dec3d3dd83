"""Time to quality: the wall time of 16 images against the FD the same settings reach.

    python bench/time_to_quality.py --threads 2                       # both cores, nothing else running
    python bench/time_to_quality.py --threads 1 --backends pytorch,onnxruntime --repeats 3

For each backend (and bf16 on PyTorch where the CPU has bf16 instructions) and each sampler setting,
the median wall time of sampling 16 images of the shipped model (after one untimed call), as a
user's `load_model(...).sample(16, ...)` runs it. Each setting's FD is read from the quality runs
of the same model (bench/results/sampler_quality.json and ddpm1000/, 500 samples, one harness;
fp32 images are the same on every backend, so one FD serves all of them); a setting without a
measured FD is timed and marked "-". References timed in the same run at the same steps:
diffusers' DDPMPipeline with its DPMSolverMultistepScheduler on a UNet2DModel of equal FLOPs
(bench/unet_forward.py's, random weights: speed does not depend on them), and lucidrains'
GaussianDiffusion DDIM sampler on its Unet of the same layout. The goal of the speed issue: a
setting within 10% of DDPM-1000's FD in at most 0.5 s. Writes time_to_quality.{json,txt,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")   # lucidrains' sampler draws a progress bar per call
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))        # foreign_packages: lucidrains' import
sys.path.insert(0, str(ROOT / "bench"))


from diffusion_core.cpu import bf16_instructions, cpu_flags  # noqa: E402
from diffusion_core.samplers import recommended_settings  # noqa: E402
from diffusion_core.files import write_atomically  # noqa: E402
from timing import timed  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# (sampler, steps, spacing as sampler_quality names it); "recommended" uses fitted steps where the model has them
SETTINGS = [("unipc", 5, "optimized"), ("unipc", 8, "optimized"), ("unipc", 10, "optimized"),
            ("dpmpp_3m", 8, "optimized"), ("dpmpp_3m", 10, "optimized"), ("dpmpp_3m", 10, "logsnr"),
            ("unipc", 10, "logsnr"), ("dpmpp_2m", 10, "logsnr"), ("dpmpp_2m_sde", 20, "logsnr"),
            ("dpmpp_2m", 20, "logsnr")]


def measured_fd() -> tuple[dict, float | None]:
    """{(sampler, steps, spacing): FD} from sampler_quality.json, and DDPM-1000's FD."""
    fd = {}
    path = RESULTS / "sampler_quality.json"
    if path.is_file():
        for row in json.loads(path.read_text())["results"]:
            sampler, spacing = row["sampler"].split(" ", 1)
            fd[sampler, row["steps"], spacing] = row["fd"]
    ddpm = RESULTS / "ddpm1000" / "sampler_quality.json"
    reference = json.loads(ddpm.read_text())["results"][0]["fd"] if ddpm.is_file() else None
    return fd, reference


def ours(backends: list[str], threads: int, repeats: int) -> list[dict]:
    import torch
    torch.set_num_threads(threads)
    from backends import load_model
    from diffusion_core.checkpoint import load_checkpoint
    from diffusion_core.paths import default_model_dir
    checkpoint = load_checkpoint(default_model_dir())
    rows = []
    for backend in backends:
        precisions = ["fp32"] + (["bf16"] if backend == "pytorch" and bf16_instructions() else [])
        for precision in precisions:
            if backend == "onnxruntime":
                from backends.onnx.backend import OnnxRuntimeBackend
                from backends.onnx.runtime import RuntimeOptions
                model = OnnxRuntimeBackend(RuntimeOptions(threads=threads)).load(checkpoint)
            else:
                if backend == "mindspore":
                    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
                model = load_model(backend, checkpoint, precision=precision)
                # load_model applies the thread rule (one core left free) when the count in force
                # is torch's default, which --threads 2 on 2 cores is: ask again for what we time
                torch.set_num_threads(threads)
            for sampler, steps, spacing in SETTINGS:
                if spacing == "optimized" and steps not in checkpoint.config.fitted_timesteps.get(sampler, {}):
                    continue
                seconds = timed(lambda: model.sample(16, sampler=sampler, steps=steps, seed=0, spacing=spacing),
                                repeats, warmup=True)
                rows.append({"who": f"ours {backend} {precision}", "sampler": sampler, "steps": steps,
                             "spacing": spacing, "seconds": seconds})
                print(f"ours {backend:12s} {precision} {sampler:13s} {steps:3d} {spacing:10s} {seconds:6.3f} s",
                      flush=True)
    return rows


def references(steps_list: list[int], threads: int, repeats: int) -> list[dict]:
    import torch
    torch.set_num_threads(threads)
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler
    from foreign_packages import lucidrains
    from unet_forward import diffusers_unet, lucidrains_unet
    rows = []
    unet, _, _ = diffusers_unet(16)
    pipe = DDPMPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2"))
    pipe.set_progress_bar_config(disable=True)
    net, _, _ = lucidrains_unet(16)
    for steps in steps_list:
        seconds = timed(lambda: pipe(batch_size=16, num_inference_steps=steps, output_type="np",
                                     generator=torch.Generator().manual_seed(0)), repeats, warmup=True)
        rows.append({"who": "diffusers DDPMPipeline + DPM-Solver++", "steps": steps, "seconds": seconds})
        diffusion = lucidrains().GaussianDiffusion(net, image_size=28, timesteps=1000, sampling_timesteps=steps)
        diffusion.eval()
        with torch.inference_mode():
            lseconds = timed(lambda: diffusion.sample(batch_size=16), repeats, warmup=True)
        rows.append({"who": "lucidrains GaussianDiffusion DDIM", "steps": steps, "seconds": lseconds})
        print(f"references at {steps} steps: diffusers {seconds:.3f} s, lucidrains {lseconds:.3f} s", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="pytorch,onnxruntime,mindspore")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    import torch
    torch.set_flush_denormal(True)
    fd, ddpm = measured_fd()
    from diffusion_core.checkpoint import load_checkpoint
    from diffusion_core.paths import default_model_dir
    fitted = load_checkpoint(default_model_dir()).config.fitted_timesteps   # what "recommended" meant per cell
    rows = ours(args.backends.split(","), args.threads, args.repeats)
    refs = references(sorted({s for _, s, _ in SETTINGS}), args.threads, args.repeats)
    load = os.getloadavg()[0]
    lines = [f"CPU flags: {cpu_flags()}; {args.threads} thread(s); load average at the end {load:.2f}; "
             f"DDPM-1000 FD {ddpm if ddpm is None else round(ddpm, 2)} (10% above: "
             f"{'-' if ddpm is None else round(1.1 * ddpm, 2)})"]
    by_steps = {(r["who"], r["steps"]): r["seconds"] for r in refs}
    for row in rows:
        row["fd"] = fd.get((row["sampler"], row["steps"], row["spacing"]))
        if row["fd"] is None and row["spacing"] == recommended_settings(row["sampler"], row["steps"], fitted).get("spacing"):
            row["fd"] = fd.get((row["sampler"], row["steps"], "recommended"))   # the same cell, by its other name
        row["vs_ddpm1000"] = None if row["fd"] is None or ddpm is None else row["fd"] / ddpm
        row["vs_diffusers"] = row["seconds"] / by_steps["diffusers DDPMPipeline + DPM-Solver++", row["steps"]]
        row["vs_lucidrains"] = row["seconds"] / by_steps["lucidrains GaussianDiffusion DDIM", row["steps"]]
        quality = "-" if row["fd"] is None else f"{row['fd']:.2f}" + (
            "" if row["vs_ddpm1000"] is None else f" ({row['vs_ddpm1000']:.2f}x DDPM-1000)")
        lines.append(f"{row['who']:24s} {row['sampler']:13s} {row['steps']:3d} {row['spacing']:10s} "
                     f"{row['seconds']:6.3f} s  FD {quality:26s} time {row['vs_diffusers']:.2f}x diffusers', "
                     f"{row['vs_lucidrains']:.2f}x lucidrains'")
    lines += [f"{r['who']} {r['steps']} steps: {r['seconds']:.3f} s" for r in refs]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "time_to_quality.txt", ("\n".join(lines) + "\n").encode())
    write_atomically(out / "time_to_quality.json", json.dumps(
        {"cpu": cpu_flags(), "threads": args.threads, "load_average": load, "ddpm1000_fd": ddpm,
         "rows": rows, "references": refs}, indent=1).encode())
    plot(rows, ddpm, out / "time_to_quality.png")
    return 0


def plot(rows: list[dict], ddpm, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for who in dict.fromkeys(r["who"] for r in rows):
        pts = [(r["seconds"], r["fd"]) for r in rows if r["who"] == who and r["fd"] is not None]
        if pts:
            ax.scatter(*zip(*pts), label=who, s=18)
    if ddpm:
        ax.axhline(1.1 * ddpm, color="k", lw=0.6, ls="--", label="DDPM-1000 FD + 10%")
    ax.axvline(0.5, color="r", lw=0.6, ls=":", label="0.5 s")
    ax.set(xlabel="seconds for 16 images", ylabel="FD (shipped classifier, 500 samples)", xscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
