"""Where the files that ship with the toolkit are, in a clone and in an installed wheel."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def default_model_dir() -> Path:
    """The shipped default model: <clone>/models/default, or inside the installed package."""
    in_clone = _HERE.parent / "models" / "default"
    if (in_clone / "config.json").is_file():
        return in_clone
    return _HERE / "models" / "default"
