"""Measuring a model by the yardstick: draw images, compare their classifier features with the
Fashion-MNIST test set's (FD, KID), and for class-conditional models check the requested class.

Used by `diffusion-toolkit quality` and the benchmarks under bench/.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .classifier import Classifier
from .metrics import frechet_distance, kernel_distance


def generate(loaded, sampler: str, steps: int, n: int, batch: int, seed: int,
             class_labels: Optional[np.ndarray] = None, **options: Any) -> np.ndarray:
    """n images in batches; batch b uses seed + b, so any batch size gives the same images.
    class_labels: one label per image (n,), or None for unconditional samples."""
    out = []
    for b, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        extra = {} if class_labels is None else {"class_labels": np.asarray(class_labels[start:start + size])}
        out.append(loaded.sample(batch_size=size, sampler=sampler, steps=steps, seed=seed + b,
                                 **extra, **options))
    return np.clip(np.concatenate(out), -1.0, 1.0)


def measure(classifier: Classifier, images: np.ndarray, reference_features: np.ndarray) -> dict:
    """FD and KID of images against reference features, and the classifier's median confidence."""
    feats = classifier.features(images)
    kid, kid_std = kernel_distance(feats, reference_features, subsets=20, subset_size=min(500, len(feats)))
    confidence = float(np.median(classifier.probabilities(images).max(1)))
    return {"fd": frechet_distance(feats, reference_features), "kid": kid, "kid_std": kid_std,
            "median_confidence": confidence}


def class_accuracy(classifier: Classifier, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class c, the share of the images requested as c that the classifier calls c."""
    predicted = classifier.probabilities(images).argmax(1)
    classes = int(labels.max()) + 1
    return np.array([float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else np.nan
                     for c in range(classes)])
