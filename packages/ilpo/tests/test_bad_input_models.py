"""Bad input to the model commands: exit 2, one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from compkit_utils.testing import one_error_line, tree
from ilpo.cli import main
from ilpo.commands import random_transitions
from ilpo.data.text import write_text_file


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("setup")
    cart = random_transitions("CartPole-v1", 200, seed=0)
    acro = random_transitions("Acrobot-v1", 200, seed=0)
    write_text_file(root / "cart" / "0.txt", cart.states, cart.next_states)
    write_text_file(root / "cart_bc" / "0.txt", cart.states, cart.next_states, cart.actions)
    write_text_file(root / "acro" / "0.txt", acro.states, acro.next_states)
    runs = root / "runs"
    args = ["lpn", "--data", str(root / "cart"), "--runs-dir", str(runs), "--run-name", "lpn"]
    assert main([*args, "--epochs", "1", "--ngf", "8"]) == 0
    bc = ["bc", "--data", str(root / "cart_bc"), "--runs-dir", str(runs), "--run-name", "bc"]
    assert main([*bc, "--epochs", "1", "--eval-episodes", "1"]) == 0
    return {"root": root, "lpn": runs / "ilpo" / "lpn", "bc": runs / "ilpo" / "bc"}


def _fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]) -> str:
    capsys.readouterr()
    before = tree(tmp_path)
    assert main([*args, "--runs-dir", str(tmp_path / "runs")]) == 2
    message = one_error_line(capsys.readouterr().err, "ilpo")
    assert tree(tmp_path) == before, "a failed command left files behind"
    return message


def test_fewer_than_two_latents(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    message = _fails(
        capsys, tmp_path, ["lpn", "--data", str(setup["root"] / "cart"), "--latents", "1"]
    )
    assert "--latents" in message


def test_lpn_checkpoint_from_another_environment(
    capsys, tmp_path: Path, setup: dict[str, Path]
) -> None:
    message = _fails(capsys, tmp_path, ["arn", "--lpn", str(setup["lpn"]), "--env", "Acrobot-v1"])
    assert "trained on CartPole-v1, not Acrobot-v1" in message


def test_not_an_lpn_checkpoint(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    message = _fails(capsys, tmp_path, ["arn", "--lpn", str(setup["bc"] / "bc.pt")])
    assert "not an LPN checkpoint" in message


def test_corrupt_lpn_checkpoint(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "lpn.pt"
    bad.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in _fails(capsys, tmp_path, ["arn", "--lpn", str(bad)])


@pytest.mark.parametrize("command", ["lpn", "bc", "bco"])
def test_missing_dataset(capsys, tmp_path: Path, command: str) -> None:
    message = _fails(capsys, tmp_path, [command, "--data", str(tmp_path / "nope")])
    assert "nope" in message


@pytest.mark.parametrize("command", ["lpn", "bc", "bco"])
def test_data_is_required(capsys, tmp_path: Path, command: str) -> None:
    assert "--data is required" in _fails(capsys, tmp_path, [command])


def test_lpn_is_required(capsys, tmp_path: Path) -> None:
    assert "--lpn is required" in _fails(capsys, tmp_path, ["arn"])


def test_empty_dataset_folder(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path, ["lpn", "--data", str(tmp_path / "empty")])


def test_state_dimension_of_another_environment(
    capsys, tmp_path: Path, setup: dict[str, Path]
) -> None:
    message = _fails(
        capsys, tmp_path, ["lpn", "--data", str(setup["root"] / "acro"), "--env", "CartPole-v1"]
    )
    assert "CartPole-v1" in message


def test_bc_needs_actions(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    message = _fails(capsys, tmp_path, ["bc", "--data", str(setup["root"] / "cart")])
    assert "BC lines [s] [a] [s'] are expected" in message


def test_bc_file_given_to_lpn(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    _fails(capsys, tmp_path, ["lpn", "--data", str(setup["root"] / "cart_bc")])


def test_unknown_environment(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    _fails(capsys, tmp_path, ["arn", "--lpn", str(setup["lpn"]), "--env", "Pong-v9"])


def test_resume_without_a_run(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    message = _fails(capsys, tmp_path, ["lpn", "--data", str(setup["root"] / "cart"), "--resume"])
    assert "--resume" in message


def test_scaled_distance_needs_a_trained_lpn(capsys, tmp_path: Path) -> None:
    message = _fails(capsys, tmp_path, ["arn", "--smoke", "--label-distance", "scaled"])
    assert "--label-distance scaled" in message


def test_bad_epsilon(capsys, tmp_path: Path, setup: dict[str, Path]) -> None:
    assert "--epsilon" in _fails(
        capsys, tmp_path, ["arn", "--lpn", str(setup["lpn"]), "--epsilon", "1.5"]
    )
