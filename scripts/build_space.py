"""Assemble the Hugging Face Space folder and (optionally) upload it.

    python scripts/build_space.py build/space                         # assemble only
    python scripts/build_space.py build/space --repo alice/diffusion-demo  # and upload (HF_TOKEN)

The folder holds what the Space runs: app.py, the three packages (diffusion_core, backends,
webapp), the default model, a README.md whose front matter tells the Hub to run app.py with
Gradio, a requirements.txt that installs the CPU-only torch build from PyTorch's own wheel index
(a plain `torch==2.13.0` resolves to the CUDA build and several GB of CUDA libraries), and a
.gitattributes that keeps the binaries in LFS for those who push with git. The upload goes through
huggingface_hub's upload_folder, which stores large files through LFS/Xet itself.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("diffusion_core", "backends", "webapp")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
GITATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n" \
                "*.png filter=lfs diff=lfs merge=lfs -text\n"


def requirements(with_mindspore: bool) -> str:
    lines = ["# The Space's own requirements; gradio itself comes from the README's sdk_version.",
             f"--extra-index-url {TORCH_CPU_INDEX}",
             "torch==2.13.0+cpu      # the CPU build: a Space of this app has no GPU",
             "numpy==1.26.4", "onnxruntime==1.32.0", "onnx==1.23.2", "safetensors==0.8.0",
             "huggingface_hub==2.4.0", "pillow<13", "tqdm==4.70.1"]
    if with_mindspore:
        lines += ["mindspore==2.10.0", "ml_dtypes==0.5.4", "pandas==3.0.6"]
    return "\n".join(lines) + "\n"


def space_card() -> str:
    front = (ROOT / "README.md").read_text().split("---", 2)
    body = ("\n# Diffusion toolkit\n\nOne diffusion model on PyTorch, MindSpore and ONNX Runtime: "
            "generate by class, redraw your own image, compare the frameworks on the same noise. "
            "The source, tests and documentation: the diffusion toolkit's repository.\n")
    return f"---{front[1]}---\n{body}"


def build(folder: Path, with_mindspore: bool = False) -> Path:
    """Write the Space folder from this clone; the folder is replaced as a whole."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, folder / package, ignore=ignore)
    shutil.copytree(ROOT / "models" / "default", folder / "models" / "default")
    shutil.copy2(ROOT / "app.py", folder / "app.py")
    (folder / "requirements.txt").write_text(requirements(with_mindspore))
    (folder / "README.md").write_text(space_card())
    (folder / ".gitattributes").write_text(GITATTRIBUTES)
    return folder


def upload(folder: Path, repo_id: str, token: str | None = None, endpoint: str | None = None,
           private: bool = False) -> str:
    from huggingface_hub import HfApi
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                             commit_message="Deploy the diffusion toolkit app")
    return str(info.commit_url)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="where to assemble the Space (replaced as a whole)")
    p.add_argument("--repo", help="upload to this Space repo id (owner/name); token from HF_TOKEN")
    p.add_argument("--endpoint", help="Hub URL (default HF_ENDPOINT or huggingface.co)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--with-mindspore", action="store_true",
                   help="also install MindSpore on the Space (about 1 GB more; the page offers it)")
    args = p.parse_args(argv)
    folder = build(Path(args.folder), args.with_mindspore)
    print(f"assembled {folder}")
    if args.repo:
        print(upload(folder, args.repo, endpoint=args.endpoint, private=args.private))
    return 0


if __name__ == "__main__":
    sys.exit(main())
