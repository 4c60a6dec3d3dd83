"""The MindSpore trainer as a script file, for msrun (which launches files, not modules):

    msrun --worker_num 2 --local_worker_num 2 --join True backends/mindspore/launch.py <train flags>

msrun starts workers with the `python` found on PATH, so run it from the activated environment.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    root = str(Path(__file__).resolve().parents[2])  # a clone's root, if the package is not installed
    if root not in sys.path:
        sys.path.insert(0, root)
    from backends.mindspore.train import main
    sys.exit(main())
