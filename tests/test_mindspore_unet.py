"""The MindSpore Unet against the canonical spec and the PyTorch Unet, weight for weight.

Parity: the same canonical weights give both frameworks' outputs within 1e-4 (absolute) on
unit-scale inputs, in PyNative and in graph mode (mindspore.jit). Float32 reordering between
the frameworks' kernels gives ~1e-6; 1e-4 leaves room for it without hiding a wrong weight (one
transposed or mis-mapped tensor moves outputs by ~1e-1).
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="MindSpore backend tests need mindspore installed")
torch = pytest.importorskip("torch", reason="MindSpore/PyTorch parity tests need torch installed")

import backends.mindspore as bm  # noqa: E402
import backends.pytorch as bt  # noqa: E402
from backends.mindspore.names import canonical_to_mindspore, mindspore_to_canonical  # noqa: E402
from backends import build_network  # noqa: E402
from declared import self_cond  # noqa: E402
from diffusion_core import UnetConfig  # noqa: E402
from diffusion_core.ops import NumpyOps  # noqa: E402
from diffusion_core.architectures.unet import parameter_shapes  # noqa: E402

PARITY = 1e-4
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
    "full_everywhere_odd_dim": UnetConfig(image_size=8, dim=6, dim_mults=(2, 3),
                                          full_attn=(True, True), resnet_block_groups=2,
                                          attn_heads=1, attn_dim_head=4),
}


def torch_unet(cfg: UnetConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_network("pytorch", cfg).eval()


def pair(cfg: UnetConfig, seed: int = 0):
    """A PyTorch Unet and a MindSpore Unet holding the same (PyTorch-initialised) weights."""
    reference = torch_unet(cfg, seed)
    unet = bm.build_network(cfg)
    bm.load_state_from_numpy(unet, bt.state_to_numpy(reference))
    return reference, unet


def inputs(cfg: UnetConfig, batch: int = 2, seed: int = 1):
    g = np.random.default_rng(seed)
    shape = (batch, cfg.channels, cfg.image_size, cfg.image_size)
    return g.standard_normal(shape, dtype=np.float32), g.standard_normal(shape, dtype=np.float32)


def torch_output(reference, x, t, cond=None):
    with torch.inference_mode():
        time = torch.full((x.shape[0],), float(t))
        return reference(torch.from_numpy(x), time,
                         *([] if cond is None else [torch.from_numpy(cond)])).numpy()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_names_and_shapes_equal_the_spec(name):
    cfg = CONFIGS[name]
    unet = bm.build_network(cfg)
    to_canonical = mindspore_to_canonical(unet)
    found = [(to_canonical[n], tuple(p.shape)) for n, p in unet.parameters_and_names()]
    assert found == list(parameter_shapes(cfg).items())  # every name, in state_dict order
    assert list(canonical_to_mindspore(unet)) == list(parameter_shapes(cfg))


def test_name_map_renames_only_group_norm():
    cfg = CONFIGS["gray28_122"]
    renamed = {c: m for c, m in canonical_to_mindspore(bm.build_network(cfg)).items() if c != m}
    assert renamed and all(c.rsplit(".", 1)[0] == m.rsplit(".", 1)[0] for c, m in renamed.items())
    assert {(c.rsplit(".", 1)[1], m.rsplit(".", 1)[1]) for c, m in renamed.items()} == {
        ("weight", "gamma"), ("bias", "beta")}
    assert "downs.0.block1.norm1.weight" in renamed and "mid_attn.norm.bias" in renamed


@pytest.mark.parametrize("name", list(CONFIGS))
def test_pynative_parity_with_pytorch(name):
    cfg = CONFIGS[name]
    reference, unet = pair(cfg)
    model = bm.MindSporeDenoiserModel(unet, graph=False)
    x, cond = inputs(cfg)
    for t in (0.0, 417.25, 999.0):  # fractional timesteps are part of the contract
        c = cond if cfg.self_condition else None
        want = torch_output(reference, x, t, c)
        got = model(model.ops.asarray(x), t, **self_cond(cfg, None if c is None else model.ops.asarray(c)))
        assert np.abs(got.asnumpy() - want).max() < PARITY, (name, t)
        assert np.abs(want).max() > 1e-2  # a real signal, not two zeros agreeing


@pytest.mark.parametrize("name", ["gray28_122", "gray16_12_selfcond"])
def test_graph_mode_parity_and_weights_loaded_after_compiling(name):
    cfg = CONFIGS[name]
    reference, unet = pair(cfg)
    model = bm.MindSporeDenoiserModel(unet, graph=True)
    x, _ = inputs(cfg, batch=3)
    got = model(model.ops.asarray(x), 12.5).asnumpy()  # compiles; zeros for self-conditioning
    want = torch_output(reference, x, 12.5, np.zeros_like(x) if cfg.self_condition else None)
    assert np.abs(got - want).max() < PARITY
    # New weights after the graph was compiled must be what the graph computes with.
    other = torch_unet(cfg, seed=7)
    bm.load_state_from_numpy(unet, bt.state_to_numpy(other))
    want = torch_output(other, x, 12.5, np.zeros_like(x) if cfg.self_condition else None)
    assert np.abs(model(model.ops.asarray(x), 12.5).asnumpy() - want).max() < PARITY


@pytest.mark.parametrize("name", ["colour32_1248", "gray16_12_selfcond"])
def test_decomposed_spelling_equals_normal(name):
    """The export-friendly GroupNorm / upsample give the same outputs as MindSpore's own ops."""
    cfg = CONFIGS[name]
    _, unet = pair(cfg)
    x, cond = inputs(cfg)
    args = [ms.Tensor(x), ms.Tensor(np.full(2, 300.5, np.float32))]
    if cfg.self_condition:
        args.append(ms.Tensor(cond))
    normal = unet(*args).asnumpy()
    decomposed = unet.set_decomposed(True)(*args).asnumpy()
    unet.set_decomposed(False)
    assert np.abs(normal - decomposed).max() < 1e-5


def test_round_trip_of_canonical_weights():
    cfg = CONFIGS["gray16_12_selfcond"]
    reference, unet = pair(cfg)
    state, back = bt.state_to_numpy(reference), bm.state_to_numpy(unet)
    assert list(back) == list(state)
    assert all(back[n].dtype == np.float32 and np.array_equal(back[n], state[n]) for n in state)


def test_strict_loading_names_every_problem():
    cfg = CONFIGS["gray16_12_selfcond"]
    unet = bm.build_network(cfg)
    state = bm.state_to_numpy(unet)
    before = bm.state_to_numpy(unet)
    broken = dict(state)
    del broken["init_conv.bias"]
    broken["final_conv.weight"] = np.zeros((2, 8, 1, 1), np.float32)
    broken["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        bm.load_state_from_numpy(unet, broken)
    message = str(info.value)
    assert "missing (1): init_conv.bias" in message and "unexpected (1): extra.weight" in message
    assert "final_conv.weight: checkpoint (2, 8, 1, 1), model (1, 8, 1, 1)" in message
    after = bm.state_to_numpy(unet)
    assert all(np.array_equal(before[n], after[n]) for n in before)  # nothing was copied
    mindspore_named = {canonical_to_mindspore(unet)[n]: v for n, v in state.items()}
    with pytest.raises(ValueError, match="MindSpore's own parameter names"):
        bm.load_state_from_numpy(unet, mindspore_named)


def test_input_errors_say_what_is_expected():
    model = bm.MindSporeDenoiserModel(bm.build_network(CONFIGS["gray28_122"]), graph=False)
    with pytest.raises(ValueError, match=r"shape \(batch, 1, 28, 28\).*got \(2, 1, 16, 16\)"):
        model(model.ops.asarray(np.zeros((2, 1, 16, 16), np.float32)), 3.0)
    with pytest.raises(ValueError, match=r"takes no input\(s\) \['x_self_cond'\]"):
        x = model.ops.asarray(np.zeros((2, 1, 28, 28), np.float32))
        model(x, 3.0, x_self_cond=x)


def test_ops_match_numpy():
    ops, ref = bm.MindSporeOps(), NumpyOps()
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)
    t = ops.asarray(x)
    assert np.array_equal(ops.to_numpy(t), x)
    assert np.array_equal(ops.to_numpy(ops.clip(t, -0.5, 0.25)), ref.clip(x, -0.5, 0.25))
    s = ref.abs_quantile(x, 0.9)
    assert s.shape == (3, 1, 1, 1)
    assert np.allclose(ops.to_numpy(ops.abs_quantile(t, 0.9)), s, atol=1e-6)
    assert np.allclose(ops.to_numpy(ops.clip(t, ops.asarray(-s), ops.asarray(s))),
                       ref.clip(x, -s, s))
    assert np.allclose(ops.to_numpy(ops.mean_per_sample(t)), ref.mean_per_sample(x), atol=1e-6)
    assert np.array_equal(ops.to_numpy(ops.zeros_like(t)), np.zeros_like(x))
