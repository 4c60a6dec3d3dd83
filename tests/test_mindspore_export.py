"""MindSpore -> ONNX: the exported file runs on ONNX Runtime with a variable batch and matches
MindSpore's own outputs; the interface is the PyTorch export's (x, t [, x_self_cond] -> out)."""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore", reason="MindSpore export tests need mindspore installed")
onnx = pytest.importorskip("onnx", reason="MindSpore export tests need onnx installed")
ort = pytest.importorskip("onnxruntime", reason="MindSpore export tests need onnxruntime installed")

import backends.mindspore as bm  # noqa: E402
from backends.mindspore.export import export_checkpoint, export_mindspore_network  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402

CONFIGS = {
    "gray8_selfcond": UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                                 resnet_block_groups=4, attn_heads=2, attn_dim_head=8,
                                 self_condition=True),
    "colour16_linear_attn": UnetConfig(image_size=16, channels=3, dim=8, dim_mults=(1, 2, 2),
                                       full_attn=(False, False, True), resnet_block_groups=4,
                                       attn_heads=2, attn_dim_head=4),
}


def _weights(cfg: UnetConfig) -> dict[str, np.ndarray]:
    """Random weights of a realistic scale (MindSpore's own initialisation, seeded)."""
    return bm.state_to_numpy(bm.build_network(cfg, seed=11))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_graph_matches_mindspore_at_any_batch(name):
    cfg = CONFIGS[name]
    unet = bm.build_network(cfg)
    bm.load_state_from_numpy(unet, _weights(cfg))
    model = export_mindspore_network(unet, ModelConfig(network=cfg))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    declared = ModelConfig(network=cfg).inputs
    assert [i.name for i in session.get_inputs()] == [i.name for i in declared]
    assert [o.name for o in session.get_outputs()] == ["out"]
    assert all(i.shape[0] == "batch" for i in session.get_inputs())
    reference = bm.MindSporeDenoiserModel(unet, graph=False)  # MindSpore's own GroupNorm/resize
    rng = np.random.default_rng(0)
    for batch, t in ((1, 0.0), (3, 421.5)):  # neither is the traced batch (2)
        shape = (batch, cfg.channels, cfg.image_size, cfg.image_size)
        feeds = {"x": rng.standard_normal(shape, dtype=np.float32),
                 "t": np.full((batch,), t, np.float32)}
        extra = {i.name: rng.standard_normal(shape, dtype=np.float32) for i in declared[2:]}
        feeds.update(extra)
        (got,) = session.run(None, feeds)
        want = reference(reference.ops.asarray(feeds["x"]), t,
                         **{k: reference.ops.asarray(v) for k, v in extra.items()}).asnumpy()
        assert got.shape == shape and np.abs(got - want).max() < 1e-4
        assert np.abs(want).max() > 1e-2
    assert not unet.training and not any(  # the export leaves the Unet as it found it
        getattr(c, "decomposed", False) for _, c in unet.cells_and_names())


def test_export_checkpoint_writes_a_file_the_onnx_backend_loads(tmp_path):
    from backends import load_model
    cfg = CONFIGS["gray8_selfcond"]
    folder = save_checkpoint(tmp_path / "ckpt", ModelConfig(network=cfg), _weights(cfg))
    path, diff = export_checkpoint(folder)
    assert path == folder / "model.onnx" and diff < 1e-4
    assert load_checkpoint(folder).onnx_path == path
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["diffusion_toolkit.exporter"].startswith("mindspore")
    via_onnx = load_model("onnxruntime", folder).sample(batch_size=2, steps=4, seed=3)
    via_mindspore = load_model("mindspore", folder).sample(batch_size=2, steps=4, seed=3)
    assert np.abs(via_onnx - via_mindspore).max() < 1e-3  # the sampling tolerance of the parity tests


def test_mindspore_refuses_dynamic_shapes_for_onnx(tmp_path):
    """Why the export traces a fixed batch and renames the axis afterwards (see export.py)."""
    from mindspore import nn
    with pytest.raises(ValueError, match="not support dynamic shape"):
        ms.export(nn.Dense(2, 2), ms.Tensor(shape=[None, 2], dtype=ms.float32),
                  file_name=str(tmp_path / "dense"), file_format="ONNX")
