"""Training images from real files: Fashion-MNIST idx files, scikit-learn's digits, a folder.

Every reader returns a `Dataset`: float32 images in [-1, 1] shaped (N, C, H, W) (NCHW, what every
backend's convolutions take) and int64 labels where the dataset has them. Nothing is downloaded:

    fashion-mnist   Debian package `dataset-fashion-mnist` (idx files, gzip), 60k train + 10k test,
                    28x28 grayscale, 10 labels. $DIFFUSION_DATA_DIR/fashion-mnist overrides
                    /usr/share/datasets/fashion-mnist (for machines without the package).
    digits          scikit-learn's `load_digits`: 1797 8x8 images with 17 grey levels (0..16),
                    labels 0..9. Served at 16x16 by default: each pixel repeated 2x2 (nearest), so
                    no value is invented, and a Unet with two down-samplings still sees 4x4 at
                    its bottom. 8x8 is there for the tiniest tests; 24 and 32 work too.
    a folder        *.png / *.jpg / *.jpeg / *.bmp / *.webp, recursively, in sorted path order.
                    Grayscale if every image is grayscale, else all RGB; centre-cropped to a
                    square and resized (Lanczos) to `image_size` (default: the first image's size).

Also `make_grid` and `save_png`, to turn a batch of samples into one picture on disk.
"""
from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .files import write_atomically

DATA_DIR_ENV = "DIFFUSION_DATA_DIR"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DIGITS_SIZES = (8, 16, 24, 32)  # integer multiples of 8: nearest upscaling repeats whole pixels

# idx format (LeCun's MNIST page): big-endian uint32 magic 0x00000800 | type << 8 | ndim, then ndim
# uint32 sizes, then the data. Both files here hold unsigned bytes (type 0x08).
_IDX_IMAGES_MAGIC = 0x00000803   # ubyte, 3 dims: count, rows, cols
_IDX_LABELS_MAGIC = 0x00000801   # ubyte, 1 dim: count


class DataError(ValueError):
    """Training data that cannot be read; the message names the file and says what to do."""


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray                 # float32 (N, C, H, W) in [-1, 1]
    labels: Optional[np.ndarray]       # int64 (N,), or None for an unlabelled folder
    name: str                          # what the model card says the model was trained on
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])


def to_unit_range(pixels: np.ndarray, max_value: float) -> np.ndarray:
    """[0, max_value] -> float32 [-1, 1], as Ho et al. 2020 scale images (Sec. 4)."""
    return (pixels.astype(np.float32) * np.float32(2.0 / max_value) - np.float32(1.0)).astype(np.float32)


# --- Fashion-MNIST ------------------------------------------------------------------------------

def fashion_mnist_dir() -> Path:
    """$DIFFUSION_DATA_DIR/fashion-mnist when that variable is set, else the Debian package's path."""
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() / "fashion-mnist" if root else FASHION_MNIST_SYSTEM_DIR


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (gzip or plain) as a uint8 array; magic number and size are checked."""
    path = Path(path)
    if not path.is_file():
        hint = (f"set {DATA_DIR_ENV} to a folder whose fashion-mnist/ holds the four idx files"
                if os.environ.get(DATA_DIR_ENV) else
                f"install it with `apt-get install dataset-fashion-mnist`, or set {DATA_DIR_ENV} to a "
                "folder whose fashion-mnist/ subfolder holds the four *-ubyte.gz files")
        raise DataError(f"{path} not found; {hint}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read ({e}); reinstall dataset-fashion-mnist") from e
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError(f"{path} is not an idx file of the expected kind: magic number "
                        f"{found if found is None else hex(found)}, expected {hex(magic)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path} holds {len(raw)} bytes but its header announces shape {shape} "
                        f"({expected} bytes); the file is truncated or corrupt: reinstall it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str = "train", folder: Optional[Path] = None) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 'train' (60k) or 'test' (10k), 28x28, labelled."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    folder = Path(folder) if folder is not None else fashion_mnist_dir()

    def find(stem: str) -> Path:  # the Debian files are gzipped; accept unpacked copies too
        gz = folder / f"{stem}.gz"
        return gz if gz.is_file() or not (folder / stem).is_file() else folder / stem
    images_path, labels_path = find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                        f"{labels.shape[0]} labels; the files come from different sets: reinstall")
    return Dataset(images=to_unit_range(images[:, None], 255.0), labels=labels.astype(np.int64),
                   name="fashion-mnist" + ("" if split == "train" else f" ({split})"),
                   class_names=FASHION_MNIST_CLASSES)


# --- scikit-learn digits ------------------------------------------------------------------------

def load_digits(image_size: int = 16) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16), upscaled by pixel repetition to image_size."""
    if image_size not in DIGITS_SIZES:
        raise DataError(f"digits are 8x8 and are served at {', '.join(map(str, DIGITS_SIZES))} pixels "
                        f"(whole-pixel upscaling); got image size {image_size}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = sklearn_digits()
    factor = image_size // 8
    images = bunch.images.reshape(-1, 1, 8, 8)
    images = images.repeat(factor, axis=2).repeat(factor, axis=3)  # nearest-neighbour upscaling
    return Dataset(images=to_unit_range(images, 16.0), labels=bunch.target.astype(np.int64),
                   name="scikit-learn digits", class_names=tuple(str(d) for d in range(10)))


# --- a folder of images -------------------------------------------------------------------------

def _square(image, size: int):
    """Centre-crop to a square, then resize; Lanczos keeps downscaled images free of aliasing."""
    from PIL import Image
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.LANCZOS)


def load_image_folder(folder: str | os.PathLike, image_size: Optional[int] = None) -> Dataset:
    """Every image under folder (recursively), square, in [-1, 1]. When every image sits in a
    sub-folder of `folder` and there are at least two, the sub-folder names are the classes
    (sorted, as torchvision's ImageFolder does) and each image is labelled with its own."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise DataError("reading a folder of images needs Pillow: pip install pillow") from e
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {folder}: not 'fashion-mnist', not 'digits', and no such folder; "
                        "give one of those names or a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}, searched recursively)")
    if image_size is not None and image_size <= 0:
        raise DataError(f"image size must be positive, got {image_size}")
    opened = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append(image.copy())
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot read image {path} ({e}); fix or remove it") from e
    # One channel count for the whole set: grayscale only if every image is grayscale.
    gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in opened)
    mode = "L" if gray else "RGB"
    size = image_size or min(opened[0].size)
    arrays = [np.asarray(_square(im.convert(mode), size), dtype=np.uint8) for im in opened]
    images = np.stack(arrays)
    images = images[:, None] if gray else images.transpose(0, 3, 1, 2)
    parts = [p.relative_to(root).parts for p in paths]
    classes = sorted({part[0] for part in parts if len(part) > 1})
    labels, class_names = None, ()
    if len(classes) >= 2 and all(len(part) > 1 for part in parts):
        index = {name: i for i, name in enumerate(classes)}
        labels, class_names = np.array([index[part[0]] for part in parts], np.int64), tuple(classes)
    return Dataset(images=to_unit_range(images, 255.0), labels=labels, name=f"images from {root.name}",
                   class_names=class_names)


def load_dataset(data: str, image_size: Optional[int] = None) -> Dataset:
    """The training set a `--data` value names: 'fashion-mnist', 'digits' or a folder path."""
    if data == "fashion-mnist":
        dataset = load_fashion_mnist("train")
        if image_size not in (None, dataset.image_size):
            images = resize_images(dataset.images, image_size)
            dataset = Dataset(images, dataset.labels, dataset.name, dataset.class_names)
        return dataset
    if data == "digits":
        return load_digits(16 if image_size is None else image_size)
    return load_image_folder(data, image_size)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize float [-1, 1] NCHW images with Lanczos (through 8-bit, which these images came from)."""
    from PIL import Image
    pixels = np.round((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    out = [np.stack([np.asarray(Image.fromarray(ch).resize((size, size), Image.LANCZOS)) for ch in im])
           for im in pixels]
    return to_unit_range(np.stack(out), 255.0)


# --- pictures of samples ------------------------------------------------------------------------

def make_grid(images: np.ndarray, columns: Optional[int] = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one uint8 (rows*H', columns*W', C) picture.

    columns defaults to ceil(sqrt(N)); cells are separated by `padding` black pixels.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"make_grid needs (N, C, H, W) images with 1 or 3 channels, got {images.shape}")
    n, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    pixels = np.round((np.nan_to_num(images).clip(-1, 1) + 1.0) * 127.5).astype(np.uint8)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), np.uint8)
    for i in range(n):
        top, left = padding + (i // columns) * (h + padding), padding + (i % columns) * (w + padding)
        grid[top:top + h, left:left + w] = pixels[i].transpose(1, 2, 0)
    return grid


# A 28x28 image shown 1:1 is a smudge; nearest upscaling keeps every pixel square and invents no
# detail. Cells are scaled to about this many screen pixels, unless the grid would exceed the cap.
TARGET_CELL_PIXELS = 128
MAX_GRID_PIXELS = 2048


def viewable_grid(images: np.ndarray, columns: Optional[int] = None) -> np.ndarray:
    """make_grid, upscaled by a whole factor (nearest) so each cell is ~TARGET_CELL_PIXELS wide."""
    grid = make_grid(images, columns)
    factor = max(1, -(-TARGET_CELL_PIXELS // int(np.shape(images)[-1])))
    factor = max(1, min(factor, MAX_GRID_PIXELS // max(grid.shape[:2])))
    return np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1) if factor > 1 else grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 (H, W[, C]) array as PNG atomically: temp file, fsync, os.replace."""
    from PIL import Image
    array = np.asarray(image)
    array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return write_atomically(path, buffer.getvalue())


# --- batch order --------------------------------------------------------------------------------

class EpochSampler:
    """Indices of each batch: a fresh permutation per epoch from a seeded NumPy generator.

    With `world_size` data-parallel processes a global batch is world_size * batch_size items and
    rank r takes its own disjoint slice of it; every rank holds the same generator, so all agree
    on the order without talking. An epoch's last partial global batch is dropped. `state()` is
    JSON-able (the generator state at the start of the epoch plus a cursor), so a resumed run sees
    exactly the batches an uninterrupted one would have.
    """

    def __init__(self, num_items: int, batch_size: int, rng: np.random.Generator,
                 world_size: int = 1, rank: int = 0):
        if num_items < batch_size * world_size:
            raise DataError(f"the dataset holds {num_items} images, fewer than one global batch of "
                            f"{batch_size * world_size} ({world_size} process(es) x batch size "
                            f"{batch_size}); lower --batch-size or use more images")
        self.num_items, self.batch_size = num_items, batch_size
        self.world_size, self.rank = world_size, rank
        self.rng = rng
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._epoch_rng_state = self.rng.bit_generator.state
        self.order = self.rng.permutation(self.num_items)
        self.cursor = 0

    def next(self) -> np.ndarray:
        """This rank's int64 indices of the next batch."""
        global_batch = self.batch_size * self.world_size
        if self.cursor + global_batch > self.num_items:
            self.epoch += 1
            self._start_epoch()
        start = self.cursor + self.rank * self.batch_size
        self.cursor += global_batch
        return self.order[start:start + self.batch_size]

    def state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "rng": self._epoch_rng_state}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._start_epoch()  # the same permutation again, and the generator where it was
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
