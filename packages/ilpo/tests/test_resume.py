"""``--resume`` of ``ilpo arn``, ``bc`` and ``bco``: an interrupted (Ctrl-C) or crashed run
continues from its last checkpoint to the same final metrics as an uninterrupted seeded run."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from compkit_utils.testing import default_sigint, one_error_line
from ilpo.cli import main

ARN = ["arn", "--smoke", "--steps", "90", "--eval-every", "20", "--heldout-episodes", "2"]
BC = ["bc", "--smoke", "--epochs", "6", "--eval-episodes", "3"]
BCO = ["bco", "--smoke", "--steps", "150", "--steps-per-iter", "50", "--heldout-episodes", "2"]


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Ctrl-C raises here even when the runner inherited SIGINT ignored (`cmd &` in a script)."""
    with default_sigint():
        yield


def _outcome(run: Path) -> dict[str, Any]:
    """result.json without the wall time, the metric records without their wall times."""
    result = json.loads((run / "result.json").read_text())
    result.pop("seconds", None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        for key in ("time", "wall", "elapsed_s", "timestamp"):
            record.pop(key, None)
    return {"result": result, "metrics": records}


def _interrupt_after(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, calls: int, how: str
) -> None:
    """Make the ``calls``-th call of ``module.name`` send Ctrl-C (SIGINT) or crash."""
    original: Callable[..., Any] = getattr(module, name)
    count = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] == calls:
            if how == "sigint":
                signal.raise_signal(signal.SIGINT)  # Ctrl-C, delivered to this (main) thread
            else:
                raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _check_resume(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    patch: tuple[Any, str, int],
    how: str,
) -> None:
    runs = ["--runs-dir", str(tmp_path)]
    assert main([*argv, *runs, "--run-name", "full"]) == 0
    with monkeypatch.context() as m:
        _interrupt_after(m, *patch, how)
        if how == "sigint":
            assert main([*argv, *runs, "--run-name", "cut"]) == 130
        else:
            with pytest.raises(RuntimeError, match="simulated crash"):
                main([*argv, *runs, "--run-name", "cut"])
    cut = tmp_path / "ilpo" / "cut"
    assert (cut / "checkpoints" / "last.pt").is_file()
    assert not (cut / "result.json").exists()
    assert main([*argv, *runs, "--run-name", "cut", "--resume"]) == 0
    assert _outcome(cut) == _outcome(tmp_path / "ilpo" / "full")


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_arn_resume_matches_an_uninterrupted_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    import ilpo.online

    calls = 47 if how == "sigint" else 66  # mid-run, between evaluation points
    _check_resume(monkeypatch, tmp_path, ARN, (ilpo.online, "label_vector", calls), how)


@pytest.fixture(params=["auto", "torch"])
def mlp_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The BC/BCO training steps in the native kernel (where it builds) or as PyTorch ops."""
    from ilpo import mlp_native

    mlp_native.set_backend(request.param)
    yield request.param
    mlp_native.set_backend("auto")


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_bc_resume_matches_an_uninterrupted_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str, mlp_backend: str
) -> None:
    import ilpo.baselines

    # one train_steps call per epoch: stop in epoch 4 (it finishes, then the run stops)
    _check_resume(monkeypatch, tmp_path, BC, (ilpo.baselines, "train_steps", 4), how)


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_bco_resume_matches_an_uninterrupted_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str, mlp_backend: str
) -> None:
    import ilpo.baselines

    # IDM then policy per iteration: stop in the second iteration's IDM training
    _check_resume(monkeypatch, tmp_path, BCO, (ilpo.baselines, "train_steps", 3), how)


def test_resume_with_other_settings_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ilpo.online

    runs = ["--runs-dir", str(tmp_path), "--run-name", "cut"]
    with monkeypatch.context() as m:
        _interrupt_after(m, ilpo.online, "label_vector", 30, "sigint")
        assert main([*ARN, *runs]) == 130
    capsys.readouterr()
    assert main([*ARN, *runs, "--resume", "--epsilon", "0.5"]) == 2
    assert "epsilon" in one_error_line(capsys.readouterr().err, "ilpo")


def test_experiment_rerun_with_other_env_or_preset_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compkit_utils.checkpoints import FORMAT_VERSION, save_checkpoint

    run = tmp_path / "ilpo" / "x"
    config = {"env": "CartPole-v1", "preset": "quick", "seed": 0, "smoke": False}
    state = {"format_version": FORMAT_VERSION, "step": 1, "config": config, "extra": {}}
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    (run / "config.json").write_text(json.dumps(config))
    before = sorted(p.name for p in run.rglob("*"))
    for args in (["--env", "Acrobot-v1"], ["--preset", "faithful"]):
        argv = ["experiment", "--runs-dir", str(tmp_path), "--run-name", "x", *args]
        assert main(argv) == 2
        message = one_error_line(capsys.readouterr().err, "ilpo")
        assert args[0].lstrip("-") in message
        assert sorted(p.name for p in run.rglob("*")) == before


def test_vector_commands_default_to_one_thread_and_images_to_the_idle_cores() -> None:
    from ilpo.commands import vector_threads

    assert vector_threads(None, image=False) == 1
    assert vector_threads(None, image=True) is None
    assert vector_threads(3, image=False) == 3
    assert vector_threads(2, image=True) == 2
