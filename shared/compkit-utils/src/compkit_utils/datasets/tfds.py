"""Expose a generated dataset as a TensorFlow Datasets builder in the ArrayRecord format.

TensorFlow itself is not needed: the builder is prepared with ``file_format="array_record"``
and read back with ``tfds.data_source``, which returns random-access NumPy examples. Needs
the ``tfds`` extra (``pip install 'compkit-utils[tfds]'``: tensorflow-datasets, array-record,
importlib-resources, h5py).

Example:
    ```python
    from compkit_utils.datasets.tfds import prepare_tfds
    prepare_tfds("karel_programs", {"train": "data/train.h5"}, "tfds_data")
    import tensorflow_datasets as tfds
    source = tfds.data_source("karel_programs", data_dir="tfds_data", split="train")
    source[0]["actions"]
    ```

Example order is preserved (``disable_shuffling``): example ``i`` of a split is row ``i`` of
its source. Prepared folders are self-describing (``features.json``, ``dataset_info.json``),
so reading them back does not import this module.
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compkit_utils.datasets.hdf5 import open_hdf5
from compkit_utils.datasets.info import INFO_FILE, read_info
from compkit_utils.errors import UserError, install_hint

try:
    import tensorflow_datasets as tfds
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise UserError(
        "TFDS export needs the tfds extra: " + install_hint("compkit-utils", "tfds")
    ) from exc

# A split's source: an HDF5 file written by compkit_utils.datasets.hdf5, or arrays in memory.
Source = str | os.PathLike[str] | Mapping[str, np.ndarray]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BLOCK_ROWS = 1024


class _Split:
    """Shapes and dtypes of one split's arrays, and a row iterator over them."""

    def __init__(self, split: str, source: Source, keys: Sequence[str] | None) -> None:
        self.split = split
        self.path: Path | None = None
        self.arrays: dict[str, np.ndarray] = {}
        self.specs: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        if isinstance(source, Mapping):
            self.arrays = {key: np.asarray(source[key]) for key in (keys or list(source))}
            self.specs = {key: (a.shape, a.dtype) for key, a in self.arrays.items()}
            where = f"split {split!r}"
        else:
            self.path = Path(source)
            where = str(self.path)
            with open_hdf5(self.path) as handle:
                for key in keys or [k for k, v in handle.items() if hasattr(v, "dtype")]:
                    if key not in handle or not hasattr(handle[key], "dtype"):
                        raise UserError(f"{self.path}: dataset {key!r} is missing; check keys")
                    node = handle[key]
                    string = _is_string(node.dtype)
                    self.specs[key] = (tuple(node.shape), np.dtype("O" if string else node.dtype))
        if not self.specs:
            raise UserError(f"{where}: no arrays to export")
        for key, (shape, _) in self.specs.items():
            if "/" in key or not shape:
                raise UserError(
                    f"{where}: {key!r} cannot be a TFDS feature (needs a top-level name and "
                    "one row per example); pass keys= with top-level per-example datasets"
                )
        lengths = {key: shape[0] for key, (shape, _) in self.specs.items()}
        if len(set(lengths.values())) > 1:
            raise UserError(f"{where}: arrays differ in length {lengths}; pass keys= to choose")
        self.length = next(iter(lengths.values()))

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(index, {key: row})`` in order, reading HDF5 files block by block."""
        if self.path is None:
            for index in range(self.length):
                yield index, {key: array[index] for key, array in self.arrays.items()}
            return
        with open_hdf5(self.path) as handle:
            for start in range(0, self.length, _BLOCK_ROWS):
                stop = min(start + _BLOCK_ROWS, self.length)
                block = {
                    key: handle[key].asstr()[start:stop]
                    if _is_string(handle[key].dtype)
                    else handle[key][start:stop]
                    for key in self.specs
                }
                for offset in range(stop - start):
                    yield start + offset, {key: rows[offset] for key, rows in block.items()}


def _is_string(dtype: np.dtype[Any]) -> bool:
    import h5py

    return h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU"


def infer_features(
    specs: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]],
) -> dict[str, Any]:
    """Default TFDS features for arrays: ``Text`` for strings, else a ``Tensor`` per row.

    Args:
        specs: key → (array shape with the example axis first, dtype).

    Returns:
        key → ``tfds.features`` connector describing one row.
    """
    features: dict[str, Any] = {}
    for key, (shape, dtype) in specs.items():
        if dtype.kind in "OSU":
            features[key] = tfds.features.Text()
        elif len(shape) == 1:
            features[key] = tfds.features.Scalar(dtype=dtype)
        else:
            features[key] = tfds.features.Tensor(shape=tuple(shape[1:]), dtype=dtype)
    return features


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS builder whose splits come from HDF5 files or in-memory arrays.

    Make a concrete builder with :func:`make_builder` (which sets the class attributes
    below) rather than subclassing by hand.

    Attributes:
        SPLITS: split name → :class:`_Split` source.
        FEATURES: feature name → ``tfds.features`` connector.
        DESCRIPTION: dataset description stored in the prepared ``dataset_info.json``.
        METADATA: JSON-serialisable provenance stored as ``metadata.json``.
    """

    VERSION = tfds.core.Version("1.0.0")
    SPLITS: ClassVar[Mapping[str, _Split]] = {}
    FEATURES: ClassVar[Mapping[str, Any]] = {}
    DESCRIPTION: ClassVar[str] = ""
    METADATA: ClassVar[Mapping[str, Any]] = {}

    def _info(self) -> Any:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(dict(self.FEATURES)),
            metadata=tfds.core.MetadataDict(dict(self.METADATA)),
            # Keep example i of a split at index i, aligned with the source rows.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: Any) -> Any:
        del dl_manager  # nothing to download: the data is already here
        return {name: self._generate_examples(split) for name, split in self.SPLITS.items()}

    def _generate_examples(self, split: _Split) -> Any:  # pyright: ignore[reportIncompatibleMethodOverride]
        features = self.FEATURES
        for index, row in split.rows():
            yield index, {key: _fit(features[key], value) for key, value in row.items()}


def _fit(feature: Any, value: Any) -> Any:
    """Adapt a row to its feature: reshape to the declared layout; images go through PIL.

    ``tfds.features.Image`` encodes NumPy arrays with TensorFlow but PIL images with Pillow,
    so uint8 image rows are handed over as PIL images to keep TensorFlow out.
    """
    shape = getattr(feature, "shape", None)
    if (
        isinstance(value, np.ndarray)
        and shape is not None
        and None not in shape
        and value.shape != tuple(shape)
        and value.size == int(np.prod(shape))
    ):
        value = value.reshape(shape)
    if isinstance(feature, tfds.features.Image) and isinstance(value, np.ndarray):
        from PIL import Image

        return Image.fromarray(value[..., 0] if value.shape[-1] == 1 else value)
    return value


def make_builder(
    name: str,
    splits: Mapping[str, Source],
    *,
    features: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
    version: str = "1.0.0",
    description: str | None = None,
) -> type[ArrayRecordBuilder]:
    """Create a concrete :class:`ArrayRecordBuilder` subclass named ``name``.

    The class is not added to the TFDS registry (so a name can be prepared again in the same
    process); ``tfds.data_source(name, data_dir=...)`` finds the prepared files by name.

    Args:
        name: TFDS dataset name (lower snake_case), also the folder name under the data dir.
        splits: split name (``"train"``) → HDF5 file path or mapping of arrays; every array
            has the examples on its first axis.
        features: feature name → ``tfds.features`` connector, overriding the inferred
            default (``Tensor`` of the row shape and dtype, ``Scalar`` for 1-d arrays,
            ``Text`` for strings); e.g. ``tfds.features.Image(shape=(28, 28, 1))``.
        keys: which datasets/arrays to export (default: all top-level ones).
        version: dataset version, ``"MAJOR.MINOR.PATCH"``.
        description: free text; by default built from ``dataset_info.json`` beside the
            first HDF5 source, when there is one.

    Returns:
        The builder class; instantiate it with ``data_dir=`` and ``file_format="array_record"``.

    Raises:
        UserError: a bad name, unreadable sources, or splits with different keys.
    """
    if not _NAME.match(name):
        raise UserError(f"TFDS dataset name {name!r} must be lower snake_case, e.g. 'my_data'")
    if not splits:
        raise UserError(f"{name}: no splits given")
    loaded = {split: _Split(split, source, keys) for split, source in splits.items()}
    first = next(iter(loaded.values()))
    for split in loaded.values():
        if split.specs.keys() != first.specs.keys():
            raise UserError(
                f"{name}: split {split.split!r} has arrays {sorted(split.specs)} but "
                f"{first.split!r} has {sorted(first.specs)}; export the same keys"
            )
    inferred = infer_features(first.specs)
    unknown = set(features or {}) - set(inferred)
    if unknown:
        raise UserError(f"{name}: features {sorted(unknown)} name no exported array")
    metadata: dict[str, Any] = {}
    if first.path is not None and (first.path.parent / INFO_FILE).is_file():
        info = read_info(first.path.parent)
        metadata = {
            "compkit_dataset": info.name,
            "generator": info.generator,
            "version": info.version,
            "seed": info.seed,
            "counts": info.counts,
            "files": info.files,
        }
    if description is None:
        description = (
            f"{metadata['compkit_dataset']} generated by {metadata['generator']} "
            f"{metadata['version']} with seed {metadata['seed']}."
            if metadata
            else f"{name}, exported by compkit_utils.datasets.tfds."
        )
    namespace = {
        "name": name,
        "VERSION": tfds.core.Version(version),
        "SPLITS": loaded,
        "FEATURES": {**inferred, **(features or {})},
        "DESCRIPTION": description,
        "METADATA": json.loads(json.dumps(metadata)),
        "__module__": __name__,
        "__doc__": description,
    }
    class_name = "".join(part.title() for part in name.split("_"))
    return types.new_class(
        class_name,
        (ArrayRecordBuilder,),
        {"skip_registration": True},
        lambda ns: ns.update(namespace),
    )


def prepare_tfds(
    name: str,
    splits: Mapping[str, Source],
    data_dir: str | os.PathLike[str],
    *,
    features: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
    version: str = "1.0.0",
    description: str | None = None,
) -> Path:
    """Write a dataset as a prepared TFDS dataset in ArrayRecord format, without TensorFlow.

    Args:
        name: TFDS dataset name (lower snake_case).
        splits: split name → HDF5 file (written by :func:`~compkit_utils.datasets.hdf5.write_hdf5`
            or :class:`~compkit_utils.datasets.hdf5.HDF5Writer`) or mapping of arrays.
        data_dir: TFDS data directory; the dataset lands in ``<data_dir>/<name>/<version>``.
        features: per-key ``tfds.features`` overrides (see :func:`make_builder`).
        keys: which arrays to export (default: all top-level ones).
        version: dataset version.
        description: free text (default: from ``dataset_info.json`` beside the HDF5 file).

    Returns:
        The prepared dataset folder. Read it with
        ``tfds.data_source(name, data_dir=data_dir, split="train")``.
    """
    builder_cls = make_builder(
        name, splits, features=features, keys=keys, version=version, description=description
    )
    builder = builder_cls(data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return Path(os.fspath(builder.data_dir))


def data_source(name: str, data_dir: str | os.PathLike[str], split: str | None = None) -> Any:
    """``tfds.data_source`` for a prepared dataset, with a clear error when it is missing.

    Args:
        name: TFDS dataset name.
        data_dir: the TFDS data directory it was prepared into.
        split: one split, or ``None`` for a dict of all splits.

    Returns:
        A random-access source (``len(source)``, ``source[i]`` → dict of NumPy values), or a
        dict of them.
    """
    if not (Path(data_dir) / name).is_dir():
        raise UserError(
            f"{Path(data_dir) / name}: no prepared TFDS dataset {name!r}; run prepare_tfds first"
        )
    return tfds.data_source(name, data_dir=os.fspath(data_dir), split=split)
