"""Push / pull through a fake Hugging Face Hub (tests/hub_server.py) with the real huggingface_hub client."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the packages live at the repository root, not installed
    sys.path.insert(0, str(REPO))

huggingface_hub = pytest.importorskip("huggingface_hub", reason="hub tests need huggingface_hub installed")
import huggingface_hub.constants as hf_constants  # noqa: E402  (a lazy attribute of the package)

from diffusion_core.checkpoint import CHECKPOINT_FILES, CheckpointError, save_checkpoint  # noqa: E402
from diffusion_core import ModelConfig, UnetConfig  # noqa: E402
from diffusion_core.hub import HubError, pull, push  # noqa: E402

SHAPES = {"init_conv.weight": (4, 1, 3, 3), "init_conv.bias": (4,)}
CONFIG = ModelConfig(notes={"dataset": "fashion_mnist", "epochs": 1})


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path):
    """Only tokens a test passes may reach the server: no HF_TOKEN, no token saved by `hf auth login`."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def make_checkpoint(folder: Path, seed: int = 0, onnx: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in SHAPES.items()}
    return save_checkpoint(folder, CONFIG, weights, onnx_bytes=b"graph %d" % seed if onnx else None,
                           sample_grid=rng.random((8, 16)))


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def do_push(hub, folder, repo_id="tester/ddpm", **kwargs) -> str:
    kwargs = {"token": hub.token, **kwargs}
    return push(folder, repo_id, endpoint=hub.endpoint, expected_shapes=SHAPES, **kwargs)


def do_pull(hub, cache, repo_id="tester/ddpm", **kwargs) -> Path:
    endpoint = kwargs.pop("endpoint", hub.endpoint)
    return pull(repo_id, cache_dir=cache, endpoint=endpoint, expected_shapes=SHAPES, **kwargs)


def test_push_then_pull_into_an_empty_cache_gives_identical_files(hub_server, tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    url = do_push(hub_server, folder)
    assert url.startswith(f"{hub_server.endpoint}/tester/ddpm/commit/")
    pulled = do_pull(hub_server, tmp_path / "cache")
    assert files_of(pulled) == files_of(folder)
    assert pulled.parent.name == "snapshots" and pulled.name == url.rsplit("/", 1)[1]


def test_push_twice_and_pull_each_revision(hub_server, tmp_path):
    first_url = do_push(hub_server, make_checkpoint(tmp_path / "v1", seed=1))
    second = make_checkpoint(tmp_path / "v2", seed=2, onnx=False)
    second_url = do_push(hub_server, second, commit_message="second run")
    first_sha = first_url.rsplit("/", 1)[1]
    assert first_sha != second_url.rsplit("/", 1)[1]
    latest = do_pull(hub_server, tmp_path / "cache")
    assert files_of(latest) == files_of(second)  # model.onnx of the first push was removed
    old = do_pull(hub_server, tmp_path / "cache", revision=first_sha)
    assert files_of(old) == files_of(tmp_path / "v1")
    assert files_of(do_pull(hub_server, tmp_path / "cache2", revision=first_sha[:10])) == files_of(old)


def test_push_to_a_branch_leaves_main_alone(hub_server, tmp_path):
    do_push(hub_server, make_checkpoint(tmp_path / "v1", seed=1))
    do_push(hub_server, make_checkpoint(tmp_path / "v2", seed=2), revision="experiment")
    assert files_of(do_pull(hub_server, tmp_path / "c", revision="experiment")) == files_of(tmp_path / "v2")
    assert files_of(do_pull(hub_server, tmp_path / "c")) == files_of(tmp_path / "v1")


def test_pull_from_the_cache_when_offline_or_the_hub_is_down(hub_server, tmp_path, monkeypatch):
    sha = do_push(hub_server, make_checkpoint(tmp_path / "ckpt")).rsplit("/", 1)[1]
    cache = tmp_path / "cache"
    online = do_pull(hub_server, cache)
    hub_server.stop()
    assert do_pull(hub_server, cache) == online  # unreachable: falls back to the cache
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert do_pull(hub_server, cache) == online
    assert do_pull(hub_server, cache, revision=sha) == online
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub read it at import
    assert do_pull(hub_server, cache) == online


def test_not_cached_and_not_reachable_is_one_sentence(hub_server, tmp_path, monkeypatch):
    hub_server.stop()
    with pytest.raises(HubError) as error:
        do_pull(hub_server, tmp_path / "cache")
    message = str(error.value)
    assert "is not in the local cache" in message and "cannot be reached" in message
    assert "\n" not in message and "Traceback" not in message
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="not in the local cache and offline mode is on"):
        do_pull(hub_server, tmp_path / "cache")


def test_pushing_to_an_unreachable_hub(hub_server, tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    hub_server.stop()
    with pytest.raises(HubError, match="cannot connect to http://127.0.0.1"):
        do_push(hub_server, folder)


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "a b/c", "alice/x--y", "alice/x..y",
                                     "-alice/x", "alice/", "alice/" + "x" * 97, "", None, 42])
def test_malformed_repo_ids_are_refused_before_any_request(hub_server, tmp_path, repo_id):
    folder = make_checkpoint(tmp_path / "ckpt")
    with pytest.raises(HubError, match="is malformed: use 'owner/name'"):
        do_push(hub_server, folder, repo_id=repo_id)
    with pytest.raises(HubError, match="is malformed"):
        do_pull(hub_server, tmp_path / "cache", repo_id=repo_id)
    assert hub_server.requests == []


def test_missing_repo_missing_files_and_wrong_revisions(hub_server, tmp_path):
    with pytest.raises(HubError, match="repo tester/nothing was not found on http"):
        do_pull(hub_server, tmp_path / "c", repo_id="tester/nothing")
    hub_server.create_repo("tester/empty")  # holds only .gitattributes, like a fresh Hub repo
    with pytest.raises(HubError, match="has no config.json or model.safetensors, so it is not a diffusion"):
        do_pull(hub_server, tmp_path / "c", repo_id="tester/empty")
    do_push(hub_server, make_checkpoint(tmp_path / "ckpt"))
    for revision in ("no-such-branch", "0" * 40):
        with pytest.raises(HubError, match=f"revision '{revision}' does not exist in tester/ddpm"):
            do_pull(hub_server, tmp_path / "c", revision=revision)
    with pytest.raises(HubError, match="is empty"):
        do_pull(hub_server, tmp_path / "c", revision=" ")


def test_a_broken_checkpoint_on_the_hub_is_reported(hub_server, tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    api = huggingface_hub.HfApi(endpoint=hub_server.endpoint, token=hub_server.token)
    api.create_repo("tester/broken")
    api.upload_folder(repo_id="tester/broken", folder_path=folder)  # bypasses push's validation
    with pytest.raises(HubError, match="holds a checkpoint this toolkit cannot load: .*truncated or corrupt"):
        do_pull(hub_server, tmp_path / "c", repo_id="tester/broken")


def test_push_checks_the_folder_and_the_token_before_any_request(hub_server, tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    with pytest.raises(HubError, match="needs a Hugging Face access token"):
        do_push(hub_server, folder, token=None)
    with pytest.raises(HubError, match="commits are immutable; push to a branch name"):
        do_push(hub_server, folder, revision="a" * 40)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        do_push(hub_server, folder)
    assert hub_server.requests == []


def test_private_repos_need_the_right_token(hub_server, tmp_path):
    folder = make_checkpoint(tmp_path / "ckpt")
    do_push(hub_server, folder, repo_id="tester/secret", private=True)
    with pytest.raises(HubError, match="not found.*if the repo is private pass a token"):
        do_pull(hub_server, tmp_path / "c1", repo_id="tester/secret")
    with pytest.raises(HubError, match=r"refused the access token \(401\).*expired"):
        do_pull(hub_server, tmp_path / "c2", repo_id="tester/secret", token="hf_expired")
    pulled = do_pull(hub_server, tmp_path / "c3", repo_id="tester/secret", token=hub_server.token)
    assert files_of(pulled) == files_of(folder)


def test_a_network_failure_mid_download_leaves_nothing_half_written(hub_server, tmp_path, monkeypatch):
    import huggingface_hub.file_download as file_download

    # huggingface_hub retries a broken download 5 times, a second apart; skip the waiting.
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    folder = make_checkpoint(tmp_path / "ckpt")
    do_push(hub_server, folder)
    hub_server.cut_downloads_after = 64
    target = tmp_path / "model"
    with pytest.raises(HubError, match="network failed while downloading tester/ddpm .*run the command again"):
        do_pull(hub_server, tmp_path / "cache", local_dir=target)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ckpt"]
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # the cache knows its copy is partial
    with pytest.raises(HubError, match="cached copy of tester/ddpm .* is incomplete"):
        do_pull(hub_server, tmp_path / "cache")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    hub_server.cut_downloads_after = None  # the network is back: the same call completes
    assert do_pull(hub_server, tmp_path / "cache", local_dir=target) == target
    assert files_of(target) == files_of(folder)


def test_pull_into_a_local_folder_replaces_it_whole(hub_server, tmp_path):
    do_push(hub_server, make_checkpoint(tmp_path / "v1", seed=1))
    target = make_checkpoint(tmp_path / "model", seed=9)  # an older checkpoint with a graph
    do_push(hub_server, make_checkpoint(tmp_path / "v2", seed=2, onnx=False))
    do_pull(hub_server, tmp_path / "cache", local_dir=target)
    assert files_of(target) == files_of(tmp_path / "v2")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(HubError, match="not part of a checkpoint.*thesis.tex"):
        do_pull(hub_server, tmp_path / "cache", local_dir=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["thesis.tex"]


def test_the_token_never_appears_in_errors_logs_or_output(hub_server, tmp_path, monkeypatch, caplog, capfd):
    hub_logger = logging.getLogger("huggingface_hub")
    monkeypatch.setattr(hub_logger, "level", logging.DEBUG)
    hub_logger.addHandler(caplog.handler)
    monkeypatch.setattr(hf_constants, "HF_DEBUG", True)  # logs every request as curl
    caplog.set_level(logging.DEBUG)
    good, bad = hub_server.token, "hf_LeakCheck_5f1e9a77c0ffee"
    folder = make_checkpoint(tmp_path / "ckpt")
    messages = []
    try:
        do_push(hub_server, folder, repo_id="tester/secret", private=True)
        do_pull(hub_server, tmp_path / "c1", repo_id="tester/secret", token=good)
        for call in (lambda: do_push(hub_server, folder, repo_id="tester/secret", token=bad),
                     lambda: do_pull(hub_server, tmp_path / "c2", repo_id="tester/secret", token=bad),
                     lambda: do_pull(hub_server, tmp_path / "c3", repo_id="tester/missing", token=bad)):
            with pytest.raises(HubError, match=r"refused the access token \(401\): it is expired") as error:
                call()
            messages.append(repr(error.value) + repr(error.value.__context__) + repr(error.value.__cause__))
    finally:
        hub_logger.removeHandler(caplog.handler)
    out, err = capfd.readouterr()
    assert "authenticated: True" in caplog.text  # the debug log did run
    for text in messages + [caplog.text, out, err]:
        assert good not in text and bad not in text


# --- command line -------------------------------------------------------------------------------

def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return subprocess.run([sys.executable, "-m", "diffusion_core.hub", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, env={**base, **(env or {})})


def test_cli_help_speaks_to_a_newcomer():
    result = run_cli("--help")
    assert result.returncode == 0
    for words in ("push", "pull", "HF_TOKEN", "HF_HUB_OFFLINE", "save_checkpoint"):
        assert words in result.stdout


def test_cli_errors_are_one_line_and_exit_2(hub_server, tmp_path):
    env = {"HF_HOME": str(tmp_path / "home"), "HF_TOKEN": "hf_CliLeakCheck_0123456789"}
    hub_server.stop()
    for args in (["pull", "not a repo id"],
                 ["pull", "tester/ddpm", "--endpoint", hub_server.endpoint],
                 ["push", str(tmp_path / "missing"), "tester/ddpm", "--endpoint", hub_server.endpoint]):
        result = run_cli(*args, env=env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
        assert env["HF_TOKEN"] not in result.stderr + result.stdout


def test_cli_push_and_pull_with_the_real_unet_layout(hub_server, tmp_path):
    config = ModelConfig(network=UnetConfig(image_size=8, dim=8, dim_mults=(1, 2), full_attn=(False, True),
                                         resnet_block_groups=4, attn_heads=2, attn_dim_head=4))
    rng = np.random.default_rng(0)
    shapes = config.architecture.parameter_shapes(config.network)
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    folder = save_checkpoint(tmp_path / "ckpt", config, weights)
    env = {"HF_HOME": str(tmp_path / "home"), "HF_TOKEN": hub_server.token}
    pushed = run_cli("push", str(folder), "tester/cli", env={**env, "HF_ENDPOINT": hub_server.endpoint})
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip().startswith(f"{hub_server.endpoint}/tester/cli/commit/")
    args = ["pull", "tester/cli", "--cache-dir", str(tmp_path / "cache"), "--local-dir", str(tmp_path / "out")]
    pulled = run_cli(*args, "--endpoint", hub_server.endpoint, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(tmp_path / "out")
    assert files_of(tmp_path / "out") == files_of(folder)
    hub_server.stop()
    offline = run_cli(*args, env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr
    assert sorted(files_of(tmp_path / "out")) == sorted(set(CHECKPOINT_FILES) - {"model.onnx", "samples.png"})
