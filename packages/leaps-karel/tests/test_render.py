from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from compkit_utils.errors import UserError
from leaps_karel import render
from leaps_karel.cli import main
from leaps_karel.interpreter import execute, replay
from leaps_karel.world import ACTION_NAMES, World

GRID = ["######", "#..3.#", "#.#..#", "#1...#", "######"]
PROGRAM = "DEF run m( move turnRight move putMarker move m)"


def world(direction: int = 1) -> World:
    return World.from_text(GRID, (3, 2, direction))


def test_ascii_of_a_world_and_its_tensor() -> None:
    expected = "\n".join(
        [
            "######",
            "#..3.#",
            "#.#..#",
            "#1>..#",
            "######",
            "agent (3, 2) facing East, 0 markers under it",
        ]
    )
    assert render.render_ascii(world()) == expected
    assert render.render_ascii(world().to_tensor()) == expected
    assert render.render_ascii(world(), caption=False) == "\n".join(expected.splitlines()[:-1])
    assert render.render_ascii(world(3)).splitlines()[3] == "#1<..#"


def test_ascii_marks_ten_markers_and_markers_under_the_agent() -> None:
    w = World.from_text(["#####", "#M.9#", "#####"], (1, 3, 0))
    text = render.render_ascii(w)
    assert text.splitlines()[1] == "#M.^#"
    assert text.endswith("9 markers under it")


def test_grid_view_accepts_states_without_channel_5() -> None:
    state = world().to_tensor()
    state[:, :, 5] = False  # some task generators never set it (spec §2)
    view = render.grid_view(state)
    assert view.markers[1, 3] == 3
    assert view.markers[2, 2] == 0
    assert view.agent == (3, 2, 1)
    with pytest.raises(UserError, match="expected"):
        render.grid_view(np.zeros((4, 4, 15), dtype=bool))
    with pytest.raises(UserError, match="0 agents"):
        render.grid_view(np.zeros((4, 4, 16), dtype=bool))


def test_ascii_trace_has_a_titled_frame_per_state() -> None:
    result = execute(PROGRAM, world())
    states = replay(world(), result.actions)
    names = [ACTION_NAMES[a] for a in result.actions]
    text = render.render_ascii_trace(states, names)
    frames = text.split("\n\n")
    assert len(frames) == len(states) == 6
    assert frames[0].startswith("step 0\n")
    assert frames[2].startswith("step 2: turnRight\n")
    assert frames[-1].splitlines()[1:] == render.render_ascii(states[-1]).splitlines()


def _pixels(image: Image.Image, cell: int, r: int, c: int) -> np.ndarray:
    array = np.asarray(image.convert("RGB"))
    return array[r * cell + 2 : (r + 1) * cell - 1, c * cell + 2 : (c + 1) * cell - 1]


def _agent_mask(image: Image.Image, cell: int, r: int, c: int) -> np.ndarray:
    block = _pixels(image, cell, r, c).astype(int)
    return np.abs(block - np.array(render._AGENT)).sum(axis=-1) < 30


def test_png_draws_walls_markers_and_the_agent(tmp_path: Path) -> None:
    cell = 20
    image = render.render_image(world(), cell=cell)
    assert image.size == (6 * cell + 1, 5 * cell + 1)
    wall = _pixels(image, cell, 2, 2)
    assert (wall == render._WALL).all()
    empty = _pixels(image, cell, 1, 1)
    assert (empty == render._BACKGROUND).all()
    marker = _pixels(image, cell, 3, 1)
    assert (marker == render._MARKER).all(axis=-1).mean() > 0.3
    assert _agent_mask(image, cell, 3, 2).mean() > 0.2
    path = render.save_png(world(), tmp_path / "world.png", cell=cell)
    with Image.open(path) as loaded:
        assert loaded.format == "PNG"
        assert loaded.size == image.size


@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_agent_triangle_points_in_its_direction(direction: int) -> None:
    cell = 40
    image = render.render_image(world(direction), cell=cell)
    mask = _agent_mask(image, cell, 3, 2)
    rows, cols = np.nonzero(mask)
    centre = (mask.shape[0] - 1) / 2
    # The triangle's area lies towards its base, i.e. away from the tip.
    dy, dx = rows.mean() - centre, cols.mean() - centre
    away = {0: (1, 0), 1: (0, -1), 2: (-1, 0), 3: (0, 1)}[direction]
    assert dy * away[0] + dx * away[1] > 1.0
    assert abs(dy * away[1] + dx * away[0]) < 1.0


def test_gif_has_a_frame_per_state(tmp_path: Path) -> None:
    result = execute(PROGRAM, world())
    states = replay(world(), result.actions)
    path = render.save_gif(states, tmp_path / "trace.gif", frame_ms=100)
    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.info["duration"] == 100
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
        assert durations == [100] * (len(states) - 1) + [400]
    with pytest.raises(UserError, match="empty"):
        render.save_gif([], tmp_path / "empty.gif")


def test_write_trace_formats(tmp_path: Path) -> None:
    states = replay(world(), execute(PROGRAM, world()).actions)
    sheet = render.write_trace(states, tmp_path / "t.png")
    with Image.open(sheet) as image:
        single = render.render_image(states[0], cell=24, title="start")
        assert image.size[0] == 6 * single.size[0] + 5 * 6
    text = render.write_trace(states, tmp_path / "t.out", fmt="txt").read_text()
    assert text.count("agent (") == len(states)
    assert render.write_trace(states[:1], tmp_path / "one.png").is_file()
    with pytest.raises(UserError, match=r"\.bmp"):
        render.write_trace(states, tmp_path / "t.bmp")


def test_run_command_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world_file = tmp_path / "world.json"
    world_file.write_text('{"grid": ' + str(GRID).replace("'", '"') + ', "agent": [3, 2, 1]}')
    out = tmp_path / "run.gif"
    args = ["run", "--program", PROGRAM, "--world", str(world_file)]
    assert main([*args, "--render", "gif", "--render-out", str(out)]) == 0
    with Image.open(out) as gif:
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == 6
    assert main([*args, "--render-out", str(tmp_path / "run.png")]) == 0
    assert (tmp_path / "run.png").is_file()
    capsys.readouterr()
    assert main([*args, "--render", "png"]) == 2
    assert "--render-out" in capsys.readouterr().err
