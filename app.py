"""The diffusion toolkit's web app: generate, image-to-image, compare backends, pull and push models.

    python app.py                        # http://127.0.0.1:7860, model from models/default
    python app.py --help                 # every option, and the environment variables they read

The page is webapp/page.py (layout and wiring; the work is webapp.DiffusionService). This file is
what `python app.py` and a Hugging Face Space (README front matter) run.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the clone's packages, installed or not

from webapp.page import build_demo, launch, main, parse_args  # noqa: E402

__all__ = ["build_demo", "launch", "main", "parse_args"]

if __name__ == "__main__":
    raise SystemExit(main())
