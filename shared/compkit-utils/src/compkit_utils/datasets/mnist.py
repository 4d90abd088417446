"""MNIST from the four original IDX files: a NumPy reader, checksums, mirrors, manual copies.

The data folder is resolved by :func:`data_dir`: an explicit ``--data-dir``, else
``$COMPKIT_DATA_DIR/mnist``, else ``~/.cache/compkit/mnist``. :func:`load_mnist` looks there
for each file, accepting

* the original gzip file (``train-images-idx3-ubyte.gz``) when its SHA-256 matches the
  published checksum in :data:`MNIST_FILES`;
* an uncompressed copy (``train-images-idx3-ubyte``): its checksum is not published, so it is
  accepted after the IDX header, dtype, dimensions and size are validated;

and otherwise downloads the gzip file from each mirror in :data:`MIRRORS` in turn (timeout,
atomic write, SHA-256 check). No TensorFlow or torchvision is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from compkit_utils.datasets.info import sha256_file
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_path

DATA_DIR_ENV = "COMPKIT_DATA_DIR"

# SHA-256 of the official gzip files, as published by TensorFlow Datasets 4.9.10 in
# tensorflow_datasets/url_checksums/mnist.txt (sizes 9912422, 28881, 1648877, 4542 bytes).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}

# split → (images file, labels file)
MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Tried in order; each serves the four files under the same names.
MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# IDX type code → big-endian NumPy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, then
    each dimension as a big-endian uint32; the big-endian data follows. Compression is
    detected from the content, not the name.

    Args:
        path: the file.

    Returns:
        The array in native byte order, with the dimensions from the header (MNIST images:
        ``(N, 28, 28)`` uint8; labels: ``(N,)`` uint8).

    Raises:
        UserError: missing file, bad gzip stream, bad magic, unknown type code, or a data size
            that does not match the dimensions; the message names the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: not found") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(
                f"{path}: corrupt gzip data ({exc}); delete it and download it again"
            ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
            "delete it and download it again"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise UserError(f"{path}: unknown IDX type code 0x{code:02x}; not an IDX file")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{path}: truncated IDX header ({ndim} dimensions); download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(
            f"{path}: IDX header says shape {dims} ({expected} data bytes) but the file has "
            f"{len(raw) - header}; it is truncated or corrupt, download it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def data_dir(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of a downloadable dataset.

    Args:
        dataset: dataset name, e.g. ``"mnist"``.
        data_dir: an explicit folder (``--data-dir``); used as is.

    Returns:
        ``data_dir`` if given, else ``$COMPKIT_DATA_DIR/<dataset>`` if the variable is set and
        non-empty, else ``~/.cache/compkit/<dataset>``.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    root = os.environ.get(DATA_DIR_ENV)
    if root:
        return Path(root).expanduser() / dataset
    return Path.home() / ".cache" / "compkit" / dataset


_resolve_data_dir = data_dir  # reachable inside functions whose argument is named data_dir


def load_mnist(
    split: Literal["train", "test"] = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split from the IDX files, downloading them if needed.

    Args:
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
        data_dir: folder holding the files (see :func:`data_dir` for the default).
        download: fetch missing files from ``mirrors``; if ``False`` a missing file is an
            error that says where to put it.
        mirrors: base URLs tried in order (``<mirror>/<file name>``); ``file://`` works too.
        timeout: seconds allowed for each connection attempt and read.

    Returns:
        ``(images, labels)``: images ``(N, 28, 28)`` uint8 in ``[0, 255]``, labels ``(N,)``
        int64 in ``[0, 9]``.

    Raises:
        UserError: a checksum mismatch, a corrupt file, or every mirror failing; the message
            names the file and how to fix it (including where to place a manual copy).
    """
    if split not in MNIST_SPLITS:
        raise UserError(f"unknown MNIST split {split!r}; choose 'train' or 'test'")
    folder = _resolve_data_dir("mnist", data_dir)
    image_name, label_name = MNIST_SPLITS[split]
    image_path = _locate(folder, image_name, download=download, mirrors=mirrors, timeout=timeout)
    label_path = _locate(folder, label_name, download=download, mirrors=mirrors, timeout=timeout)
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}; replace it with the original file"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise UserError(
            f"{label_path}: expected {len(images)} uint8 labels to match {image_path.name}, "
            f"got {labels.dtype} {labels.shape}; replace it with the original file"
        )
    if labels.size and int(labels.max()) > 9:
        raise UserError(f"{label_path}: label {int(labels.max())} is not a digit 0-9")
    return images, labels.astype(np.int64)


def _locate(
    folder: Path, name: str, *, download: bool, mirrors: Sequence[str], timeout: float
) -> Path:
    """Path of a verified copy of ``name`` in ``folder``, downloading it if allowed."""
    expected = MNIST_FILES[name]
    compressed = folder / name
    if compressed.is_file():
        actual = sha256_file(compressed)
        if actual != expected:
            raise UserError(
                f"{compressed}: SHA-256 {actual} does not match the published checksum "
                f"{expected}; delete the file (it will be downloaded again) or replace it "
                "with an intact copy"
            )
        return compressed
    uncompressed = folder / name.removesuffix(".gz")
    if uncompressed.is_file():
        return uncompressed  # validated by read_idx and the shape checks of load_mnist
    where = f"place {name} (SHA-256 {expected}) or its uncompressed form in {folder}"
    if not download:
        raise UserError(f"{compressed}: not found and downloading is off; {where}")
    if not mirrors:
        raise UserError(f"{compressed}: not found and no mirrors are configured; {where}")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            _download(url, compressed, expected, timeout)
            return compressed
        except _DownloadError as exc:
            failures.append(f"{url} ({exc})")
    raise UserError(
        f"could not download {name}: tried {'; '.join(failures)}; download it yourself and {where}"
    )


class _DownloadError(Exception):
    """One mirror failed; the message says why."""


def _download(url: str, target: Path, sha256: str, timeout: float) -> None:
    """Fetch ``url`` into ``target`` atomically, keeping it only if its SHA-256 matches."""
    print(f"downloading {url}", file=sys.stderr)
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise _DownloadError(f"SHA-256 {digest.hexdigest()} instead of {sha256}")
    except urllib.error.HTTPError as exc:
        raise _DownloadError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _DownloadError(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad responses
        raise _DownloadError(f"{type(exc).__name__}: {exc}") from exc
