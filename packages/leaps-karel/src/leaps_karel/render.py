"""Pictures of Karel worlds: ASCII text, PNG images and GIF animations of executions.

Every function takes states in the canonical 16-channel encoding of spec §2 — a boolean array
``(H, W, 16)`` (channels 0–3 agent direction N/E/S/W, 4 wall, 5–15 one-hot marker count) — or
anything with a ``to_tensor()`` method giving that array (a `leaps_karel.world.World`), so they
work on dataset demonstrations (``s_h[i, t]``) and on interpreter histories alike.

ASCII uses the fixture encoding: ``#`` wall, ``.`` empty, ``1``–``9`` marker count, ``M`` 10
markers, and ``^ > v <`` for the agent (facing N/E/S/W); a marker count under the agent is given
in the caption line.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.errors import UserError
from compkit_utils.io import atomic_path

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "AGENT_GLYPHS",
    "GridView",
    "grid_view",
    "render_ascii",
    "render_ascii_trace",
    "render_image",
    "render_sheet",
    "save_gif",
    "save_png",
    "write_trace",
]

AGENT_GLYPHS = "^>v<"
"""ASCII glyph of the agent for directions 0 N, 1 E, 2 S, 3 W."""

DIRECTION_NAMES = ("North", "East", "South", "West")

_BACKGROUND = (250, 250, 245)
_GRID = (200, 200, 195)
_WALL = (70, 70, 80)
_MARKER = (230, 160, 30)
_MARKER_TEXT = (40, 30, 10)
_AGENT = (40, 110, 220)


@dataclasses.dataclass(frozen=True)
class GridView:
    """A decoded Karel state.

    Attributes:
        walls: ``(H, W)`` bool.
        markers: ``(H, W)`` int marker counts (0 – 10).
        agent: ``(row, col, direction)``.
    """

    walls: np.ndarray
    markers: np.ndarray
    agent: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.walls.shape[0]), int(self.walls.shape[1])


def _as_tensor(state: Any) -> np.ndarray:
    to_tensor = getattr(state, "to_tensor", None)
    if callable(to_tensor):
        state = to_tensor()
    array = np.asarray(state)
    if array.ndim != 3 or array.shape[-1] != 16:
        raise UserError(
            f"cannot render a state of shape {array.shape}: expected (H, W, 16) in the "
            "16-channel Karel encoding"
        )
    return array.astype(bool, copy=False)


def grid_view(state: Any) -> GridView:
    """Decode a ``(H, W, 16)`` state into walls, marker counts and the agent.

    The marker count of a cell is the index of the set bit among channels 5–15, or 0 when none
    is set (some generators leave channel 5 unset, spec §2).

    Raises:
        UserError: the array is not ``(H, W, 16)`` or does not hold exactly one agent.
    """
    tensor = _as_tensor(state)
    counts = np.where(tensor[:, :, 5:].any(axis=-1), tensor[:, :, 5:].argmax(axis=-1), 0)
    rows, cols, dirs = np.nonzero(tensor[:, :, :4])
    if len(rows) != 1:
        raise UserError(f"cannot render a state with {len(rows)} agents (channels 0-3)")
    return GridView(
        walls=tensor[:, :, 4].copy(),
        markers=counts.astype(np.int64),
        agent=(int(rows[0]), int(cols[0]), int(dirs[0])),
    )


# --- ASCII -----------------------------------------------------------------------------------


def render_ascii(state: Any, caption: bool = True) -> str:
    """The state as text, one line per row (plus a caption line with the agent's pose).

    Example:
        ``#####`` / ``#.>1#`` / ``#####`` and ``agent (1, 2) facing East, 0 markers under it``.
    """
    view = grid_view(state)
    lines = []
    for r in range(view.shape[0]):
        chars = []
        for c in range(view.shape[1]):
            if (r, c) == view.agent[:2]:
                chars.append(AGENT_GLYPHS[view.agent[2]])
            elif view.walls[r, c]:
                chars.append("#")
            else:
                count = int(view.markers[r, c])
                chars.append("." if count == 0 else ("M" if count >= 10 else str(count)))
        lines.append("".join(chars))
    if caption:
        r, c, d = view.agent
        under = int(view.markers[r, c])
        lines.append(f"agent ({r}, {c}) facing {DIRECTION_NAMES[d]}, {under} markers under it")
    return "\n".join(lines)


def render_ascii_trace(states: Iterable[Any], actions: Sequence[str] | None = None) -> str:
    """Frames of an execution trace separated by blank lines, each titled with its step.

    Args:
        states: the state history (initial state first).
        actions: optional action names, ``len(states) - 1`` of them; frame t > 0 is titled with
            the action that produced it.
    """
    frames = []
    for t, state in enumerate(states):
        title = f"step {t}" if t == 0 or actions is None else f"step {t}: {actions[t - 1]}"
        frames.append(f"{title}\n{render_ascii(state)}")
    return "\n\n".join(frames)


# --- images ----------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def render_image(state: Any, cell: int = 32, title: str | None = None) -> PILImage.Image:
    """Draw the state as an RGB Pillow image.

    Walls are dark squares, markers orange discs labelled with their count when above one, the
    agent a blue triangle pointing in its direction; thin grid lines separate cells.

    Args:
        state: ``(H, W, 16)`` state.
        cell: side of a cell in pixels (at least 8).
        title: optional text drawn in a strip above the grid.
    """
    from PIL import Image, ImageDraw

    if cell < 8:
        raise UserError(f"cell size {cell} px is too small to draw; use at least 8")
    view = grid_view(state)
    height, width = view.shape
    top = cell // 2 + 4 if title else 0
    image = Image.new("RGB", (width * cell + 1, height * cell + 1 + top), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(max(8, cell // 2))
    if title:
        draw.text((3, 2), title, fill=_MARKER_TEXT, font=_font(max(8, cell // 2 - 2)))
    for r in range(height):
        for c in range(width):
            x0, y0 = c * cell, top + r * cell
            box = (x0, y0, x0 + cell, y0 + cell)
            if view.walls[r, c]:
                draw.rectangle(box, fill=_WALL, outline=_GRID)
                continue
            draw.rectangle(box, outline=_GRID)
            count = int(view.markers[r, c])
            if count:
                pad = cell // 5
                draw.ellipse((x0 + pad, y0 + pad, x0 + cell - pad, y0 + cell - pad), fill=_MARKER)
                if count > 1:
                    draw.text(
                        (x0 + cell / 2, y0 + cell / 2),
                        str(count),
                        fill=_MARKER_TEXT,
                        font=font,
                        anchor="mm",
                    )
    r, c, d = view.agent
    cx, cy, half = c * cell + cell / 2, top + r * cell + cell / 2, cell * 0.38
    # Triangle pointing North, then rotated by 90° per direction step (clockwise on screen).
    tip, left, right = (0.0, -half), (-half * 0.8, half * 0.8), (half * 0.8, half * 0.8)
    points = []
    for x, y in (tip, left, right):
        for _ in range(d):
            x, y = -y, x
        points.append((cx + x, cy + y))
    draw.polygon(points, fill=_AGENT, outline=(255, 255, 255))
    return image


def _frame_title(t: int, actions: Sequence[str] | None) -> str:
    if t == 0:
        return "start"
    return f"{t}: {actions[t - 1]}" if actions else f"step {t}"


def render_sheet(
    states: Sequence[Any],
    actions: Sequence[str] | None = None,
    cell: int = 24,
    columns: int = 6,
) -> PILImage.Image:
    """All frames of a trace tiled left to right, top to bottom, each titled with its step.

    Args:
        states: the state history, initial state first.
        actions: optional action names (``len(states) - 1``) used in the titles.
        cell: side of a cell in pixels.
        columns: frames per row of the sheet.
    """
    from PIL import Image

    if len(states) == 0:
        raise UserError("cannot draw an empty trace")
    frames = [
        render_image(s, cell=cell, title=_frame_title(t, actions)) for t, s in enumerate(states)
    ]
    gap = 6
    frame_w, frame_h = frames[0].size
    cols = max(1, min(columns, len(frames)))
    rows = (len(frames) + cols - 1) // cols
    sheet = Image.new(
        "RGB", (cols * frame_w + (cols - 1) * gap, rows * frame_h + (rows - 1) * gap), "white"
    )
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        sheet.paste(frame, (c * (frame_w + gap), r * (frame_h + gap)))
    return sheet


def save_png(state: Any, path: str | os.PathLike[str], cell: int = 32) -> Path:
    """Write the state as a PNG image (atomically); returns the path."""
    image = render_image(state, cell=cell)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def save_gif(
    states: Sequence[Any],
    path: str | os.PathLike[str],
    actions: Sequence[str] | None = None,
    cell: int = 32,
    frame_ms: int = 300,
) -> Path:
    """Write an execution trace as an animated GIF, one frame per state (atomically).

    Args:
        states: the state history, initial state first (one frame per executed action plus the
            initial frame).
        path: output file.
        actions: optional action names (``len(states) - 1``) used as frame titles.
        cell: side of a cell in pixels.
        frame_ms: display time of each frame in milliseconds (the last frame is held 4x).
    """
    if len(states) == 0:
        raise UserError("cannot write a GIF of an empty trace")
    frames = [
        render_image(state, cell=cell, title=_frame_title(t, actions))
        for t, state in enumerate(states)
    ]
    durations = [frame_ms] * len(frames)
    durations[-1] = frame_ms * 4
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=0,
        optimize=False,
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def write_trace(
    states: Sequence[Any],
    path: str | os.PathLike[str],
    fmt: str | None = None,
    actions: Sequence[str] | None = None,
) -> Path:
    """Write an execution trace as a GIF animation, a PNG sheet of frames or ASCII text.

    Args:
        states: the state history, initial state first (worlds or ``(H, W, 16)`` arrays).
        path: output file.
        fmt: ``"gif"``, ``"png"`` or ``"txt"``; ``None`` picks it from the file suffix.
        actions: optional action names used as frame titles.

    Raises:
        UserError: unknown format or suffix.
    """
    path = Path(path)
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind == "gif":
        return save_gif(states, path, actions=actions)
    if kind == "png":
        if len(states) == 1:
            return save_png(states[0], path)
        image = render_sheet(states, actions=actions)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        return path
    if kind in ("txt", "ascii"):
        with atomic_path(path) as tmp:
            tmp.write_text(render_ascii_trace(states, actions) + "\n")
        return path
    raise UserError(
        f"{path}: cannot tell the picture format; use a .gif, .png or .txt file or --render "
        "gif|png|txt"
    )
