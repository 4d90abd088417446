"""HDF5 schemas and read-only opening: the checks shared by the writers and the reader.

``h5py`` is imported only inside the functions that need it; it comes with the ``hdf5``
extra (``pip install 'compkit-utils[hdf5]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.errors import UserError, install_hint

__all__ = ["ArraySpec", "Schema", "open_hdf5", "validate_hdf5"]

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
            + install_hint("compkit-utils", "hdf5")
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
