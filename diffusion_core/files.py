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


def write_atomically(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Temporary file in the same folder (so the rename cannot cross file systems), fsync,
    os.replace; the temporary file is removed if anything fails. `durable` also fsyncs the folder,
    so the rename itself survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
