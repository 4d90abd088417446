"""Sequential-digit data: resize (nearest neighbour), binarise, flatten row-major.

Protocol (community repo, spec section 5): training images are resized to a small side
(14 for MNIST) and test images are resized *directly from the originals* to larger sides
(16, 19, 24), so test sequences are longer than anything seen in training. Pixels are
binarised at 120/255 of the maximum value and read one per time step.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from compkit_utils.errors import UserError, install_hint

if TYPE_CHECKING:
    from rim_cells.config import SeqDataConfig

MNIST_DEFAULT_TRAIN = 14
MNIST_DEFAULT_TESTS = (14, 16, 19, 24)
DIGITS_DEFAULT_TRAIN = 8
DIGITS_DEFAULT_TESTS = (8, 9, 11, 14)
THRESHOLD = 120 / 255
"""Binarisation threshold as a fraction of the image's maximum pixel value."""


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """Token sequences (0/1 per pixel) for training and for each test image side.

    Attributes:
        train_x: ``(n_train, train_size²)`` uint8 tokens.
        train_y: ``(n_train,)`` int64 labels.
        train_size: the training image side.
        tests: image side → ``(x (n_test, side²) uint8, y (n_test,) int64)``.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    train_size: int
    tests: dict[int, tuple[np.ndarray, np.ndarray]]


def nearest_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of square images, as OpenCV's ``INTER_NEAREST``.

    Output pixel ``i`` reads source pixel ``floor(i · src / size)``.

    Args:
        images: ``(n, src, src)``.
        size: the output side.

    Returns:
        ``(n, size, size)`` of the same dtype.
    """
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square images (n, s, s), got {images.shape}")
    if size < 1:
        raise UserError(f"image size must be >= 1, got {size}")
    src = images.shape[1]
    index = np.minimum(np.floor(np.arange(size) * (src / size)).astype(np.int64), src - 1)
    return images[:, index][:, :, index]


def binarise(images: np.ndarray, max_value: float) -> np.ndarray:
    """Pixels above ``THRESHOLD · max_value`` → 1, else 0 (uint8), flattened row-major."""
    tokens = (images > THRESHOLD * max_value).astype(np.uint8)
    return tokens.reshape(len(images), -1)


def load_sequences(cfg: SeqDataConfig, seed: int) -> SequenceData:
    """Build training and test sequences for ``cfg.dataset``.

    Raises:
        UserError: bad sizes, or MNIST cannot be found/downloaded.
    """
    if cfg.dataset == "mnist":
        train_size = cfg.train_size or MNIST_DEFAULT_TRAIN
        test_sizes = cfg.test_sizes or MNIST_DEFAULT_TESTS
        train_img, train_lab = _load_mnist("train", cfg)
        test_img, test_lab = _load_mnist("test", cfg)
        max_value = 255.0
    elif cfg.dataset == "digits":
        train_size = cfg.train_size or DIGITS_DEFAULT_TRAIN
        test_sizes = cfg.test_sizes or DIGITS_DEFAULT_TESTS
        train_img, train_lab, test_img, test_lab = _load_digits(cfg.digits_test_fraction, seed)
        max_value = 16.0
    else:  # pragma: no cover - tyro restricts the choices
        raise UserError(f"--data.dataset {cfg.dataset!r}: expected mnist or digits")
    for side in (train_size, *test_sizes):
        if side < 2:
            raise UserError(f"image sizes must be >= 2, got {side} (--data.train-size/test-sizes)")
    if cfg.train_limit is not None:
        train_img, train_lab = train_img[: cfg.train_limit], train_lab[: cfg.train_limit]
    if cfg.test_limit is not None:
        test_img, test_lab = test_img[: cfg.test_limit], test_lab[: cfg.test_limit]
    if len(train_img) == 0 or len(test_img) == 0:
        raise UserError("no training or test images left (check --data.train-limit/test-limit)")
    train_x = binarise(nearest_resize(train_img, train_size), max_value)
    tests = {
        side: (binarise(nearest_resize(test_img, side), max_value), test_lab.astype(np.int64))
        for side in test_sizes
    }
    return SequenceData(train_x, train_lab.astype(np.int64), train_size, tests)


def _load_mnist(
    split: Literal["train", "test"], cfg: SeqDataConfig
) -> tuple[np.ndarray, np.ndarray]:
    from compkit_utils.datasets.mnist import load_mnist

    images, labels = load_mnist(split=split, data_dir=cfg.data_dir, download=cfg.download)
    return np.asarray(images), np.asarray(labels)


def _load_digits(
    test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8×8 digits (0..16), split train/test with a seeded permutation."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"--data.digits-test-fraction must be in (0, 1), got {test_fraction}")
    images, labels = read_digits()
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(test_fraction * len(images))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images ``(1797, 8, 8)`` float32 in 0..16, labels int64.

    Reads the CSV that ships inside scikit-learn directly (the same data
    ``sklearn.datasets.load_digits`` returns) without importing scikit-learn, whose import
    is slow; falls back to ``load_digits`` if the file is not where expected.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        hint = install_hint("rim-cells", "digits")
        raise UserError(f"--data.dataset digits needs scikit-learn: {hint}")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)  # type: ignore[attr-defined]
    return images, np.asarray(bunch.target, dtype=np.int64)  # type: ignore[attr-defined]
