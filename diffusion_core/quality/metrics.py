"""Frechet distance and kernel inception distance on classifier features.

Frechet distance (Heusel et al. 2017, the formula of FID):
    d^2 = |mu_1 - mu_2|^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^(1/2))
KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic polynomial
kernel k(x, y) = (x . y / d + 1)^3, averaged over random subsets; unbiased, so it has no floor at
small sample counts (FD is biased upwards when few samples estimate a 128x128 covariance).
"""
from __future__ import annotations

import numpy as np


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """d^2 between Gaussians fitted to two feature sets (rows are samples)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, d) feature sets with N >= 2 and equal d, got {a.shape}, {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    c_a, c_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((C_a C_b)^(1/2)) = Tr((C_a^(1/2) C_b C_a^(1/2))^(1/2)); the inner matrix is symmetric PSD,
    # so its square root comes from eigh without the complex round-off of a general sqrtm
    s = _sqrt_psd(c_a)
    inner = np.linalg.eigvalsh(s @ c_b @ s)
    tr_sqrt = np.sqrt(np.clip(inner, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(c_a) + np.trace(c_b) - 2.0 * tr_sqrt)


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, *, subsets: int = 50,
                    subset_size: int = 500, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 with k(x, y) = (x . y / d + 1)^3."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = m * (m - 1)
        values.append((k_xx.sum() - np.trace(k_xx)) / off + (k_yy.sum() - np.trace(k_yy)) / off
                      - 2.0 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))
