"""The data readers: shapes, ranges, labels, clear errors, batch order, grids."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from diffusion_core import data
from diffusion_core.data import DataError, EpochSampler


def _check_images(ds: data.Dataset, n: int, c: int, size: int) -> None:
    assert ds.images.shape == (n, c, size, size) and ds.images.dtype == np.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0  # the full range is used


@pytest.mark.skipif(not (data.fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_test_split():
    ds = data.load_fashion_mnist("test")  # the 10k split: same reader, a quarter of the time
    _check_images(ds, 10_000, 1, 28)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (10_000,)
    assert np.bincount(ds.labels).tolist() == [1000] * 10  # the test split is balanced
    assert len(ds.class_names) == 10


def _write_idx(path, magic, shape, payload: bytes, gzipped=True):
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in shape) + payload
    path.write_bytes(gzip.compress(raw) if gzipped else raw)


def test_idx_reader_checks_magic_and_size(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).tobytes()
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", 0x803, (2, 28, 28), pixels)
    _write_idx(folder / "t10k-labels-idx1-ubyte", 0x801, (2,), bytes([3, 7]), gzipped=False)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    ds = data.load_fashion_mnist("test")
    assert ds.images.shape == (2, 1, 28, 28) and ds.labels.tolist() == [3, 7]
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", 0x803, (3, 28, 28), pixels)  # header lies
    with pytest.raises(DataError, match="truncated"):
        data.load_fashion_mnist("test")
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", 0x801, (2,), bytes(2))  # labels, not images
    with pytest.raises(DataError, match="magic number"):
        data.load_fashion_mnist("test")


def test_missing_fashion_mnist_names_file_and_package(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError) as e:
        data.load_fashion_mnist("train", folder=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits(size):
    ds = data.load_digits(size)
    _check_images(ds, 1797, 1, size)
    assert set(ds.labels.tolist()) == set(range(10))
    assert np.array_equal(ds.images[:, :, ::size // 8, ::size // 8], data.load_digits(8).images)
    assert len(np.unique(ds.images)) == 17  # the 17 grey levels 0..16, nothing interpolated


def test_digits_refuses_other_sizes():
    with pytest.raises(DataError, match="8, 16, 24, 32"):
        data.load_digits(28)


def test_image_folder(tmp_path):
    from PIL import Image
    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.load_image_folder(tmp_path, image_size=16)
    assert ds.images.shape == (2, 3, 16, 16) and ds.labels is None  # one RGB image: all RGB
    assert -1.0 <= ds.images.min() and ds.images.max() <= 1.0
    (tmp_path / "sub" / "b.jpg").unlink()
    gray = data.load_dataset(str(tmp_path))  # default size: the first image's shorter side
    assert gray.images.shape == (1, 1, 30, 30)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="holds no images"):
        data.load_image_folder(tmp_path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataError, match="broken.png"):
        data.load_image_folder(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        data.load_dataset(str(tmp_path / "nowhere"))


def test_epoch_sampler_shards_are_disjoint_and_resumable():
    n, batch = 50, 4
    ranks = [EpochSampler(n, batch, np.random.default_rng([7, 0]), world_size=2, rank=r) for r in range(2)]
    seen = []
    for _ in range(n // (2 * batch)):  # one epoch: 6 global batches of 8, 2 items dropped
        shards = [s.next() for s in ranks]
        assert not set(shards[0]) & set(shards[1])
        seen += [i for shard in shards for i in shard]
    assert len(set(seen)) == len(seen) == 48
    # a sampler restored from a mid-epoch state continues with the same batches
    a = EpochSampler(n, batch, np.random.default_rng(3))
    for _ in range(20):
        a.next()
    b = EpochSampler(n, batch, np.random.default_rng(99))
    b.load_state(a.state())
    for _ in range(30):  # across epoch boundaries too
        assert np.array_equal(a.next(), b.next())
    with pytest.raises(DataError, match="fewer than one global batch"):
        EpochSampler(7, 4, np.random.default_rng(0), world_size=2)


def test_make_grid_and_save_png(tmp_path):
    from PIL import Image
    images = np.linspace(-1, 1, 5 * 3 * 4 * 4, dtype=np.float32).reshape(5, 3, 4, 4)
    grid = data.make_grid(images, padding=1)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)  # 3 columns, 2 rows
    assert grid[1, 1, 0] == 0 and grid[-2, -2].max() == 0  # first pixel is -1; the 6th cell is empty
    path = data.save_png(tmp_path / "out" / "grid.png", data.make_grid(images[:, :1]))
    assert np.array_equal(np.asarray(Image.open(path)), data.make_grid(images[:, :1])[..., 0])
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left
