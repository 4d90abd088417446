"""The Karel world: an H×W grid with walls, 0–10 markers per cell and one agent.

Coordinates follow the LEAPS spec: cell ``(r, c)`` with ``r = 0`` at the top and ``c = 0`` at
the left; directions ``0 = North, 1 = East, 2 = South, 3 = West``.

The world is stored as flat Python lists (fast for the interpreter) and converted on demand to
the 16-channel boolean state tensor of the original (``to_tensor``) or to the text form used by
the fixtures (``to_text``):

* ``grid`` rows: ``#`` wall, ``.`` no marker, ``1``–``9`` marker count, ``M`` 10 markers;
* ``agent``: ``(row, col, dir)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    import numpy as np

NORTH, EAST, SOUTH, WEST = 0, 1, 2, 3
DIRECTION_NAMES = ("north", "east", "south", "west")
#: Row / column offsets of the four directions.
DELTAS = ((-1, 0), (0, 1), (1, 0), (0, -1))

#: Action ids of the original (§3 of the spec); note the order differs from the DSL token order.
MOVE, TURN_LEFT, TURN_RIGHT, PICK_MARKER, PUT_MARKER = 0, 1, 2, 3, 4
#: Padding / no-op action id (neural policies only; the simulator does nothing).
NOOP = 5
ACTION_NAMES = ("move", "turnLeft", "turnRight", "pickMarker", "putMarker")
ACTION_IDS = {name: i for i, name in enumerate(ACTION_NAMES)}

#: Number of channels of the state tensor.
NUM_CHANNELS = 16
#: Largest marker count a cell can hold (representable; actions never exceed 9).
MAX_MARKERS = 10
#: ``putMarker`` fails when the cell already holds this many markers.
PUT_LIMIT = 9

_AGENT_GLYPHS = "^>v<"
_DIR_LETTERS = {"N": 0, "E": 1, "S": 2, "W": 3}


class KarelCrash(Exception):
    """A failing action in crash mode (the dataset-generation semantics)."""


class World:
    """A mutable Karel world.

    Attributes:
        height: number of rows H.
        width: number of columns W.
        walls: flat list (length H·W, row-major) of 0/1 wall flags.
        markers: flat list (length H·W, row-major) of marker counts 0..10.
        pos: the agent's flat cell index ``row * W + col``.
        dir: the agent's direction 0..3 (N, E, S, W).
    """

    __slots__ = ("_nbr", "_tables", "dir", "height", "markers", "pos", "walls", "width")

    def __init__(
        self,
        height: int,
        width: int,
        walls: Sequence[int] | None = None,
        markers: Sequence[int] | None = None,
        agent: tuple[int, int, int] = (0, 0, EAST),
    ) -> None:
        """Create a world.

        Args:
            height: rows H (≥ 1).
            width: columns W (≥ 1).
            walls: H·W wall flags, row-major (default: no walls).
            markers: H·W marker counts 0..10, row-major (default: none).
            agent: ``(row, col, dir)``.

        Raises:
            UserError: inconsistent sizes, the agent outside the grid or on a wall, markers on
                walls or counts outside 0..10.
        """
        if height < 1 or width < 1:
            raise UserError(f"world size must be positive, got {height}x{width}")
        size = height * width
        self.height = height
        self.width = width
        self.walls = [1 if w else 0 for w in walls] if walls is not None else [0] * size
        self.markers = [int(m) for m in markers] if markers is not None else [0] * size
        if len(self.walls) != size or len(self.markers) != size:
            raise UserError(f"world: walls/markers must have {size} cells for {height}x{width}")
        row, col, direction = (int(a) for a in agent)
        if not (0 <= row < height and 0 <= col < width):
            raise UserError(f"world: agent {(row, col)} is outside the {height}x{width} grid")
        if direction not in (0, 1, 2, 3):
            raise UserError(f"world: agent direction must be 0..3 (N,E,S,W), got {direction}")
        self.pos = row * width + col
        self.dir = direction
        if self.walls[self.pos]:
            raise UserError(f"world: the agent stands on a wall at {(row, col)}")
        for i, (w, m) in enumerate(zip(self.walls, self.markers, strict=True)):
            if not 0 <= m <= MAX_MARKERS:
                raise UserError(
                    f"world: cell {divmod(i, width)} holds {m} markers; allowed 0..{MAX_MARKERS}"
                )
            if w and m:
                raise UserError(f"world: cell {divmod(i, width)} is a wall holding markers")
        self._nbr: list[int] | None = None
        self._tables: tuple[list[int], ...] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_text(cls, rows: Sequence[str], agent: Sequence[int]) -> World:
        """Build a world from the fixtures' text form.

        Args:
            rows: H strings of W characters: ``#`` wall, ``.`` empty, ``1``–``9`` markers,
                ``M`` 10 markers.
            agent: ``(row, col, dir)`` with dir 0 N, 1 E, 2 S, 3 W.

        Raises:
            UserError: ragged rows, unknown characters or a bad agent.
        """
        rows = list(rows)
        if not rows or not rows[0]:
            raise UserError("world: 'grid' must be a non-empty list of non-empty strings")
        width = len(rows[0])
        walls: list[int] = []
        markers: list[int] = []
        for r, row in enumerate(rows):
            if not isinstance(row, str) or len(row) != width:
                raise UserError(
                    f"world: grid row {r} has length {len(row)}; all rows must have {width}"
                )
            for c, ch in enumerate(row):
                if ch == "#":
                    walls.append(1)
                    markers.append(0)
                elif ch == ".":
                    walls.append(0)
                    markers.append(0)
                elif ch in "123456789":
                    walls.append(0)
                    markers.append(int(ch))
                elif ch == "M":
                    walls.append(0)
                    markers.append(10)
                else:
                    raise UserError(
                        f"world: unknown character {ch!r} at row {r}, column {c}; "
                        "use '#', '.', '1'-'9' or 'M'"
                    )
        if len(agent) != 3:
            raise UserError(f"world: 'agent' must be [row, col, dir], got {list(agent)!r}")
        a = tuple(int(x) for x in agent)
        return cls(len(rows), width, walls, markers, (a[0], a[1], a[2]))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "world") -> World:
        """Build a world from ``{"grid": [...], "agent": [row, col, dir]}`` (the fixtures' JSON).

        Raises:
            UserError: missing or malformed fields, naming ``source``.
        """
        if not isinstance(data, Mapping) or "grid" not in data or "agent" not in data:
            raise UserError(
                f"{source}: expected an object with 'grid' (list of strings) and "
                "'agent' ([row, col, dir])"
            )
        grid, agent = data["grid"], data["agent"]
        if not isinstance(grid, list) or not all(isinstance(r, str) for r in grid):
            raise UserError(f"{source}: 'grid' must be a list of strings")
        if not isinstance(agent, list | tuple) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in agent
        ):
            raise UserError(f"{source}: 'agent' must be a list of three integers [row, col, dir]")
        try:
            return cls.from_text(grid, agent)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from exc

    @classmethod
    def from_tensor(cls, state: np.ndarray) -> World:
        """Build a world from an ``(H, W, 16)`` boolean state tensor (channel-last).

        The marker count of a cell is the index of the set bit among channels 5..15, or 0 when
        none is set (some original generators never set channel 5).

        Raises:
            UserError: wrong shape or not exactly one agent bit set.
        """
        import numpy as np

        state = np.asarray(state)
        if state.ndim != 3 or state.shape[2] != NUM_CHANNELS:
            raise UserError(f"state tensor must have shape (H, W, 16), got {state.shape}")
        height, width = state.shape[:2]
        agent_bits = np.argwhere(state[:, :, :4])
        if len(agent_bits) != 1:
            raise UserError(f"state tensor must have exactly one agent bit, got {len(agent_bits)}")
        r, c, d = (int(x) for x in agent_bits[0])
        walls = state[:, :, 4].astype(bool).reshape(-1)
        counts = np.argmax(state[:, :, 5:16], axis=2).reshape(-1)
        counts[walls] = 0
        return cls(height, width, walls.astype(int).tolist(), counts.tolist(), (r, c, d))

    def copy(self) -> World:
        """An independent copy (shares the immutable wall layout and its lookup tables)."""
        w = World.__new__(World)
        w.height = self.height
        w.width = self.width
        w.walls = self.walls
        w.markers = self.markers.copy()
        w.pos = self.pos
        w.dir = self.dir
        w._nbr = self.neighbours
        w._tables = self.tables
        return w

    # ------------------------------------------------------------------ conversions
    def to_text(self) -> tuple[list[str], tuple[int, int, int]]:
        """The fixtures' text form ``(grid rows, (row, col, dir))``; inverse of `from_text`."""
        chars = []
        for w, m in zip(self.walls, self.markers, strict=True):
            chars.append("#" if w else ("." if m == 0 else ("M" if m == 10 else str(m))))
        rows = ["".join(chars[r * self.width : (r + 1) * self.width]) for r in range(self.height)]
        return rows, self.agent

    def to_dict(self) -> dict[str, Any]:
        """``{"grid": rows, "agent": [row, col, dir]}``; inverse of `from_dict`."""
        rows, agent = self.to_text()
        return {"grid": rows, "agent": list(agent)}

    def render_ascii(self) -> str:
        """A human-readable picture: the grid rows with the agent drawn as ``^ > v <``.

        A marker count under the agent is shown after the grid.
        """
        rows, (r, c, d) = self.to_text()
        line = rows[r]
        rows[r] = line[:c] + _AGENT_GLYPHS[d] + line[c + 1 :]
        under = self.markers[self.pos]
        footer = f"agent ({r}, {c}) facing {DIRECTION_NAMES[d]}, {under} marker(s) under it"
        return "\n".join([*rows, footer])

    def __str__(self) -> str:
        return self.render_ascii()

    def __repr__(self) -> str:
        return f"World({self.height}x{self.width}, agent={self.agent})"

    def to_tensor(self) -> np.ndarray:
        """The ``(H, W, 16)`` boolean state tensor of the original (channel-last).

        Channels: 0–3 agent facing N/E/S/W, 4 wall, 5 + k cell holds k markers (k = 0..10;
        channel 5 is set on every non-wall cell without markers).
        """
        import numpy as np

        h, w = self.height, self.width
        state = np.zeros((h * w, NUM_CHANNELS), dtype=bool)
        walls = np.asarray(self.walls, dtype=bool)
        counts = np.asarray(self.markers, dtype=np.int64)
        state[walls, 4] = True
        free = ~walls
        state[np.flatnonzero(free), 5 + counts[free]] = True
        state[self.pos, self.dir] = True
        return state.reshape(h, w, NUM_CHANNELS)

    # ------------------------------------------------------------------ state
    @property
    def agent(self) -> tuple[int, int, int]:
        """``(row, col, dir)`` of the agent."""
        r, c = divmod(self.pos, self.width)
        return r, c, self.dir

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.height, self.width

    def is_wall(self, row: int, col: int) -> bool:
        """Whether ``(row, col)`` is a wall; cells outside the grid count as walls."""
        if not (0 <= row < self.height and 0 <= col < self.width):
            return True
        return bool(self.walls[row * self.width + col])

    def markers_at(self, row: int, col: int) -> int:
        """Marker count of cell ``(row, col)``."""
        return self.markers[row * self.width + col]

    def total_markers(self) -> int:
        """Sum of all marker counts."""
        return sum(self.markers)

    def key(self) -> tuple[int, int, tuple[int, ...], tuple[int, ...], int, int]:
        """A hashable identity of the state (walls, markers, agent)."""
        return (
            self.height,
            self.width,
            tuple(self.walls),
            tuple(self.markers),
            self.pos,
            self.dir,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, World):
            return NotImplemented
        return (
            self.height == other.height
            and self.width == other.width
            and self.pos == other.pos
            and self.dir == other.dir
            and self.walls == other.walls
            and self.markers == other.markers
        )

    def __hash__(self) -> int:
        return hash(self.key())

    @property
    def neighbours(self) -> list[int]:
        """Front-neighbour table.

        ``nbr[4 * cell + dir]`` is the neighbour's cell index, or -1 when it is a wall or
        outside the grid. Computed once (walls never change).
        """
        nbr = self._nbr
        if nbr is None:
            h, w = self.height, self.width
            nbr = [-1] * (4 * h * w)
            for r in range(h):
                for c in range(w):
                    for d, (dr, dc) in enumerate(DELTAS):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < h and 0 <= cc < w and not self.walls[rr * w + cc]:
                            nbr[4 * (r * w + c) + d] = rr * w + cc
            self._nbr = nbr
        return nbr

    @property
    def tables(self) -> tuple[list[int], ...]:
        """Lookup tables indexed by the combined agent state ``q = 4 * cell + dir``.

        Returns ``(next_q, move_q, front_clear, left_clear, right_clear, left_q, right_q)``:
        ``next_q[q]`` is the state after a successful ``move`` (-1 when blocked), ``move_q[q]``
        the state after a no-crash ``move`` (turned around when blocked), the perception tables
        hold ``frontIsClear`` / ``leftIsClear`` / ``rightIsClear`` (0/1), ``left_q`` /
        ``right_q`` the states after turning. Computed once per wall layout and shared by
        copies; the compiled interpreter runs on them.
        """
        tables = self._tables
        if tables is None:
            nbr = self.neighbours
            size = len(nbr)
            qs = range(size)
            next_q = [nbr[q] * 4 + (q & 3) if nbr[q] >= 0 else -1 for q in qs]
            move_q = [next_q[q] if next_q[q] >= 0 else q ^ 2 for q in qs]
            left_q = [(q & ~3) | ((q + 3) & 3) for q in qs]
            right_q = [(q & ~3) | ((q + 1) & 3) for q in qs]
            front = [int(nbr[q] >= 0) for q in qs]
            left = [front[left_q[q]] for q in qs]
            right = [front[right_q[q]] for q in qs]
            tables = self._tables = (next_q, move_q, front, left, right, left_q, right_q)
        return tables

    # ------------------------------------------------------------------ perceptions
    def front_is_clear(self) -> bool:
        """Front neighbour inside the grid and not a wall."""
        return self.neighbours[4 * self.pos + self.dir] >= 0

    def left_is_clear(self) -> bool:
        """Left neighbour inside the grid and not a wall."""
        return self.neighbours[4 * self.pos + ((self.dir + 3) & 3)] >= 0

    def right_is_clear(self) -> bool:
        """Right neighbour inside the grid and not a wall."""
        return self.neighbours[4 * self.pos + ((self.dir + 1) & 3)] >= 0

    def markers_present(self) -> bool:
        """The agent's cell holds at least one marker."""
        return self.markers[self.pos] > 0

    def no_markers_present(self) -> bool:
        """The agent's cell holds no marker."""
        return self.markers[self.pos] == 0

    def perception(self) -> tuple[bool, bool, bool, bool, bool]:
        """The 5 perceptions in spec order: front/left/right clear, markers / no markers."""
        return (
            self.front_is_clear(),
            self.left_is_clear(),
            self.right_is_clear(),
            self.markers_present(),
            self.no_markers_present(),
        )

    # ------------------------------------------------------------------ actions
    def step(self, action: int, *, crash: bool = False) -> bool:
        """Perform one action id (0 move, 1 turnLeft, 2 turnRight, 3 pickMarker, 4 putMarker).

        No-crash mode (default, every reward): a blocked ``move`` turns the agent 180°, failing
        ``pickMarker`` / ``putMarker`` change nothing. Crash mode raises `KarelCrash` on
        failure and leaves the world unchanged. Ids ≥ 5 do nothing.

        Returns:
            Whether the action succeeded.
        """
        if action == MOVE:
            t = self.neighbours[4 * self.pos + self.dir]
            if t >= 0:
                self.pos = t
                return True
            if crash:
                raise KarelCrash("move into a wall")
            self.dir = (self.dir + 2) & 3
            return False
        if action == TURN_LEFT:
            self.dir = (self.dir + 3) & 3
            return True
        if action == TURN_RIGHT:
            self.dir = (self.dir + 1) & 3
            return True
        if action == PICK_MARKER:
            if self.markers[self.pos] > 0:
                self.markers[self.pos] -= 1
                return True
            if crash:
                raise KarelCrash("pickMarker on an empty cell")
            return False
        if action == PUT_MARKER:
            if self.markers[self.pos] < PUT_LIMIT:
                self.markers[self.pos] += 1
                return True
            if crash:
                raise KarelCrash(f"putMarker on a cell holding {PUT_LIMIT} markers")
            return False
        return False


def parse_direction(value: str | int) -> int:
    """A direction given as 0..3 or one of N/E/S/W (case-insensitive)."""
    if isinstance(value, int):
        if value in (0, 1, 2, 3):
            return value
    elif value.upper()[:1] in _DIR_LETTERS and value.isalpha():
        return _DIR_LETTERS[value.upper()[0]]
    elif value.isdigit() and int(value) in (0, 1, 2, 3):
        return int(value)
    raise UserError(f"bad direction {value!r}; use 0..3 or N, E, S, W")


def bordered_room(height: int, width: int, agent: tuple[int, int, int]) -> World:
    """An empty room with walls on the whole border."""
    walls = [
        1 if r in (0, height - 1) or c in (0, width - 1) else 0
        for r in range(height)
        for c in range(width)
    ]
    return World(height, width, walls, None, agent)
