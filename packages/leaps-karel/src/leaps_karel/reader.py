"""Reader of the LEAPS program dataset in the original layout (ours or the original's).

``data.hdf5`` holds one group per program (see :data:`DATASET_SCHEMA`) and a ``data_info``
group of scalars; ``id.txt`` lists the group names in order. The generator is
:mod:`leaps_karel.dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.info import INFO_FILE, verify_info
from compkit_utils.errors import UserError
from leaps_karel import dsl
from leaps_karel.world import NUM_CHANNELS

__all__ = ["DATASET_SCHEMA", "DATA_FILE", "ID_FILE", "INFO_GROUP", "KarelProgramDataset"]

DATA_FILE = "data.hdf5"
ID_FILE = "id.txt"
INFO_GROUP = "data_info"
FORMAT_VERSION = 1

DATASET_SCHEMA: dict[str, tuple[np.dtype[Any], int]] = {
    "program": (np.dtype(np.int8), 1),
    "s_h": (np.dtype(np.bool_), 5),
    "a_h": (np.dtype(np.int8), 2),
    "s_h_len": (np.dtype(np.int16), 1),
    "a_h_len": (np.dtype(np.int16), 1),
}
"""Per-program HDF5 datasets: name → (dtype, number of dimensions), as in the original."""


class KarelProgramDataset:
    """Map-style reader of a dataset in the original layout (ours or the original's).

    Description:
        Programs of the LEAPS probabilistic DSL with demonstrations on random worlds.

    Fields (``dataset[i]`` is a dict of NumPy arrays):
        ``program`` int8 ``[L]`` token ids; ``s_h`` bool ``[D, M, H, W, 16]`` state sequences;
        ``a_h`` int8 ``[D, A]`` action ids; ``s_h_len`` / ``a_h_len`` int16 ``[D]``.

    Splits:
        None in the file: the consumer re-splits (spec §9); `ids` gives the generation order.

    Generation:
        `generate_dataset` (``leaps-karel generate-dataset``).

    The HDF5 file is opened lazily, once per process, so the dataset can be handed to
    ``torch.utils.data.DataLoader`` workers. Programs are listed by ``id.txt`` when present,
    otherwise by the file's groups in generation order.

    Args:
        path: the dataset folder (holding ``data.hdf5`` and ``id.txt``) or the ``.hdf5`` file.
        validate: on construction, check the SHA-256 of every file listed in
            ``dataset_info.json`` (when the folder has one, as generated datasets do) and every
            listed group's datasets (names, dtypes, ranks, consistent shapes); otherwise each
            item is checked when it is read.

    Raises:
        UserError: a missing file, a corrupt one (checksum mismatch, unreadable HDF5 data), a
            group listed in ``id.txt`` but absent, or a dataset with the wrong name, dtype or
            shape — naming the file and the dataset, and the fix.
    """

    def __init__(self, path: str | os.PathLike[str], validate: bool = False) -> None:
        import h5py

        path = Path(path)
        self.file = path / DATA_FILE if path.is_dir() else path
        if not self.file.is_file():
            raise UserError(
                f"{self.file}: no such dataset file; generate one with "
                "`leaps-karel generate-dataset --out-dir DIR`"
            )
        id_file = self.file.parent / ID_FILE
        self._handle: Any = None
        self._pid = -1
        if validate and (self.file.parent / INFO_FILE).is_file():
            verify_info(self.file.parent, fix=_fix(self.file.parent))
        try:
            with h5py.File(self.file, "r") as handle:
                if id_file.is_file():
                    self.ids = [line.strip() for line in id_file.read_text().splitlines()]
                    self.ids = [name for name in self.ids if name]
                    missing = [name for name in self.ids if name not in handle]
                    if missing:
                        raise UserError(
                            f"{id_file}: lists {len(missing)} program(s) missing from "
                            f"{self.file}, e.g. {missing[0]!r}; the files do not belong together"
                        )
                else:
                    self.ids = _sorted_ids(str(name) for name in handle if name != INFO_GROUP)
                self.info = _read_data_info(handle, self.file)
                if validate:
                    for name in self.ids:
                        for dataset in _check_group(handle[name], self.file, name).values():
                            _ = dataset[()]  # read every byte: damaged data raises here
        except (OSError, RuntimeError) as exc:
            raise UserError(
                f"{self.file}: corrupt or not an HDF5 file ({_reason(exc)}); "
                f"{_fix(self.file.parent)}"
            ) from exc

    def __len__(self) -> int:
        return len(self.ids)

    def _file_handle(self) -> Any:
        import h5py

        if self._handle is None or self._pid != os.getpid():
            self._handle = h5py.File(self.file, "r")
            self._pid = os.getpid()
        return self._handle

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} programs")
        name = self.ids[index]
        try:
            datasets = _check_group(self._file_handle()[name], self.file, name)
            return {key: dataset[()] for key, dataset in datasets.items()}
        except (OSError, RuntimeError, KeyError) as exc:
            raise UserError(
                f"{self.file}: corrupt, program '{name}' cannot be read ({_reason(exc)}); "
                f"{_fix(self.file.parent)}"
            ) from exc

    def program_text(self, index: int) -> str:
        """The program of item ``index`` as DSL text."""
        return dsl.ids_to_text(self[index]["program"].tolist())

    def close(self) -> None:
        """Close this process's file handle (reopened on the next access)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None  # never pickle an open file into worker processes
        state["_pid"] = -1
        return state


def _fix(folder: Path) -> str:
    return f"delete it and rerun `leaps-karel generate-dataset --out-dir {folder} --resume`"


def _reason(exc: BaseException) -> str:
    """An h5py error message on one line, without HDF5's call-site details."""
    text = " ".join(str(exc).split())
    return text.split(" (", 1)[0] if len(text) > 120 else text


def _sorted_ids(names: Iterable[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        parts = name.split("_")
        if len(parts) > 1 and parts[0] == "no" and parts[1].isdigit():
            return int(parts[1]), name
        return 1 << 62, name

    return sorted(names, key=key)


def _read_data_info(handle: Any, file: Path) -> dict[str, Any]:
    if INFO_GROUP not in handle:
        return {}
    info: dict[str, Any] = {}
    for key, dataset in handle[INFO_GROUP].items():
        value = dataset[()]
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        info[key] = value
    return info


def _check_group(group: Any, file: Path, name: str) -> dict[str, Any]:
    """The group's datasets by name, after checking names, dtypes, ranks and shapes."""
    datasets: dict[str, Any] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for key, (dtype, ndim) in DATASET_SCHEMA.items():
        try:
            dataset = datasets[key] = group[key]
        except KeyError as exc:
            try:
                listed = key in group
            except (KeyError, OSError, RuntimeError):
                listed = True
            if listed:  # the link exists but the object cannot be opened: damaged bytes
                raise UserError(
                    f"{file}: corrupt, dataset '{name}/{key}' cannot be opened ({_reason(exc)}); "
                    f"{_fix(file.parent)}"
                ) from exc
            raise UserError(f"{file}: dataset '{name}/{key}' is missing") from None
        if dataset.dtype != dtype or dataset.ndim != ndim:
            raise UserError(
                f"{file}: dataset '{name}/{key}' has dtype {dataset.dtype} and shape "
                f"{dataset.shape}; expected {dtype} with {ndim} dimension(s)"
            )
        shapes[key] = dataset.shape
    demos = shapes["s_h_len"][0]
    if (
        shapes["a_h_len"][0] != demos
        or shapes["s_h"][0] != demos
        or shapes["a_h"][0] != demos
        or shapes["s_h"][-1] != NUM_CHANNELS
        or shapes["a_h"][1] != max(shapes["s_h"][1] - 1, 0)
    ):
        raise UserError(
            f"{file}: group '{name}' has inconsistent shapes "
            f"({', '.join(f'{k} {v}' for k, v in shapes.items())}); expected s_h [D, M, H, W, 16], "
            "a_h [D, M-1], s_h_len and a_h_len [D]"
        )
    return datasets
