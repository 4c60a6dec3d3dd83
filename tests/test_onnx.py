"""ONNX export and the ONNX Runtime backend: interface, provenance, parity with PyTorch, no-torch use.

Exports are slow (torch.export + decompositions take 10-20 s even for a tiny Unet), so each
config is exported once per module and every test reuses the checkpoint folder.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the packages live at the repository root, not installed
    sys.path.insert(0, str(REPO))

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime backend tests need onnxruntime")
onnx = pytest.importorskip("onnx", reason="building test graphs needs the onnx package")

from backends import backend_status, load_model  # noqa: E402
from declared import self_cond  # noqa: E402
from backends.onnx.export import write_model_onnx  # noqa: E402
from backends.onnx.runtime import (OnnxModelMismatch, RuntimeOptions, choose_providers,  # noqa: E402
                                   load_onnx_model, physical_cores, session_options,
                                   weights_fingerprint)
from diffusion_core import list_samplers  # noqa: E402
from diffusion_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.architectures.unet import parameter_shapes  # noqa: E402

# Small widths keep exports and runs fast; the structure is what varies: 28x28 with a 7x7 full
# attention and linear attention, and a colour self-conditioned one.
CONFIGS = {
    "gray28": ModelConfig(network=UnetConfig(dim=8, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)),
    "colour16_selfcond": ModelConfig(network=UnetConfig(
        image_size=16, channels=3, dim=8, dim_mults=(1, 2), full_attn=(False, True),
        resnet_block_groups=4, attn_heads=2, attn_dim_head=4, self_condition=True)),
    "gray8_classes": ModelConfig(network=UnetConfig(
        image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True), resnet_block_groups=4,
        attn_heads=2, attn_dim_head=4, num_classes=10)),
}


def needs_export():
    pytest.importorskip("torch", reason="exporting needs torch")
    pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> checkpoint folder with model.onnx, exported on first use (once per module)."""
    folders = {}

    def get(name: str) -> Path:
        if name not in folders:
            needs_export()
            import torch

            from backends.onnx.export import main
            from backends import build_network
            from backends.pytorch import state_to_numpy
            torch.manual_seed(0)
            weights = state_to_numpy(build_network("pytorch", CONFIGS[name].network))
            folder = save_checkpoint(tmp_path_factory.mktemp("onnx") / name, CONFIGS[name], weights)
            assert main([str(folder)]) == 0  # the command line, as a user runs it
            folders[name] = folder
        return folders[name]
    return get


def pytorch_model(folder: Path):
    return load_model("pytorch", folder, device="cpu")


def inputs(cfg: UnetConfig, batch: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    shape = (batch, cfg.channels, cfg.image_size, cfg.image_size)
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


# --- export -------------------------------------------------------------------------------------

def test_export_is_one_checked_file_with_provenance(exported):
    folder = exported("gray28")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.onnx",
                                                       "model.safetensors"]  # no sidecar, no temp
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [20]
    graph_inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in model.graph.input}
    assert set(graph_inputs) == {"x", "t"} and [o.name for o in model.graph.output] == ["out"]
    assert isinstance(graph_inputs["x"][0], str) and graph_inputs["x"][1:] == [1, 28, 28]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["diffusion_toolkit.weights_sha256"] == weights_fingerprint(load_checkpoint(folder).weights)
    assert meta["diffusion_toolkit.format_version"] == "2"
    assert meta["diffusion_toolkit.architecture"] == "unet"
    assert meta["diffusion_toolkit.network_config"] == load_checkpoint(folder).config.network_json()


def test_a_format_1_export_still_loads():
    """The shipped model's graph carries format-1 stamps (the Unet config alone)."""
    folder = REPO / "models" / "default"
    meta = {p.key: p.value for p in onnx.load(folder / "model.onnx").metadata_props}
    if meta.get("diffusion_toolkit.format_version") != "1":
        pytest.skip("models/default/model.onnx has been re-exported with format-2 stamps")
    assert "diffusion_toolkit.unet_config" in meta and "diffusion_toolkit.network_config" not in meta
    model = load_model("onnxruntime", folder)
    assert model.sample(2, sampler="ddim", steps=3, seed=0).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_forward_matches_pytorch(exported, name, batch):
    folder = exported(name)
    ours, ref = load_model("onnxruntime", folder), pytorch_model(folder)
    cfg = ref.config.network
    x, cond = inputs(cfg, batch)
    for t in (0.0, 37.25, 999.0):  # a fractional t, as Euler and Heun pass
        want = ref.ops.to_numpy(ref.model(ref.ops.asarray(x), t, **self_cond(cfg, ref.ops.asarray(cond))))
        got = ours.model(x, t, **self_cond(cfg, cond))
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("sampler", list_samplers())
def test_every_sampler_runs_and_matches_pytorch(exported, sampler):
    folder = exported("gray28")
    ours, ref = load_model("onnxruntime", folder), pytorch_model(folder)
    got = ours.sample(2, sampler=sampler, steps=5, seed=3)
    want = ref.sample(2, sampler=sampler, steps=5, seed=3)
    assert got.shape == (2, 1, 28, 28) and np.isfinite(got).all()
    assert np.abs(got - want).max() < 1e-3


@pytest.mark.parametrize("name,sampler", [("gray28", "ddim"), ("gray28", "dpmpp_2m"),
                                          ("colour16_selfcond", "ddim")])
def test_same_seed_same_images_as_pytorch_over_20_steps(exported, name, sampler):
    """Per call ORT and PyTorch differ by ~1e-6 (float32 sums in another order, fused kernels);
    each step feeds those back in and the sampler scales eps by up to sqrt(1/alpha_bar) ~ 150 at
    t = 999 (linear schedule), so the final images drift further: measured 1e-5 to 4e-5 for
    20- and 50-step DDIM and DPM++(2M) on the default config (bench/onnx_speed.py prints it).
    1e-3 leaves a 25x margin and still catches a real divergence (a wrong weight, a wrong t),
    which shows up as differences of order 0.1-1."""
    folder = exported(name)
    ours, ref = load_model("onnxruntime", folder), pytorch_model(folder)
    got = ours.sample(4, sampler=sampler, steps=20, seed=11)
    want = ref.sample(4, sampler=sampler, steps=20, seed=11)
    assert np.abs(got - want).max() < 1e-3


def test_class_labels_are_an_int64_input_and_guided_images_match_pytorch(exported):
    folder = exported("gray8_classes")
    graph = onnx.load(folder / "model.onnx")
    labels = next(i for i in graph.graph.input if i.name == "class_labels")
    assert labels.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert labels.type.tensor_type.shape.dim[0].dim_param == "batch"
    ours, ref = load_model("onnxruntime", folder), pytorch_model(folder)
    for sampler in ("dpmpp_2m", "ddim"):
        kwargs = dict(sampler=sampler, steps=10, seed=4, class_labels=[0, 3, 9], guidance_scale=3.0)
        got, want = ours.sample(3, **kwargs), ref.sample(3, **kwargs)
        assert np.abs(got - want).max() < 1e-3
    plain = ref.sample(3, sampler="ddim", steps=10, seed=4)  # labels do change the images
    assert np.abs(plain - want).max() > 1e-2


# --- the backend without torch -------------------------------------------------------------------

BLOCKED_RUN = textwrap.dedent("""
    import sys
    class Block:
        # Refuse the frameworks (and the onnx package: the runtime needs onnxruntime alone).
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "mindspore", "onnx", "onnxscript"):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from backends import load_model
    images = load_model("onnxruntime", sys.argv[1]).sample(2, sampler="ddim", steps=4, seed=5)
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "mindspore", "onnx")]
    np.save(sys.argv[3], images)
""")


def test_samples_with_torch_and_mindspore_blocked(exported, tmp_path):
    folder = exported("gray28")
    out = tmp_path / "images.npy"
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(folder), str(REPO), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = load_model("onnxruntime", folder).sample(2, sampler="ddim", steps=4, seed=5)
    assert np.array_equal(np.load(out), want)


# --- refusing graphs that do not fit -------------------------------------------------------------

def copy_checkpoint(src: Path, dest: Path, config: ModelConfig = None, weights=None) -> Path:
    ck = load_checkpoint(src)
    return save_checkpoint(dest, config or ck.config, weights or ck.weights)


def test_graph_of_another_config_is_refused(exported, tmp_path):
    gray, colour = exported("gray28"), exported("colour16_selfcond")
    folder = copy_checkpoint(gray, tmp_path / "ck")
    write_model_onnx(folder, (colour / "model.onnx").read_bytes())
    with pytest.raises(OnnxModelMismatch) as e:
        load_model("onnxruntime", folder)
    message = str(e.value)
    assert "x_self_cond" in message and "size 3 on axis 1, the config needs 1" in message
    assert "python -m backends.onnx.export" in message


def test_graph_of_other_weights_is_refused(exported, tmp_path):
    gray = exported("gray28")
    weights = {k: v + 0.01 for k, v in load_checkpoint(gray).weights.items()}  # "retrained"
    folder = copy_checkpoint(gray, tmp_path / "ck", weights=weights)
    write_model_onnx(folder, (gray / "model.onnx").read_bytes())
    with pytest.raises(OnnxModelMismatch, match="exported from other weights"):
        load_model("onnxruntime", folder)


def test_corrupt_graph_is_refused(exported, tmp_path):
    folder = copy_checkpoint(exported("gray28"), tmp_path / "ck")
    write_model_onnx(folder, b"\x08\x07not a graph")
    with pytest.raises(OnnxModelMismatch, match="cannot load"):
        load_model("onnxruntime", folder)


# Hand-built graphs stand for other exporters (MindSpore's): same names, no toolkit metadata.

def scaling_graph(cfg: UnetConfig, batch="batch", t_shape=None, self_cond=False) -> bytes:
    """out = 0.5 * x + 0 * t (+ 0 * x_self_cond): an 'eps model' any sampler can run."""
    from onnx import TensorProto, helper
    t_shape = t_shape or (batch,)
    image = [batch, cfg.channels, cfg.image_size, cfg.image_size]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, image),
                    helper.make_tensor_value_info("t", TensorProto.FLOAT, list(t_shape))]
    nodes = [helper.make_node("Mul", ["x", "half"], ["scaled"]),
             helper.make_node("Mul", ["t", "zero"], ["t0"]),
             helper.make_node("ReduceSum", ["t0"], ["t_sum"], keepdims=0),
             helper.make_node("Add", ["scaled", "t_sum"], ["out"])]
    if self_cond:
        graph_inputs.append(helper.make_tensor_value_info("x_self_cond", TensorProto.FLOAT, image))
        nodes[-1] = helper.make_node("Add", ["scaled", "t_sum"], ["partial"])
        nodes += [helper.make_node("Mul", ["x_self_cond", "zero"], ["c0"]),
                  helper.make_node("Add", ["partial", "c0"], ["out"])]
    graph = helper.make_graph(
        nodes, "foreign_exporter", graph_inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, image)],
        [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


SMALL = ModelConfig(network=UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                                    resnet_block_groups=4))
SMALL_SELF_COND = ModelConfig(network=UnetConfig(**{**SMALL.network.__dict__, "self_condition": True}))


@pytest.mark.parametrize("config,t_shape", [(SMALL, ("batch",)), (SMALL, ("batch", 1)),
                                            (SMALL_SELF_COND, ("batch",))])
def test_foreign_graph_with_the_same_names_loads_and_samples(config, t_shape):
    data = scaling_graph(config.network, t_shape=t_shape, self_cond=config.network.self_condition)
    with pytest.warns(UserWarning, match="no diffusion_toolkit.weights_sha256"):
        model = load_onnx_model(data, config)
    x = np.ones((3, 1, 8, 8), np.float32)
    assert np.array_equal(model(x, 12.5), 0.5 * x)
    from diffusion_core import sample
    for sampler in list_samplers():
        images = sample(model, config.diffusion.make_schedule(), sampler=sampler, steps=3,
                        shape=(2, 1, 8, 8), seed=0, self_condition=config.network.self_condition)
        assert images.shape == (2, 1, 8, 8) and np.isfinite(images).all()


@pytest.mark.parametrize("config", [SMALL, SMALL_SELF_COND])
def test_foreign_graph_with_a_fixed_batch_runs_in_chunks(config):
    """Some exporters cannot make the batch dynamic; such a graph serves any batch, in chunks."""
    data = scaling_graph(config.network, batch=4, self_cond=config.network.self_condition)
    with pytest.warns(UserWarning):
        model = load_onnx_model(data, config)
    assert model.fixed_batch == 4
    for batch in (1, 3, 4, 9):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8), dtype=np.float32)
        assert np.array_equal(model(x, 3.0), 0.5 * x)


@pytest.mark.parametrize("graph_kwargs,message", [
    (dict(self_cond=True), r"unexpected input\(s\) \['x_self_cond'\]"),
    (dict(t_shape=("batch", 3)), "input 't' must be shaped"),
])
def test_foreign_graph_that_does_not_fit_is_refused(graph_kwargs, message):
    with pytest.raises(OnnxModelMismatch, match=message):
        load_onnx_model(scaling_graph(SMALL.network, **graph_kwargs), SMALL)


def test_graph_for_other_image_size_is_refused():
    other = UnetConfig(**{**SMALL.network.__dict__, "image_size": 16})
    with pytest.raises(OnnxModelMismatch, match="size 16 on axis 2, the config needs 8"):
        load_onnx_model(scaling_graph(other), SMALL)


# --- registry, options, files --------------------------------------------------------------------

def test_unavailable_reason_says_how_to_export(tmp_path):
    weights = {name: np.zeros(shape, np.float32) for name, shape in parameter_shapes(SMALL.network).items()}
    folder = save_checkpoint(tmp_path / "ck", SMALL, weights)
    status = backend_status("onnxruntime", load_checkpoint(folder))
    assert not status.available
    assert status.reason.startswith("this checkpoint has no model.onnx; export it with "
                                    "`python -m backends.onnx.export ")
    write_model_onnx(folder, scaling_graph(SMALL.network))
    assert backend_status("onnxruntime", load_checkpoint(folder)).available


def test_session_options_are_deliberate():
    so = session_options(RuntimeOptions())
    assert so.intra_op_num_threads == physical_cores() and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    so = session_options(RuntimeOptions(threads=3, allow_spinning=True))
    assert so.intra_op_num_threads == 3
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="optimization must be one of"):
        RuntimeOptions(optimization="fast")


def test_cuda_provider_is_used_when_onnxruntime_has_it(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers(None)[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert choose_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose_providers(None) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        choose_providers("cuda")


def test_write_model_onnx_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    write_model_onnx(tmp_path, b"old")
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_model_onnx(tmp_path, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left
    assert (tmp_path / "model.onnx").read_bytes() == b"old"


def test_export_command_explains_a_bad_folder(tmp_path, capsys):
    needs_export()
    from backends.onnx.export import main
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
