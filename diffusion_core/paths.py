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


def toolkit_backends():
    """The toolkit's own `backends` package; ImportError, saying what to do, if the name is taken
    by another project's module (a generic top-level name can be)."""
    import backends
    if not getattr(backends, "TOOLKIT_BACKENDS", False):
        raise ImportError(f"the module `backends` at {getattr(backends, '__file__', '?')} is not the diffusion "
                          "toolkit's (another installed project uses the same top-level name); install the "
                          "toolkit in a virtual environment of its own")
    return backends
