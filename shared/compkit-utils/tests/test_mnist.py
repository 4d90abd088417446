from __future__ import annotations

import gzip
import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from compkit_utils.datasets import mnist
from compkit_utils.datasets.mnist import MNIST_FILES, MNIST_SPLITS, data_dir, load_mnist, read_idx
from compkit_utils.errors import UserError

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    code = _CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A file:// mirror holding synthetic MNIST files, with the checksum table patched."""
    folder = tmp_path / "mirror"
    for split, seed, n in (("train", 0, 30), ("test", 1, 12)):
        images, labels = synthetic_split(n, seed)
        image_name, label_name = MNIST_SPLITS[split]
        for name, array in ((image_name, images), (label_name, labels)):
            path = write_idx(folder / name, array)
            monkeypatch.setitem(MNIST_FILES, name, hashlib.sha256(path.read_bytes()).hexdigest())
    return folder


def test_published_checksum_table_is_complete():
    names = {name for pair in MNIST_SPLITS.values() for name in pair}
    assert set(MNIST_FILES) == names
    assert len(names) == 4
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for sha in MNIST_FILES.values())


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype is np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "x-idx3-ubyte", array, compress))
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "bad magic number empty"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01x", "bad magic number 01020801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
        (idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10], "IDX header says shape (4, 28, 28)"),
        (gzip.compress(idx_bytes(np.zeros((4, 2), np.uint8)))[:-6], "corrupt gzip data"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"nothing-idx1-ubyte: not found"):
        read_idx(tmp_path / "nothing-idx1-ubyte")


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COMPKIT_DATA_DIR", raising=False)
    assert data_dir("mnist") == tmp_path / "home" / ".cache" / "compkit" / "mnist"
    monkeypatch.setenv("COMPKIT_DATA_DIR", "")
    assert data_dir("mnist") == tmp_path / "home" / ".cache" / "compkit" / "mnist"
    monkeypatch.setenv("COMPKIT_DATA_DIR", str(tmp_path / "shared"))
    assert data_dir("mnist") == tmp_path / "shared" / "mnist"
    assert data_dir("mnist", tmp_path / "explicit") == tmp_path / "explicit"


def test_manual_gzip_copy_is_used_without_download(tmp_path, mirror):
    folder = tmp_path / "data"
    for name in MNIST_SPLITS["test"]:
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((mirror / name).read_bytes())
    images, labels = load_mnist("test", data_dir=folder, download=False, mirrors=())
    expected_images, expected_labels = synthetic_split(12, 1)
    assert images.dtype == np.uint8
    assert images.shape == (12, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_manual_uncompressed_copy_is_accepted(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("COMPKIT_DATA_DIR", str(tmp_path / "root"))
    folder = tmp_path / "root" / "mnist"
    images, labels = synthetic_split(12, 1)
    write_idx(folder / "t10k-images-idx3-ubyte", images, compress=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels, compress=False)
    out_images, out_labels = load_mnist("test", download=False)
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)


def test_checksum_mismatch_is_a_clear_error(tmp_path, mirror):
    folder = tmp_path / "data"
    name = MNIST_SPLITS["train"][0]
    images, _ = synthetic_split(30, 99)  # different content than the published checksum
    write_idx(folder / name, images)
    with pytest.raises(UserError) as info:
        load_mnist("train", data_dir=folder, download=True, mirrors=[mirror.as_uri()])
    message = str(info.value)
    assert message.startswith(f"{folder / name}: SHA-256 ")
    assert MNIST_FILES[name] in message
    assert "delete the file" in message


def test_wrong_shape_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    image_name, label_name = MNIST_SPLITS["test"]
    write_idx(folder / image_name.removesuffix(".gz"), np.zeros((5, 8, 8), np.uint8), False)
    write_idx(folder / label_name.removesuffix(".gz"), np.zeros(5, np.uint8), False)
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte: expected uint8 images of shape"):
        load_mnist("test", data_dir=folder, download=False)


def test_downloads_from_next_mirror_when_one_fails(tmp_path, mirror, capsys):
    folder = tmp_path / "cache"
    mirrors = [(tmp_path / "absent").as_uri() + "/", mirror.as_uri()]
    images, labels = load_mnist("train", data_dir=folder, mirrors=mirrors)
    expected_images, expected_labels = synthetic_split(30, 0)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    for name in MNIST_SPLITS["train"]:
        assert (folder / name).read_bytes() == (mirror / name).read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == sorted(MNIST_SPLITS["train"])
    assert "absent/train-images-idx3-ubyte.gz" in capsys.readouterr().err
    # Second call: verified local copies, no mirror needed.
    again, _ = load_mnist("train", data_dir=folder, mirrors=())
    np.testing.assert_array_equal(again, images)


def test_mirror_serving_wrong_bytes_is_skipped(tmp_path, mirror):
    bad = tmp_path / "bad-mirror"
    for name in MNIST_SPLITS["test"]:
        shape = (3, 28, 28) if "images" in name else (3,)
        write_idx(bad / name, np.ones(shape, np.uint8))
    folder = tmp_path / "cache"
    images, _ = load_mnist("test", data_dir=folder, mirrors=[bad.as_uri(), mirror.as_uri()])
    assert images.shape == (12, 28, 28)


def test_all_mirrors_failing_lists_them_and_says_where_to_place_files(tmp_path, mirror):
    folder = tmp_path / "cache"
    mirrors = [(tmp_path / "one").as_uri(), (tmp_path / "two").as_uri()]
    with pytest.raises(UserError) as info:
        load_mnist("train", data_dir=folder, mirrors=mirrors)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download train-images-idx3-ubyte.gz: tried ")
    assert f"{mirrors[0]}/train-images-idx3-ubyte.gz" in message
    assert f"{mirrors[1]}/train-images-idx3-ubyte.gz" in message
    sha = MNIST_FILES["train-images-idx3-ubyte.gz"]
    assert f"place train-images-idx3-ubyte.gz (SHA-256 {sha})" in message
    assert str(folder) in message
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


def test_missing_without_download_says_where_to_place(tmp_path, mirror):
    with pytest.raises(UserError, match=r"not found and downloading is off; place t10k-images"):
        load_mnist("test", data_dir=tmp_path / "empty", download=False)


def test_unknown_split(tmp_path):
    with pytest.raises(UserError, match="unknown MNIST split 'valid'"):
        load_mnist("valid", data_dir=tmp_path)  # pyright: ignore[reportArgumentType]


def test_default_mirrors_are_https_or_http_urls():
    assert all(url.startswith(("https://", "http://")) for url in mnist.MIRRORS)
    assert mnist.MIRRORS[0].startswith("https://")
