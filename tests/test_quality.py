"""The quality yardstick: metric facts, the NumPy classifier, and its sanity scale on real data."""
from __future__ import annotations

import numpy as np
import pytest

from diffusion_core.quality import frechet_distance, kernel_distance, load_classifier
from diffusion_core.quality.classifier import PARAMETER_SHAPES


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    # N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2 * 2I) = 1 + 3 = 4
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="equal d"):
        frechet_distance(a, b[:, :2])


def test_kid_is_unbiased_near_zero_and_positive_apart():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((600, 8)), rng.standard_normal((600, 8))
    same, spread = kernel_distance(a, b, subsets=20, subset_size=300)
    assert abs(same) < 3 * spread + 1e-3
    far, _ = kernel_distance(a, b + 0.5, subsets=20, subset_size=300)
    assert far > 10 * max(abs(same), spread)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_numpy_forward_matches_pytorch(classifier):
    torch = pytest.importorskip("torch", reason="the reference forward is the PyTorch training module")
    from backends.pytorch.train_classifier import FashionClassifier
    net = FashionClassifier().eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in classifier.params.items()})
    x = np.random.default_rng(2).uniform(-1, 1, (7, 1, 28, 28)).astype(np.float32)
    feats, logits = classifier.features_and_logits(x)
    with torch.no_grad():
        np.testing.assert_allclose(feats, net.features(torch.from_numpy(x)).numpy(), atol=1e-4)
        np.testing.assert_allclose(logits, net(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_shipped_weights_and_accuracy(classifier):
    assert set(classifier.params) == set(PARAMETER_SHAPES)
    assert classifier.info["test_accuracy"] > 0.88
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        classifier.features(np.zeros((2, 3, 28, 28), np.float32))


def test_sanity_scale_on_fashion_mnist(classifier):
    data = pytest.importorskip("diffusion_core.data")
    try:
        train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    except data.DataError as e:
        pytest.skip(f"Fashion-MNIST is not installed here ({e})")
    rng = np.random.default_rng(0)
    real_a = train.images[rng.choice(len(train), 500, replace=False)]
    real_b = test.images[rng.choice(len(test), 500, replace=False)]
    # a 3x3 box blur, and pure noise clipped to the image range
    pad = np.pad(real_a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(pad[:, :, i:i + 28, j:j + 28] for i in range(3) for j in range(3)) / 9.0
    noise = np.clip(rng.standard_normal(real_a.shape), -1, 1).astype(np.float32)
    f = {k: classifier.features(v) for k, v in
         {"real": real_a, "held_out": real_b, "blurred": blurred, "noise": noise}.items()}
    floor = frechet_distance(f["real"], f["held_out"])
    blur = frechet_distance(f["blurred"], f["held_out"])
    noisy = frechet_distance(f["noise"], f["held_out"])
    assert floor < blur < noisy and blur > 5 * floor and noisy > 3 * blur
    # the classifier is confident on real garments
    assert np.median(classifier.probabilities(real_b).max(1)) > 0.9
