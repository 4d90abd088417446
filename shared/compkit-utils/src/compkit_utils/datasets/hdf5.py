"""HDF5 datasets: atomic writers, schema validation and a lazily opened map-style reader.

A persisted dataset is one or more ``.h5`` files whose datasets share their first axis (one
row per example), with a ``dataset_info.json`` beside them recording what generated them and
the SHA-256 of every file (see :mod:`compkit_utils.datasets.info`). This module holds the
reader, :class:`HDF5Dataset`, and re-exports the schema checks
(:mod:`~compkit_utils.datasets.hdf5_schema`) and the writers
(:mod:`~compkit_utils.datasets.hdf5_write`), so everything is importable from here.

``h5py`` is imported only inside the functions that need it; it comes with the ``hdf5``
extra (``pip install 'compkit-utils[hdf5]'``).

Example:
    ```python
    write_hdf5("data/train.h5", {"images": images, "labels": labels}, info=info)
    schema = Schema({"images": ArraySpec("u", (None, 8, 8)), "labels": ArraySpec("i", (None,))})
    dataset = HDF5Dataset("data/train.h5", ["images", "labels"], schema=schema)
    dataset[0]["images"].shape  # (8, 8)
    ```
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.datasets.hdf5_schema import (
    ArraySpec,
    Schema,
    _dataset_keys,
    _h5py,
    _open,
    _validate_open,
    open_hdf5,
    validate_hdf5,
)
from compkit_utils.datasets.hdf5_write import (
    Compression,
    HDF5Writer,
    atomic_hdf5,
    record_info,
    write_hdf5,
)
from compkit_utils.errors import UserError

__all__ = [
    "ArraySpec",
    "Compression",
    "HDF5Dataset",
    "HDF5Writer",
    "Schema",
    "atomic_hdf5",
    "open_hdf5",
    "record_info",
    "validate_hdf5",
    "write_hdf5",
]

if TYPE_CHECKING:
    # For type checkers HDF5Dataset is a torch Dataset (DataLoader accepts it); at run time
    # it is a plain class, so importing this module does not import torch.
    from torch.utils.data import Dataset

    _DatasetBase = Dataset[Any]
else:
    _DatasetBase = object


class HDF5Dataset(_DatasetBase):
    """Map-style dataset over rows of an HDF5 file (plugs into ``torch.utils.data.DataLoader``).

    Item ``i`` is ``{key: dataset[key][i]}`` as NumPy arrays (scalars come back as 0-d
    arrays, strings as ``str``), passed through ``transform`` when given. The file is checked
    when the dataset is built, then closed; it is reopened lazily on first access in each
    process. Pickling drops the handle, so every ``DataLoader`` worker opens its own (``h5py``
    handles must not cross ``fork``); the owning process ID is recorded to detect a fork.

    Args:
        path: the HDF5 file.
        keys: dataset paths to read per item; default: every non-scalar dataset in the file.
        schema: validated when the dataset is built.
        transform: applied to each item dict.

    Raises:
        UserError: missing/corrupt file, schema mismatch, a missing key, or keys of unequal
            length, naming the file and the dataset.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: Sequence[str] | None = None,
        schema: Schema | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.transform = transform
        self._file: Any = None
        self._pid: int | None = None
        h5py = _h5py()
        with _open(self.path) as handle:
            if schema is not None:
                _validate_open(handle, self.path, schema)
            if keys is None:  # every per-example (non-scalar) dataset
                keys = [key for key in _dataset_keys(handle) if handle[key].ndim > 0]
            self.keys: tuple[str, ...] = tuple(keys)
            if not self.keys:
                raise UserError(f"{self.path}: contains no datasets; regenerate the file")
            lengths: dict[str, int] = {}
            self._strings: set[str] = set()
            for key in self.keys:
                node = handle.get(key)
                if not isinstance(node, h5py.Dataset):
                    what = "is a group" if node is not None else "is missing"
                    raise UserError(f"{self.path}: dataset {key!r} {what}; check the keys")
                if node.ndim == 0:
                    raise UserError(
                        f"{self.path}: dataset {key!r} is a scalar, not one row per example; "
                        "leave it out of keys"
                    )
                lengths[key] = int(node.shape[0])
                if h5py.check_string_dtype(node.dtype) is not None:
                    self._strings.add(key)
            if len(set(lengths.values())) > 1:
                sizes = ", ".join(f"{key!r}: {n}" for key, n in lengths.items())
                raise UserError(f"{self.path}: datasets differ in length ({sizes}); check keys")
            self._length = next(iter(lengths.values()))
            self.attrs: dict[str, Any] = dict(handle.attrs)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self.path} ({self._length} rows)")
        handle = self._handle()
        item: dict[str, Any] = {}
        key = self.keys[0]
        try:
            for key in self.keys:
                node = handle[key]
                if key in self._strings:
                    item[key] = node.asstr()[index]
                else:
                    item[key] = np.asarray(node[index])
        except OSError as exc:
            raise UserError(
                f"{self.path}: dataset {key!r} row {index} could not be read ({exc}); "
                "the file is corrupt, regenerate it"
            ) from exc
        return self.transform(item) if self.transform is not None else item

    def __iter__(self) -> Iterator[Any]:
        for index in range(self._length):
            yield self[index]

    def read(self, key: str) -> np.ndarray:
        """Read one whole dataset into memory (any dataset of the file, not only ``keys``)."""
        handle = self._handle()
        if key not in handle:
            raise UserError(f"{self.path}: dataset {key!r} is missing; check the key")
        node = handle[key]
        h5py = _h5py()
        if h5py.check_string_dtype(node.dtype) is not None:
            return np.asarray(node.asstr()[()], dtype=object)
        return np.asarray(node[()])

    def close(self) -> None:
        """Close this process's file handle (reopened automatically on next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __enter__(self) -> HDF5Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _handle(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent: never reuse it.
            self._file = open_hdf5(self.path)
            self._pid = os.getpid()
        return self._file
