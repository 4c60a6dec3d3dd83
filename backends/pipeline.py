"""A pipeline-style API beside the functions, for people who know diffusers' pipelines:

    from backends import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(backend="onnxruntime")  # the shipped model; a folder, a Hub id
    images = pipe(16, sampler="dpmpp_2m", steps=20, seed=0)          # a list of PIL images
    arrays = pipe(4, output_type="numpy")                            # (N, C, H, W) in [-1, 1]
    pipe.save_pretrained("my-model"); pipe.push_to_hub("alice/my-model", token=...)

It wraps `load_model` and `LoadedModel.sample` (diffusion_core.sample), adding a tqdm progress bar
(progress=False silences it), PIL output and the checkpoint's own save and push.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np


class DiffusionPipeline:
    def __init__(self, model, checkpoint):
        self.model, self.checkpoint = model, checkpoint

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike | None = None, *, backend: str = "pytorch",
                        device: Optional[str] = None, revision: Optional[str] = None,
                        token: Optional[str] = None, precision: str = "fp32") -> "DiffusionPipeline":
        """A checkpoint folder, or a Hub repo id (pulled into huggingface_hub's cache), on `backend`;
        without one, the default model that ships with the toolkit. precision="bf16": the fast path
        where the backend has one (see `backends.load_model`)."""
        from diffusion_core.paths import default_model_dir

        from . import _as_checkpoint, _looks_like_repo, load_model
        folder = Path(path_or_repo).expanduser() if path_or_repo is not None else default_model_dir()
        if not folder.exists() and _looks_like_repo(str(path_or_repo)):
            from diffusion_core import hub
            from diffusion_core.convert import open_checkpoint
            checkpoint = open_checkpoint(hub.pull(str(path_or_repo), revision=revision, token=token),
                                         source=str(path_or_repo))
        else:
            checkpoint = _as_checkpoint(folder)
        return cls(load_model(backend, checkpoint, device=device, precision=precision), checkpoint)

    @property
    def config(self):
        return self.checkpoint.config

    def __call__(self, batch_size: int = 1, *, sampler: str = "dpmpp_2m", steps: int = 20,
                 seed: Optional[int] = None, output_type: str = "pil", progress: bool = True,
                 **options: Any):
        """Draw batch_size images: a list of PIL images (output_type="pil"), or the float32 NumPy
        array (N, C, H, W) in [-1, 1] ("numpy"). options: class_labels, guidance_scale,
        init_image, strength, mask, and the sampler's options (diffusion_core.sample)."""
        if output_type not in ("pil", "numpy"):
            raise ValueError(f"output_type must be 'pil' or 'numpy', got {output_type!r}")
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, unit="step", desc=f"{sampler} on {self.model.backend}", leave=False)
        callback = options.pop("callback", None)

        def step(info):
            if bar is not None:
                bar.total = info.total  # image-to-image runs fewer steps than asked
                bar.update(1)
            if callback is not None:
                callback(info)
        try:
            images = self.model.sample(batch_size=batch_size, sampler=sampler, steps=steps, seed=seed,
                                       callback=step, **options)
        finally:
            if bar is not None:
                bar.close()
        return images if output_type == "numpy" else to_pil(images)

    # --- files ---------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """The checkpoint (config, weights, model.onnx if it has one, card) into folder, atomically."""
        from diffusion_core.checkpoint import save_checkpoint
        onnx = self.checkpoint.onnx_path.read_bytes() if self.checkpoint.onnx_path else None
        return save_checkpoint(folder, self.config, self.checkpoint.weights, onnx_bytes=onnx)

    def push_to_hub(self, repo_id: str, *, token: Optional[str] = None, private: bool = False,
                    commit_message: str = "Upload diffusion checkpoint") -> str:
        from diffusion_core import hub
        return hub.push(self.checkpoint.folder, repo_id, token=token, private=private,
                        commit_message=commit_message)

    def save_grid(self, images, path: str | os.PathLike) -> Path:
        """One PNG of all images, each shown at a viewable size."""
        from diffusion_core.data import save_png, viewable_grid
        array = images if isinstance(images, np.ndarray) else from_pil(images, self.config.sample_shape[0])
        return save_png(path, viewable_grid(array))

    def save_images(self, images, folder: str | os.PathLike) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pictures = images if not isinstance(images, np.ndarray) else to_pil(images)
        paths = []
        for i, picture in enumerate(pictures):
            path = folder / f"{i:04d}.png"
            picture.save(path)
            paths.append(path)
        return paths


def to_pil(images: np.ndarray) -> list:
    """(N, C, H, W) in [-1, 1] -> PIL images (L for 1 channel, RGB for 3, RGBA for 4)."""
    from PIL import Image
    levels = np.round((np.clip(np.nan_to_num(images), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    out = []
    for image in levels:
        out.append(Image.fromarray(image[0]) if image.shape[0] == 1 else Image.fromarray(image.transpose(1, 2, 0)))
    return out


def from_pil(pictures, channels: int) -> np.ndarray:
    arrays = [np.asarray(p, np.float32) / 127.5 - 1.0 for p in pictures]
    return np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])[:, :channels]
