"""Bad demonstrations and bad expert/collect input: exit 2, one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compkit_utils.testing import one_error_line, tree
from ilpo.cli import main
from ilpo.data.hdf5 import HDF5_FILE, write_demonstrations_hdf5
from ilpo.data.images import write_image_pair
from ilpo.data.text import write_text_file
from ilpo.data.transitions import Transitions

GOOD = "[0.1,0.2,0.3,0.4] [0.2,0.3,0.4,0.5]\n"
GOOD_BC = "[0.1,0.2,0.3,0.4] [1] [0.2,0.3,0.4,0.5]\n"


def _fails(capsys, tmp_path: Path, args: list[str]) -> str:
    before = tree(tmp_path)
    assert main(args) == 2
    message = one_error_line(capsys.readouterr().err, "ilpo")
    assert tree(tmp_path) == before, "a failed command left files behind"
    return message


def _inspect(capsys, tmp_path: Path, data: Path, *extra: str) -> str:
    return _fails(capsys, tmp_path, ["inspect", "--data", str(data), *extra])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[0.1,0.2,0.3,0.4]\n", "expected 2 bracketed groups"),
        ("[0.1,0.2,0.3,0.4]  [0.2,0.3,0.4,0.5]\n", "expected a bracketed list"),
        ("[0.1,0.2,abc,0.4] [0.2,0.3,0.4,0.5]\n", "could not convert string to float"),
        ("0.1,0.2,0.3,0.4 [0.2,0.3,0.4,0.5]\n", "expected a bracketed list"),
        ("[0.1,0.2,0.3,0.4] []\n", "empty list"),
        ("[0.1,0.2,nan,0.4] [0.2,0.3,0.4,0.5]\n", "non-finite value"),
        ("[0.1,0.2,0.3,0.4] [0.5] [0.2,0.3,0.4,0.5]\n", "must be one integer"),
        ("[0.1,0.2,0.3] [0.2,0.3,0.4]\n", "states have 3 and 3 entries, but earlier lines have 4"),
    ],
)
def test_malformed_line_names_file_and_line(capsys, tmp_path: Path, line: str, reason: str) -> None:
    data = tmp_path / "demos"
    data.mkdir()
    (data / "0.txt").write_text(GOOD * 2)
    (data / "1.txt").write_text(GOOD + line)
    message = _inspect(capsys, tmp_path, data)
    assert message.startswith(f"{data / '1.txt'}:2: ")
    assert reason in message


def test_bc_file_where_state_only_is_expected(capsys, tmp_path: Path) -> None:
    (tmp_path / "0.txt").write_text(GOOD_BC)
    message = _inspect(capsys, tmp_path, tmp_path, "--kind", "states")
    assert message.startswith(f"{tmp_path / '0.txt'}:1: a BC line [s] [a] [s'] where state-only")


def test_state_only_file_where_bc_is_expected(capsys, tmp_path: Path) -> None:
    (tmp_path / "0.txt").write_text(GOOD)
    message = _inspect(capsys, tmp_path, tmp_path, "--kind", "bc")
    assert "a state-only line [s] [s'] where BC lines" in message


def test_mixed_forms_in_one_dataset(capsys, tmp_path: Path) -> None:
    (tmp_path / "0.txt").write_text(GOOD + GOOD_BC)
    assert "a BC line" in _inspect(capsys, tmp_path, tmp_path)


def test_state_dims_not_matching_the_env(capsys, tmp_path: Path) -> None:
    (tmp_path / "0.txt").write_text(GOOD)
    message = _inspect(capsys, tmp_path, tmp_path, "--env", "Acrobot-v1")
    assert message == (
        f"{tmp_path}: states have 4 entries but Acrobot-v1 observations have 6; pass "
        "demonstrations recorded on Acrobot-v1"
    )


def test_actions_out_of_the_env_range(capsys, tmp_path: Path) -> None:
    (tmp_path / "0.txt").write_text(GOOD.replace("] [", "] [5] [", 1))
    assert "action 5 is not one of CartPole-v1's 2 actions" in _inspect(
        capsys, tmp_path, tmp_path, "--env", "CartPole-v1"
    )


def test_hdf5_from_another_env(capsys, tmp_path: Path) -> None:
    s = np.zeros((3, 4), dtype=np.float32)
    data = Transitions(s, s + 1, np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    write_demonstrations_hdf5(tmp_path / HDF5_FILE, data, env="CartPole-v1")
    message = _inspect(capsys, tmp_path, tmp_path, "--env", "MountainCar-v0")
    assert "recorded on CartPole-v1, not MountainCar-v0" in message


def test_corrupt_hdf5(capsys, tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    assert "not a readable HDF5 file" in _inspect(capsys, tmp_path, tmp_path / "x.h5")


def test_empty_and_missing_dataset_folders(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("only *.txt files count\n")
    assert "no *.txt demonstration files" in _inspect(capsys, tmp_path, empty)
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "0.txt").write_text("\n\n")
    assert "hold no transitions" in _inspect(capsys, tmp_path, blank)
    missing = _inspect(capsys, tmp_path, tmp_path / "nope")
    assert "not found" in missing


def test_png_of_the_wrong_size(capsys, tmp_path: Path) -> None:
    from PIL import Image

    frame = np.zeros((128, 128, 3), dtype=np.uint8)
    write_image_pair(tmp_path / "0.png", frame, frame)
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(tmp_path / "1.png")
    message = _inspect(capsys, tmp_path, tmp_path)
    assert message.startswith(f"{tmp_path / '1.png'}: is 128×64 (W×H) but a frame pair must be")


def test_unknown_env(capsys, tmp_path: Path) -> None:
    before = tree(tmp_path)
    assert main(["expert", "--env", "Pong-v5", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "Pong-v5" in capsys.readouterr().err
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["collect"], "pass --expert PATH"),
        (["collect", "--expert", "nowhere"], "--expert nowhere: not found"),
        (["collect", "--expert", ".", "--greedy-prob", "1.5"], "--greedy-prob must be"),
        (["collect", "--expert", ".", "--transitions", "0"], "--transitions must be at least 1"),
        (["expert", "--eval-episodes", "0"], "--eval-episodes must be at least 1"),
        (["expert", "--timesteps", "0"], "--timesteps must be at least 1"),
    ],
)
def test_bad_options(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert message in _fails(capsys, tmp_path, [*args, *runs])


def test_collect_from_a_folder_that_is_not_an_expert(capsys, tmp_path: Path) -> None:
    not_expert = tmp_path / "x"
    not_expert.mkdir()
    write_text_file(not_expert / "0.txt", np.zeros((1, 4)), np.ones((1, 4)))
    args = ["collect", "--expert", str(not_expert), "--runs-dir", str(tmp_path / "runs")]
    assert "is not an expert" in _fails(capsys, tmp_path, args)


def test_collect_that_fails_while_writing_leaves_nothing(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smoke_expert: Path
) -> None:
    import errno

    import ilpo.data.hdf5

    capsys.readouterr()

    def full_disk(path, *_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ilpo.data.hdf5, "write_demonstrations_hdf5", full_disk)
    collect = ["collect", "--expert", str(smoke_expert), "--transitions", "50"]
    message = _fails(capsys, tmp_path, [*collect, "--runs-dir", str(tmp_path / "runs")])
    assert message.startswith("cannot write ")
    assert "No space left on device" in message
