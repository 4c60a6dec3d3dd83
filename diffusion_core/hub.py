"""Push a checkpoint folder to the Hugging Face Hub and pull one back, with errors a user can act on.

All HTTP goes through huggingface_hub (create_repo, upload_folder, snapshot_download); this module
adds what a checkpoint needs around it: the folder is validated before it leaves the machine and
after it arrives, only checkpoint files travel, every failure becomes one HubError sentence that
says what to do, and the token never appears in a message. Pulled files live in huggingface_hub's
cache, so a repo pulled once loads again with no network (HF_HUB_OFFLINE=1, or the Hub unreachable).

Command line (run `python -m diffusion_core.hub --help`):
    python -m diffusion_core.hub push runs/fashion alice/ddpm-fashion
    python -m diffusion_core.hub pull alice/ddpm-fashion --revision 3f2a...
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

from .checkpoint import (CHECKPOINT_FILES, CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint,
                         staging_folder, swap_into_place, write_durably)

DEFAULT_COMMIT_MESSAGE = "Upload diffusion checkpoint"
_TOKEN_HELP = "create one at https://huggingface.co/settings/tokens and set HF_TOKEN"


class HubError(RuntimeError):
    """A push or pull that cannot work; the message is one sentence saying why and what to do."""


def _check_repo_id(repo_id: object) -> str:
    """Refuse malformed ids before any network traffic, in words rather than a regex."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    rule = ("use 'owner/name' with letters, digits, '-', '_' or '.', no '--' or '..', "
            "at most 96 characters (e.g. 'alice/ddpm-fashion-mnist')")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise HubError(f"repo id {repo_id!r} is malformed: {rule}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"repo id {repo_id!r} is malformed: {rule}") from None
    return repo_id


def _offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set since (it reads it only once)."""
    from huggingface_hub import constants

    from_env = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return constants.is_offline_mode() or from_env


def _endpoint(endpoint: str | None) -> str:
    """The Hub URL: the argument, else HF_ENDPOINT now (huggingface_hub reads it only at import)."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _scrub(text: str, token: str | bool | None) -> str:
    """One line, and never the token, whatever a server or library put in the text. Only the
    whole token is masked, and only a string long enough to be one: masking every occurrence of a
    one-character "token" would garble the message."""
    text = " ".join(str(text).split())
    return text.replace(token, "***") if isinstance(token, str) and len(token) >= 8 else text


def _as_hub_error(error: Exception, *, repo_id: str, revision: str | None, endpoint: str,
                  token: str | None, pushing: bool) -> HubError | None:
    """Translate a huggingface_hub / transport failure into one sentence; None if it is not one."""
    import httpx2  # huggingface_hub 2.x's HTTP client
    from huggingface_hub import errors as hf

    rev = revision or "main"
    if isinstance(error, hf.RevisionNotFoundError):
        message = (f"revision {rev!r} does not exist in {repo_id}; use a branch name or a full commit "
                   "sha from the repo's history")
    elif isinstance(error, hf.RepositoryNotFoundError):
        message = (f"repo {repo_id} was not found on {endpoint}; check the id, and if the repo is private "
                   f"pass a token that can read it ({_TOKEN_HELP})")
    elif isinstance(error, hf.HfHubHTTPError) and error.response is not None \
            and error.response.status_code in (401, 403):
        status = error.response.status_code
        message = (f"{endpoint} refused the access token ({status}): it is expired, invalid or lacks "
                   f"{'write' if pushing else 'read'} access to {repo_id}; {_TOKEN_HELP}")
    elif isinstance(error, hf.IncompleteSnapshotError):
        message = (f"the cached copy of {repo_id} (revision {rev!r}) is incomplete and {endpoint} cannot be "
                   "reached; pull again with network access to finish it")
    elif isinstance(error, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        why = "offline mode is on (HF_HUB_OFFLINE)" if _offline() else f"{endpoint} cannot be reached"
        message = (f"{repo_id} (revision {rev!r}) is not in the local cache and {why}; pull it once "
                   "with network access")
    elif isinstance(error, httpx2.ConnectError):
        message = f"cannot connect to {endpoint}; check your network connection or the endpoint"
    elif isinstance(error, httpx2.TransportError) or (
            isinstance(error, OSError) and "Consistency check failed" in str(error)):
        if pushing:
            message = (f"the network failed while uploading to {repo_id} ({type(error).__name__}); the repo "
                       "keeps its previous commit, run the command again")
        else:
            message = (f"the network failed while downloading {repo_id} ({type(error).__name__}); nothing "
                       "was written to your folder, run the command again (it resumes)")
    elif isinstance(error, hf.FileMetadataError):
        message = (f"{endpoint} answered without the headers a Hugging Face Hub sends; check the endpoint "
                   "(HF_ENDPOINT or --endpoint) and any proxy in between")
    elif isinstance(error, hf.HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "an error"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        message = f"{endpoint} answered {status} for {repo_id}: {first_line}"
    else:
        return None
    return HubError(_scrub(message, token))


def push(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
         commit_message: str = DEFAULT_COMMIT_MESSAGE, endpoint: str | None = None,
         revision: str | None = None,
         expected_shapes: Mapping[str, Sequence[int]] | None = None) -> str:
    """Upload a checkpoint folder to repo_id (created if missing) and return the commit URL.

    The folder is validated with load_checkpoint first (expected_shapes as there). Only checkpoint
    files travel; checkpoint files the folder no longer has (an old model.onnx) are deleted from the
    repo. token: argument, else HF_TOKEN, else the token saved by `hf auth login`. revision: the
    branch to commit to, created from main if missing. Raises CheckpointError or HubError.
    """
    from huggingface_hub import HfApi, constants, get_token

    _check_repo_id(repo_id)
    if revision is not None and re.fullmatch(r"[0-9a-fA-F]{40}", revision):
        raise HubError(f"cannot push to commit {revision}: commits are immutable; push to a branch name")
    load_checkpoint(folder, expected_shapes=expected_shapes)
    token = token or get_token()  # HF_TOKEN, else the token saved by `hf auth login`
    if not token:
        raise HubError(f"pushing needs a Hugging Face access token with write access; {_TOKEN_HELP} "
                       "or pass token=")
    endpoint = _endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 revision=revision, allow_patterns=list(CHECKPOINT_FILES),
                                 delete_patterns=list(CHECKPOINT_FILES))
    except Exception as error:
        translated = _as_hub_error(error, repo_id=repo_id, revision=revision, endpoint=endpoint,
                                   token=token, pushing=True)
        if translated is None:
            raise
        raise translated from None
    return str(info.commit_url)


def pull(repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None,
         token: str | None = None, endpoint: str | None = None, local_dir: str | os.PathLike | None = None,
         expected_shapes: Mapping[str, Sequence[int]] | None = None) -> Path:
    """Download a checkpoint (or find it in the cache), validate it, and return its folder.

    A repo in the toolkit's layout or in a diffusers one (a UNet2DModel folder, unet/ + scheduler/,
    or a DDPMPipeline-style repo; convert/diffusers.py) is accepted; only the files those layouts
    read are downloaded, so pickled weights (.bin, .ckpt, .pt) never are, and a repo that has
    nothing else is refused in one sentence saying what to do.
    revision: branch, tag or commit sha (default main). The files land in huggingface_hub's cache
    (cache_dir, default ~/.cache/huggingface/hub) and the returned path is the cached snapshot;
    with local_dir the checkpoint is also written there (a diffusers repo converted to the toolkit's
    layout), replacing it atomically only once all is verified.
    Offline (HF_HUB_OFFLINE=1, or the Hub unreachable) a cached revision loads with no network.
    """
    from huggingface_hub import snapshot_download

    from .convert import open_checkpoint, save_imported
    from .convert.diffusers import (PICKLED, READ_FILES, WEIGHTS, WEIGHTS_FP16, find_layout,
                                    pickle_only_message)

    _check_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise HubError(f"revision {revision!r} is empty; give a branch name, tag or commit sha")
    endpoint = _endpoint(endpoint)
    try:
        snapshot = Path(snapshot_download(repo_id, repo_type="model", revision=revision, cache_dir=cache_dir,
                                          token=token, endpoint=endpoint, local_files_only=_offline(),
                                          allow_patterns=list(CHECKPOINT_FILES) + list(READ_FILES)))
    except Exception as error:
        translated = _as_hub_error(error, repo_id=repo_id, revision=revision, endpoint=endpoint,
                                   token=token, pushing=False)
        if translated is None:
            raise
        raise translated from None
    where = f"{repo_id} (revision {revision or 'main'!r})"
    try:
        foreign = find_layout(snapshot)
    except ValueError as error:  # a diffusers repo of a kind this toolkit does not read
        raise HubError(_scrub(f"{where}: {error}", token)) from None
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (snapshot / name).is_file()]
    no_weights = (missing if foreign is None else
                  [w for w in (WEIGHTS, WEIGHTS_FP16) if not (foreign.unet / w).is_file()] == [WEIGHTS, WEIGHTS_FP16])
    if no_weights:   # say so if the weights are there only as pickles, which are never downloaded
        pickled = [name for name in _repo_files(repo_id, revision, token, endpoint)
                   if name.rsplit("/", 1)[-1] in PICKLED or name.endswith((".bin", ".ckpt", ".pt", ".pth"))]
        if pickled:
            raise HubError(_scrub(pickle_only_message(where, pickled), token))
    if foreign is None and missing:
        raise HubError(f"{where} has no {' or '.join(missing)}, so it is not a diffusion checkpoint nor a "
                       "diffusers UNet2DModel repo; check the repo id, or push a checkpoint folder to it")
    try:
        checkpoint = (load_checkpoint(snapshot, expected_shapes=expected_shapes) if foreign is None
                      else open_checkpoint(snapshot, source=f"{repo_id}@{snapshot.name}"))
    except CheckpointError as error:
        raise HubError(_scrub(f"{where} holds a checkpoint this toolkit cannot load: {error}", token)) from None
    if local_dir is None:
        return snapshot
    target = Path(local_dir).expanduser().absolute()
    if foreign is not None:
        try:
            return save_imported(target, checkpoint.config, checkpoint.weights)
        except CheckpointError as error:
            raise HubError(str(error)) from None
    return _copy_atomically(snapshot, target)


def _repo_files(repo_id: str, revision: str | None, token: str | None, endpoint: str) -> list[str]:
    """The repo's file names, to say why it cannot be read; [] when the Hub cannot be asked."""
    from huggingface_hub import HfApi
    if _offline():
        return []
    try:
        return list(HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=revision))
    except Exception:  # only used to word an error better; the error is raised either way
        return []


def resolve_revision(repo_id: str, revision: str | None = None, *, token: str | bool | None = None,
                     endpoint: str | None = None) -> str:
    """The commit sha a branch, tag or sha names (network); HubError as pull() words it."""
    from huggingface_hub import HfApi
    _check_repo_id(repo_id)
    endpoint = _endpoint(endpoint)
    try:
        return str(HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision).sha)
    except Exception as error:
        translated = _as_hub_error(error, repo_id=repo_id, revision=revision, endpoint=endpoint,
                                   token=token, pushing=False)
        if translated is None:
            raise
        raise translated from None


def download_size(repo_id: str, revision: str, patterns: Sequence[str] = CHECKPOINT_FILES, *,
                  token: str | bool | None = None, endpoint: str | None = None) -> int:
    """Bytes that pulling the checkpoint files of repo_id@revision would download."""
    import fnmatch

    from huggingface_hub import HfApi
    endpoint = _endpoint(endpoint)
    try:
        entries = HfApi(endpoint=endpoint, token=token).list_repo_tree(repo_id, revision=revision,
                                                                       recursive=True)
        return sum(int(getattr(e, "size", 0) or 0) for e in entries
                   if any(fnmatch.fnmatch(e.path, p) for p in patterns))
    except Exception as error:
        translated = _as_hub_error(error, repo_id=repo_id, revision=revision, endpoint=endpoint,
                                   token=token, pushing=False)
        if translated is None:
            raise
        raise translated from None


def _copy_atomically(snapshot: Path, target: Path) -> Path:
    """Copy a verified snapshot into the user's folder: all of it, or (on any failure) none of it."""
    staging = staging_folder(target)
    try:
        for path in snapshot.iterdir():
            if path.name in CHECKPOINT_FILES:
                write_durably(staging / path.name, path.read_bytes())  # follows the cache's symlinks
        swap_into_place(staging, target)
    except CheckpointError as error:
        raise HubError(str(error)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffusion_core.hub",
        description="Share diffusion checkpoints through the Hugging Face Hub. A checkpoint is a folder "
                    "written by diffusion_core.checkpoint.save_checkpoint: config.json, model.safetensors, "
                    "README.md and optionally model.onnx and samples.png.",
        epilog="Authentication: pushing needs an access token with write access, read from the HF_TOKEN "
               "environment variable (or `hf auth login`); pulling a public repo needs none. "
               "Set HF_HUB_OFFLINE=1 to use only what is already cached. "
               "Examples: push runs/fashion alice/ddpm-fashion | pull alice/ddpm-fashion --local-dir model")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{push,pull}")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
        sub.add_argument("--token", help="access token; prefer the HF_TOKEN environment variable, which "
                                         "stays out of your shell history")

    up = commands.add_parser("push", help="upload a checkpoint folder to a Hub repo (created if needed)",
                             description="Validate a checkpoint folder, create the repo if it does not "
                                         "exist, and commit the checkpoint files to it. Prints the commit URL.")
    up.add_argument("folder", help="checkpoint folder (holds config.json and model.safetensors)")
    up.add_argument("repo_id", help="target repo as owner/name, e.g. alice/ddpm-fashion")
    up.add_argument("--private", action="store_true", help="create the repo as private (an existing "
                                                           "repo keeps its visibility)")
    up.add_argument("--message", default=DEFAULT_COMMIT_MESSAGE, help="commit message")
    up.add_argument("--revision", help="branch to commit to, created from main if missing (default: main)")
    common(up)

    down = commands.add_parser("pull", help="download a checkpoint from the Hub (or the local cache)",
                               description="Download a checkpoint into the Hugging Face cache, validate it, "
                                           "and print the folder that holds it.")
    down.add_argument("repo_id", help="repo as owner/name, e.g. alice/ddpm-fashion")
    down.add_argument("--revision", help="branch, tag or commit sha (default: main)")
    down.add_argument("--cache-dir", help="cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)")
    down.add_argument("--local-dir", help="also copy the checkpoint into this folder (replaced as a whole)")
    common(down)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "push":
            print(push(args.folder, args.repo_id, token=args.token, private=args.private,
                       commit_message=args.message, endpoint=args.endpoint, revision=args.revision))
        else:
            print(pull(args.repo_id, revision=args.revision, cache_dir=args.cache_dir, token=args.token,
                       endpoint=args.endpoint, local_dir=args.local_dir))
    except (HubError, CheckpointError) as error:
        token = args.token or os.environ.get("HF_TOKEN")
        print(f"error: {_scrub(str(error), token)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
