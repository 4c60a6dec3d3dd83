"""Writing a file so that readers see the old contents or the new, never half of either."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make renames and new entries in a folder durable (POSIX; Windows cannot open folders)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_dead_writes(path: Path) -> None:
    """Remove temporary files a killed process left for path (their names carry the writer's pid;
    a live writer's, another thread's or process's, are left alone)."""
    for leftover in path.parent.glob(f".{path.name}.incoming-*"):
        try:
            pid = int(leftover.name.rsplit(".incoming-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def write_atomically(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Temporary file in the same folder (so the rename cannot cross file systems), fsync,
    os.replace; the temporary file is removed if anything fails. `durable` also fsyncs the folder,
    so the rename itself survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_writes(path)
    tmp = path.with_name(f".{path.name}.incoming-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_folder(path.parent)
    return path
