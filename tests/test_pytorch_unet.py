"""PyTorch Unet, its framework-neutral spec, the model-contract adapter and TorchOps."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the packages live at the repository root, not installed
    sys.path.insert(0, str(REPO))

torch = pytest.importorskip("torch", reason="PyTorch backend tests need torch installed")

from backends import build_network  # noqa: E402
from declared import self_cond  # noqa: E402
from backends.pytorch import (TorchDenoiserModel, TorchOps, Unet,  # noqa: E402
                              load_state_from_numpy, state_to_numpy)
from diffusion_core import ConfigError, UnetConfig  # noqa: E402
from diffusion_core.ops import NumpyOps  # noqa: E402
from diffusion_core.architectures.unet import count_parameters, forward_flops, parameter_shapes  # noqa: E402

# Small widths keep the file fast; the structure (levels, attention kinds, sizes) is what varies.
CONFIGS = {
    "gray28_122": UnetConfig(dim=8, resnet_block_groups=4, attn_heads=2, attn_dim_head=8),
    "colour32_1248": UnetConfig(image_size=32, channels=3, dim=8, dim_mults=(1, 2, 4, 8),
                                full_attn=(False, False, False, True), resnet_block_groups=4,
                                attn_heads=2, attn_dim_head=8),
    "gray16_12_selfcond": UnetConfig(image_size=16, dim=8, dim_mults=(1, 2),
                                     full_attn=(False, True), resnet_block_groups=4,
                                     self_condition=True, attn_heads=2, attn_dim_head=4),
    "no_linear_attn": UnetConfig(image_size=16, channels=3, dim=8, dim_mults=(1, 2),
                                 full_attn=(False, False), linear_attn=False,
                                 resnet_block_groups=4),
    "mults_without_1_full_everywhere": UnetConfig(image_size=8, dim=4, dim_mults=(2, 3),
                                                  full_attn=(True, True), resnet_block_groups=2,
                                                  attn_heads=1, attn_dim_head=4),
}


def make_unet(cfg: UnetConfig, seed: int = 0) -> Unet:
    torch.manual_seed(seed)
    return build_network("pytorch", cfg).eval()


def images(cfg: UnetConfig, batch: int, seed: int = 1) -> torch.Tensor:
    g = np.random.default_rng(seed)
    shape = (batch, cfg.channels, cfg.image_size, cfg.image_size)
    return torch.from_numpy(g.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_shape_and_dtype(name):
    cfg = CONFIGS[name]
    x = images(cfg, 2)
    with torch.inference_mode():
        out = make_unet(cfg)(x, torch.tensor([0.0, 999.0]))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # different images and times, different outputs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_shapes_equal_torch_state_dict(name):
    cfg = CONFIGS[name]
    unet = make_unet(cfg)
    state = unet.state_dict()
    assert list(state) == [n for n, _ in unet.named_parameters()], "state_dict must hold no buffers"
    assert [(n, tuple(t.shape)) for n, t in state.items()] == list(parameter_shapes(cfg).items())
    assert count_parameters(cfg) == sum(p.numel() for p in unet.parameters())


def test_default_config_size_and_naming():
    cfg = UnetConfig()
    shapes = parameter_shapes(cfg)
    # Pinned: a change here changes the canonical checkpoint names or shapes (bump FORMAT_VERSION).
    assert count_parameters(cfg) == 1_581_025
    assert list(shapes)[:4] == ["time_mlp.linear1.weight", "time_mlp.linear1.bias",
                                "time_mlp.linear2.weight", "time_mlp.linear2.bias"]
    assert shapes["init_conv.weight"] == (32, 1, 3, 3)
    assert shapes["downs.0.block1.time_proj.weight"] == (64, 128)      # scale and shift, 2 x 32
    assert shapes["downs.1.block1.skip.weight"] == (64, 32, 1, 1)      # width 32 -> 64
    assert shapes["downs.1.downsample.weight"] == (64, 64, 3, 3)
    assert shapes["mid_attn.to_qkv.weight"] == (3 * 4 * 16, 64, 1, 1)
    assert "mid_attn.to_qkv.bias" not in shapes
    assert shapes["ups.0.block1.conv1.weight"] == (32, 64 + 32, 3, 3)  # [h from ups.1, skip]
    assert shapes["ups.2.block1.conv1.weight"] == (64, 128, 3, 3)      # [h from middle, skip]
    assert "ups.0.upsample.weight" not in shapes and "downs.2.downsample.weight" not in shapes
    assert shapes["final_block.conv1.weight"] == (32, 64, 3, 3)
    assert list(shapes)[-2:] == ["final_conv.weight", "final_conv.bias"]


def _counted_flops(unet: Unet, cfg: UnetConfig) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        unet(images(cfg, 3), torch.full((3,), 5.0))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["gray28_122", "gray16_12_selfcond"])
def test_forward_flops_equal_torch_flop_counter(name, monkeypatch):
    from backends.pytorch.blocks import LinearAttention, Upsample, _AttentionBase
    cfg = CONFIGS[name]
    unet = make_unet(cfg)
    regrouped = _counted_flops(unet, cfg)
    # forward_flops counts the textbook network: linear attention in the order of `attend`,
    # upsampling as nearest x2 then a 3x3 conv
    monkeypatch.setattr(LinearAttention, "forward", _AttentionBase.forward)
    monkeypatch.setattr(Upsample, "forward", Upsample.forward_textbook)
    assert forward_flops(cfg, 3) == _counted_flops(unet, cfg) > 0
    assert forward_flops(cfg, 6) == 2 * forward_flops(cfg, 3)
    assert 0 < regrouped < forward_flops(cfg, 3)  # the regrouped linear attention does less


@pytest.mark.parametrize("width, heads, dim_head, size", [(16, 4, 16, 28), (32, 4, 16, 14), (8, 2, 8, 5),
                                                          (6, 1, 4, 3)])
def test_regrouped_linear_attention_equals_the_textbook_order(width, heads, dim_head, size):
    from backends.pytorch.blocks import LinearAttention, _AttentionBase
    torch.manual_seed(width + size)
    attn = LinearAttention(width, heads, dim_head, groups=2).double().eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.5)  # norm and bias too, not their identity initialisation
        x = torch.randn(3, width, size, size, dtype=torch.float64)
        textbook = _AttentionBase.forward(attn, x)
        assert torch.allclose(attn(x), textbook, rtol=0, atol=1e-12 * textbook.abs().max().item())
        attn32, x32 = attn.float(), x.float()
        assert (attn32(x32) - textbook).abs().max() < 1e-5 * textbook.abs().max()


@pytest.mark.parametrize("width, size", [(8, 7), (3, 1), (5, 4)])
def test_transposed_conv_upsample_equals_nearest_then_conv(width, size):
    from backends.pytorch.blocks import Upsample
    torch.manual_seed(width)
    up = Upsample(width).double().eval()
    x = torch.randn(2, width, size, size, dtype=torch.float64)
    with torch.no_grad():
        textbook = up.forward_textbook(x)
        assert up(x).shape == textbook.shape == (2, width, 2 * size, 2 * size)
        assert torch.allclose(up(x), textbook, rtol=0, atol=1e-12)


def test_folded_film_equals_norm_then_scale_and_shift():
    from backends.pytorch.blocks import ResnetBlock
    torch.manual_seed(3)
    block = ResnetBlock(8, 12, time_dim=10, groups=4).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.5)
        x, emb = torch.randn(2, 8, 6, 6, dtype=torch.float64), torch.randn(2, 10, dtype=torch.float64)
        scale, shift = block.time_proj(torch.nn.functional.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = block.conv1(torch.nn.functional.silu(block.norm1(x) * (scale + 1) + shift))
        h = block.conv2(torch.nn.functional.silu(block.norm2(h)))
        assert torch.allclose(block(x, emb), h + block.skip(x), rtol=0, atol=1e-12)


def test_state_round_trip_through_numpy_is_exact():
    cfg = CONFIGS["gray16_12_selfcond"]
    source, target = make_unet(cfg, seed=0), make_unet(cfg, seed=1)
    x, t = images(cfg, 2), torch.tensor([3.0, 700.0])
    state = state_to_numpy(source)
    assert list(state) == list(parameter_shapes(cfg))
    assert all(a.dtype == np.float32 for a in state.values())
    with torch.inference_mode():
        before = target(x, t)
        load_state_from_numpy(target, state)
        expected, got = source(x, t), target(x, t)
    assert not torch.allclose(before, expected)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("corrupt, bad_name", [
    (lambda s: s.pop("mid_attn.to_out.bias"), "mid_attn.to_out.bias"),
    (lambda s: s.__setitem__("mid_attn.to_qkv.bias", np.zeros(24, np.float32)),
     "mid_attn.to_qkv.bias"),
    (lambda s: s.__setitem__("final_conv.weight", np.zeros((1, 8, 3, 3), np.float32)),
     "final_conv.weight"),
])
def test_strict_loading_names_the_bad_key(corrupt, bad_name):
    cfg = CONFIGS["gray16_12_selfcond"]
    unet = make_unet(cfg)
    before = state_to_numpy(unet)
    state = state_to_numpy(make_unet(cfg, seed=1))
    corrupt(state)
    with pytest.raises(ValueError, match=bad_name.replace(".", r"\.")):
        load_state_from_numpy(unet, state)
    after = state_to_numpy(unet)
    assert all(np.array_equal(before[n], after[n]) for n in before), "a failed load copied weights"


def test_wrong_input_shape_names_expected_and_actual():
    cfg = CONFIGS["gray28_122"]
    unet = make_unet(cfg)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\).*got \(2, 1, 32, 32\)"):
        unet(torch.zeros(2, 1, 32, 32), torch.zeros(2))
    with pytest.raises(ValueError, match=r"got \(2, 3, 28, 28\)"):
        TorchDenoiserModel(unet)(torch.zeros(2, 3, 28, 28), 10.0)
    with pytest.raises(ValueError, match=r"time must have shape \(2,\)"):
        unet(torch.zeros(2, 1, 28, 28), torch.zeros(3))


def test_unbuildable_configs_are_refused_with_advice():
    # widths 24 and 48 are fine, but the init conv and final block run at dim = 12: the config
    # itself refuses, before anything is built
    with pytest.raises(ConfigError, match="resnet_block_groups=8 must divide .* = 12"):
        UnetConfig(dim=12, dim_mults=(2, 4), full_attn=(False, True))


def test_fractional_timestep_reaches_the_network():
    cfg = CONFIGS["gray28_122"]
    unet = make_unet(cfg)
    model = TorchDenoiserModel(unet)
    x = images(cfg, 2)
    out = model(x, 12.5)
    assert torch.is_inference(out) and out.shape == x.shape
    with torch.inference_mode():
        direct = unet(x, torch.tensor([12.5, 12.5]))
    assert torch.equal(out, direct)
    for t in (12, 13):
        assert (out - model(x, t)).abs().max() > 1e-6  # not rounded to an integer step


def test_adapter_turns_dropout_off_and_flushes_denormals():
    cfg = UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                     resnet_block_groups=4, dropout=0.5)
    unet = build_network("pytorch", cfg).train()
    model = TorchDenoiserModel(unet)
    x = images(cfg, 2)
    assert not unet.training and torch.equal(model(x, 3.0), model(x, 3.0))
    if torch.set_flush_denormal(False):  # False where the CPU cannot flush: nothing to check
        try:
            model(x, 3.0)
            assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
        finally:
            torch.set_flush_denormal(False)


def test_self_condition_input():
    cfg = CONFIGS["gray16_12_selfcond"]
    model = TorchDenoiserModel(make_unet(cfg))
    x = images(cfg, 2)
    assert torch.equal(model(x, 4.0), model(x, 4.0, **self_cond(cfg, torch.zeros_like(x))))
    assert (model(x, 4.0, **self_cond(cfg, images(cfg, 2, seed=5))) - model(x, 4.0)).abs().max() > 1e-6
    plain = TorchDenoiserModel(make_unet(CONFIGS["gray28_122"]))
    with pytest.raises(ValueError, match=r"takes no input\(s\) \['x_self_cond'\]"):
        plain(images(CONFIGS["gray28_122"], 1), 4.0, **self_cond(cfg, images(CONFIGS["gray28_122"], 1)))


def test_batch_independence():
    cfg = CONFIGS["gray16_12_selfcond"]  # linear attention, full attention and GroupNorm
    model = TorchDenoiserModel(make_unet(cfg))
    x = images(cfg, 3)
    together = model(x, 250.0)
    for i in range(3):
        alone = model(x[i:i + 1], 250.0)
        torch.testing.assert_close(together[i:i + 1], alone, rtol=0, atol=1e-5)


def test_core_spec_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['mindspore'] = None\n"
            "from diffusion_core import UnetConfig\n"
            "from diffusion_core.architectures.unet import count_parameters\n"
            "print(count_parameters(UnetConfig()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == count_parameters(UnetConfig())


class TestTorchOpsMatchesNumpyOps:
    ops, ref = TorchOps("cpu"), NumpyOps()
    a = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)

    def test_asarray_and_to_numpy(self):
        t = self.ops.asarray(self.a.astype(np.float64))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
        back = self.ops.to_numpy(t * 2.0)
        assert back.dtype == np.float32 and np.array_equal(back, self.a * 2.0)

    def test_clip_with_floats_and_tensors(self):
        bound = np.abs(self.a).reshape(3, -1).max(axis=1).reshape(3, 1, 1, 1) * 0.5
        cases = [(-0.5, 0.7, -0.5, 0.7), (-bound, bound, self.ops.asarray(-bound),
                                          self.ops.asarray(bound)),
                 (-1.0, bound, -1.0, self.ops.asarray(bound))]
        for lo, hi, t_lo, t_hi in cases:
            want = self.ref.clip(self.a, lo, hi)
            got = self.ops.to_numpy(self.ops.clip(self.ops.asarray(self.a), t_lo, t_hi))
            assert np.array_equal(got, want)
            assert not np.array_equal(want, self.a)  # the bounds did cut something

    def test_zeros_like(self):
        z = self.ops.zeros_like(self.ops.asarray(self.a))
        assert z.dtype == torch.float32 and np.array_equal(self.ops.to_numpy(z),
                                                          self.ref.zeros_like(self.a))

    @pytest.mark.parametrize("q", [0.5, 0.995, 1.0])
    def test_abs_quantile(self, q):
        got = self.ops.to_numpy(self.ops.abs_quantile(self.ops.asarray(self.a), q))
        want = self.ref.abs_quantile(self.a, q)
        assert got.shape == want.shape == (3, 1, 1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert len(set(want.ravel().tolist())) == 3  # per sample, not one global quantile

    def test_mean_per_sample(self):
        got = self.ops.to_numpy(self.ops.mean_per_sample(self.ops.asarray(self.a)))
        want = self.ref.mean_per_sample(self.a)
        assert got.shape == (3,)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert not math.isclose(float(want[0]), float(want[1]))
