"""The LEAPS pre-training dataset: random programs with demonstrations, in the original layout.

Generation (spec §8): draw programs from the probabilistic grammar (`leaps_karel.sampler`),
skip duplicates and programs longer than ``max_program_length`` tokens, then for each program
sample up to ``max_demo_generation_trial`` random worlds (§8.1), execute the program in crash
mode and keep executions with ``min_demo_length ≤ len(s_h) ≤ max_demo_length`` states until
``num_demo_per_program`` demonstrations are collected; programs that do not collect enough are
dropped.

Files (spec §8.3) in the output folder:

* ``data.hdf5`` — one group per program (``program`` int8 ``[L]``, ``s_h`` bool
  ``[D, M, H, W, 16]``, ``a_h`` int8 ``[D, A]``, ``s_h_len`` / ``a_h_len`` int16 ``[D]``) and
  a ``data_info`` group of scalars;
* ``id.txt`` — the group names ``no_{i}_prog_len_{L}_max_s_h_len_{M}`` in order;
* ``dataset_info.json`` — seed, counts, parameters and SHA-256 of both files.

Determinism and parallelism: the candidate programs form one stream drawn from the seed in the
main process (duplicates skipped as they are drawn), and candidate k samples its worlds from its
own generator ``SeedSequence(seed, spawn_key=(k,))``. The dataset is the first N accepted
candidates of that stream, so the output is byte-for-byte identical for any ``n_procs`` and any
shard size. Candidates are processed in shards by a process pool; each shard is written
atomically to ``.shards/`` and skipped on a rerun, so an interrupted generation resumes where it
stopped. The shards are finally merged (atomically) into ``data.hdf5``.

Deviation from the original: a program is tried once — the original re-tries a program that
failed to collect its demonstrations if the sampler draws it again.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.info import DatasetInfo, write_info
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_path, atomic_write_json, atomic_write_text
from leaps_karel import dsl
from leaps_karel.config import DatasetConfig, GenerateDatasetConfig
from leaps_karel.reader import (
    DATA_FILE,
    DATASET_SCHEMA,
    FORMAT_VERSION,
    ID_FILE,
    INFO_GROUP,
)
from leaps_karel.sampler import ProgramSampler, SamplerConfig, action_count_bounds
from leaps_karel.world import DELTAS, NUM_CHANNELS, World

__all__ = [
    "GenerationReport",
    "ProgramDemos",
    "bench_generation",
    "candidate_stream",
    "default_data_dir",
    "demos_for_program",
    "demos_for_program_reference",
    "generate_dataset",
    "generate_dataset_command",
    "sample_worlds",
]

log = logging.getLogger(__name__)

SHARD_DIR = ".shards"
MANIFEST = "manifest.json"

# --------------------------------------------------------------------------------------------
# Worlds and demonstrations
# --------------------------------------------------------------------------------------------


def sample_worlds(
    rng: np.random.Generator,
    count: int,
    height: int = 8,
    width: int = 8,
    wall_prob: float = 0.1,
    marker_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random initial worlds of the dataset (spec §8.1), vectorised over ``count`` worlds.

    Border cells are walls, every interior cell is a wall with probability ``wall_prob``; the
    agent stands on a uniformly random free cell (the distribution of the original's rejection
    sampling) with a uniformly random direction; every free cell holds one marker with
    probability ``marker_prob`` (the agent's cell included).

    Returns:
        ``walls`` bool ``(count, H, W)``, ``markers`` int8 ``(count, H, W)`` and ``agents``
        int64 ``(count, 3)`` rows of ``(row, col, dir)``. A world without a free cell is
        resampled.
    """
    walls = rng.random((count, height, width)) < wall_prob
    walls[:, 0, :] = walls[:, -1, :] = True
    walls[:, :, 0] = walls[:, :, -1] = True
    free = ~walls.reshape(count, -1)
    n_free = free.sum(axis=1)
    for i in np.flatnonzero(n_free == 0):  # only possible for tiny grids / huge wall_prob
        while n_free[i] == 0:
            walls[i] = rng.random((height, width)) < wall_prob
            walls[i, 0, :] = walls[i, -1, :] = walls[i, :, 0] = walls[i, :, -1] = True
            free[i] = ~walls[i].reshape(-1)
            n_free[i] = free[i].sum()
    pick = (rng.random(count) * n_free).astype(np.int64)  # the pick-th free cell, 0-based
    cells = np.argmax(np.cumsum(free, axis=1) > pick[:, None], axis=1).astype(np.int64)
    directions = rng.integers(0, 4, size=count)
    markers = ((rng.random((count, height, width)) < marker_prob) & ~walls).astype(np.int8)
    agents = np.stack([cells // width, cells % width, directions], axis=1)
    return walls, markers, agents


def neighbour_tables(walls: np.ndarray) -> np.ndarray:
    """Front-neighbour tables of a batch of worlds, in `World.neighbours` layout.

    Args:
        walls: bool ``(B, H, W)``.

    Returns:
        int64 ``(B, H * W * 4)``: entry ``4 * cell + dir`` is the flat index of the cell in
        front of ``cell`` facing ``dir``, or -1 when it is a wall or outside the grid.
    """
    count, height, width = walls.shape
    padded = np.ones((count, height + 2, width + 2), dtype=bool)
    padded[:, 1:-1, 1:-1] = walls
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    table = np.empty((count, height, width, 4), dtype=np.int64)
    for direction, (dr, dc) in enumerate(DELTAS):
        blocked = padded[:, 1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
        table[:, :, :, direction] = np.where(blocked, -1, index + dr * width + dc)
    return table.reshape(count, -1)


def _vectorised_tables(nbr: np.ndarray) -> tuple[Any, ...]:
    """`World.tables` for a batch of neighbour tables ``(B, 4 * H * W)``, computed with NumPy.

    Same formulas as `World.tables` (indexed by the agent state ``q = 4 * cell + dir``):
    ``next_q``, ``move_q``, ``front``, ``left``, ``right`` per world (lists of lists), then
    ``left_q`` and ``right_q``, which do not depend on the walls (one list shared by all).
    """
    q = np.arange(nbr.shape[1], dtype=np.int64)
    left_q = (q & ~3) | ((q + 3) & 3)
    right_q = (q & ~3) | ((q + 1) & 3)
    next_q = np.where(nbr >= 0, nbr * 4 + (q & 3), -1)
    move_q = np.where(next_q >= 0, next_q, q ^ 2)
    front = (nbr >= 0).astype(np.int8)
    return (
        next_q.tolist(),
        move_q.tolist(),
        front.tolist(),
        front[:, left_q].tolist(),
        front[:, right_q].tolist(),
        left_q.tolist(),
        right_q.tolist(),
    )


_TABLES_CHECKED: dict[str, bool] = {}


class _WorldBatch:
    """Sampled worlds with their `World` lookup tables built in one vectorised pass.

    The interpreter runs on ``World.tables``, which `World` derives lazily in Python for each
    new wall layout — slower than executing a whole dataset demonstration. Here they are
    computed for the batch with NumPy and handed to the worlds. The first batch of every
    process is checked against the tables `World` computes itself; if they ever differ (the
    interpreter's table layout changed) the worlds fall back to computing their own, so the
    output never depends on this shortcut.
    """

    def __init__(self, walls: np.ndarray, markers: np.ndarray, agents: np.ndarray) -> None:
        count, height, width = walls.shape
        self.height, self.width = height, width
        self._neighbours = neighbour_tables(walls)
        self._walls = walls.reshape(count, -1).astype(np.int64).tolist()
        self._markers = markers.reshape(count, -1).astype(np.int64).tolist()
        self._pos = (agents[:, 0] * width + agents[:, 1]).tolist()
        self._dir = agents[:, 2].tolist()
        self._tables: list[tuple[Any, ...]] | None = None
        if _TABLES_CHECKED.get("ok", True):
            nq, mq, fc, lc, rc, tl, tr = _vectorised_tables(self._neighbours)
            self._tables = [(nq[i], mq[i], fc[i], lc[i], rc[i], tl, tr) for i in range(count)]
            if "ok" not in _TABLES_CHECKED:
                agent = (self._pos[0] // width, self._pos[0] % width, self._dir[0])
                reference = World(height, width, self._walls[0], self._markers[0], agent)
                _TABLES_CHECKED["ok"] = tuple(reference.tables) == self._tables[0]
                if not _TABLES_CHECKED["ok"]:
                    log.warning("World.tables layout changed; using the slow table build")
                    self._tables = None

    def world(self, i: int, neighbours: bool = False) -> World:
        """A fresh `World` for sample ``i`` (its marker list is a copy; it shares the tables).

        The interpreter needs only ``World.tables``; ``neighbours=True`` also fills the
        neighbour table that `World.step` uses.
        """
        world = World.__new__(World)
        world.height = self.height
        world.width = self.width
        world.walls = self._walls[i]
        world.markers = self._markers[i].copy()
        world.pos = self._pos[i]
        world.dir = self._dir[i]
        fast = self._tables is not None
        world._nbr = (  # pyright: ignore[reportAttributeAccessIssue]
            self._neighbours[i].tolist() if neighbours or not fast else None
        )
        world._tables = (  # pyright: ignore[reportAttributeAccessIssue]
            self._tables[i] if self._tables is not None else None
        )
        return world


@dataclasses.dataclass
class ProgramDemos:
    """The demonstrations of one program, in the dataset's array layout.

    Attributes:
        program: int8 ``[L]`` token ids.
        s_h: bool ``[D, M, H, W, 16]`` state sequences, zero-padded.
        a_h: int8 ``[D, A]`` action ids (spec §3), zero-padded.
        s_h_len: int16 ``[D]`` states per demonstration.
        a_h_len: int16 ``[D]`` actions per demonstration.
        trials: worlds tried to collect them.
    """

    program: np.ndarray
    s_h: np.ndarray
    a_h: np.ndarray
    s_h_len: np.ndarray
    a_h_len: np.ndarray
    trials: int

    def arrays(self) -> dict[str, np.ndarray]:
        """The five arrays keyed by their HDF5 dataset names."""
        return {name: getattr(self, name) for name in DATASET_SCHEMA}


def _states_tensor(world: World, actions: Sequence[int]) -> np.ndarray:
    """``(len(actions) + 1, H, W, 16)`` states of a crash-free execution, by replaying it.

    ``world`` (the initial world) is advanced in place. Channel 5 ("no marker") is set on wall
    cells as well, as in the original dataset.
    """
    first = world.to_tensor()
    first[first[:, :, 4], 5] = True  # the original sets "0 markers" on wall cells too (§8.1)
    states = np.empty((len(actions) + 1, *first.shape), dtype=bool)
    states[0] = first
    width = world.width
    for t, action in enumerate(actions, start=1):
        before = world.pos
        world.step(int(action), crash=True)
        states[t] = states[t - 1]
        r, c = divmod(before, width)
        states[t, r, c, :4] = False
        r, c = divmod(world.pos, width)
        states[t, r, c, world.dir] = True
        if action in (3, 4):  # pickMarker / putMarker changed the count of this cell
            states[t, r, c, 5:] = False
            states[t, r, c, 5 + world.markers[world.pos]] = True
    return states


def demos_for_program(
    tokens: Sequence[str],
    rng: np.random.Generator,
    params: DatasetConfig,
    stats: collections.Counter[str] | None = None,
) -> ProgramDemos | None:
    """Collect the demonstrations of one program, or ``None`` when it is dropped (spec §8.2).

    Args:
        tokens: the program's tokens.
        rng: the candidate's own generator (worlds are drawn from it in batches).
        params: generation parameters.
        stats: optional counter updated with ``trials``, ``crash``, ``timeout``,
            ``too_short``, ``too_long``, ``accepted`` and ``pruned``.

    A program whose possible action counts (`leaps_karel.sampler.action_count_bounds`) can
    never give an acceptable demonstration length is dropped without executing it: every one of
    its trials would be rejected.
    """
    from leaps_karel.interpreter import compile_program

    stats = stats if stats is not None else collections.Counter()
    p = params
    low, high = action_count_bounds(tokens)
    if high + 1 < p.min_demo_length or low + 1 > p.max_demo_length:
        stats["pruned"] += 1
        return None
    run = compile_program(" ".join(tokens), mode="crash")
    accepted: list[tuple[_WorldBatch, int, list[int]]] = []
    batch_size = min(2 * p.num_demo_per_program, p.max_demo_generation_trial)
    trials = 0
    while len(accepted) < p.num_demo_per_program and trials < p.max_demo_generation_trial:
        batch = _WorldBatch(
            *sample_worlds(rng, batch_size, p.height, p.width, p.wall_prob, p.marker_prob)
        )
        for i in range(batch_size):
            if len(accepted) >= p.num_demo_per_program or trials >= p.max_demo_generation_trial:
                break
            trials += 1
            actions, _, status, _ = run(batch.world(i))
            if status != 0:
                stats["timeout" if status == 1 else "crash"] += 1
                continue
            length = len(actions) + 1
            if length < p.min_demo_length:
                stats["too_short"] += 1
            elif length > p.max_demo_length:
                stats["too_long"] += 1
            else:
                accepted.append((batch, i, actions))
    stats["trials"] += trials
    if len(accepted) < p.num_demo_per_program:
        stats["dropped"] += 1
        return None
    s_h_len = np.array([len(a) + 1 for _, _, a in accepted], dtype=np.int16)
    if int(s_h_len.max()) < p.min_max_demo_length:
        stats["dropped"] += 1
        return None
    num = len(accepted)
    s_h = np.zeros((num, int(s_h_len.max()), p.height, p.width, NUM_CHANNELS), dtype=bool)
    a_h = np.zeros((num, max(int(s_h_len.max()) - 1, 0)), dtype=np.int8)
    for d, (batch, i, actions) in enumerate(accepted):
        s_h[d, : len(actions) + 1] = _states_tensor(batch.world(i, neighbours=True), actions)
        a_h[d, : len(actions)] = actions
    stats["accepted"] += 1
    return ProgramDemos(
        program=np.array(dsl.to_ids(list(tokens)), dtype=np.int8),
        s_h=s_h,
        a_h=a_h,
        s_h_len=s_h_len,
        a_h_len=(s_h_len - 1).astype(np.int16),
        trials=trials,
    )


def demos_for_program_reference(
    tokens: Sequence[str], rng: np.random.Generator, params: DatasetConfig
) -> ProgramDemos | None:
    """`demos_for_program` written plainly: the benchmark's baseline and the tests' oracle.

    Every trial builds a validated `World` (whose lookup tables are then built in Python),
    executes through `leaps_karel.interpreter.execute` in crash mode, and accepted
    demonstrations are converted state by state with `World.to_tensor`; no static pruning.
    Same worlds (same generator draws) and same result as `demos_for_program`.
    """
    from leaps_karel.interpreter import execute, replay

    p = params
    text = " ".join(tokens)
    accepted: list[tuple[World, list[int]]] = []
    batch_size = min(2 * p.num_demo_per_program, p.max_demo_generation_trial)
    trials = 0
    while len(accepted) < p.num_demo_per_program and trials < p.max_demo_generation_trial:
        walls, markers, agents = sample_worlds(
            rng, batch_size, p.height, p.width, p.wall_prob, p.marker_prob
        )
        for i in range(batch_size):
            if len(accepted) >= p.num_demo_per_program or trials >= p.max_demo_generation_trial:
                break
            trials += 1
            world = World(
                p.height,
                p.width,
                walls[i].reshape(-1).tolist(),
                markers[i].reshape(-1).tolist(),
                (int(agents[i, 0]), int(agents[i, 1]), int(agents[i, 2])),
            )
            result = execute(text, world, mode="crash")
            length = len(result.actions) + 1
            if result.status == "ok" and p.min_demo_length <= length <= p.max_demo_length:
                accepted.append((world, result.actions))
    if len(accepted) < p.num_demo_per_program:
        return None
    longest = max(len(actions) + 1 for _, actions in accepted)
    if longest < p.min_max_demo_length:
        return None
    s_h = np.zeros((len(accepted), longest, p.height, p.width, NUM_CHANNELS), dtype=bool)
    a_h = np.zeros((len(accepted), longest - 1), dtype=np.int8)
    for d, (world, actions) in enumerate(accepted):
        for t, state in enumerate(replay(world, actions)):
            s_h[d, t] = state.to_tensor()
            s_h[d, t, :, :, 5] |= s_h[d, t, :, :, 4]
        a_h[d, : len(actions)] = actions
    s_h_len = np.array([len(actions) + 1 for _, actions in accepted], dtype=np.int16)
    return ProgramDemos(
        program=np.array(dsl.to_ids(list(tokens)), dtype=np.int8),
        s_h=s_h,
        a_h=a_h,
        s_h_len=s_h_len,
        a_h_len=(s_h_len - 1).astype(np.int16),
        trials=trials,
    )


def candidate_stream(params: DatasetConfig) -> Iterator[list[str]]:
    """The candidate programs, in order: sampler draws without duplicates or over-long ones."""
    sampler = ProgramSampler(params.seed, SamplerConfig(params.max_depth, params.max_nesting_depth))
    seen: set[str] = set()
    while True:
        tokens = sampler.sample_tokens()
        if len(tokens) > params.max_program_length:
            continue
        text = " ".join(tokens)
        if text in seen:
            continue
        seen.add(text)
        yield tokens


def candidate_rng(seed: int, index: int) -> np.random.Generator:
    """The world generator of candidate ``index`` (independent of sharding and workers)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def _shard_path(out_dir: Path, shard: int) -> Path:
    return out_dir / SHARD_DIR / f"shard_{shard:06d}.hdf5"


def _write_group(group: Any, arrays: dict[str, np.ndarray], compression: str | None) -> None:
    for name, array in arrays.items():
        if compression is not None and array.size >= 64:
            group.create_dataset(name, data=array, compression=compression, chunks=array.shape)
        else:
            group.create_dataset(name, data=array)


def _run_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: generate one shard of candidates and write it atomically; returns its summary."""
    import h5py

    params = DatasetConfig(**job["params"])
    path = Path(job["path"])
    stats: collections.Counter[str] = collections.Counter()
    accepted: list[int] = []
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for index, tokens in job["candidates"]:
            demos = demos_for_program(tokens, candidate_rng(params.seed, index), params, stats)
            if demos is None:
                continue
            _write_group(handle.create_group(f"c{index}"), demos.arrays(), job["compression"])
            accepted.append(index)
        handle.attrs["shard"] = job["shard"]
        handle.attrs["first_candidate"] = job["candidates"][0][0]
        handle.attrs["num_candidates"] = len(job["candidates"])
        handle.attrs["accepted"] = np.array(accepted, dtype=np.int64)
        handle.attrs["stats"] = json.dumps(dict(stats))
    return {"shard": job["shard"], "accepted": len(accepted), "stats": dict(stats)}


def _read_shard_summary(path: Path) -> dict[str, Any] | None:
    """Summary of a finished shard file, or ``None`` if it is unreadable (then it is redone)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs: Any = handle.attrs
            return {
                "shard": int(attrs["shard"]),
                "accepted": len(attrs["accepted"]),
                "stats": json.loads(str(attrs["stats"])),
            }
    except (OSError, KeyError, ValueError) as exc:
        log.warning("%s: unreadable shard (%s); regenerating it", path, exc)
        path.unlink(missing_ok=True)
        return None


@dataclasses.dataclass(frozen=True)
class GenerationReport:
    """What `generate_dataset` did.

    Attributes:
        out_dir: the dataset folder.
        num_programs: programs written.
        candidates: candidate programs examined (in the shards used).
        shards_generated: shards generated in this call.
        shards_reused: shards found complete on disk (resumed).
        seconds: wall-clock time of this call.
        stats: trial statistics summed over the shards used.
    """

    out_dir: Path
    num_programs: int
    candidates: int
    shards_generated: int
    shards_reused: int
    seconds: float
    stats: dict[str, int]

    @property
    def programs_per_second(self) -> float:
        """Throughput of this call (meaningful when nothing was resumed)."""
        return self.num_programs / max(self.seconds, 1e-9)


def _manifest(params: DatasetConfig, shard_size: int, compression: str | None) -> dict:
    # The shards do not depend on the number of programs: a resumed run may ask for more.
    content = {k: v for k, v in dataclasses.asdict(params).items() if k != "num_programs"}
    return {
        "format_version": FORMAT_VERSION,
        "params": content,
        "shard_size": shard_size,
        "compression": compression,
    }


def _prepare_out_dir(
    out_dir: Path, manifest: dict[str, Any], overwrite: bool, resume: bool
) -> None:
    shard_dir = out_dir / SHARD_DIR
    if overwrite:
        for name in (DATA_FILE, ID_FILE, "dataset_info.json"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(shard_dir, ignore_errors=True)
    elif (out_dir / "dataset_info.json").exists():
        raise UserError(
            f"{out_dir}: already holds a generated dataset; pass --overwrite to replace it "
            "or choose another --out-dir"
        )
    elif (out_dir / DATA_FILE).exists():
        raise UserError(
            f"{out_dir / DATA_FILE}: exists but was not written by a finished generation; "
            "pass --overwrite to replace it"
        )
    shard_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = shard_dir / MANIFEST
    if manifest_path.exists():
        if not resume:
            raise UserError(
                f"{out_dir}: holds an interrupted generation; pass --resume to continue it "
                "(same settings) or --overwrite to start over"
            )
        try:
            previous = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous != manifest:
            raise UserError(
                f"{manifest_path}: an interrupted generation with different settings is in "
                f"{out_dir}; rerun with the same settings to resume it, or pass --overwrite"
            )
        log.info("resuming the interrupted generation in %s", out_dir)
    else:
        atomic_write_json(manifest_path, manifest)


def _iter_jobs(
    params: DatasetConfig, out_dir: Path, shard_size: int, compression: str | None
) -> Iterator[dict[str, Any]]:
    stream = candidate_stream(params)
    index = 0
    shard = 0
    while True:
        candidates = []
        for _ in range(shard_size):
            candidates.append((index, next(stream)))
            index += 1
        yield {
            "shard": shard,
            "path": str(_shard_path(out_dir, shard)),
            "candidates": candidates,
            "params": dataclasses.asdict(params),
            "compression": compression,
        }
        shard += 1


def generate_dataset(
    out_dir: str | os.PathLike[str],
    params: DatasetConfig | None = None,
    *,
    n_procs: int = 1,
    shard_size: int = 200,
    compression: str | None = "gzip",
    overwrite: bool = False,
    resume: bool = False,
    keep_shards: bool = False,
) -> GenerationReport:
    """Generate the dataset into ``out_dir`` (``data.hdf5``, ``id.txt``, ``dataset_info.json``).

    Args:
        out_dir: output folder (created).
        params: what to generate.
        n_procs: worker processes (1 = generate in this process).
        shard_size: candidate programs per shard (the unit of work and of resumption; it does
            not change the output); at most ``max(4, num_programs)`` are used.
        compression: HDF5 filter for the large datasets (``"gzip"``, ``"lzf"`` or ``None``).
            Readers decompress transparently; ``None`` reproduces the original's plain layout.
        overwrite: replace an existing dataset or interrupted generation in ``out_dir``.
        resume: continue an interrupted generation in ``out_dir`` (its finished shards are
            reused; the settings must be the same, except ``num_programs``).
        keep_shards: keep ``.shards/`` after merging.

    Returns:
        A `GenerationReport`.

    Raises:
        UserError: bad parameters; ``out_dir`` holds a finished dataset (without
            ``overwrite``), an interrupted generation (without ``resume`` or ``overwrite``) or
            one with different settings.
    """
    params = params or DatasetConfig()
    params.validate()
    if n_procs < 1:
        raise UserError(f"generate-dataset: n_procs must be ≥ 1, got {n_procs}")
    if shard_size < 1:
        raise UserError(f"generate-dataset: shard_size must be ≥ 1, got {shard_size}")
    if compression not in (None, "gzip", "lzf"):
        raise UserError(
            f"generate-dataset: compression must be gzip, lzf or none, not {compression!r}"
        )
    # A small dataset needs few candidates: smaller shards waste less work past the target.
    shard_size = min(shard_size, max(4, params.num_programs))
    out = Path(out_dir)
    _prepare_out_dir(out, _manifest(params, shard_size, compression), overwrite, resume)
    start = time.perf_counter()
    summaries: dict[int, dict[str, Any]] = {}
    reused = generated = 0
    jobs = _iter_jobs(params, out, shard_size, compression)
    target = params.num_programs

    def prefix() -> tuple[int, int]:
        """(accepted programs, shards) over the finished prefix of shards needed so far."""
        count = shard = 0
        while shard in summaries and count < target:
            count += summaries[shard]["accepted"]
            shard += 1
        return count, shard

    # fork starts workers without re-importing anything; the parent holds no open HDF5 file
    # and runs no threads here. Elsewhere (macOS, Windows) fall back to spawn.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(n_procs) if n_procs > 1 else None
    window = 2 * n_procs if pool is not None else 1
    pending: collections.deque[tuple[int, Any]] = collections.deque()
    last_log = start
    try:
        while prefix()[0] < target:
            while len(pending) < window and prefix()[0] < target:
                job = next(jobs)
                path = Path(job["path"])
                summary = _read_shard_summary(path) if path.exists() else None
                if summary is not None:
                    summaries[job["shard"]] = summary
                    reused += 1
                elif pool is None:
                    pending.append((job["shard"], _run_shard(job)))
                else:
                    pending.append((job["shard"], pool.apply_async(_run_shard, (job,))))
            if prefix()[0] >= target or not pending:
                continue
            shard, result = pending.popleft()
            summaries[shard] = result if pool is None else result.get()
            generated += 1
            examined = (shard + 1) * shard_size
            if examined > 10_000 + 100 * target and prefix()[0] < examined // 1000:
                raise UserError(
                    f"generate-dataset: only {prefix()[0]} of {examined} candidate programs got "
                    f"{params.num_demo_per_program} demonstrations; the demonstration length "
                    "and trial settings accept (almost) no program"
                )
            now = time.perf_counter()
            if now - last_log > 10:
                last_log = now
                log.info(
                    "%d / %d programs (%.1f programs/s)",
                    min(prefix()[0], target),
                    target,
                    sum(s["accepted"] for s in summaries.values()) / (now - start),
                )
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    _, used_shards = prefix()
    stats: collections.Counter[str] = collections.Counter()
    for shard in range(used_shards):
        stats.update(summaries[shard]["stats"])
    last_candidate = _merge(out, params, used_shards)
    _write_dataset_info(out, params, dict(stats), last_candidate + 1, shard_size, compression)
    if not keep_shards:
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    return GenerationReport(
        out_dir=out,
        num_programs=target,
        candidates=last_candidate + 1,
        shards_generated=generated,
        shards_reused=reused,
        seconds=time.perf_counter() - start,
        stats=dict(stats),
    )


def _merge(out: Path, params: DatasetConfig, used_shards: int) -> int:
    """Copy the first ``num_programs`` accepted programs of the shards into ``data.hdf5``.

    Returns:
        The candidate index of the last program written.
    """
    import h5py

    ids: list[str] = []
    last_candidate = -1
    lengths = {"max_demo": -1, "min_demo": 1 << 30, "max_prog": -1, "min_prog": 1 << 30}
    with atomic_path(out / DATA_FILE) as tmp, h5py.File(tmp, "w") as dest:
        for shard in range(used_shards):
            with h5py.File(_shard_path(out, shard), "r") as source_file:
                source: Any = source_file
                for index in source.attrs["accepted"]:
                    if len(ids) >= params.num_programs:
                        break
                    group = source[f"c{int(index)}"]
                    prog_len = int(group["program"].shape[0])
                    s_h_len = group["s_h_len"][()]
                    name = f"no_{len(ids)}_prog_len_{prog_len}_max_s_h_len_{int(s_h_len.max())}"
                    source.copy(group, dest, name=name)
                    ids.append(name)
                    last_candidate = int(index)
                    lengths["max_demo"] = max(lengths["max_demo"], int(s_h_len.max()))
                    lengths["min_demo"] = min(lengths["min_demo"], int(s_h_len.min()))
                    lengths["max_prog"] = max(lengths["max_prog"], prog_len)
                    lengths["min_prog"] = min(lengths["min_prog"], prog_len)
        info = dest.create_group(INFO_GROUP)
        info["max_demo_length"] = np.int16(lengths["max_demo"])
        info["min_demo_length"] = np.int16(lengths["min_demo"])
        info["dsl_type"] = "prob"
        info["max_program_length"] = np.int64(lengths["max_prog"])
        info["min_program_length"] = np.int64(lengths["min_prog"])
        info["num_program_tokens"] = np.int64(dsl.NUM_TOKENS)
        info["num_demo_per_program"] = np.int64(params.num_demo_per_program)
        info["num_action_tokens"] = np.int64(5)
        held_out = int(0.15 * params.num_programs)
        info["num_train"] = np.int64(params.num_programs - 2 * held_out)
        info["num_test"] = np.int64(held_out)
        info["num_val"] = np.int64(held_out)
    atomic_write_text(out / ID_FILE, "".join(f"{name}\n" for name in ids))
    return last_candidate


def _write_dataset_info(
    out: Path,
    params: DatasetConfig,
    stats: dict[str, int],
    candidates: int,
    shard_size: int,
    compression: str | None,
) -> None:
    from leaps_karel import __version__

    info = DatasetInfo(
        name="karel-programs",
        generator="leaps_karel.dataset",
        version=__version__,
        seed=params.seed,
        counts={
            "programs": params.num_programs,
            "demos_per_program": params.num_demo_per_program,
            "candidates": candidates,
        },
        extra={
            "params": dataclasses.asdict(params),
            "format_version": FORMAT_VERSION,
            "compression": compression,
            "shard_size": shard_size,
            "trial_stats": stats,
        },
    )
    write_info(out, info, files=[DATA_FILE, ID_FILE])


def default_data_dir() -> Path:
    """``$COMPKIT_DATA_DIR/karel-programs``, else ``~/.cache/compkit/karel-programs``."""
    root = os.environ.get("COMPKIT_DATA_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "compkit"
    return base / "karel-programs"


def generate_dataset_command(cfg: GenerateDatasetConfig) -> int:
    """``leaps-karel generate-dataset``: generate, then print a summary with the throughput."""
    from compkit_utils.logging import configure_logging
    from compkit_utils.runs import make_run_dir, write_config

    configure_logging()
    data = dataclasses.replace(cfg.data, num_programs=20) if cfg.smoke else cfg.data
    if cfg.out_dir is not None:
        out_dir = cfg.out_dir
    elif cfg.smoke:
        run_dir = make_run_dir("leaps-karel", "generate-dataset", data.seed, runs_dir=cfg.runs_dir)
        write_config(run_dir, cfg, "leaps-karel")
        out_dir = run_dir / "dataset"
    else:
        out_dir = default_data_dir()
    report = generate_dataset(
        out_dir,
        data,
        n_procs=cfg.n_procs,
        shard_size=cfg.shard_size,
        compression=None if cfg.compression == "none" else cfg.compression,
        overwrite=cfg.overwrite,
        resume=cfg.resume,
        keep_shards=cfg.keep_shards,
    )
    stats = report.stats
    print(f"wrote {report.num_programs} programs to {report.out_dir}")
    print(
        f"{report.candidates} candidate programs examined; "
        f"{report.shards_generated} shards generated, {report.shards_reused} resumed"
    )
    print(
        f"trials {stats.get('trials', 0)}: crash {stats.get('crash', 0)}, "
        f"timeout {stats.get('timeout', 0)}, too short {stats.get('too_short', 0)}, "
        f"too long {stats.get('too_long', 0)}; programs pruned statically "
        f"{stats.get('pruned', 0)}, dropped after trials {stats.get('dropped', 0)}"
    )
    print(
        f"{report.seconds:.1f} s, {report.programs_per_second:.1f} programs/s "
        f"with {cfg.n_procs} process(es)"
    )
    return 0


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------


def _generation_rate(
    make: Any, params: DatasetConfig, compression: str | None, seconds: float, candidates: int
) -> tuple[float, int]:
    """Programs per CPU-second of ``make(tokens, rng, params)``, HDF5 writes included.

    Runs over the candidate stream until ``seconds`` of CPU time have passed, or over exactly
    ``candidates`` candidates when that is positive. Returns the rate and the candidates used.
    """
    import h5py

    stream = candidate_stream(params)
    done = index = 0
    start = time.process_time()
    with h5py.File(f"bench-{os.getpid()}.hdf5", "w", driver="core", backing_store=False) as f:
        while (index < candidates) if candidates > 0 else (time.process_time() - start < seconds):
            demos = make(next(stream), candidate_rng(params.seed, index), params)
            if demos is not None:
                _write_group(f.create_group(f"c{index}"), demos.arrays(), compression)
                done += 1
            index += 1
    return done / max(time.process_time() - start, 1e-9), index


def bench_generation(seconds: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Dataset generation throughput, for ``leaps-karel bench``.

    Rows: programs per CPU-second of the generator in this process (the full path: sampling,
    trials, state tensors, gzip HDF5 writes) beside `demos_for_program_reference` on the same
    candidates, and the wall-clock rate of `generate_dataset` with 2 worker processes beside 1
    (meaningful on an idle machine only). The original generator made 6.7 programs/s on one
    core (spec §8.2).

    Returns:
        Dicts with ``name``, ``ours``, ``baseline``, ``unit`` and ``note`` (see
        ``leaps_karel.bench.extra_rows``).
    """
    import tempfile

    params = DatasetConfig(seed=seed)
    # Programs differ a lot in cost: both sides run over the same candidates.
    ours, used = _generation_rate(demos_for_program, params, "gzip", max(seconds, 1.0), 0)
    reference, _ = _generation_rate(demos_for_program_reference, params, "gzip", 0.0, used)
    rows: list[dict[str, Any]] = [
        {
            "name": "dataset programs/s (1 process)",
            "ours": ours,
            "baseline": reference,
            "unit": "/s",
            "note": f"per CPU-second, {used} candidates, gzip HDF5; original 6.7/s",
        }
    ]
    if (os.cpu_count() or 1) >= 2:
        count = max(100, int(3 * ours))
        wall: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for procs in (1, 2):
                report = generate_dataset(
                    Path(tmp) / str(procs),
                    dataclasses.replace(params, num_programs=count),
                    n_procs=procs,
                    shard_size=50,
                )
                wall.append(report.programs_per_second)
        rows.append(
            {
                "name": "dataset programs/s (generate, 2 processes)",
                "ours": wall[1],
                "baseline": wall[0],
                "unit": "/s",
                "note": f"wall clock, {count} programs, vs 1 process; target 83/s",
            }
        )
    return rows
