"""HDF5 datasets: atomic writers, schema validation and a lazily opened map-style reader.

A persisted dataset is one or more ``.h5`` files whose datasets share their first axis (one
row per example), with a ``dataset_info.json`` beside them recording what generated them and
the SHA-256 of every file (see :mod:`compkit_utils.datasets.info`).

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

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from compkit_utils.datasets.info import INFO_FILE, DatasetInfo, read_info, write_info
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_path

Compression = Literal["gzip", "lzf"] | None

if TYPE_CHECKING:
    # For type checkers HDF5Dataset is a torch Dataset (DataLoader accepts it); at run time
    # it is a plain class, so importing this module does not import torch.
    from torch.utils.data import Dataset

    _DatasetBase = Dataset[Any]
else:
    _DatasetBase = object

_DTYPE_KINDS = {
    "b": "bool",
    "i": "signed integer",
    "u": "unsigned integer",
    "f": "floating point",
    "c": "complex",
    "S": "byte string",
    "U": "text",
    "O": "object",
}


def _h5py() -> Any:
    """Import h5py, or explain which extra provides it."""
    try:
        import h5py
    except ImportError as exc:
        raise UserError(
            "HDF5 files need h5py, which comes with the hdf5 extra: "
            "pip install 'compkit-utils[hdf5]'"
        ) from exc
    return h5py


# ---------------------------------------------------------------------------------------------
# Schema


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """Expected dtype and shape of one HDF5 dataset.

    Attributes:
        dtype: either a NumPy dtype kind (``"u"`` unsigned int, ``"i"`` signed int, ``"f"``
            float, ``"b"`` bool, ``"S"``/``"U"`` strings; ``"i"`` also accepts unsigned
            integers) or an exact dtype name such as ``"uint8"`` or ``"float32"``.
        shape: expected shape; ``None`` marks a variable dimension (usually the first axis,
            the number of examples).
    """

    dtype: str
    shape: tuple[int | None, ...]

    def dtype_matches(self, dtype: np.dtype[Any]) -> bool:
        """Whether ``dtype`` is acceptable for this spec."""
        if len(self.dtype) == 1:
            kind = "S" if dtype.kind == "O" else dtype.kind  # h5py strings read as objects
            if self.dtype == "i":
                return kind in "iu"
            if self.dtype in "SU":
                return kind in "SU"
            return kind == self.dtype
        return dtype == np.dtype(self.dtype)

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` fits (same rank, fixed dimensions equal)."""
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )

    def describe_shape(self) -> str:
        """The expected shape as text, ``N`` for a variable first axis, ``*`` elsewhere."""
        parts = [
            str(dim) if dim is not None else ("N" if axis == 0 else "*")
            for axis, dim in enumerate(self.shape)
        ]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def describe_dtype(self) -> str:
        """The expected dtype as text."""
        return _DTYPE_KINDS.get(self.dtype, self.dtype) if len(self.dtype) == 1 else self.dtype


@dataclasses.dataclass(frozen=True)
class Schema:
    """Expected content of an HDF5 file.

    Attributes:
        datasets: dataset path (``"images"`` or ``"episodes/actions"``) → :class:`ArraySpec`.
        attrs: names of file-level attributes that must be present.
        same_length: require every listed dataset to have the same first-axis length.
    """

    datasets: Mapping[str, ArraySpec]
    attrs: tuple[str, ...] = ()
    same_length: bool = True


def validate_hdf5(path: str | os.PathLike[str], schema: Schema) -> int | None:
    """Check that an HDF5 file has the datasets, dtypes, shapes and attributes of ``schema``.

    Args:
        path: the HDF5 file.
        schema: what it must contain.

    Returns:
        The common first-axis length when ``schema.same_length`` and the schema lists at least
        one non-scalar dataset, else ``None``.

    Raises:
        UserError: the file is missing or unreadable, or does not match the schema, e.g.
            ``"data/train.h5: dataset 'images' has shape (10, 8) but the schema expects
            (N, 8, 8); regenerate the file"``.
    """
    with _open(path) as handle:
        return _validate_open(handle, Path(path), schema)


def _validate_open(handle: Any, path: Path, schema: Schema) -> int | None:
    h5py = _h5py()
    for name in schema.attrs:
        if name not in handle.attrs:
            raise UserError(f"{path}: attribute {name!r} is missing; regenerate the file")
    lengths: dict[str, int] = {}
    for key, spec in schema.datasets.items():
        node = handle.get(key)
        if node is None:
            found = ", ".join(repr(k) for k in _dataset_keys(handle)) or "none"
            raise UserError(
                f"{path}: dataset {key!r} is missing (found {found}); regenerate the file"
            )
        if not isinstance(node, h5py.Dataset):
            raise UserError(f"{path}: {key!r} is a group, not a dataset; regenerate the file")
        shape = tuple(int(dim) for dim in node.shape)
        if not spec.shape_matches(shape):
            raise UserError(
                f"{path}: dataset {key!r} has shape {shape} but the schema expects "
                f"{spec.describe_shape()}; regenerate the file"
            )
        if not spec.dtype_matches(node.dtype):
            raise UserError(
                f"{path}: dataset {key!r} has dtype {node.dtype} but the schema expects "
                f"{spec.describe_dtype()}; regenerate the file"
            )
        if shape:
            lengths[key] = shape[0]
    if schema.same_length and lengths:
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{key!r}: {n}" for key, n in lengths.items())
            raise UserError(
                f"{path}: datasets differ in length ({sizes}) but the schema expects one row "
                "per example in each; regenerate the file"
            )
        return next(iter(lengths.values()))
    return None


# ---------------------------------------------------------------------------------------------
# Writing


def write_hdf5(
    path: str | os.PathLike[str],
    arrays: Mapping[str, ArrayLike],
    *,
    attrs: Mapping[str, Any] | None = None,
    info: DatasetInfo | None = None,
    compression: Compression = "gzip",
) -> Path:
    """Write arrays to an HDF5 file atomically (temporary file, then rename).

    Args:
        path: the ``.h5`` file to write; its folder is created.
        arrays: dataset path → array; a path with ``/`` (``"episodes/actions"``) creates
            groups. Text arrays (NumPy ``U`` dtype) are stored as UTF-8 strings.
        attrs: file-level attributes (numbers, strings, small arrays).
        info: provenance; when given, ``dataset_info.json`` beside the file is written (or
            updated, keeping the checksums of sibling files) with this file's SHA-256.
        compression: ``"gzip"`` (default), ``"lzf"`` or ``None``.

    Returns:
        The path written.
    """
    h5py = _h5py()
    target = Path(path)
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as handle:
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value
        for key, array in arrays.items():
            data, dtype = _storable(h5py, array)
            compress = compression if data.ndim > 0 and data.size > 0 else None
            handle.create_dataset(key, data=data, dtype=dtype, compression=compress)
    if info is not None:
        record_info(target, info)
    return target


def _storable(h5py: Any, array: ArrayLike) -> tuple[np.ndarray, Any]:
    """The array and HDF5 dtype to store it with; text becomes variable-length UTF-8."""
    data = np.asarray(array)
    if data.dtype.kind == "U":
        return data.astype(object), h5py.string_dtype()
    return data, data.dtype


def record_info(path: str | os.PathLike[str], info: DatasetInfo) -> Path:
    """Write or update ``dataset_info.json`` beside ``path`` with the file's SHA-256.

    Checksums of other files already listed (and still present) are kept, so several files
    of one dataset (``train.h5``, ``test.h5``) share one ``dataset_info.json``; when the
    existing record has the same dataset name, its ``counts`` are merged with ``info``'s.

    Returns:
        The ``dataset_info.json`` path.
    """
    target = Path(path)
    directory = target.parent
    files = {target.name}
    counts = dict(info.counts)
    if (directory / INFO_FILE).is_file():
        try:
            previous = read_info(directory)
        except UserError:
            previous = None
        if previous is not None:
            files.update(name for name in previous.files if (directory / name).is_file())
            if previous.name == info.name:
                counts = {**previous.counts, **info.counts}
    return write_info(directory, dataclasses.replace(info, counts=counts), files=sorted(files))


class HDF5Writer:
    """Build an HDF5 file incrementally; it appears at ``path`` only when the writer closes.

    Rows are appended along the first axis of resizable, chunked datasets, so files larger
    than memory can be generated batch by batch. The file is written to a temporary name in
    the same folder and renamed on a successful :meth:`close`; if the ``with`` body raises,
    the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the ``.h5`` file to produce.
        attrs: file-level attributes.
        info: provenance for ``dataset_info.json`` (see :func:`write_hdf5`).
        schema: when given, the finished file is validated before it is committed.
        compression: ``"gzip"`` (default), ``"lzf"`` or ``None``.
        chunk_bytes: target size of one HDF5 chunk of an appendable dataset.

    Example:
        >>> with HDF5Writer("data/train.h5", info=info) as writer:
        ...     for batch in batches:
        ...         writer.append({"images": batch.images, "labels": batch.labels})
        ...     writer.write("vocab", vocab)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        attrs: Mapping[str, Any] | None = None,
        info: DatasetInfo | None = None,
        schema: Schema | None = None,
        compression: Compression = "gzip",
        chunk_bytes: int = 1 << 20,
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.schema = schema
        self.compression = compression
        self.chunk_bytes = chunk_bytes
        self._h5py = _h5py()
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._file = self._h5py.File(self._tmp, "w")
            for key, value in (attrs or {}).items():
                self._file.attrs[key] = value
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._closed = False

    @property
    def attrs(self) -> Any:
        """File-level attributes of the file being written (an ``h5py`` attribute manager)."""
        self._check_open()
        return self._file.attrs

    def __len__(self) -> int:
        """Rows appended so far to the first appended dataset (0 if none)."""
        for key in self._appendable():
            return int(self._file[key].shape[0])
        return 0

    def append(self, arrays: Mapping[str, ArrayLike]) -> None:
        """Append rows (first axis) to each named dataset, creating it on first use.

        Args:
            arrays: dataset path → array of shape ``(rows, *row_shape)``; ``row_shape`` and
                the dtype must stay the same across calls.
        """
        self._check_open()
        for key, array in arrays.items():
            data, dtype = _storable(self._h5py, array)
            if data.ndim == 0:
                raise ValueError(f"append({key!r}): need an array with a row axis, got a scalar")
            if key not in self._file:
                row_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * 8)
                rows = max(1, min(4096, self.chunk_bytes // row_bytes))
                self._file.create_dataset(
                    key,
                    shape=(0, *data.shape[1:]),
                    maxshape=(None, *data.shape[1:]),
                    chunks=(rows, *data.shape[1:]) if data[0:1].size else None,
                    dtype=dtype,
                    compression=self.compression,
                )
            dataset = self._file[key]
            if dataset.maxshape[0] is not None:
                raise ValueError(f"append({key!r}): dataset was written with write(), not append()")
            if tuple(dataset.shape[1:]) != data.shape[1:]:
                raise ValueError(
                    f"append({key!r}): rows have shape {data.shape[1:]}, "
                    f"earlier rows {tuple(dataset.shape[1:])}"
                )
            start = dataset.shape[0]
            dataset.resize(start + data.shape[0], axis=0)
            dataset[start:] = data

    def write(self, key: str, array: ArrayLike, attrs: Mapping[str, Any] | None = None) -> None:
        """Write a complete (non-appendable) dataset, e.g. a vocabulary or a lookup table.

        Args:
            key: dataset path; ``/`` creates groups.
            array: its content.
            attrs: attributes of this dataset.
        """
        self._check_open()
        data, dtype = _storable(self._h5py, array)
        compress = self.compression if data.ndim > 0 and data.size > 0 else None
        dataset = self._file.create_dataset(key, data=data, dtype=dtype, compression=compress)
        for name, value in (attrs or {}).items():
            dataset.attrs[name] = value

    def group(self, key: str, attrs: Mapping[str, Any] | None = None) -> None:
        """Create a group (with attributes); datasets under ``key/...`` then go inside it."""
        self._check_open()
        group = self._file.require_group(key)
        for name, value in (attrs or {}).items():
            group.attrs[name] = value

    def close(self) -> Path:
        """Finish the file: validate against the schema, rename into place, record the info.

        Returns:
            The final path.
        """
        if self._closed:
            return self.path
        self._closed = True
        try:
            self._file.close()
            if self.schema is not None:
                with _open(self._tmp, display=self.path) as handle:
                    _validate_open(handle, self.path, self.schema)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)
        if self.info is not None:
            record_info(self.path, self.info)
        return self.path

    def abort(self) -> None:
        """Discard the file being written; ``path`` keeps its previous state."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            # Throwing into atomic_path removes the temporary file without renaming it.
            error = RuntimeError("HDF5Writer aborted")
            self._atomic.__exit__(RuntimeError, error, None)

    def __enter__(self) -> HDF5Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _appendable(self) -> Iterator[str]:
        for key in _dataset_keys(self._file):
            if self._file[key].maxshape[:1] == (None,):
                yield key

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"HDF5Writer for {self.path} is already closed")


# ---------------------------------------------------------------------------------------------
# Reading


@contextlib.contextmanager
def _open(path: str | os.PathLike[str], display: Path | None = None) -> Iterator[Any]:
    """Open an HDF5 file read-only for a ``with`` block (see :func:`open_hdf5`)."""
    handle = open_hdf5(path, display=display)
    try:
        yield handle
    finally:
        handle.close()


def open_hdf5(path: str | os.PathLike[str], *, display: Path | None = None) -> Any:
    """Open an HDF5 file read-only (an ``h5py.File``).

    Args:
        path: the file.
        display: the name used in error messages (defaults to ``path``).

    Raises:
        UserError: missing, not an HDF5 file, or truncated; the message names the file.
    """
    h5py = _h5py()
    path = Path(path)
    shown = display or path
    if not path.exists():
        raise UserError(f"{shown}: not found; generate the dataset first or check the path")
    if not path.is_file():
        raise UserError(f"{shown}: is not a file; expected an HDF5 (.h5) file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(", 1)[0].strip().rstrip(".") or type(exc).__name__
        raise UserError(
            f"{shown}: not a readable HDF5 file ({reason}); it is corrupt or truncated, "
            "regenerate it"
        ) from exc


def _dataset_keys(handle: Any) -> list[str]:
    """Every dataset path in a file or group, in HDF5 order."""
    h5py = _h5py()
    keys: list[str] = []

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset):
            keys.append(name)

    handle.visititems(visit)
    return keys


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
