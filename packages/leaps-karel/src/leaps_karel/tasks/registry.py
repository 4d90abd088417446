"""The six LEAPS tasks (spec §10.2–10.7) and `make`."""

from __future__ import annotations

from typing import Any

import numpy as np

from compkit_utils.errors import UserError
from leaps_karel.interpreter import compile_program
from leaps_karel.tasks.base import Options, Task, TaskSpec
from leaps_karel.world import EAST, SOUTH, World, bordered_room


def _wall_grid(height: int, width: int) -> list[int]:
    return [
        1 if r in (0, height - 1) or c in (0, width - 1) else 0
        for r in range(height)
        for c in range(width)
    ]


# ---------------------------------------------------------------------------- STAIRCLIMBER
class StairClimber(TaskSpec):
    """Climb the diagonal staircase to the marker (sparse reward)."""

    name = "stairclimber"
    title = "STAIRCLIMBER"
    env_name = "StairClimber"
    height = 12
    width = 12
    reward_type = "sparse"
    description = (
        "12x12 staircase; reach the marker higher up the stairs. Reward 1 on the first arrival "
        "(scored only if it is the last action)."
    )

    def __init__(self) -> None:
        h, w = self.height, self.width
        walls = _wall_grid(h, w)
        k = 0
        while h - 1 - k > 0 and 2 + k < w:
            r, c = h - 1 - k, 2 + k
            walls[r * w + c] = 1
            walls[(r - 1) * w + c] = 1
            k += 1
        self.walls = walls
        # Stair tops: the free cell left of each stair column, sorted by column.
        tops = []
        for c in range(1, w - 1):
            r = h - 1 - (c - 1)
            if 0 < r - 1 < h - 1 and not walls[(r - 1) * w + c]:
                tops.append((r - 1, c))
        self.tops = tops
        on = set(tops) | {(r - 1, c) for r, c in tops if not walls[(r - 1) * w + c]}
        self.on_stairs = frozenset(r * w + c for r, c in on)

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        n = len(self.tops)
        while True:
            i, j = (int(x) for x in rng.integers(0, n, size=2))
            if i != j:
                break
        lo, hi = min(i, j), max(i, j)
        markers = [0] * (self.height * self.width)
        mr, mc = self.tops[hi]
        markers[mr * self.width + mc] = 1
        ar, ac = self.tops[lo]
        return World(self.height, self.width, self.walls, markers, (ar, ac, EAST))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        goal = next(i for i, m in enumerate(init.markers) if m)
        return {
            "goal": goal,
            "reached": init.pos == goal,
            "penalty": options.stairclimber_off_stairs_penalty,
        }

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        if ctx["penalty"] and world.pos not in self.on_stairs:
            return -1.0
        if world.pos == ctx["goal"] and not ctx["reached"]:
            ctx["reached"] = True
            return 1.0
        return 0.0

    def final_reward(
        self,
        ctx: dict[str, Any],
        init: World,
        final: World,
        total_before: int,
        program: str,
        options: Options,
    ) -> float:
        if options.stairclimber_off_stairs_penalty and final.pos not in self.on_stairs:
            return -1.0
        if final.pos != ctx["goal"] or ctx["reached"]:
            return 0.0
        # On the goal: it pays only if this is the first arrival; replay the positions.
        w = init.copy()
        actions = compile_program(program, budget=options.budget)(w)[0]
        w = init.copy()
        goal = ctx["goal"]
        for a in actions[:-1]:
            w.step(a)
            if w.pos == goal:
                return 0.0
        return 1.0


# ---------------------------------------------------------------------------- FOURCORNER
class FourCorner(TaskSpec):
    """Put exactly one marker in each corner of an empty room."""

    name = "fourcorner"
    title = "FOURCORNER"
    env_name = "FourCorner"
    height = 12
    width = 12
    reward_type = "dense"
    description = (
        "12x12 empty room; put one marker on each of the four corners. Reward 0.25 per "
        "corner, 0 if a marker lies elsewhere."
    )
    needs_total = True

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        return bordered_room(self.height, self.width, (self.height - 2, 2, EAST))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        h, w = init.height, init.width
        corners = [1 * w + 1, (h - 2) * w + 1, (h - 2) * w + w - 2, 1 * w + w - 2]
        return {"corners": corners, "init_total": sum(init.markers)}

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        mk = world.markers
        reward = 0.25 * sum(1 for c in ctx["corners"] if mk[c] == 1)
        placed = total_before - ctx["init_total"]
        if placed - 4 * reward > 0:
            return 0.0
        return reward


# ---------------------------------------------------------------------------- TOPOFF
class TopOff(TaskSpec):
    """Add a marker to every marked cell of the bottom row and end bottom-right."""

    name = "topoff"
    title = "TOPOFF"
    env_name = "TopOff"
    height = 12
    width = 12
    reward_type = "dense"
    description = (
        "12x12 room, markers on the bottom row; put a second marker on each and finish at "
        "the bottom-right cell. Reward: consecutive correct cells / (W-1)."
    )

    #: Marker probability per bottom-row cell (the config's reused wall probability).
    marker_prob = 0.25

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        h, w = self.height, self.width
        markers = [0] * (h * w)
        r = h - 2
        for c in range(1, w - 1):
            if rng.random() < self.marker_prob:
                markers[r * w + c] = 1
        markers[r * w + w - 2] = 1 if options.topoff_last_cell_marker else 0
        return World(h, w, _wall_grid(h, w), markers, (h - 2, 1, EAST))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        h, w = init.height, init.width
        r = h - 2
        targets = [2 if init.markers[r * w + c] else 0 for c in range(w)]
        return {"row": r, "targets": targets}

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        w = world.width
        row = ctx["row"]
        targets = ctx["targets"]
        ar, ac = divmod(world.pos, w)
        mk = world.markers
        k = 0
        base = row * w
        for c in range(1, ac + 1):
            if mk[base + c] != targets[c]:
                break
            k += 1
        if ar == row and ac == w - 2 and k == w - 2:
            k += 1
        return k / (w - 1)


# ---------------------------------------------------------------------------- MAZE
class Maze(TaskSpec):
    """Find the marker in a random 8×8 maze (sparse reward)."""

    name = "maze"
    title = "MAZE"
    env_name = "Maze"
    height = 8
    width = 8
    reward_type = "sparse"
    description = (
        "8x8 random maze, agent bottom-left facing east; end on the marker. Reward 1 on the "
        "marker cell."
    )

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        h, w = self.height, self.width
        open_ = [0] * (h * w)
        start: tuple[int, int] = (h - 2, 1)
        open_[start[0] * w + start[1]] = 1
        visited: set[tuple[int, int]] = {start}
        stack: list[tuple[int, int]] = [start]
        while stack:
            cr, cc = stack.pop()
            nbrs = [
                (nr, nc)
                for nr, nc in ((cr - 2, cc), (cr + 2, cc), (cr, cc - 2), (cr, cc + 2))
                if 0 < nr < h - 1 and 0 < nc < w - 1
            ]
            for idx in rng.permutation(len(nbrs)):
                nr, nc = nbrs[int(idx)]
                if (nr, nc) in visited:
                    continue
                stack.append((cr, cc))
                open_[((cr + nr) // 2) * w + (cc + nc) // 2] = 1
                open_[nr * w + nc] = 1
                visited.add((nr, nc))
                stack.append((nr, nc))
        walls = [0 if o else 1 for o in open_]
        markers = [0] * (h * w)
        while True:
            r, c = (int(x) for x in rng.integers(0, [h, w]))
            if not walls[r * w + c]:
                markers[r * w + c] = 1
                break
        return World(h, w, walls, markers, (start[0], start[1], EAST))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        return {"goal": next(i for i, m in enumerate(init.markers) if m)}

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        return 1.0 if world.pos == ctx["goal"] else 0.0


# ---------------------------------------------------------------------------- CLEANHOUSE
CLEANHOUSE_MAP = (
    "######################",
    "#..##########S#......#",
    "#..#........2.#####.##",
    "##.#................##",
    "##........#.........##",
    "###.#.###.#..###.#.###",
    "#...#...#....#...#..##",
    "#...#...#....#...#...#",
    "#...#...#....#...##..#",
    "#...#...##..##...##.##",
    "#...#...##..##...#..##",
    "#...#...##..##...#..##",
    "#...#...##..##...#..##",
    "######################",
)
_CLEANHOUSE_EXCLUDED = frozenset({(1, 13), (2, 12), (3, 10), (4, 11), (5, 11), (6, 10)})


class CleanHouse(TaskSpec):
    """Pick up the 10 markers scattered along the walls of an apartment."""

    name = "cleanhouse"
    title = "CLEANHOUSE"
    env_name = "CleanHouse"
    height = 14
    width = 22
    reward_type = "dense"
    description = (
        "14x22 apartment with 10 markers along the walls; pick them all. Reward: fraction "
        "of the 10 cells cleaned."
    )
    dustbin = (2, 12)

    def __init__(self) -> None:
        h = self.height
        grid = CLEANHOUSE_MAP
        self.walls = [1 if ch == "#" else 0 for row in grid for ch in row]
        candidates = set()
        for y, row in enumerate(grid):
            for x, ch in enumerate(row):
                if ch != "#" or x > 12:
                    continue
                for cy, cx, ok in (
                    (y - 1, x, y - 1 > 0),
                    (y + 1, x, y + 1 < h - 1),
                    (y, x - 1, x - 1 > 0),
                    (y, x + 1, x + 1 < 12),
                ):
                    if ok and grid[cy][cx] != "#":
                        candidates.add((cy, cx))
        self.candidates = sorted(candidates)

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        w = self.width
        markers = [0] * (self.height * w)
        dr, dc = self.dustbin
        markers[dr * w + dc] = 2
        placed = 0
        for idx in rng.permutation(len(self.candidates)):
            cell = self.candidates[int(idx)]
            if cell in _CLEANHOUSE_EXCLUDED:
                continue
            markers[cell[0] * w + cell[1]] = 1
            placed += 1
            if placed == 10:
                break
        return World(self.height, w, self.walls, markers, (1, 13, SOUTH))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        dustbin = self.dustbin[0] * init.width + self.dustbin[1]
        cells = [i for i, m in enumerate(init.markers) if m and i != dustbin]
        return {"cells": cells}

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        mk = world.markers
        cells = ctx["cells"]
        return sum(1 for c in cells if mk[c] == 0) / len(cells) if cells else 0.0


# ---------------------------------------------------------------------------- HARVESTER
class Harvester(TaskSpec):
    """Pick the marker on every cell of an 8×8 room."""

    name = "harvester"
    title = "HARVESTER"
    env_name = "Harvester"
    height = 8
    width = 8
    reward_type = "dense"
    description = (
        "8x8 room with a marker on every free cell; pick them all. Reward: fraction picked "
        "(counted one action late, as the original)."
    )
    needs_total = True

    def generate(self, rng: np.random.Generator, options: Options) -> World:
        h, w = self.height, self.width
        walls = _wall_grid(h, w)
        markers = [0 if wall else 1 for wall in walls]
        return World(h, w, walls, markers, (h - 2, 1, EAST))

    def context(self, init: World, options: Options) -> dict[str, Any]:
        cells = sum(1 for m in init.markers if m)
        # T starts at the number of marker-holding cells and follows puts and picks.
        return {"cells": cells, "offset": cells - sum(init.markers)}

    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        cells = ctx["cells"]
        remaining = total_before + ctx["offset"]
        return (cells - remaining) / cells if cells else 0.0


# ---------------------------------------------------------------------------- registry
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (StairClimber(), FourCorner(), TopOff(), Maze(), CleanHouse(), Harvester())
}
_ALIASES = {"fourcorners": "fourcorner", "stairclimber_sparse": "stairclimber"}


def task_names(aliases: bool = False) -> list[str]:
    """The registered task names (the one list: CLI choices, bench and docs use it).

    Args:
        aliases: also the accepted alternative spellings (``fourcorners``, ...).
    """
    return [*TASKS, *_ALIASES] if aliases else list(TASKS)


def get_spec(name: str) -> TaskSpec:
    """The task spec registered under ``name`` (case-insensitive).

    Raises:
        UserError: unknown task, listing the known ones.
    """
    key = name.lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[key]


def make(
    name: str, seed: int = 0, num_worlds: int = 10, options: Options | None = None, **changes: Any
) -> Task:
    """Build a task with ``num_worlds`` seeded initial worlds.

    Args:
        name: ``stairclimber``, ``fourcorner``, ``topoff``, ``maze``, ``cleanhouse`` or
            ``harvester`` (case-insensitive).
        seed: seeds the initial worlds.
        num_worlds: initial worlds drawn up front (``evaluate`` uses 10 by default).
        options: behaviour switches; defaults reproduce the original.
        **changes: individual `Options` fields, e.g. ``topoff_last_cell_marker=False``.

    Raises:
        UserError: unknown task or option.
    """
    spec = get_spec(name)
    opts = options or Options()
    if changes:
        import dataclasses

        known = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UserError(f"unknown task option {unknown[0]!r}; known: {', '.join(known)}")
        opts = dataclasses.replace(opts, **changes)
    return Task(spec, seed=seed, num_worlds=num_worlds, options=opts)


def describe() -> list[tuple[str, str, str, str]]:
    """``(name, grid, reward type, description)`` for every task."""
    return [(s.name, f"{s.height}x{s.width}", s.reward_type, s.description) for s in TASKS.values()]
