"""denoising-diffusion-pytorch milestones: built and saved by their package (Unet, GaussianDiffusion,
Trainer.save), converted, and compared with their own forward and their own DDIM sampler.

Tolerances: one forward of our network against theirs on the same weights measured 0 on PyTorch
(the same ops), 7.7e-7 on ONNX Runtime and 1.2e-6 on MindSpore; 1e-4 is the bound the issue sets.
Their sampler keeps its coefficients in float32 buffers and ours in float64; over 10 DDIM steps
the images measured at most 2.0e-6 apart ([-1, 1] units), and 0.2-1.3 apart with the wrong
(leading) spacing, so the bound 1e-4 tells the two apart.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="lucidrains checkpoints are PyTorch files")

from foreign_packages import lucidrains, save_milestone  # noqa: E402

from backends import backend_status, load_model  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint  # noqa: E402
from diffusion_core.convert import import_checkpoint  # noqa: E402
from diffusion_core.convert.__main__ import main as convert_main  # noqa: E402
from diffusion_core.convert.lucidrains import ShapeMismatch, read_milestone  # noqa: E402

TOLERANCE = 1e-4
SIZE, T, STEPS = 16, 100, 10
# (Unet kwargs, GaussianDiffusion kwargs, what the converter must read off the buffers)
CASES = {
    "defaults": (dict(dim=16, dim_mults=(1, 2), channels=1), dict(), ("sigmoid", "v")),
    "self_cond": (dict(dim=16, dim_mults=(1, 2, 2), channels=3, self_condition=True, full_attn=(False, True, True),
                       attn_heads=(2, 4, 4), attn_dim_head=(8, 16, 16), init_dim=8),
                  dict(objective="pred_noise", beta_schedule="cosine"), ("cosine", "eps")),
    "min_snr_x0": (dict(dim=8, dim_mults=(1, 2), channels=3),
                   dict(objective="pred_x0", beta_schedule="linear", min_snr_loss_weight=True), ("linear", "x0")),
}


@pytest.fixture(scope="module")
def milestones(tmp_path_factory):
    """{case: (their GaussianDiffusion holding the EMA weights, the raw one, milestone path)}."""
    ddp = lucidrains()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name, (unet_kw, diffusion_kw, _) in CASES.items():
        torch.manual_seed(len(out))
        diffusion = ddp.GaussianDiffusion(ddp.Unet(**unet_kw), image_size=SIZE, timesteps=T,
                                          sampling_timesteps=STEPS, **diffusion_kw)
        folder = tmp_path_factory.mktemp(name)
        path = save_milestone(diffusion, folder, milestone=3)
        ema = type(diffusion)(ddp.Unet(**unet_kw), image_size=SIZE, timesteps=T, sampling_timesteps=STEPS,
                              **diffusion_kw)
        state = torch.load(path, weights_only=True)["ema"]
        ema.load_state_dict({k[len("ema_model."):]: v for k, v in state.items() if k.startswith("ema_model.")})
        out[name] = (ema.eval(), diffusion.eval(), path)
    yield out
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", list(CASES))
def test_the_config_schedule_and_objective_are_read_off_the_milestone(milestones, case):
    _, raw, path = milestones[case]
    config, weights = read_milestone(path, image_size=SIZE)
    schedule, objective = CASES[case][2]
    assert config.architecture.name == "lucidrains_unet"
    assert (config.diffusion.schedule, config.diffusion.prediction_type) == (schedule, objective)
    np.testing.assert_allclose(config.diffusion.make_schedule().betas, raw.betas.double().numpy(), rtol=2e-6)
    assert config.network.self_condition == CASES[case][0].get("self_condition", False)
    assert set(weights) == set(raw.model.state_dict())


def _their_output(diffusion, x, t, self_cond=None):
    with torch.no_grad():
        return diffusion.model(torch.from_numpy(x), torch.full((len(x),), float(t)),
                               None if self_cond is None else torch.from_numpy(self_cond)).numpy()


@pytest.mark.parametrize("weights", ["ema", "model"])
def test_converted_forward_matches_theirs_on_every_backend(milestones, tmp_path, weights):
    ema, raw, path = milestones["self_cond"]
    theirs = ema if weights == "ema" else raw
    out = import_checkpoint(path, tmp_path / "converted", image_size=SIZE, weights=weights)
    from backends.onnx.export import export_checkpoint
    assert export_checkpoint(out).max_abs_diff < TOLERANCE
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)
    previous = rng.standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)
    want = _their_output(theirs, x, 42.0, previous)
    name = load_checkpoint(out).config.inputs[2].name   # the declared self-conditioning input
    for backend in ("pytorch", "onnxruntime", "mindspore"):
        if not backend_status(backend).available:
            continue
        model = load_model(backend, out)
        got = model.ops.to_numpy(model.model(model.ops.asarray(x), 42.0, **{name: model.ops.asarray(previous)}))
        assert np.abs(got - want).max() < TOLERANCE, backend
    assert np.abs(_their_output(ema, x, 42.0, previous) - _their_output(raw, x, 42.0, previous)).max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_ddim_matches_their_ddim_sampler(milestones, tmp_path, case):
    ema, _, path = milestones[case]
    channels = CASES[case][0]["channels"]
    torch.manual_seed(11)
    x_T = torch.randn(2, channels, SIZE, SIZE)   # the first draw of their ddim_sample
    torch.manual_seed(11)
    with torch.no_grad():
        theirs = ema.ddim_sample((2, channels, SIZE, SIZE)).numpy() * 2 - 1   # back to [-1, 1]
    out = import_checkpoint(path, tmp_path / "converted", image_size=SIZE)
    # Their times linspace(-1, T-1, S+1) visit T-1, T-1-T/S, ..., T/S-1: our trailing spacing.
    ours = load_model("pytorch", out).sample(sampler="ddim", steps=STEPS, x_T=x_T.numpy(), spacing="trailing")
    assert np.abs(ours - theirs).max() < TOLERANCE
    assert np.abs(theirs).max() > 0.1


def test_cli_converts_with_the_raw_weights_and_says_what_to_do_next(milestones, tmp_path, capsys):
    _, _, path = milestones["defaults"]
    assert convert_main(["import", str(path), str(tmp_path / "out"), "--image-size", str(SIZE),
                         "--weights", "model"]) == 0
    assert "python -m backends.onnx.export" in capsys.readouterr().out
    notes = load_checkpoint(tmp_path / "out").config.notes["imported_from"]
    assert notes["weights"] == "model" and notes["version"] == "2.3.4"
    assert convert_main(["import", str(path), str(tmp_path / "none")]) == 2
    assert "does not record its image size" in capsys.readouterr().err


def test_a_layout_that_fits_no_entry_is_refused_naming_the_first_tensor(milestones, tmp_path):
    _, raw, _ = milestones["defaults"]
    state = dict(raw.state_dict())
    state["model.ups.0.3.1.weight"] = torch.zeros(16, 32, 5, 5)   # a 5x5 upsample conv: not lucidrains'
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ShapeMismatch, match=r"ups\.0\.3\.1\.weight has shape \[16, 32, 5, 5\]"):
        read_milestone(tmp_path / "odd.pt", image_size=SIZE)
