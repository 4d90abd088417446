"""Demonstrations of the LEAPS dataset: random worlds, the candidate stream, one program's demos.

Generation (spec §8): draw programs from the probabilistic grammar (`leaps_karel.sampler`),
skip duplicates and programs longer than ``max_program_length`` tokens, then for each program
sample up to ``max_demo_generation_trial`` random worlds (§8.1), execute the program in crash
mode and keep executions with ``min_demo_length ≤ len(s_h) ≤ max_demo_length`` states until
``num_demo_per_program`` demonstrations are collected; programs that do not collect enough are
dropped. Candidate k samples its worlds from its own generator
``SeedSequence(seed, spawn_key=(k,))`` (`candidate_rng`), so the result does not depend on
how candidates are split across shards or processes. Files are written by
:mod:`leaps_karel.dataset`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from leaps_karel import dsl
from leaps_karel.config import DatasetConfig
from leaps_karel.reader import DATASET_SCHEMA
from leaps_karel.sampler import ProgramSampler, SamplerConfig, action_count_bounds
from leaps_karel.world import DELTAS, NUM_CHANNELS, World

__all__ = [
    "ProgramDemos",
    "candidate_rng",
    "candidate_stream",
    "demos_for_program",
    "demos_for_program_reference",
    "neighbour_tables",
    "sample_worlds",
]

log = logging.getLogger(__name__)


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
