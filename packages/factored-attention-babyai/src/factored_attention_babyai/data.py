"""Reading the demonstration dataset: HDF5 and TFDS readers, §2.6 subsets, a torch dataset.

Subset conventions (spec §2.6), with ``total`` demonstrations per goal in the dataset:

* training subset: the first ``limit`` demonstrations of each ``train`` goal, with
  ``limit ≤ total − vlimit``;
* ID validation: demonstrations ``[total − vlimit, total)`` of each ``train`` goal;
* OOD validation: the first ``tlimit`` demonstrations of each ``valid`` (held-out) goal.

"The first" is in file order (seed order for ``generate``'s files). Every subset is
**goal-interleaved**: item ``i`` is demonstration ``i // G`` of goal ``i % G`` (``G`` goals),
so any prefix is goal-balanced.

Both storage formats give identical rows (:func:`read_rows` with ``fmt="hdf5"`` or
``"tfds"``). Items of :class:`DemoDataset` are dicts of tensors (one demonstration, padded to
``Tmax``): ``mission`` [5] int64, ``images`` [Tmax, 8, 8, 3] uint8, ``directions`` [Tmax]
int64, ``actions`` [Tmax] int64 (−1 padding), ``rewards`` / ``returns`` [Tmax] float32,
``mask`` [Tmax] bool, ``length`` int64, ``target`` [8, 8] bool, ``seed`` int64, ``goal``
int64 (index into :data:`~.vocab.GOALS`).

torch is imported only by :class:`DemoDataset`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compkit_utils.datasets.info import read_info, sha256_file
from compkit_utils.errors import UserError
from factored_attention_babyai.storage import DATA_FILE, KEYS, SPLITS, TFDS_DIR, TFDS_NAME
from factored_attention_babyai.vocab import GOALS, ID_GOALS, OOD_GOALS

__all__ = [
    "DemoDataset",
    "Format",
    "Subsets",
    "dataset_dir",
    "goal_lists",
    "interleave",
    "load_subsets",
    "read_rows",
    "verify_dataset",
]

Format = Literal["hdf5", "tfds"]
_SLAB = 4096
_GENERATE = "`factored-attention-babyai generate`"


def dataset_dir(path: str | os.PathLike[str]) -> Path:
    """The dataset folder of ``path`` (the folder itself, or the folder of its data.hdf5).

    Raises:
        UserError: nothing there.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise UserError(f"--data {path}: not found; pass the folder written by {_GENERATE}")
    return folder


def verify_dataset(path: str | os.PathLike[str], fmt: Format = "hdf5") -> Path:
    """Check that the dataset's files of ``fmt`` are complete and match their SHA-256.

    Returns:
        The dataset folder.

    Raises:
        UserError: no ``dataset_info.json`` (not a finished dataset), no file of ``fmt``, or
            a missing or corrupt file (naming it).
    """
    folder = dataset_dir(path)
    info = read_info(folder)
    prefix = DATA_FILE if fmt == "hdf5" else TFDS_DIR + "/"
    names = [name for name in info.files if name.startswith(prefix)]
    if not names:
        raise UserError(
            f"--data {folder}: holds no {fmt} files (formats: "
            f"{', '.join(info.extra.get('formats', []))}); pass --format accordingly or "
            f"regenerate with --formats {fmt}"
        )
    for name in names:
        file = folder / name
        if not file.is_file():
            raise UserError(f"{file}: missing; regenerate the dataset ({_GENERATE} --overwrite)")
        if sha256_file(file) != info.files[name]:
            raise UserError(
                f"{file}: corrupt (SHA-256 mismatch); regenerate the dataset "
                f"({_GENERATE} --overwrite)"
            )
    return folder


def _read_hdf5(folder: Path, split: str, keys: Sequence[str], indices: np.ndarray) -> dict:
    import h5py

    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    out: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    with h5py.File(folder / DATA_FILE, "r") as handle:
        group: Any = handle[split]
        start = 0
        while start < len(sorted_idx):
            lo = int(sorted_idx[start])
            stop = int(np.searchsorted(sorted_idx, lo + _SLAB, side="left"))
            hi = int(sorted_idx[stop - 1]) + 1
            for key in keys:
                out[key].append(np.asarray(group[key][lo:hi])[sorted_idx[start:stop] - lo])
            start = stop
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {key: np.concatenate(parts)[inverse] for key, parts in out.items()}


def _read_tfds(folder: Path, split: str, keys: Sequence[str], indices: np.ndarray) -> dict:
    import tensorflow_datasets as tfds

    source: Any = tfds.data_source(TFDS_NAME, data_dir=os.fspath(folder / TFDS_DIR), split=split)
    rows = source.__getitems__([int(i) for i in indices]) if len(indices) else []
    return {key: np.stack([np.asarray(row[key]) for row in rows]) for key in keys}


def read_rows(
    path: str | os.PathLike[str],
    split: str,
    indices: Sequence[int] | np.ndarray,
    *,
    fmt: Format = "hdf5",
    keys: Sequence[str] = KEYS,
) -> dict[str, np.ndarray]:
    """Rows ``indices`` (in that order) of one split, with the stored dtypes.

    Args:
        path: dataset folder (or its data.hdf5).
        split: ``"train"`` or ``"valid"``.
        indices: row numbers in file order.
        fmt: which copy to read; both give identical arrays.
        keys: datasets to read (default: all of :data:`~.storage.KEYS`).

    Returns:
        key → array with ``len(indices)`` rows.
    """
    if split not in SPLITS:
        raise UserError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = dataset_dir(path)
    index = np.asarray(indices, dtype=np.int64)
    if fmt == "hdf5":
        if len(index) == 0:
            return {key: np.zeros(0) for key in keys}
        return _read_hdf5(folder, split, keys, index)
    return _read_tfds(folder, split, keys, index)


def goal_lists(
    path: str | os.PathLike[str], split: str, *, fmt: Format = "hdf5"
) -> dict[str, list[int]]:
    """Row numbers of each goal (mission string) of a split, in file order."""
    folder = dataset_dir(path)
    if fmt == "hdf5":
        import h5py

        with h5py.File(folder / DATA_FILE, "r") as handle:
            goals = np.asarray(handle[split]["goals"])  # pyright: ignore[reportIndexIssue]
    else:
        import tensorflow_datasets as tfds

        source: Any = tfds.data_source(
            TFDS_NAME, data_dir=os.fspath(folder / TFDS_DIR), split=split
        )
        n = len(source)
        goals = np.asarray(
            [
                row["goals"]
                for start in range(0, n, _SLAB)
                for row in source.__getitems__(list(range(start, min(start + _SLAB, n))))
            ],
            dtype=np.int64,
        )
    lists: dict[str, list[int]] = {}
    for row, goal in enumerate(goals.tolist()):
        lists.setdefault(GOALS[goal], []).append(row)
    return lists


def interleave(lists: Sequence[Sequence[int]], start: int, stop: int) -> list[int]:
    """Goal-interleaved rows: item ``i`` = ``lists[i % G][start + i // G]``, for ``[start, stop)``.

    Args:
        lists: per goal, its row numbers in file order (each at least ``stop`` long).
        start: first per-goal position.
        stop: end of the per-goal positions.
    """
    return [lists[g][j] for j in range(start, stop) for g in range(len(lists))]


@dataclasses.dataclass(frozen=True)
class Subsets:
    """The three subsets of §2.6 and how they were cut.

    Attributes:
        train: training subset (``limit`` per ID goal, interleaved).
        id_valid: ID validation (``vlimit`` per ID goal).
        ood_valid: OOD validation (``tlimit`` per held-out goal).
        limit: demonstrations per goal in ``train``.
        total: demonstrations per ID goal in the dataset.
    """

    train: DemoDataset
    id_valid: DemoDataset
    ood_valid: DemoDataset
    limit: int
    total: int


def load_subsets(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    vlimit: int = 20,
    tlimit: int = 40,
    goals: Sequence[str] | None = None,
    fmt: Format = "hdf5",
    verify: bool = True,
) -> Subsets:
    """Load the training subset and both validation sets into memory (§2.6).

    Args:
        path: dataset folder written by ``generate`` (or its data.hdf5).
        limit: training demonstrations per goal (default: all, ``total − vlimit``).
        vlimit: ID-validation demonstrations per goal (the last of each ID goal).
        tlimit: OOD-validation demonstrations per goal (the first of each held-out goal).
        goals: restrict to these mission strings (ID ones go to ``train``/``id_valid``,
            held-out ones to ``ood_valid``); default all 36.
        fmt: read the HDF5 or the TFDS copy (identical content).
        verify: check the files' SHA-256 first.

    Raises:
        UserError: missing/corrupt dataset, an unknown goal, or a limit larger than the
            dataset holds (naming the flag and the largest valid value).
    """
    folder = verify_dataset(path, fmt) if verify else dataset_dir(path)
    chosen = list(GOALS) if goals is None else list(goals)
    unknown = [goal for goal in chosen if goal not in GOALS]
    if unknown:
        raise UserError(
            f"--goals: unknown goal {unknown[0]!r}; goals are 'go to a|the <color> <type>' with "
            "colors red green blue purple yellow grey and types key ball box"
        )
    id_goals = [goal for goal in ID_GOALS if goal in chosen]
    ood_goals = [goal for goal in OOD_GOALS if goal in chosen]
    try:
        train_lists = goal_lists(folder, "train", fmt=fmt)
        valid_lists = goal_lists(folder, "valid", fmt=fmt)
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"--data {folder}: not a readable dataset of {_GENERATE} ({exc})") from exc
    id_lists = [train_lists.get(goal, []) for goal in id_goals]
    ood_lists = [valid_lists.get(goal, []) for goal in ood_goals]
    total = min((len(rows) for rows in id_lists), default=0)
    if id_goals and vlimit >= total and vlimit > 0:
        raise UserError(
            f"--vlimit {vlimit}: {folder} holds {total} demonstrations per goal; pass at most "
            f"{max(total - 1, 0)}"
        )
    limit = total - vlimit if limit is None else limit
    if id_goals and limit > total - vlimit:
        raise UserError(
            f"--per-goal {limit}: {folder} holds {total} demonstrations per goal, of which "
            f"{vlimit} are ID validation; pass --per-goal {total - vlimit} or less (or "
            "generate more with --per-goal)"
        )
    ood_total = min((len(rows) for rows in ood_lists), default=0)
    if ood_goals and tlimit > ood_total:
        raise UserError(
            f"--tlimit {tlimit}: {folder} holds {ood_total} demonstrations per held-out goal; "
            f"pass at most {ood_total}"
        )

    def subset(split: str, lists: list[list[int]], start: int, stop: int) -> DemoDataset:
        rows = interleave(lists, start, stop) if lists else []
        return DemoDataset(read_rows(folder, split, rows, fmt=fmt) if rows else None)

    return Subsets(
        train=subset("train", id_lists, 0, limit),
        id_valid=subset("train", id_lists, total - vlimit, total),
        ood_valid=subset("valid", ood_lists, 0, tlimit),
        limit=limit,
        total=total,
    )


class DemoDataset:
    """Map-style torch dataset of padded demonstrations held in memory.

    Args:
        arrays: rows of the storage layout (:data:`~.storage.KEYS`), or ``None`` (empty).
    """

    def __init__(self, arrays: dict[str, np.ndarray] | None) -> None:
        self.arrays = arrays or {}
        self.n = len(self.arrays["envs"]) if arrays else 0

    def __len__(self) -> int:
        return self.n

    @property
    def seeds(self) -> np.ndarray:
        """``[N]`` int64 reset seeds (to replay a demo's layout and mission)."""
        return self.arrays["envs"] if self.n else np.zeros(0, np.int64)

    @property
    def goals(self) -> np.ndarray:
        """``[N]`` goal indices into :data:`~.vocab.GOALS`."""
        return self.arrays["goals"].astype(np.int64) if self.n else np.zeros(0, np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One demonstration as a dict of tensors (see the module docstring)."""
        import torch

        if not -self.n <= index < self.n:
            raise IndexError(index)
        a = self.arrays
        return {
            "mission": torch.from_numpy(a["missions"][index].astype(np.int64)),
            "images": torch.from_numpy(a["image_trajectories"][index]),
            "directions": torch.from_numpy(a["direction_trajectories"][index].astype(np.int64)),
            "actions": torch.from_numpy(a["action_trajectories"][index].astype(np.int64)),
            "rewards": torch.from_numpy(a["rewards"][index].astype(np.float32)),
            "returns": torch.from_numpy(a["returns"][index].astype(np.float32)),
            "mask": torch.from_numpy(a["trajectory_masks"][index].astype(bool)),
            "length": torch.tensor(int(a["trajectory_lengths"][index]), dtype=torch.int64),
            "target": torch.from_numpy(a["targets"][index].astype(bool)),
            "seed": torch.tensor(int(a["envs"][index]), dtype=torch.int64),
            "goal": torch.tensor(int(a["goals"][index]), dtype=torch.int64),
        }


def inspect(cfg: Any) -> int:
    """``factored-attention-babyai inspect``: verify a dataset and print its subsets."""
    folder = verify_dataset(cfg.data, cfg.format)
    info = read_info(folder)
    subsets = load_subsets(
        folder, limit=cfg.per_goal, vlimit=cfg.vlimit, tlimit=cfg.tlimit,
        goals=list(cfg.goals) or None, fmt=cfg.format, verify=False,
    )  # fmt: skip
    counts = info.counts
    print(
        f"{folder}: {counts.get('train')} train (ID) + {counts.get('valid')} valid (OOD) "
        f"demonstrations, {counts.get('per_goal')} per goal, Tmax {counts.get('tmax')}; "
        f"checksums OK ({cfg.format})"
    )
    for name in ("train", "id_valid", "ood_valid"):
        part: DemoDataset = getattr(subsets, name)
        lengths = part.arrays["trajectory_lengths"] if len(part) else np.zeros(1)
        print(
            f"  {name}: {len(part)} demos over {len(set(part.goals.tolist()))} goals, "
            f"length mean {lengths.mean():.2f} max {int(lengths.max())}"
        )
    return 0
