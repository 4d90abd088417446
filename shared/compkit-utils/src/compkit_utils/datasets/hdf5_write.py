"""Atomic HDF5 writers: a whole file at once, incrementally, or through a full-disk-safe handle.

Every writer produces its file under a temporary name in the target folder and renames it into
place only when it is complete, so a reader never sees a half-written file and a failure leaves
nothing behind. Files are written through :func:`atomic_hdf5`, which keeps the HDF5 library
out of its error paths on a full disk (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from compkit_utils.datasets.hdf5_schema import (
    Schema,
    _dataset_keys,
    _h5py,
    _open,
    _validate_open,
)
from compkit_utils.datasets.info import INFO_FILE, DatasetInfo, read_info, write_info
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_path

__all__ = ["Compression", "HDF5Writer", "atomic_hdf5", "record_info", "write_hdf5"]

Compression = Literal["gzip", "lzf"] | None


class _WriteGuard(io.RawIOBase):
    """A binary file for h5py's ``fileobj`` driver that never reports a write error to HDF5.

    HDF5 does not survive a failed write well: after ``ENOSPC`` its metadata cache stays
    dirty, every later flush fails again, and closing the file can crash the interpreter
    (a segmentation fault inside ``H5Fclose``). So the first failed write is recorded here,
    later writes only move the file position, and the owner raises the recorded error once
    HDF5 has closed the (then useless, and deleted) file.
    """

    def __init__(self, raw: io.FileIO, shown: Path) -> None:
        super().__init__()
        self._raw = raw
        self._shown = shown
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer: Any) -> int:
        return self._raw.readinto(buffer) or 0

    def _record(self, exc: OSError) -> None:
        if self.error is None:
            code = exc.errno if exc.errno is not None else errno.EIO
            self.error = OSError(code, exc.strerror or os.strerror(code), str(self._shown))

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        done = 0
        if self.error is None:
            try:
                while done < size:
                    done += self._raw.write(view[done:]) or 0
            except OSError as exc:
                self._record(exc)
        if done < size:
            self._raw.seek(size - done, os.SEEK_CUR)
        return size

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._raw.truncate(size)
        except OSError as exc:
            self._record(exc)
            return self._raw.tell() if size is None else size

    def flush(self) -> None:
        try:
            self._raw.flush()
        except OSError as exc:
            self._record(exc)


class AtomicHDF5:
    """An HDF5 file written under a temporary name and renamed into place when complete.

    Use through :func:`atomic_hdf5`. ``file`` is the open ``h5py.File``. A failed write (a
    full disk, a quota) never reaches HDF5 (see :class:`_WriteGuard`): it is raised as an
    ``OSError`` carrying the target path when the block ends, or earlier from :meth:`check`,
    and the temporary file is removed. If the block raises, the temporary file is removed and
    ``path`` keeps its previous content.
    """

    def __init__(self, path: str | os.PathLike[str], **file_kwargs: Any) -> None:
        self.path = Path(path)
        self._kwargs = file_kwargs
        self._atomic = atomic_path(self.path)
        self.file: Any = None
        self.tmp: Path | None = None
        self._raw: io.FileIO | None = None
        self._guard: _WriteGuard | None = None

    def __enter__(self) -> AtomicHDF5:
        h5py = _h5py()
        self.tmp = self._atomic.__enter__()
        try:
            self._raw = io.FileIO(self.tmp, "r+")
            self._guard = _WriteGuard(self._raw, self.path)
            self.file = h5py.File(self._guard, "w", **self._kwargs)
        except BaseException as exc:
            self._close_quietly()
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def check(self) -> None:
        """Raise the first failed write now (to stop generating data that cannot be stored).

        Raises:
            OSError: with ``errno`` (e.g. ``ENOSPC``) and ``filename`` = the target path.
        """
        if self._guard is not None and self._guard.error is not None:
            raise self._guard.error

    def _close_quietly(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
        except Exception:  # the file is discarded; the cause is raised instead
            pass
        finally:
            self.file = None
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    def close_file(self) -> None:
        """Close the HDF5 file (before the rename); raise a failed write as ``OSError``."""
        if self.file is not None:
            self.file.close()
            self.file = None
            assert self._guard is not None
            self._guard.flush()
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.check()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                self.close_file()
            except BaseException as error:
                self._close_quietly()
                self._atomic.__exit__(type(error), error, error.__traceback__)
                raise
            self._atomic.__exit__(None, None, None)
            return
        self._close_quietly()
        write_error = self._guard.error if self._guard is not None else None
        self._atomic.__exit__(exc_type, exc, tb)
        if write_error is not None and isinstance(exc, Exception):
            raise write_error from exc  # the body failed on data lost to the failed write


def atomic_hdf5(path: str | os.PathLike[str], **file_kwargs: Any) -> AtomicHDF5:
    """Write an HDF5 file atomically and safely on a full disk.

    Example:
        >>> with atomic_hdf5("out/shard.h5") as out:
        ...     for i, arrays in enumerate(batches):
        ...         group = out.file.create_group(f"c{i}")
        ...         ...
        ...         out.check()  # stop early if the disk filled up

    Args:
        path: the file to produce (its folder is created).
        file_kwargs: passed to ``h5py.File`` (e.g. ``libver``).

    Returns:
        An :class:`AtomicHDF5` context manager. On leaving the block the file is renamed into
        place; a failed write raises ``OSError(errno, reason, path)`` and nothing is left.
    """
    return AtomicHDF5(path, **file_kwargs)


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
    with atomic_hdf5(target) as out:
        handle = out.file
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
        self._atomic = atomic_hdf5(self.path).__enter__()
        self._file = self._atomic.file
        try:
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
            self._atomic.close_file()
            if self.schema is not None:
                assert self._atomic.tmp is not None
                with _open(self._atomic.tmp, display=self.path) as handle:
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
        # Throwing into the atomic file removes the temporary file without renaming it.
        error = RuntimeError("HDF5Writer aborted")
        with contextlib.suppress(OSError):
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
