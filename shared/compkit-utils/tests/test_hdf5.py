from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compkit_utils.datasets.hdf5 import (
    ArraySpec,
    HDF5Dataset,
    HDF5Writer,
    Schema,
    atomic_hdf5,
    validate_hdf5,
    write_hdf5,
)
from compkit_utils.datasets.info import DatasetInfo, sha256_file, verify_info
from compkit_utils.errors import UserError, install_hint

h5py = pytest.importorskip("h5py")  # declared in the test group; the skip never fires there

SCHEMA = Schema(
    {
        "images": ArraySpec("u", (None, 8, 8)),
        "labels": ArraySpec("i", (None,)),
    },
    attrs=("source",),
)


def _arrays(n: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        "labels": rng.integers(0, 10, n).astype(np.int64),
    }


def _info(**counts: int) -> DatasetInfo:
    return DatasetInfo("toy", "tests.test_hdf5", "0.1.0", seed=3, counts=counts)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_hdf5_round_trip_with_groups_strings_and_attrs(tmp_path):
    arrays = {
        **_arrays(),
        "meta/names": np.array([f"item-{i}" for i in range(10)]),
        "meta/scale": np.float32(0.5),
    }
    path = write_hdf5(tmp_path / "train.h5", arrays, attrs={"source": "unit test", "n": 10})
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["images"][()], arrays["images"])
        assert handle["images"].compression == "gzip"
        assert handle["meta/names"].asstr()[3] == "item-3"
        assert float(handle["meta/scale"][()]) == 0.5
        assert handle.attrs["source"] == "unit test"
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "dataset_info.json").exists()  # only written when info is given


def test_write_hdf5_records_info_with_checksums_of_all_files(tmp_path):
    train = write_hdf5(tmp_path / "train.h5", _arrays(10), info=_info(train=10))
    test = write_hdf5(
        tmp_path / "test.h5", _arrays(4, seed=1), info=_info(test=4), compression=None
    )
    data = json.loads((tmp_path / "dataset_info.json").read_text())
    assert data["files"] == {"test.h5": sha256_file(test), "train.h5": sha256_file(train)}
    assert data["counts"] == {"train": 10, "test": 4}
    assert (data["generator"], data["seed"]) == ("tests.test_hdf5", 3)
    assert verify_info(tmp_path).files == data["files"]
    # A file modified afterwards no longer verifies.
    write_hdf5(train, _arrays(10, seed=5))
    with pytest.raises(UserError, match=r"train\.h5: corrupt, SHA-256"):
        verify_info(tmp_path)


def test_write_hdf5_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays())
    before = path.read_bytes()
    unstorable = np.array([{"a": 1}, {"b": 2}], dtype=object)
    with pytest.raises((TypeError, ValueError)):
        write_hdf5(path, {"images": _arrays()["images"], "bad": unstorable})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_writer_appends_in_chunks_and_validates(tmp_path):
    full = _arrays(25)
    with HDF5Writer(
        tmp_path / "train.h5", attrs={"source": "chunks"}, info=_info(train=25), schema=SCHEMA
    ) as writer:
        for start in range(0, 25, 7):
            writer.append({k: v[start : start + 7] for k, v in full.items()})
        writer.group("meta", attrs={"note": "fixed tables"})
        writer.write("meta/vocab", np.array(["a", "b", "c"]), attrs={"size": 3})
        writer.attrs["finished"] = True
        assert len(writer) == 25
        assert not (tmp_path / "train.h5").exists()  # appears only on close
    with h5py.File(tmp_path / "train.h5", "r") as handle:
        np.testing.assert_array_equal(handle["images"][()], full["images"])
        np.testing.assert_array_equal(handle["labels"][()], full["labels"])
        assert handle["images"].maxshape == (None, 8, 8)
        assert list(handle["meta/vocab"].asstr()[()]) == ["a", "b", "c"]
        assert handle["meta"].attrs["note"] == "fixed tables"
        assert bool(handle.attrs["finished"])
    assert verify_info(tmp_path).counts == {"train": 25}
    assert _leftovers(tmp_path) == []


def test_writer_leaves_nothing_behind_on_exception(tmp_path):
    path = tmp_path / "train.h5"

    def generate() -> None:
        with HDF5Writer(path) as writer:
            writer.append(_arrays(5))
            raise RuntimeError("generator crashed")

    with pytest.raises(RuntimeError, match="generator crashed"):
        generate()
    assert list(tmp_path.iterdir()) == []


def test_writer_schema_failure_on_close_commits_nothing(tmp_path):
    path = tmp_path / "train.h5"
    writer = HDF5Writer(path, schema=SCHEMA, info=_info())
    writer.append(_arrays(5))
    with pytest.raises(UserError, match=r"train\.h5: attribute 'source' is missing"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_inconsistent_rows(tmp_path):
    writer = HDF5Writer(tmp_path / "a.h5")
    writer.append({"x": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="rows have shape"):
        writer.append({"x": np.zeros((2, 4))})
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_validate_hdf5_accepts_matching_file(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays(), attrs={"source": "x"})
    assert validate_hdf5(path, SCHEMA) == 10
    exact = Schema({"images": ArraySpec("uint8", (None, 8, 8))})
    assert validate_hdf5(path, exact) == 10


@pytest.mark.parametrize(
    ("arrays", "attrs", "message"),
    [
        (
            {"images": np.zeros((10, 8), np.uint8), "labels": np.zeros(10, np.int64)},
            {"source": "x"},
            "dataset 'images' has shape (10, 8) but the schema expects (N, 8, 8); "
            "regenerate the file",
        ),
        (
            {"images": np.zeros((10, 8, 8), np.float32), "labels": np.zeros(10, np.int64)},
            {"source": "x"},
            "dataset 'images' has dtype float32 but the schema expects unsigned integer",
        ),
        (
            {"images": np.zeros((10, 8, 8), np.uint8)},
            {"source": "x"},
            "dataset 'labels' is missing (found 'images')",
        ),
        (
            {"images": np.zeros((10, 8, 8), np.uint8), "labels": np.zeros(9, np.int64)},
            {"source": "x"},
            "datasets differ in length ('images': 10, 'labels': 9)",
        ),
        (_arrays(), {}, "attribute 'source' is missing"),
    ],
)
def test_validate_hdf5_errors_name_file_and_dataset(tmp_path, arrays, attrs, message):
    path = write_hdf5(tmp_path / "data" / "train.h5", arrays, attrs=attrs)
    with pytest.raises(UserError) as info:
        validate_hdf5(path, SCHEMA)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    with pytest.raises(UserError, match=r"train\.h5"):
        HDF5Dataset(path, ["images"], schema=SCHEMA)


def test_dataset_items_transform_and_indexing(tmp_path):
    arrays = {**_arrays(), "names": np.array([f"n{i}" for i in range(10)])}
    path = write_hdf5(tmp_path / "train.h5", arrays, attrs={"source": "x"})
    dataset = HDF5Dataset(path, ["images", "labels", "names"], schema=SCHEMA)
    assert len(dataset) == 10
    assert dataset.attrs["source"] == "x"
    item = dataset[3]
    assert set(item) == {"images", "labels", "names"}
    np.testing.assert_array_equal(item["images"], arrays["images"][3])
    assert item["labels"].dtype == np.int64
    assert int(item["labels"]) == arrays["labels"][3]
    assert item["names"] == "n3"
    np.testing.assert_array_equal(dataset[-1]["images"], arrays["images"][9])
    with pytest.raises(IndexError):
        dataset[10]
    assert len(list(dataset)) == 10
    np.testing.assert_array_equal(dataset.read("labels"), arrays["labels"])
    assert list(dataset.read("names")) == [f"n{i}" for i in range(10)]

    doubled = HDF5Dataset(path, ["labels"], transform=lambda d: int(d["labels"]) * 2)
    assert doubled[2] == 2 * arrays["labels"][2]
    everything = HDF5Dataset(path)
    assert everything.keys == ("images", "labels", "names")
    with_scalar = write_hdf5(tmp_path / "s.h5", {"x": np.arange(3), "meta/scale": np.float32(2)})
    assert HDF5Dataset(with_scalar).keys == ("x",)
    with pytest.raises(UserError, match=r"s\.h5: dataset 'meta/scale' is a scalar"):
        HDF5Dataset(with_scalar, ["x", "meta/scale"])
    dataset.close()
    doubled.close()
    everything.close()


def test_dataset_opens_lazily_and_pickles_without_handle(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays())
    dataset = HDF5Dataset(path, ["images", "labels"])
    assert dataset._file is None  # checked at construction, then closed
    _ = dataset[0]
    assert dataset._file is not None
    assert dataset._pid is not None
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._file is None
    assert clone._pid is None
    np.testing.assert_array_equal(clone[4]["images"], dataset[4]["images"])
    # A handle inherited from another process is never reused.
    clone._pid = -1
    old = clone._file
    _ = clone[1]
    assert clone._file is not old
    dataset.close()
    clone.close()
    assert dataset._file is None


def _with_pid(item: dict) -> dict:
    return {**item, "pid": os.getpid()}


def test_dataset_in_dataloader_workers(tmp_path):
    import torch

    arrays = _arrays(12)
    path = write_hdf5(tmp_path / "train.h5", arrays)
    dataset = HDF5Dataset(path, ["images", "labels"], transform=_with_pid)
    _ = dataset[0]  # the parent holds an open handle before the workers fork
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    labels = torch.cat([batch["labels"] for batch in batches]).numpy()
    np.testing.assert_array_equal(labels, arrays["labels"])
    pids = {int(pid) for batch in batches for pid in batch["pid"]}
    assert os.getpid() not in pids
    assert len(pids) == 2
    assert dataset._pid == os.getpid()  # the parent's handle is untouched
    dataset.close()


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"missing\.h5: not found"):
        HDF5Dataset(tmp_path / "missing.h5")
    with pytest.raises(UserError, match=r"missing\.h5: not found"):
        validate_hdf5(tmp_path / "missing.h5", SCHEMA)


def test_not_hdf5_is_a_user_error(tmp_path):
    path = tmp_path / "train.h5"
    path.write_text("this is not an HDF5 file\n")
    with pytest.raises(UserError, match=r"train\.h5: not a readable HDF5 file.*regenerate"):
        HDF5Dataset(path)


def test_truncated_file_is_a_user_error(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays(200), compression=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"train\.h5: not a readable HDF5 file \(.*truncated"):
        HDF5Dataset(path)


def test_corrupt_chunk_is_a_user_error_naming_the_dataset(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays(50))
    with h5py.File(path, "r") as handle:
        chunk = handle["images"].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset + 2)
        raw.write(b"\xff" * 64)
    dataset = HDF5Dataset(path, ["labels", "images"])  # the header is intact
    with pytest.raises(UserError, match=r"train\.h5: dataset 'images' row 0 could not be read"):
        dataset[0]
    dataset.close()


def test_unknown_key_is_a_user_error(tmp_path):
    path = write_hdf5(tmp_path / "train.h5", _arrays())
    with pytest.raises(UserError, match=r"train\.h5: dataset 'masks' is missing"):
        HDF5Dataset(path, ["images", "masks"])


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(UserError, match=re.escape(install_hint("compkit-utils", "hdf5"))):
        write_hdf5(tmp_path / "train.h5", _arrays())


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``LIMIT`` bytes."""

    LIMIT = 4096

    def write(self, data: Any) -> int:
        if self.tell() + len(memoryview(data).cast("B")) > self.LIMIT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def _write_big(how: str, target: Path) -> None:
    big = np.arange(200_000, dtype=np.int64)
    if how == "write_hdf5":
        write_hdf5(target, {"x": big}, compression=None)
    elif how == "writer":
        with HDF5Writer(target, compression=None) as writer:
            for _ in range(4):
                writer.append({"x": big[:, None]})
    else:
        with atomic_hdf5(target) as out:
            for i in range(4):
                out.file.create_dataset(f"x{i}", data=big)
                out.check()


@pytest.mark.parametrize("how", ["write_hdf5", "writer", "atomic"])
def test_full_disk_raises_oserror_naming_the_target_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(io, "FileIO", _FullDisk)
    target = tmp_path / "out" / "big.h5"
    with pytest.raises(OSError, match="No space left") as info:
        _write_big(how, target)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(target)
    assert list((tmp_path / "out").iterdir()) == []


def _fail_in_body(target: Path) -> None:
    with atomic_hdf5(target) as out:
        out.file["y"] = np.arange(5)
        raise KeyError("boom")


def test_atomic_hdf5_body_error_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "a.h5"
    write_hdf5(target, {"x": np.arange(3)})
    before = target.read_bytes()
    with pytest.raises(KeyError):
        _fail_in_body(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
