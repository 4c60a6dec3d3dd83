"""A small Fashion-MNIST classifier, run in NumPy, whose features give the quality yardstick.

FID's Inception network ships with no package here and sees 299x299 colour photographs; for 28x28
garments the usual substitute is a small classifier trained on the same dataset, with its
penultimate activations as features ("FID with a LeNet"). Weights are trained by
`python -m backends.pytorch.train_classifier` and shipped beside this file; the forward pass is
NumPy so the yardstick needs no framework (a test checks it against the PyTorch module).

    conv 3x3 (1 -> 16) . ReLU . maxpool 2      28 -> 14
    conv 3x3 (16 -> 32) . ReLU . maxpool 2     14 -> 7
    linear (32*7*7 -> 128) . ReLU               <- the features
    linear (128 -> 10)                          <- class logits
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WEIGHTS_PATH = Path(__file__).with_name("fashion_classifier.safetensors")
INFO_PATH = Path(__file__).with_name("fashion_classifier.json")
PARAMETER_SHAPES = {
    "conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,),
    "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,),
    "fc1.weight": (128, 32 * 7 * 7), "fc1.bias": (128,),
    "fc2.weight": (10, 128), "fc2.bias": (10,),
}
FEATURE_DIM = 128


def _conv3x3_relu_pool(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' 3x3 convolution (cross-correlation, as every framework computes it), ReLU, 2x2 max pool."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(2, 3))        # N, C, H, W, 3, 3
    y = np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]
    y = np.maximum(y, 0.0)
    n, c, h, w_ = y.shape
    return y.reshape(n, c, h // 2, 2, w_ // 2, 2).max(axis=(3, 5))


@dataclass(frozen=True)
class Classifier:
    params: dict[str, np.ndarray]
    info: dict

    def features_and_logits(self, images: np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """images: (N, 1, 28, 28) in [-1, 1] -> (features (N, 128), logits (N, 10)), float64."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
            raise ValueError(f"the Fashion-MNIST classifier reads (N, 1, 28, 28) images in [-1, 1], "
                             f"got shape {images.shape}")
        p = self.params
        feats, logits = [], []
        for i in range(0, len(images), batch):
            h = _conv3x3_relu_pool(images[i:i + batch], p["conv1.weight"], p["conv1.bias"])
            h = _conv3x3_relu_pool(h, p["conv2.weight"], p["conv2.bias"])
            f = np.maximum(h.reshape(len(h), -1) @ p["fc1.weight"].T + p["fc1.bias"], 0.0)
            feats.append(f)
            logits.append(f @ p["fc2.weight"].T + p["fc2.bias"])
        return np.concatenate(feats).astype(np.float64), np.concatenate(logits).astype(np.float64)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.features_and_logits(images)[0]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        logits = self.features_and_logits(images)[1]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def load_classifier(path: Path = WEIGHTS_PATH) -> Classifier:
    """The shipped classifier (float32 weights via safetensors; nothing is unpickled)."""
    from safetensors.numpy import load_file
    if not Path(path).is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with "
                                f"`python -m backends.pytorch.train_classifier`")
    params = load_file(str(path))
    for name, shape in PARAMETER_SHAPES.items():
        if name not in params or params[name].shape != shape:
            raise ValueError(f"{path}: {name} missing or not shaped {shape}; retrain the classifier")
    info_path = Path(path).with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return Classifier(params={k: params[k].astype(np.float32) for k in PARAMETER_SHAPES}, info=info)
