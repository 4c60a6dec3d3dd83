"""The MindSpore trainer end to end on scikit-learn's digits at 8x8 with a tiny Unet (CPU), and
checkpoints moving between the MindSpore and PyTorch trainers.

In-process through `main(argv)`: every main() compiles its graphs again (~10-30 s on two busy
cores), so the tests share runs where they can.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="the MindSpore trainer needs mindspore installed")

import backends.mindspore as bm  # noqa: E402
from diffusion_core.training import state as run_state  # noqa: E402
from backends.mindspore.train import main  # noqa: E402
from backends import build_network  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint  # noqa: E402
from diffusion_core.data import load_dataset  # noqa: E402

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
    assert main(TINY + ["--steps", "150", "--lr", "1e-3", "--log-every", "1", "--sample-every",
                        "100", "--checkpoint-every", "0", "--out", str(out)]) == 0
    return out


def test_loss_falls(trained):
    losses = _losses(trained)
    assert len(losses) == 150 and np.isfinite(losses).all()
    # eps-prediction starts near 1 (the noise's variance); the tiny net learns most of it quickly
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20]), (losses[:20], losses[-20:])


def test_run_folder_and_export(trained):
    from backends import load_model
    from diffusion_core import list_samplers

    assert sorted(p.name for p in (trained / "samples").iterdir()) == [
        "step_0000100.png", "step_0000150.png"]
    checkpoint = load_checkpoint(trained / "model")
    notes = checkpoint.config.notes
    assert notes["steps"] == 150 and notes["framework"].startswith("mindspore")
    assert notes["training_command"].startswith("python -m backends.mindspore.train --data digits")
    ema = _state(trained)  # the export holds the EMA weights, not the live ones
    assert all(np.array_equal(ema[f"ema.{n}"], w) for n, w in checkpoint.weights.items())
    assert not all(np.array_equal(ema[f"model.{n}"], w) for n, w in checkpoint.weights.items())
    loaded = load_model("mindspore", trained / "model")
    for name in list_samplers():
        images = loaded.sample(batch_size=2, sampler=name, steps=3, seed=0)
        assert images.shape == (2, 1, 8, 8) and np.isfinite(images).all(), name


def _outputs_agree(folder: Path) -> None:
    """The checkpoint in folder gives the same raw outputs in PyTorch and MindSpore."""
    torch = pytest.importorskip("torch", reason="the cross-framework check needs torch")
    import backends.pytorch as bt
    checkpoint = load_checkpoint(folder)
    cfg = checkpoint.config.network
    reference = build_network("pytorch", cfg).eval()
    bt.load_state_from_numpy(reference, checkpoint.weights)
    unet = bm.build_network(cfg)
    bm.load_state_from_numpy(unet, checkpoint.weights)
    model = bm.MindSporeDenoiserModel(unet, graph=False)
    x = np.random.default_rng(0).standard_normal((2, cfg.channels, 8, 8), dtype=np.float32)
    for t in (5.0, 640.5):
        with torch.inference_mode():
            want = reference(torch.from_numpy(x), torch.full((2,), t)).numpy()
        got = model(model.ops.asarray(x), t).asnumpy()
        assert np.abs(got - want).max() < 1e-4 and np.abs(want).max() > 1e-2


def test_mindspore_trained_model_runs_in_pytorch(trained):
    _outputs_agree(trained / "model")


def test_pytorch_trained_model_runs_in_mindspore(tmp_path):
    pytest.importorskip("torch", reason="the cross-framework check needs torch")
    from backends.pytorch.train import main as torch_main
    out = tmp_path / "torch_run"
    assert torch_main(TINY + ["--steps", "5", "--lr", "1e-3", "--sample-every", "0",
                              "--out", str(out)]) == 0
    _outputs_agree(out / "model")


def test_resume_equals_uninterrupted(tmp_path):
    # Every NumPy-drawn source of randomness at once: self-conditioning coins, offset noise,
    # v-prediction with min-SNR weights, gradient accumulation, LR warm-up and linear decay, EMA
    # warm-up. (Dropout is left out: MindSpore keeps its random state inside compiled graphs, see
    # Trainer.resume.)
    flags = TINY + ["--self-condition", "--offset-noise", "0.1", "--prediction", "v",
                    "--loss-weighting", "min_snr", "--grad-accum", "2", "--warmup-steps", "3",
                    "--lr-decay", "linear", "--lr-decay-steps", "5",
                    "--ema-warmup", "5", "--log-every", "4", "--sample-every", "0",
                    "--checkpoint-every", "0"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(flags + ["--steps", "8", "--out", str(whole)]) == 0
    assert main(flags + ["--steps", "4", "--out", str(split)]) == 0        # interrupted at step 4
    assert main(flags + ["--steps", "8", "--out", str(split), "--resume"]) == 0
    a, b = _state(whole), _state(split)
    assert sorted(a) == sorted(b)
    for name in a:  # model, EMA, AdamW moments and step: bitwise equal on CPU
        assert np.array_equal(a[name], b[name]), name
    assert _losses(whole)[-1] == _losses(split)[-1]  # the same window of steps 5-8


def test_resume_refuses_changed_settings_and_foreign_state(tmp_path, capsys):
    out = tmp_path / "run"
    run = TINY + ["--steps", "2", "--sample-every", "0", "--out", str(out)]
    assert main(run) == 0
    assert main(run) == 2 and "already holds a run" in capsys.readouterr().err
    assert main(run + ["--resume", "--lr", "0.5"]) == 2
    assert "lr: checkpoint 0.0002, now 0.5" in capsys.readouterr().err
    from safetensors.numpy import save_file  # what the PyTorch trainer writes there
    save_file({"x": np.zeros(1, np.float32)}, str(out / run_state.STATE_FILE),
              metadata={"state": json.dumps({"format": "diffusion-toolkit-training-state/1"})})
    assert main(run + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "not a training checkpoint of this trainer" in err and "PyTorch trainer" in err


def test_bf16_is_refused_on_cpu_with_the_reason(tmp_path, capsys):
    assert main(TINY + ["--bf16", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "no bfloat16 CPU kernels" in capsys.readouterr().err


def test_float16_loss_scaling_skips_overflowing_steps(tmp_path):
    from backends.mindspore.model import assign_parameter
    from diffusion_core import ModelConfig, UnetConfig
    from backends.mindspore.engine import MindSporeEngine
    from diffusion_core.training.config import TrainConfig
    from diffusion_core.training.loop import TrainingLoop
    cfg = UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                     resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    config = TrainConfig(model=ModelConfig(network=cfg), batch_size=8, out=str(tmp_path))
    dataset = load_dataset("digits", 8)
    engine = MindSporeEngine(config, dataset, precision="float16")
    loop = TrainingLoop(config, dataset, engine)
    scaler = engine.step_fn.scaler
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 16
    loss, applied = engine.step(list(loop.micro_batches()), 0)
    assert applied and np.isfinite(loss)               # float16 forward, float32 master weights
    before = engine.ema_weights()
    assign_parameter(scaler.scale_value, np.array(3e38, np.float32))  # forces Inf gradients
    loss, applied = engine.step(list(loop.micro_batches()), 1)
    assert not applied                                 # skipped ...
    assert float(scaler.scale_value.asnumpy()) == pytest.approx(1.5e38)  # ... and the scale halved
    after = engine.ema_weights()
    assert all(np.array_equal(before[n], after[n]) for n in before)  # nothing was updated
    assert engine.step_fn.updates == 1
