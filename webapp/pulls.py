"""Hub pulls for a public server: only the visitor's own token, bounded downloads, no leftovers.

    <root>/accepted/<owner>--<name>@<sha>/   checkpoints that passed validation (plain files)
    <root>/incoming-<id>/                   one pull's huggingface_hub cache, removed when it ends

Every pull downloads into a fresh incoming folder and copies a validated checkpoint into
accepted/ (atomically); the incoming folder goes whatever happens, so a rejected repo or a killed
pull leaves nothing behind (incoming folders of killed processes are removed at the next start
and pull). The same repo at the same commit is downloaded once and shared by every session that
pulls it. accepted/ keeps the `hub_keep` most recently used checkpoints.

The server's own token is never used to pull: huggingface_hub would pick up HF_TOKEN by itself,
so every call passes the visitor's token or `False`.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

from diffusion_core import hub
from diffusion_core.checkpoint import CheckpointError, load_checkpoint
from diffusion_core.hub import HubError

from .settings import ServerSettings, ServiceError

STALE_SECONDS = 600   # an incoming folder this old belongs to a pull that died


class HubPulls:
    def __init__(self, settings: ServerSettings, root: Optional[Path] = None, endpoint: Optional[str] = None):
        self.settings, self.endpoint = settings, endpoint
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "diffusion-toolkit-pulls"
        self.accepted = self.root / "accepted"
        self.accepted.mkdir(parents=True, exist_ok=True)
        self.remove_partials(older_than=0.0)

    def remove_partials(self, older_than: float = STALE_SECONDS) -> None:
        cutoff = time.time() - older_than
        for folder in self.root.glob("incoming-*"):
            try:
                if folder.stat().st_mtime <= cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass

    def pull(self, repo_id: str, revision: Optional[str], token: Optional[str]) -> tuple[Path, str]:
        """(folder of the validated checkpoint, what the page calls it); ServiceError otherwise."""
        if not self.settings.allow_pull:
            raise ServiceError("pulling models is turned off on this server (DIFFUSION_ALLOW_PULL)")
        repo_id, revision = (repo_id or "").strip(), (revision or "").strip() or None
        if repo_id and not self.settings.allows_repo(repo_id):
            raise ServiceError(f"this server only pulls {self.settings.hub_allow}; {repo_id} is not among them")
        credential = (token or "").strip() or False   # never the server's HF_TOKEN
        try:
            sha = hub.resolve_revision(repo_id, revision, token=credential, endpoint=self.endpoint)
        except HubError as error:
            kept = self._kept_copy(repo_id, revision) if "cannot connect" in str(error) else None
            if kept is None:
                raise ServiceError(str(error)) from None
            kept.touch()  # the Hub is unreachable: serve the copy pulled before
            return kept, f"{repo_id}@{revision or 'main'} ({kept.name.rsplit('@', 1)[1][:8]}, offline)"
        target = self.accepted / f"{repo_id.replace('/', '--')}@{sha}"
        try:
            if not self._usable(target):
                self._download(repo_id, sha, credential, target)
        except HubError as error:
            raise ServiceError(str(error)) from None
        target.touch()  # most recently used
        self._prune(keep=target)
        return target, f"{repo_id}@{revision or 'main'} ({sha[:8]})"

    def _download(self, repo_id: str, sha: str, credential, target: Path) -> None:
        from diffusion_core.checkpoint import CHECKPOINT_FILES
        from diffusion_core.convert.diffusers import READ_FILES
        size = hub.download_size(repo_id, sha, list(CHECKPOINT_FILES) + list(READ_FILES), token=credential,
                                 endpoint=self.endpoint)
        limit = self.settings.max_download_mb * 2 ** 20
        if size > limit:
            raise ServiceError(f"{repo_id} holds {size / 2 ** 20:,.0f} MB of checkpoint files, more than "
                               f"this server downloads ({self.settings.max_download_mb} MB)")
        self.remove_partials()
        incoming = self.root / f"incoming-{uuid.uuid4().hex[:12]}"
        try:
            hub.pull(repo_id, revision=sha, cache_dir=incoming, token=credential, endpoint=self.endpoint,
                     local_dir=target)   # a diffusers repo arrives converted to the toolkit's layout
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        from .imports import add_onnx
        add_onnx(target)

    def _kept_copy(self, repo_id: str, revision: Optional[str]) -> Optional[Path]:
        """The most recently used accepted copy of repo_id (at a commit starting with revision, if
        revision looks like a sha), for pulls while the Hub cannot be reached."""
        prefix = f"{repo_id.replace('/', '--')}@"
        sha = revision if revision and re.fullmatch(r"[0-9a-f]{7,40}", revision) else ""
        copies = [f for f in self.accepted.glob(prefix + sha + "*") if self._usable(f)]
        return max(copies, key=lambda f: f.stat().st_mtime) if copies else None

    @staticmethod
    def _usable(folder: Path) -> bool:
        if not folder.is_dir():
            return False
        try:
            load_checkpoint(folder)
            return True
        except (CheckpointError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
            return False

    def _prune(self, keep: Path) -> None:
        folders = sorted((f for f in self.accepted.iterdir() if f.is_dir() and f != keep
                          and re.search(r"@[0-9a-f]{7,}$", f.name)),
                         key=lambda f: f.stat().st_mtime, reverse=True)
        for old in folders[max(0, self.settings.hub_keep - 1):]:
            shutil.rmtree(old, ignore_errors=True)


