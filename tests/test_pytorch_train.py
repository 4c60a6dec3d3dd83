"""The PyTorch trainer end to end on scikit-learn's digits at 8x8 with a tiny Unet (CPU, 1 thread).

Runs in-process through `main(argv)` where it can (importing torch again per test costs seconds);
subprocesses only where the exit code, stderr or a second process are what is being tested.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch trainer needs torch")

from diffusion_core.training import state as run_state  # noqa: E402
from backends.pytorch.train import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--data", "digits", "--image-size", "8", "--dim", "8", "--dim-mults", "1,2", "--groups", "4",
        "--batch-size", "16", "--num-threads", "1", "--sample-steps", "3", "--device", "cpu"]


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def _state(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(str(out / run_state.STATE_FILE))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """150 steps at a high learning rate, a loss logged at every step, one grid and an export."""
    out = tmp_path_factory.mktemp("run") / "digits"
    assert main(TINY + ["--steps", "150", "--lr", "1e-3", "--log-every", "1", "--sample-every", "100",
                        "--checkpoint-every", "0", "--out", str(out)]) == 0
    return out


def test_loss_falls(trained):
    losses = _losses(trained)
    assert len(losses) == 150 and np.isfinite(losses).all()
    # eps-prediction starts near 1 (the noise's variance); the tiny net learns most of it quickly
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20]), (losses[:20], losses[-20:])


def test_run_folder_and_export(trained):
    from backends import load_model
    from diffusion_core import list_samplers
    from diffusion_core.checkpoint import load_checkpoint
    from diffusion_core.training.config import load_run_config

    assert sorted(p.name for p in (trained / "samples").iterdir()) == ["step_0000100.png", "step_0000150.png"]
    assert load_run_config(trained).steps == 150
    checkpoint = load_checkpoint(trained / "model")
    notes = checkpoint.config.notes
    assert notes["dataset"] == "scikit-learn digits" and notes["steps"] == 150
    assert notes["training_command"].startswith("python -m backends.pytorch.train --data digits")
    assert (trained / "model" / "samples.png").is_file()
    ema = _state(trained)  # the export holds the EMA weights, not the live ones
    assert all(np.array_equal(ema[f"ema.{n}"], w) for n, w in checkpoint.weights.items())
    loaded = load_model("pytorch", trained / "model", device="cpu")
    for name in list_samplers():
        images = loaded.sample(batch_size=2, sampler=name, steps=3, seed=0)
        assert images.shape == (2, 1, 8, 8) and np.isfinite(images).all(), name


def test_resume_equals_uninterrupted(tmp_path):
    # Every source of randomness at once: dropout (torch RNG), self-conditioning coins, offset
    # noise, v-prediction with min-SNR weights, gradient accumulation, LR warm-up and cosine
    # decay, EMA warm-up.
    flags = TINY + ["--dropout", "0.1", "--self-condition", "--offset-noise", "0.1", "--prediction", "v",
                    "--loss-weighting", "min_snr", "--grad-accum", "2", "--warmup-steps", "3",
                    "--lr-decay", "cosine", "--lr-decay-steps", "7",
                    "--ema-warmup", "5", "--log-every", "4", "--sample-every", "0", "--checkpoint-every", "0"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(flags + ["--steps", "10", "--out", str(whole)]) == 0
    assert main(flags + ["--steps", "6", "--out", str(split)]) == 0        # interrupted at step 6
    assert main(flags + ["--steps", "10", "--out", str(split), "--resume"]) == 0
    a, b = _state(whole), _state(split)
    assert sorted(a) == sorted(b)
    for name in a:  # model, EMA, AdamW moments and RNG states: bitwise equal on CPU
        assert np.array_equal(a[name], b[name]), name
    assert _losses(whole)[-1] == _losses(split)[-1]


def test_resume_rewrites_a_missing_or_stale_export(tmp_path):
    import shutil
    from diffusion_core.checkpoint import load_checkpoint
    out = tmp_path / "run"
    run = TINY + ["--steps", "3", "--sample-every", "0", "--checkpoint-every", "0", "--out", str(out)]
    assert main(run) == 0
    want = load_checkpoint(out / "model").weights
    shutil.rmtree(out / "model")                       # a kill between the state and the export
    assert main(run + ["--resume"]) == 0
    again = load_checkpoint(out / "model")
    assert again.config.notes["steps"] == 3 and (out / "model" / "samples.png").is_file()
    assert all(np.array_equal(want[n], again.weights[n]) for n in want)


def test_init_from_starts_from_a_checkpoints_weights(trained, tmp_path, capsys):
    from diffusion_core.checkpoint import load_checkpoint
    start = load_checkpoint(trained / "model").weights
    out = tmp_path / "tuned"
    assert main(TINY + ["--steps", "1", "--lr", "1e-9", "--ema-decay", "0.5", "--ema-warmup", "0",
                        "--sample-every", "0", "--init-from", str(trained / "model"), "--out", str(out)]) == 0
    tuned = load_checkpoint(out / "model").weights
    # one step at a negligible learning rate: the weights are the checkpoint's, not a new start
    assert all(np.allclose(tuned[n], start[n], atol=1e-6) for n in start)
    assert main(TINY + ["--dim", "12", "--groups", "4", "--steps", "1", "--init-from", str(trained / "model"),
                        "--out", str(tmp_path / "other")]) == 2
    assert "differs from the flags'" in capsys.readouterr().err


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_resume_errors(tmp_path, capsys):
    out = tmp_path / "run"
    run = TINY + ["--steps", "2", "--sample-every", "0", "--out", str(out)]
    assert "does not exist" in _error(capsys, run + ["--resume"])
    assert main(run) == 0
    capsys.readouterr()
    assert "add --resume" in _error(capsys, run)                      # would overwrite the run
    err = _error(capsys, run + ["--resume", "--lr", "1e-3", "--dim", "12"])
    assert "lr: checkpoint 0.0002, now 0.001" in err and "model.network.dim: checkpoint 8, now 12" in err
    assert main(run + ["--resume", "--steps", "3", "--log-every", "1"]) == 0  # longer: allowed
    capsys.readouterr()
    state = out / run_state.STATE_FILE
    state.write_bytes(state.read_bytes()[:-100])                          # a torn file
    assert "truncated or corrupt" in _error(capsys, run + ["--resume", "--steps", "4"])


def test_config_errors_in_process(tmp_path, capsys):
    base = TINY + ["--steps", "1", "--out", str(tmp_path / "x")]
    assert "add --prediction v" in _error(capsys, base + ["--zero-terminal-snr"])
    assert "unknown sampler 'nope'" in _error(capsys, base + ["--sample-sampler", "nope"])
    assert "holds no images" in _error(capsys, base[:1] + [str(tmp_path)] + base[2:])
    assert "fewer than one global batch" in _error(capsys, base + ["--batch-size", "5000"])
    assert "p2_k" in _error(capsys, base + ["--loss-weighting", "p2", "--p2-k", "0"])
    assert "needs --lr-decay-steps > 0" in _error(capsys, base + ["--lr-decay", "linear"])
    err = _error(capsys, TINY + ["--steps", "9", "--warmup-steps", "2", "--lr-decay", "linear",
                                 "--lr-decay-steps", "5", "--out", str(tmp_path / "y")])
    assert "runs past the end of the learning-rate decay (step 7" in err and "--lr-decay-steps to 7" in err


@pytest.mark.parametrize("flags, message", [
    (["--groups", "3"], "resnet_block_groups=3 must divide"),
    (["--dim-mults", "1,2,2,2,2"], "image_size 8 cannot be halved 4 times"),
    (["--data", "/no/such/folder"], "no such folder"),
])
def test_bad_configuration_exits_2_without_traceback(tmp_path, flags, message):
    argv = TINY + ["--steps", "1", "--out", str(tmp_path / "x")] + flags
    proc = subprocess.run([sys.executable, "-m", "backends.pytorch.train", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0  # one line


def test_bf16_autocast_smoke(tmp_path):
    out = tmp_path / "bf16"
    assert main(TINY + ["--bf16", "--steps", "3", "--log-every", "1", "--sample-every", "0",
                        "--out", str(out)]) == 0
    assert np.isfinite(_losses(out)).all()


def test_two_processes_under_torchrun(tmp_path):
    """DDP on gloo: each rank its own shard and draws; the replicas must stay bitwise equal."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
              "-m", "backends.pytorch.train", *TINY, "--batch-size", "8", "--dropout", "0.1",
              "--sample-every", "0", "--log-every", "1", "--out", str(out)]
    for extra in (["--steps", "3"], ["--steps", "5", "--resume"]):  # and a resume with 2 ranks
        proc = subprocess.run(launch + extra, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "all 2 replicas hold identical weights" in proc.stderr
    state = _state(out)
    assert {"rng.torch_cpu.0", "rng.torch_cpu.1"} <= set(state)
    assert not np.array_equal(state["rng.torch_cpu.0"], state["rng.torch_cpu.1"])  # own dropout
    assert len(_losses(out)) == 5
    notes = json.loads((out / "model" / "config.json").read_text())["notes"]
    assert notes["global_batch"] == 16 and notes["training_command"].startswith("torchrun")
    assert "--steps 3" in notes["training_command"] and "--resume" in notes["resumed_with"][0]


def test_init_from_an_unconditional_checkpoint_starts_every_class_at_it(trained, tmp_path, capsys):
    """--class-conditional --init-from an unconditional model: its weights plus a class table whose
    null row is zero, so the null class predicts what the unconditional model does at step 0, and
    whose class rows are O(1), so the classes differ from the start."""
    from backends import build_network
    from backends.pytorch.model import load_state_from_numpy
    from diffusion_core.checkpoint import load_checkpoint
    source = load_checkpoint(trained / "model")
    start = source.weights
    out = tmp_path / "conditional"
    assert main(TINY + ["--steps", "1", "--lr", "1e-9", "--ema-decay", "0.5", "--ema-warmup", "0",
                        "--class-conditional", "--sample-every", "0", "--init-from", str(trained / "model"),
                        "--out", str(out)]) == 0
    tuned = load_checkpoint(out / "model")
    assert tuned.config.network.num_classes == 10
    table = tuned.weights["class_embedding.weight"]
    assert table.shape[0] == 11 and np.abs(table[10]).max() < 1e-6
    assert 0.5 < table[:10].std() < 2.0
    assert all(np.allclose(tuned.weights[n], start[n], atol=1e-6) for n in start)
    nets = []
    for checkpoint in (source, tuned):
        nets.append(build_network("pytorch", checkpoint.config.network).eval())
        load_state_from_numpy(nets[-1], checkpoint.weights)
    unconditional, conditional = nets
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 200, 500, 900])
    with torch.no_grad():
        want = unconditional(x, t)
        null = conditional(x, t, torch.full((4,), 10))
        classes = conditional(x, t, torch.tensor([0, 3, 9, 9]))
    assert torch.allclose(null, want, atol=1e-5)
    assert (classes - want).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    # the other way round drops a trained table: refused
    assert main(TINY + ["--steps", "1", "--init-from", str(out / "model"), "--out", str(tmp_path / "back")]) == 2
    assert "differs from the flags'" in capsys.readouterr().err
