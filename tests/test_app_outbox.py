"""The app's image files: one new file per image, whole PNGs, old ones cleaned up."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from webapp.outbox import PngOutbox


def test_each_image_gets_its_own_whole_file(tmp_path):
    outbox = PngOutbox(tmp_path)
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    colour = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    first, second, third = outbox.save(gray), outbox.save(gray), outbox.save(colour)
    # The same pixels twice still give two files: requests never share one (webapp/outbox.py).
    assert len({first, second, third}) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(first)), gray)
    np.testing.assert_array_equal(np.asarray(Image.open(second)), gray)
    np.testing.assert_array_equal(np.asarray(Image.open(third)), colour)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".png"] * 3   # no temporary left


def test_old_files_are_removed_and_new_ones_kept(tmp_path):
    outbox = PngOutbox(tmp_path, keep_seconds=60)
    old = outbox.save(np.zeros((2, 2), np.uint8))
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    recent = outbox.save(np.ones((2, 2), np.uint8))
    assert not os.path.exists(old) and os.path.exists(recent)


def test_the_default_folder_is_private_and_under_the_temp_dir():
    a, b = PngOutbox(), PngOutbox()
    try:
        assert a.folder != b.folder
        assert a.folder.parent == Path(tempfile.gettempdir())
    finally:
        for box in (a, b):
            for p in box.folder.iterdir():
                p.unlink()
            box.folder.rmdir()
