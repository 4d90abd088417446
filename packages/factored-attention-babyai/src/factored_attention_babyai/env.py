"""GoToLocal with the semantics of the paper's patched BabyAI fork (spec §1.2–1.4).

:class:`GoToLocalEnv` subclasses minigrid 3.x's ``BabyAI-GoToLocal-v0`` level (same layouts
for the same reset seed) and changes three things:

* **Success needs ``done``**: an episode succeeds (reward ``1 − 0.9·step/max_steps``,
  terminated) only when the action is ``done`` while the cell in front of the agent holds an
  object matching the mission (any of them when several match). A ``done`` elsewhere does
  nothing. Stock minigrid instead succeeds as soon as any action leaves the agent facing a
  target.
* **Toggling an empty box is a no-op** (stock minigrid replaces the box by its contents, i.e.
  deletes it).
* **Fully observed, disentangled observation**: ``image`` is the whole 8×8 grid as
  ``[row = y, col = x, (object, colour, state)]`` with the agent drawn into its cell as
  ``(10, 0, carried object type id or 1)``; plus ``direction``, ``mission``,
  ``mission_tokens`` (ids into :data:`~factored_attention_babyai.vocab.WORDS`) and
  ``target_mask`` (``[8, 8]`` bool, ``[y, x]``, True on every object matching the mission).

The level's "Sampling rejected" prints are silenced and the partial agent view is never
computed (the observation is the cached grid encoding with the agent painted in).
Importing this module registers ``compkit/BabyAI-GoToLocal-v0`` with gymnasium.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections import deque
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from minigrid.core.world_object import Box as BoxObject
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling
from minigrid.envs.babyai.goto import GoToLocal
from minigrid.minigrid_env import MiniGridEnv
from minigrid.utils.baby_ai_bot import BabyAIBot

from factored_attention_babyai.vocab import MISSION_LENGTH, WORDS, tokenize

__all__ = [
    "ENV_ID",
    "GRID_SIZE",
    "MAX_STEPS",
    "N_ACTIONS",
    "FullyObservedBot",
    "GoToLocalEnv",
    "agent_position",
    "make_env",
]

ENV_ID = "compkit/BabyAI-GoToLocal-v0"
GRID_SIZE = 8
"""Height = width of the grid, outer walls included."""
MAX_STEPS = 64
"""Episode step limit (room_size² × 1 room × 1 navigation)."""
N_ACTIONS = 7
"""left, right, forward, pickup, drop, toggle, done."""
AGENT_IDX = OBJECT_TO_IDX["agent"]
_DONE, _PICKUP, _DROP, _TOGGLE = 6, 3, 4, 5
_EMPTY = (OBJECT_TO_IDX["empty"], 0, 0)


def _object_code(obj: Any) -> tuple[int, int, int]:
    """(type, colour + 1, has contents) of a world object; zeros for None."""
    if obj is None:
        return (0, 0, 0)
    full = int(isinstance(obj, BoxObject) and obj.contains is not None)
    return (OBJECT_TO_IDX[obj.type], 1 + COLOR_TO_IDX[obj.color], full)


@functools.cache
def _neighbours(width: int, height: int) -> tuple[tuple[int, ...], ...]:
    """Flat indices (``y * width + x``) of the 4-neighbours of every cell, inside the grid."""
    out = []
    for index in range(width * height):
        i, j = index % width, index // width
        near = ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1))
        out.append(tuple(n * width + m for m, n in near if 0 <= m < width and 0 <= n < height))
    return tuple(out)


class GoToLocalEnv(GoToLocal):
    """``BabyAI-GoToLocal-v0`` with done-required success and the full disentangled grid.

    Args:
        render_mode: ``None``, ``"rgb_array"`` or ``"human"`` (minigrid's renderer).
        **kwargs: passed to minigrid's ``GoToLocal`` (``room_size``, ``num_dists``, ...).
    """

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("highlight", False)  # the agent sees everything
        super().__init__(render_mode=render_mode, **kwargs)
        size = self.width
        mission_space = self.observation_space["mission"]  # pyright: ignore[reportIndexIssue]
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (self.height, size, 3), dtype=np.uint8),
                "direction": spaces.Discrete(4),
                "mission": mission_space,
                "mission_tokens": spaces.Box(0, len(WORDS) - 1, (MISSION_LENGTH,), dtype=np.int64),
                "target_mask": spaces.Box(0, 1, (self.height, size), dtype=np.bool_),  # pyright: ignore[reportArgumentType, reportCallIssue],
            }
        )
        self._grid_code: np.ndarray | None = None  # [H, W, 3] grid without the agent
        self._targets: np.ndarray | None = None  # [H, W] bool
        self._tokens = np.zeros(MISSION_LENGTH, dtype=np.int64)

    # -- generation --------------------------------------------------------------------------
    def _gen_grid(self, width: int, height: int) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # "Sampling rejected: ..." retries
            super()._gen_grid(width, height)
        self._grid_code = None
        self._tokens = tokenize(self.mission)

    def reset(  # pyright: ignore[reportIncompatibleMethodOverride]
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset; the layout and mission are a function of ``seed`` (minigrid's generator).

        Same layout, mission and random stream as stock ``BabyAI-GoToLocal-v0``
        (``reset_layout`` followed by ``finish_reset``).
        """
        self.reset_layout(seed=seed, options=options)
        return self.finish_reset(), {}

    def reset_layout(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> str:
        """First half of :meth:`reset`: generate the layout of ``seed``; return the mission.

        The generator's seed scan calls only this for seeds whose goal quota is full (no
        verifier, no observation). Call :meth:`finish_reset` before stepping.
        """
        gymnasium.Env.reset(self, seed=seed, options=options)
        self.agent_pos = (-1, -1)
        self.agent_dir = -1
        self._gen_grid(self.width, self.height)
        self.carrying = None
        self.step_count = 0
        return self.mission

    def finish_reset(self) -> dict[str, Any]:
        """Second half of :meth:`reset`: verifier, step limit; returns the first observation."""
        self.instrs.reset_verifier(self)  # pyright: ignore[reportAttributeAccessIssue]
        if not self.fixed_max_steps:
            self.max_steps = self.num_navs_needed(self.instrs) * self.room_size**2
        if self.render_mode == "human":
            self.render()
        return self.gen_obs()

    def place_obj(
        self,
        obj: Any,
        top: Any = None,
        size: Any = None,
        reject_fn: Any = None,
        max_tries: float = math.inf,
    ) -> Any:
        """Minigrid's rejection sampling of a free cell (same draws, same result), faster.

        The same random integers are drawn in the same order; the checks read the flat cell
        list and compare the agent position without numpy.
        """
        top = (0, 0) if top is None else (max(top[0], 0), max(top[1], 0))
        width, height = self.grid.width, self.grid.height
        if size is None:
            size = (width, height)
        x_hi, y_hi = min(top[0] + size[0], width), min(top[1] + size[1], height)
        integers = self.np_random.integers
        cells = self.grid.grid
        agent_x, agent_y = self.agent_pos
        num_tries = 0
        while True:
            if num_tries > max_tries:
                raise RecursionError("rejection sampling failed in place_obj")
            num_tries += 1
            pos = (integers(top[0], x_hi), integers(top[1], y_hi))
            if cells[pos[1] * width + pos[0]] is not None:
                continue
            if pos[0] == agent_x and pos[1] == agent_y:
                continue
            if reject_fn and reject_fn(self, pos):
                continue
            break
        self.grid.set(pos[0], pos[1], obj)
        if obj is not None:
            obj.init_pos = pos
            obj.cur_pos = pos
        return pos

    def check_objs_reachable(self, raise_exc: bool = True) -> bool:
        """Minigrid's reachability check (same answer, same message), on the flat cell list.

        Every object must be reachable from the agent through empty cells (or doors).
        """
        grid, width, height = self.grid.grid, self.grid.width, self.grid.height
        neighbours = _neighbours(width, height)
        x, y = self.agent_pos
        start = y * width + x
        reachable = bytearray(width * height)
        reachable[start] = 1
        stack = [start]
        while stack:
            index = stack.pop()
            cell = grid[index]
            if cell is not None and cell.type != "door":
                continue  # an object blocks: reachable itself, but no further
            for other in neighbours[index]:
                if not reachable[other]:
                    reachable[other] = 1
                    stack.append(other)
        unreachable = [
            (index % width, index // width)
            for index, cell in enumerate(grid)
            if cell is not None and not reachable[index] and cell.type != "wall"
        ]
        if not unreachable:
            return True
        if not raise_exc:
            return False
        raise RejectSampling("unreachable object at " + str(min(unreachable)))

    # -- dynamics ----------------------------------------------------------------------------
    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """One step with the fork's semantics (see the module docstring)."""
        action = int(action)
        front_pos = self.front_pos
        front = self.grid.get(*front_pos)
        if action == _TOGGLE and isinstance(front, BoxObject) and front.contains is None:
            # The fork: toggling an empty box leaves it where it is.
            self.step_count += 1
            truncated = self.step_count >= self.max_steps
            if self.render_mode == "human":
                self.render()
            obs, info = self.gen_obs(), {}
        else:
            if action in (_PICKUP, _DROP, _TOGGLE):
                self._grid_code = None  # the grid may change
            # MiniGridEnv.step, not the level's: the level's verifier is replaced below.
            obs, _, _, truncated, info = MiniGridEnv.step(self, action)
            if action == _DROP:
                self.update_objs_poss()
        terminated = False
        reward = 0.0
        if action == _DONE and self._matches(front):
            terminated = True
            reward = float(self._reward())
        return obs, reward, terminated, truncated, info

    def _matches(self, cell: Any) -> bool:
        """Whether a grid cell holds an object matching the mission's description."""
        desc = self.instrs.desc  # pyright: ignore[reportAttributeAccessIssue]
        return (
            cell is not None
            and cell.type == desc.type
            and (desc.color is None or cell.color == desc.color)
        )

    def facing_target(self) -> bool:
        """Whether the cell in front of the agent holds an object matching the mission."""
        return self._matches(self.grid.get(*self.front_pos))

    def state_key(self) -> bytes:
        """The dynamic state as bytes: equal keys, equal futures under the same actions.

        The grid's (object, colour, state) codes, the agent's position and direction, the
        carried object's type and colour, and the contents of any box that has some (the grid
        codes do not show them; GoToLocal's boxes are empty) — everything :meth:`step` reads
        except the step counter, which only decides truncation. The evaluator uses it to cut an
        episode that has entered a cycle (:func:`factored_attention_babyai.evaluate.rollout`).
        """
        if self._grid_code is None:
            self._encode_grid()
        assert self._grid_code is not None
        x, y = self.agent_pos
        key = self._grid_code.tobytes() + bytes(
            (x, y, int(self.agent_dir), *_object_code(self.carrying))
        )
        for index, cell in enumerate(self.grid.grid):
            if isinstance(cell, BoxObject) and cell.contains is not None:
                key += bytes((index, *_object_code(cell.contains)))
        return key

    # -- observation -------------------------------------------------------------------------
    def grid_changed(self) -> None:
        """Drop the cached grid encoding: call after editing ``self.grid`` directly."""
        self._grid_code = None

    def _encode_grid(self) -> None:
        # grid.grid is row-major (index y * width + x): reshaped, it is [y, x] already.
        code = np.array(
            [_EMPTY if cell is None else cell.encode() for cell in self.grid.grid], dtype=np.uint8
        ).reshape(self.grid.height, self.grid.width, 3)
        desc = self.instrs.desc  # pyright: ignore[reportAttributeAccessIssue]
        targets = code[..., 0] == OBJECT_TO_IDX[desc.type]
        if desc.color is not None:
            targets &= code[..., 1] == COLOR_TO_IDX[desc.color]
        self._grid_code, self._targets = code, targets

    def gen_obs(self) -> dict[str, Any]:
        """The fully observed observation (see the module docstring); ``[y, x]`` arrays."""
        if self._grid_code is None:
            self._encode_grid()
        assert self._grid_code is not None
        assert self._targets is not None
        image = self._grid_code.copy()
        x, y = self.agent_pos
        carried = OBJECT_TO_IDX[self.carrying.type] if self.carrying is not None else 1
        image[y, x] = (AGENT_IDX, 0, carried)
        return {
            "image": image,
            "direction": int(self.agent_dir),
            "mission": self.mission,
            "mission_tokens": self._tokens.copy(),
            "target_mask": self._targets.copy(),
        }


def agent_position(image: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` = ``(y, x)`` of the agent in a ``[H, W, 3]`` observation image."""
    rows, cols = np.nonzero(image[..., 0] == AGENT_IDX)
    if len(rows) != 1:
        raise ValueError(f"expected exactly one agent cell, found {len(rows)}")
    return int(rows[0]), int(cols[0])


class FullyObservedBot(BabyAIBot):
    """minigrid's ``BabyAIBot`` that sees the whole grid from the start.

    The original fork's bot took a ``fully_observed`` flag; here the visibility mask is set to
    all-True after construction and the per-step view parsing (which could only add cells
    that are already visible) is skipped. The breadth-first search is minigrid's, visiting
    states in the same order (so the same paths and actions), with a deque instead of
    re-slicing a list and direct cell access.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self.vis_mask[:] = True

    def _process_obs(self) -> None:
        """Nothing to learn from the view: everything is visible already."""

    def replan(self, action_taken: Any = None) -> Any:
        """Minigrid's ``replan``; searches are memoised within one call (the grid is fixed)."""
        self._bfs_cache: dict[Any, Any] = {}
        return super().replan(action_taken)

    def _breadth_first_search(
        self, initial_states: Any, accept_fn: Any, ignore_blockers: bool
    ) -> tuple[Any, Any, dict[tuple[int, int], Any]]:
        # Within one replan the grid and the agent do not change, so a search is a function
        # of its start states, its target (the acceptance lambda's bytecode and captured values)
        # and ignore_blockers: the same search (e.g. the path to the chosen object, found by
        # _find_obj_pos and again by GoNextToSubgoal) is answered from the cache.
        try:
            closure = tuple(c.cell_contents for c in accept_fn.__closure__ or ())
            code = accept_fn.__code__  # same bytecode + same captured values = same test
            target = (code.co_code, code.co_consts, code.co_names, closure)
            key: Any = (tuple(initial_states), ignore_blockers, target)
            hash(key)
        except (AttributeError, TypeError, ValueError):
            key = None
        cache = getattr(self, "_bfs_cache", {})
        if key is not None and key in cache:
            return cache[key]
        result = self._search(initial_states, accept_fn, ignore_blockers)
        if key is not None:
            cache[key] = result
        return result

    def _search(
        self, initial_states: Any, accept_fn: Any, ignore_blockers: bool
    ) -> tuple[Any, Any, dict[tuple[int, int], Any]]:
        """Minigrid's breadth-first search: same visiting order, same result."""
        self.bfs_counter += 1
        grid = self.mission.unwrapped.grid
        cells, width = grid.grid, grid.width
        queue: deque[tuple[Any, Any]] = deque((state, None) for state in initial_states)
        popleft, append = queue.popleft, queue.append
        previous_pos: dict[tuple[int, int], Any] = {}
        while queue:
            (i, j, di, dj), prev_pos = popleft()
            pos = (i, j)
            if pos in previous_pos:
                continue
            self.bfs_step_counter += 1
            cell = cells[j * width + i]
            previous_pos[pos] = prev_pos
            if accept_fn(pos, cell):
                path = []
                at = pos
                while at:
                    path.append(at)
                    at = previous_pos[at]
                return path, pos, previous_pos
            if cell is not None:
                if cell.type == "wall":
                    continue
                if cell.type == "door":
                    if not cell.is_open:
                        continue
                elif not ignore_blockers:
                    continue
            # Straight ahead first (the bot prefers not turning), in minigrid's order. A
            # neighbour already visited would be skipped when popped: it is not queued.
            for k, m in ((di, dj), (dj, di), (-dj, -di), (-di, -dj)):
                if (i + k, j + m) not in previous_pos:
                    append(((i + k, j + m, k, m), pos))
        return None, None, previous_pos


def make_env(render_mode: str | None = None) -> GoToLocalEnv:
    """A bare :class:`GoToLocalEnv` (no gymnasium wrappers: the fastest to step)."""
    return GoToLocalEnv(render_mode=render_mode)


if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="factored_attention_babyai.env:GoToLocalEnv",
        max_episode_steps=None,  # the level truncates at MAX_STEPS itself
    )
