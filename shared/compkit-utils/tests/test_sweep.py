"""compkit sweep on the local pool: grid × seeds, manifest, resume, failures, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compkit_utils.sweep import toy
from compkit_utils.sweep.cli import main
from compkit_utils.sweep.commands import resolve_command
from compkit_utils.sweep.grid import parse_grid, parse_seeds
from compkit_utils.testing import one_error_line, tree

TOY = "compkit_utils.sweep.toy:COMMANDS"


def sweep_dir(runs: Path, name: str = "train") -> Path:
    return runs / "compkit-toy" / "sweeps" / name


def manifest(runs: Path, name: str = "train") -> dict:
    return json.loads((sweep_dir(runs, name) / "sweep.json").read_text())


def direct_metrics(tmp_path: Path, *args: str) -> str:
    """metrics.jsonl of the same toy run made directly (no sweep)."""
    runs = tmp_path / "direct"
    assert toy.main(["train", *args, "--runs-dir", str(runs), "--run-name", "r"]) == 0
    return (runs / "compkit-toy" / "r" / "metrics.jsonl").read_text()


def test_grid_and_seeds_run_as_ordinary_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0-2", "--grid", "learning-rate=0.1,0.3"]
    argv += ["--workers", "2", "--threads-per-run", "1", "--runs-dir", str(runs)]
    assert main([*argv, "--", "--steps", "4"]) == 0
    assert "6 run(s) finished, 0 failed" in capsys.readouterr().out
    data = manifest(runs)
    assert data["package"] == "compkit-toy"
    assert data["command"] == ["train"]
    assert data["grid"] == {"learning-rate": ["0.1", "0.3"]}
    assert data["seeds"] == [0, 1, 2]
    assert "git_commit" in data
    assert len(data["runs"]) == 6
    for name, entry in data["runs"].items():
        assert entry["status"] == "finished", name
        run = sweep_dir(runs) / name
        lr, seed = entry["config"]["learning-rate"], str(entry["seed"])
        expected = direct_metrics(
            tmp_path / name, "--steps", "4", "--learning-rate", lr, "--seed", seed
        )
        assert (run / "metrics.jsonl").read_text() == expected
        log = (run / "stdout.log").read_text()
        assert "--threads 1" in log
        assert f"--seed {seed}" in log
        assert "done:" in log
        assert (run / "config.json").is_file()
    assert not (sweep_dir(runs) / "logs").exists()

    # The same sweep again: everything is done, nothing runs.
    mtimes = {p: p.stat().st_mtime_ns for p in sweep_dir(runs).rglob("metrics.jsonl")}
    assert main([*argv, "--", "--steps", "4"]) == 0
    assert "0 run(s) finished, 0 failed, 6 skipped" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in sweep_dir(runs).rglob("metrics.jsonl")}


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "3", "--runs-dir", str(runs), "--", "--steps", "6"]
    monkeypatch.setenv(toy.INTERRUPT_ENV, "2")  # the run stops after step 1's checkpoint
    assert main(argv) == 1
    entry = manifest(runs)["runs"]["seed=3"]
    assert entry["status"] == "running"
    run = sweep_dir(runs) / "seed=3"
    assert json.loads((run / "checkpoints" / "last.pt").read_text()) == {"step": 2}
    capsys.readouterr()

    monkeypatch.delenv(toy.INTERRUPT_ENV)
    assert main(argv) == 0
    entry = manifest(runs)["runs"]["seed=3"]
    assert entry["status"] == "finished"
    assert entry["resumed"] is True
    log = (run / "stdout.log").read_text()
    assert "--resume" in log
    assert "resuming seed=3 at step 2" in log
    assert (run / "metrics.jsonl").read_text() == direct_metrics(
        tmp_path, "--steps", "6", "--seed", "3"
    )


def test_failed_run_does_not_stop_the_others(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0-2", "--runs-dir", str(runs)]
    extra = ["--", "--steps", "4", "--fail-at", "2", "--fail-seed", "1"]
    assert main([*argv, *extra]) == 1
    out = capsys.readouterr().out
    assert "2 run(s) finished, 1 failed" in out
    assert "FAILED seed=1: RuntimeError: toy failure at step 2 (--fail-at)" in out
    data = manifest(runs)
    assert [data["runs"][f"seed={s}"]["status"] for s in range(3)] == [
        "finished",
        "failed",
        "finished",
    ]
    assert "toy failure at step 2" in data["runs"]["seed=1"]["error"]

    # Failed runs stay failed on a plain rerun; --retry-failed runs them again (resuming).
    assert main([*argv, *extra]) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert main([*argv, "--retry-failed", *extra]) == 1
    out = capsys.readouterr().out
    assert "0 run(s) finished, 1 failed, 2 skipped" in out
    assert manifest(runs)["runs"]["seed=1"]["resumed"] is True


def test_a_run_that_kills_its_worker_does_not_stop_the_others(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0-2", "--runs-dir", str(runs)]
    extra = ["--", "--steps", "3", "--fail-at", "1", "--fail-seed", "1", "--crash"]
    assert main([*argv, *extra]) == 1
    assert "FAILED seed=1: the worker process died" in capsys.readouterr().out
    statuses = {name: e["status"] for name, e in manifest(runs)["runs"].items()}
    assert statuses == {"seed=0": "finished", "seed=1": "failed", "seed=2": "finished"}


def test_run_failing_before_its_first_checkpoint_keeps_its_log(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(runs)]
    assert main([*argv, "--", "--fail-at", "0"]) == 1
    assert "FAILED seed=0" in capsys.readouterr().out
    assert not (sweep_dir(runs) / "seed=0").exists()  # the command removed its run dir
    log = sweep_dir(runs) / "logs" / "seed=0.log"
    assert "toy failure at step 0" in log.read_text()
    assert str(log) in manifest(runs)["runs"]["seed=0"]["error"]


def test_retry_of_a_run_without_checkpoint_starts_it_anew(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(runs), "--retry-failed"]
    assert main([*argv, "--", "--fail-at", "0", "--fail-seed", "0"]) == 1
    # Same sweep identity is required: the failing flag is part of it, so retry fails again.
    assert main([*argv, "--", "--fail-at", "0", "--fail-seed", "0"]) == 1
    assert manifest(runs)["runs"]["seed=0"]["resumed"] is False
    assert "toy failure" in (sweep_dir(runs) / "logs" / "seed=0.log").read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["sweep", "no-such-package", "train", "--seeds", "0"],
            "unknown package 'no-such-package'",
        ),
        (["sweep", TOY, "evaluate", "--seeds", "0"], "unknown command 'evaluate'"),
        (["sweep", TOY, "train", "--seeds", "5-3"], "--seeds: the range '5-3' is empty"),
        (["sweep", TOY, "train", "--seeds", "a"], "--seeds: cannot read 'a'"),
        (
            ["sweep", TOY, "train", "--seeds", "0", "--grid", "lr=1,2"],
            "--grid key 'lr' is not an option of compkit-toy train; valid: steps, learning-rate",
        ),
        (["sweep", TOY, "train", "--seeds", "0", "--grid", "seed=1,2"], "set by the sweep"),
        (["sweep", TOY, "train", "--seeds", "0", "--grid", "steps="], "has no values"),
        (["sweep", TOY, "train", "--seeds", "0", "--", "--bogus", "1"], "--bogus is not an option"),
        (["sweep", TOY, "train", "--seeds", "0", "--", "--seed", "1"], "set by the sweep"),
        (["sweep", TOY, "train", "--seeds", "0", "--workers", "0"], "--workers must be at least 1"),
        (["sweep", TOY, "train", "--seeds", "0", "--address", "auto"], "--address needs --backend"),
        (["sweep", TOY, "train", "--seeds", "0", "--name", "a/b"], "--name 'a/b'"),
    ],
)
def test_bad_input_exits_2_before_anything_starts(tmp_path, capsys, argv, message):
    assert main([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert message in one_error_line(capsys.readouterr().err, "compkit")
    assert tree(tmp_path) == set()


def test_unwritable_runs_dir_is_one_line(tmp_path, capsys):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("not a directory")
    argv = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(in_the_way / "runs")]
    assert main(argv) == 2
    assert str(in_the_way) in one_error_line(capsys.readouterr().err, "compkit")
    assert tree(tmp_path) == {"file"}


def test_a_different_grid_under_the_same_name_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(runs)]
    assert main([*base, "--grid", "steps=2"]) == 0
    before = {p: p.read_bytes() for p in sweep_dir(runs).rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*base, "--grid", "steps=2,3"]) == 2
    err = one_error_line(capsys.readouterr().err, "compkit")
    assert "holds a sweep with a different grid" in err
    assert "--name" in err
    assert before == {p: p.read_bytes() for p in sweep_dir(runs).rglob("*") if p.is_file()}
    # More seeds of the same grid are fine.
    assert main([*base[:4], "0-1", *base[5:], "--grid", "steps=2"]) == 0
    assert manifest(runs)["seeds"] == [0, 1]


def test_grid_keys_map_to_the_commands_flags():
    spec = resolve_command(TOY, ["train"])
    assert parse_grid(["learning_rate=0.1", "--steps=2,3"], spec) == {
        "learning-rate": ["0.1"],
        "steps": ["2", "3"],
    }
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]


def test_help_imports_neither_torch_nor_ray():
    code = (
        "import sys\n"
        "from compkit_utils.sweep.cli import main\n"
        "for argv in (['--help'], ['sweep', '--help'], ['report', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--threads-per-run" in result.stdout


def test_workers_end_when_the_sweep_process_is_killed(tmp_path):
    """SIGKILL of the driver (no chance to clean up) must not leave pool workers running."""
    import os
    import signal
    import time

    runs = tmp_path / "runs"
    argv = ["sweep", TOY, "train", "--seeds", "0-1", "--workers", "2", "--runs-dir", str(runs)]
    argv += ["--", "--steps", "1000", "--work-s", "0.05"]
    code = f"from compkit_utils.sweep.cli import main; main({argv!r})"
    driver = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not list(runs.glob("compkit-toy/sweeps/train/seed=*/metrics.jsonl")):
            assert time.monotonic() < deadline, "the runs never started"
            time.sleep(0.2)
        workers = subprocess.run(
            ["pgrep", "-P", str(driver.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert workers
    finally:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + 15
    alive = [int(pid) for pid in workers]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "pool workers outlived the killed sweep"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose: it no longer runs.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_command_flags_from_many_threads_at_once() -> None:
    """Sweeps may be prepared from several threads; tyro's caches are not thread-safe."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    from compkit_utils.sweep.commands import command_flags

    def fresh_config(i: int) -> type:  # a new class each time: tyro's caches start cold
        fields = [(f"field_{i}_{j}", int, dataclasses.field(default=j)) for j in range(30)]
        return dataclasses.make_dataclass(f"Config{i}", fields)

    # Without the lock about one round in five raised KeyError inside tyro (measured).
    for _ in range(5):
        classes = [fresh_config(i) for i in range(16)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(command_flags, classes))
        for i, flags in enumerate(results):
            assert flags == tuple(f"field-{i}-{j}" for j in range(30))


def test_outcome_raise_if_failed_names_the_first_failed_run(tmp_path):
    from compkit_utils.errors import UserError
    from compkit_utils.sweep.core import SweepOutcome
    from compkit_utils.sweep.worker import RunResult

    ok = RunResult("seed=0", 0, None, 1.0, "h", {})
    bad = RunResult("seed=1", 1, "ValueError: boom", 1.0, "h", {})
    SweepOutcome(tmp_path, [ok], [], 1.0, 1).raise_if_failed("train")  # nothing failed
    with pytest.raises(UserError) as info:
        SweepOutcome(tmp_path, [ok, bad, bad], ["seed=2"], 2.0, 1).raise_if_failed("train")
    message = str(info.value)
    assert "\n" not in message
    assert message == f"2 train run(s) failed, e.g. seed=1: ValueError: boom; see {tmp_path}"


def test_a_pool_that_breaks_before_a_submission_keeps_the_run(monkeypatch):
    """A worker that dies between two submissions: ``submit`` raises BrokenProcessPool.

    The run being submitted is not lost and not failed: it runs on the rebuilt pool.
    """
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from compkit_utils.sweep import local
    from compkit_utils.sweep.worker import RunResult, RunTask

    pools = []

    class FakePool:
        def __init__(self, **kwargs) -> None:
            self.number = len(pools)
            self.submitted = 0
            pools.append(self)

        def submit(self, fn, task):
            self.submitted += 1
            if self.number == 0 and self.submitted == 2:
                raise BrokenProcessPool("a worker died")
            future: Future = Future()
            if self.number == 0:  # the run in flight when the pool broke
                future.set_exception(BrokenProcessPool("a worker died"))
            else:
                future.set_result(RunResult(task.name, 0, None, 0.0, "host", {}))
            return future

        def shutdown(self, wait: bool, cancel_futures: bool) -> None:
            pass

    monkeypatch.setattr(local, "ProcessPoolExecutor", FakePool)
    tasks = [RunTask(f"seed={i}", "m", [], "p", 1) for i in range(3)]  # type: ignore[arg-type]
    results = list(local.run_local(tasks, workers=2, threads=1, module="m"))
    assert {r.name: r.returncode for r in results} == {
        "seed=0": 1,  # in flight on the broken pool: reported failed
        "seed=1": 0,  # its submission raised: kept, run on the new pool
        "seed=2": 0,
    }
    assert len(results) == 3
    assert len(pools) == 2
