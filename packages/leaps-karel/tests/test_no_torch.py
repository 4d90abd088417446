"""The engine without PyTorch: import, engine commands and search work; learning commands stop.

Torch is hidden from fresh interpreters with `compkit_utils.testing.hidden_modules_env` (an
import hook that makes ``import torch`` fail as in an install without the ``learn`` extra).
The nox session ``engine-without-torch`` checks the same in a venv that really lacks torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compkit_utils.testing import hidden_modules_env, one_error_line, tree
from leaps_karel.cli import main
from leaps_karel.learn import commands
from leaps_karel.learn.commands import LEARN

TORCH_COMMANDS = sorted(name for name, cmd in LEARN.items() if cmd.needs_torch)
ENGINE_COMMANDS = [
    ["tasks"],
    ["evaluate", "--task", "harvester", "--program", "DEF run m( pickMarker move m)"],
    ["generate-dataset", "--smoke"],
    ["search", "--smoke"],
    ["search", "--help"],
]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = hidden_modules_env(tmp_path / "site")
    env["RUNS_DIR"] = str(tmp_path / "runs")
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_import_without_torch(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torch') is None\n"
        "import leaps_karel, leaps_karel.cli, leaps_karel.envs, leaps_karel.learn.search\n"
        "from leaps_karel.learn.commands import torch_available\n"
        "assert not torch_available()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    result = _run(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("args", ENGINE_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_engine_commands_without_torch(tmp_path: Path, args: list[str]) -> None:
    result = _run(tmp_path, "-m", "leaps_karel.cli", *args)
    assert result.returncode == 0, result.stderr
    if args[0] == "search" and "--smoke" in args:
        (run,) = (tmp_path / "runs" / "leaps-karel").iterdir()
        assert json.loads((run / "results.json").read_text())["method"] == "hill_climbing"


def test_every_learning_command_but_search_needs_torch() -> None:
    assert "search" in LEARN
    assert not LEARN["search"].needs_torch
    assert TORCH_COMMANDS, "the registry lists no learning command that needs torch"


@pytest.mark.parametrize("name", TORCH_COMMANDS)
def test_learning_commands_without_torch_exit_2_with_the_install_line(
    tmp_path: Path, name: str
) -> None:
    result = _run(tmp_path, "-m", "leaps_karel.cli", name, "--smoke")
    assert result.returncode == 2, result.stderr
    message = one_error_line(result.stderr, "leaps-karel")
    assert f"`leaps-karel {name}` needs PyTorch" in message
    assert "uv sync --extra learn --package leaps-karel" in message
    assert tree(tmp_path / "runs") == set()


@pytest.mark.parametrize("name", TORCH_COMMANDS)
def test_learning_command_stops_in_process_when_torch_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(commands, "torch_available", lambda: False)
    assert main([name, "--smoke", "--runs-dir", str(tmp_path / "runs")]) == 2
    message = one_error_line(capsys.readouterr().err, "leaps-karel")
    assert "--extra learn --package leaps-karel" in message
    assert tree(tmp_path) == set()
