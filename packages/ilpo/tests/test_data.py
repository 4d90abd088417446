from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compkit_utils.errors import UserError
from ilpo.data import MAX_TRANSITIONS, Transitions, load_transitions
from ilpo.data.hdf5 import HDF5_FILE, read_hdf5, write_demonstrations_hdf5
from ilpo.data.images import load_image_pairs, write_image_pair
from ilpo.data.text import format_line, list_text_files, parse_line, write_text_file


def _random_transitions(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, d)).astype(np.float32) * np.float32(3.0)
    s[::7] *= np.float32(1e-6)  # scientific notation in the text
    s2 = s + rng.normal(size=(n, d)).astype(np.float32)
    a = rng.integers(0, 3, size=n)
    return s, s2, a


def test_line_grammar_matches_the_original() -> None:
    line = format_line([0.0136, -0.023, 1e-05], [0.0132, -0.2175, 2.5], None)
    assert line == "[0.0136,-0.023,1e-05] [0.0132,-0.2175,2.5]\n"
    bc = format_line([0.5, 1.0], [0.25, -1.0], 1)
    assert bc == "[0.5,1.0] [1] [0.25,-1.0]\n"
    assert parse_line(bc) == ([0.5, 1.0], 1, [0.25, -1.0])
    # the original collapses accidental ",," and reads full-precision float64 text
    s, a, s2 = parse_line("[0.1,,0.2] [0.013600000366568565,-0.3]")
    assert s == [0.1, 0.2]
    assert a is None
    assert s2 == [0.013600000366568565, -0.3]


@pytest.mark.parametrize("with_actions", [False, True])
def test_text_round_trip_is_exact(tmp_path: Path, with_actions: bool) -> None:
    s, s2, a = _random_transitions(200, 6)
    write_text_file(tmp_path / "demo.txt", s, s2, a if with_actions else None)
    data = load_transitions(tmp_path)
    np.testing.assert_array_equal(data.states, s)
    np.testing.assert_array_equal(data.next_states, s2)
    assert data.states.dtype == np.float32
    if with_actions:
        assert data.actions is not None
        np.testing.assert_array_equal(data.actions, a)
        assert data.actions.dtype == np.int64
    else:
        assert data.actions is None


def test_episode_ids_are_inferred_from_continuity(tmp_path: Path) -> None:
    s = np.array([[0, 0], [1, 1], [2, 2], [9, 9], [10, 10]], dtype=np.float32)
    s2 = np.array([[1, 1], [2, 2], [3, 3], [10, 10], [11, 11]], dtype=np.float32)
    write_text_file(tmp_path / "x.txt", s, s2)
    data = load_transitions(tmp_path)
    assert data.episode_ids.tolist() == [0, 0, 0, 1, 1]
    assert data.num_episodes == 2


def test_files_are_read_in_numeric_order_and_only_txt(tmp_path: Path) -> None:
    for index in (10, 2, 1):
        s = np.full((1, 2), index, dtype=np.float32)
        write_text_file(tmp_path / f"{index}.txt", s, s + 1)
    (tmp_path / "notes.md").write_text("not a demonstration\n")
    assert [p.name for p in list_text_files(tmp_path)] == ["1.txt", "2.txt", "10.txt"]
    assert load_transitions(tmp_path).states[:, 0].tolist() == [1.0, 2.0, 10.0]


def test_at_most_50000_transitions_are_read(tmp_path: Path) -> None:
    n = MAX_TRANSITIONS + 25
    line = "[0.1,0.2] [0.3,0.4]\n"
    (tmp_path / "0.txt").write_text(line * 30_000)
    (tmp_path / "1.txt").write_text(line * (n - 30_000))
    assert MAX_TRANSITIONS == 50_000
    assert len(load_transitions(tmp_path)) == 50_000
    assert len(load_transitions(tmp_path, max_transitions=None)) == n
    assert len(load_transitions(tmp_path, max_transitions=7)) == 7


def test_hdf5_round_trip(tmp_path: Path) -> None:
    s, s2, a = _random_transitions(50, 4)
    episodes = np.repeat(np.arange(5), 10)
    terminated = np.zeros(50, dtype=bool)
    terminated[9::10] = True
    data = Transitions(s, s2, a, episodes, terminated, np.zeros(50, dtype=bool))
    write_demonstrations_hdf5(tmp_path / HDF5_FILE, data, env="CartPole-v1")
    back, env = read_hdf5(tmp_path / HDF5_FILE)
    assert env == "CartPole-v1"
    for key in ("states", "next_states", "actions", "episode_ids", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key))
    via_folder = load_transitions(tmp_path, kind="states")
    assert via_folder.actions is None
    assert len(via_folder) == 50
    assert load_transitions(tmp_path / HDF5_FILE, max_transitions=20).states.shape == (20, 4)


def test_image_pairs_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 128, 128, 3), dtype=np.uint8)
    actions = tmp_path / "separate_actions"
    actions.mkdir()
    for i in range(2):
        write_image_pair(tmp_path / "pairs" / f"{i}.png", frames[i], frames[i + 1])
        (actions / f"{i}.txt").write_text(f"[{i + 1}]\n")
    pairs = load_image_pairs(tmp_path / "pairs", actions_dir=actions)
    assert pairs.inputs.shape == (2, 3, 128, 128)
    assert pairs.inputs.dtype == np.float32
    expected = frames[:2].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(pairs.inputs, expected.transpose(0, 3, 1, 2), atol=1e-6)
    np.testing.assert_allclose(pairs.targets[0], expected[1].transpose(2, 0, 1), atol=1e-6)
    assert pairs.actions is not None
    assert pairs.actions.tolist() == [1, 2]


def test_text_loader_rejects_png_folders(tmp_path: Path) -> None:
    frame = np.zeros((128, 128, 3), dtype=np.uint8)
    write_image_pair(tmp_path / "0.png", frame, frame)
    with pytest.raises(UserError, match="image dataset"):
        load_transitions(tmp_path)
