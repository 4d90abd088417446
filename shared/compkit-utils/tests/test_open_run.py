from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from compkit_utils.errors import UserError
from compkit_utils.runs import (
    RUN_PARENT_ENV,
    check_run_name,
    make_run_dir,
    open_run,
    resume_run_dir,
    run_root,
    save_on_interrupt,
)


@pytest.fixture(autouse=True)
def _no_run_parent(monkeypatch) -> None:
    monkeypatch.delenv(RUN_PARENT_ENV, raising=False)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "--run-name must not be empty"),
        ("a/b", "--run-name 'a/b' must be a plain name without path separators"),
        ("../../escape", "must be a plain name without path separators"),
        ("a\\b", "must be a plain name without path separators"),
        ("..", "--run-name '..' must not start with '.'"),
        (".", "must not start with '.'"),
        (".hidden", "must not start with '.'"),
        ("a\0b", "must be a plain name"),
    ],
)
def test_check_run_name_rejects(name: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        check_run_name(name)
    assert message in str(info.value)
    assert str(info.value).startswith("--run-name")


def test_check_run_name_accepts_plain_names() -> None:
    for name in ("train__0__20260101-000000", "baseline.v2", "a..b", "x-1"):
        assert check_run_name(name) == name


def test_open_run_creates_a_fresh_directory_with_default_names(tmp_path: Path) -> None:
    with open_run("pkg", "train", seed=3, runs_dir=tmp_path) as first:
        assert first.path.parent == tmp_path / "pkg"
        assert first.path.name.startswith("train__3__")
        assert first.resumed is False
        assert (first.path / ".lock").is_file()
        with open_run("pkg", "train", seed=3, runs_dir=tmp_path) as second:
            assert second.path != first.path  # same second: a suffix keeps them apart
            (second.path / "checkpoints").mkdir()
            second.last_checkpoint.write_bytes(b"x")
    assert first.path.is_dir()  # a finished run stays
    assert not (first.path / ".lock").exists()  # the lock file goes with the lock


def test_existing_run_name_needs_resume(tmp_path: Path) -> None:
    with open_run("pkg", "train", seed=0, runs_dir=tmp_path, run_name="r") as run:
        (run.path / "config.json").write_text("{}")
    with (
        pytest.raises(UserError, match=r"^run .*pkg/r already exists; pass --resume .* --run-name"),
        open_run("pkg", "train", seed=0, runs_dir=tmp_path, run_name="r"),
    ):
        pass
    assert (run.path / "config.json").read_text() == "{}"  # untouched
    with (
        pytest.raises(UserError, match="must be a plain name"),
        open_run("pkg", "train", seed=0, runs_dir=tmp_path, run_name="../../escape"),
    ):
        pass


def _fail_inside(exc: BaseException, body=None, **kwargs) -> Path:
    """Open a run, let ``body(run)`` work in it, then raise ``exc``; return the run path."""
    seen: list[Path] = []

    def run_and_fail() -> None:
        with open_run("pkg", "train", seed=0, **kwargs) as run:
            seen.append(run.path)
            if body is not None:
                body(run)
            raise exc

    with pytest.raises(type(exc)):
        run_and_fail()
    return seen[0]


def _write_files(run) -> None:
    (run.path / "config.json").write_text("{}")
    (run.path / "metrics.jsonl").write_text("")


def _write_checkpoint(run) -> None:
    run.last_checkpoint.parent.mkdir(exist_ok=True)
    run.last_checkpoint.write_bytes(b"state")


def test_failure_removes_the_new_run_and_the_folders_it_made(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "runs"
    for exc in (RuntimeError("boom"), KeyboardInterrupt(), UserError("bad")):
        path = _fail_inside(exc, _write_files, runs_dir=root)
        assert not path.exists()
        assert list(tmp_path.iterdir()) == []  # deep/runs/pkg made by the call: gone too


def test_failure_keeps_folders_that_existed(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "other").mkdir(parents=True)
    _fail_inside(RuntimeError(), runs_dir=tmp_path)
    assert [p.name for p in (tmp_path / "pkg").iterdir()] == ["other"]


def test_failure_after_a_checkpoint_keeps_the_run(tmp_path: Path) -> None:
    path = _fail_inside(KeyboardInterrupt(), _write_checkpoint, runs_dir=tmp_path)
    assert (path / "checkpoints" / "last.pt").read_bytes() == b"state"


def test_resume_finds_the_run_and_never_removes_it(tmp_path: Path) -> None:
    with open_run("pkg", "train", seed=0, runs_dir=tmp_path) as run:
        _write_checkpoint(run)
    with open_run("pkg", "train", seed=0, runs_dir=tmp_path, resume=True) as again:  # newest
        assert again.path == run.path
        assert again.resumed is True
    # Even without a checkpoint left, a resumed run is not this call's to delete.
    _fail_inside(
        RuntimeError(),
        lambda r: r.last_checkpoint.unlink(),
        runs_dir=tmp_path,
        run_name=run.path.name,
        resume=True,
    )
    assert run.path.is_dir()
    with pytest.raises(UserError, match=r"--resume: .*nope/checkpoints/last\.pt not found"):
        _fail_inside(RuntimeError(), runs_dir=tmp_path, run_name="nope", resume=True)
    assert not (tmp_path / "pkg" / "nope").exists()


SECOND_PROCESS = textwrap.dedent(
    """
    import sys
    from compkit_utils.errors import UserError
    from compkit_utils.runs import open_run
    try:
        with open_run("pkg", "train", seed=0, runs_dir=sys.argv[1], run_name="r", resume=True):
            print("entered")
    except UserError as exc:
        print(f"error: {exc}")
    """
)


def _second_process(runs_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(runs_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_a_run_in_use_is_refused_to_another_process(tmp_path: Path) -> None:
    with open_run("pkg", "train", seed=0, runs_dir=tmp_path, run_name="r") as run:
        run.last_checkpoint.parent.mkdir()
        run.last_checkpoint.write_bytes(b"1")
        message = _second_process(tmp_path)
        assert message.startswith(f"error: run {run.path} is in use by another process"), message
    assert _second_process(tmp_path) == "entered"  # released when the body ended


def test_save_on_interrupt_saves_then_reraises() -> None:
    saved = []
    with pytest.raises(KeyboardInterrupt), save_on_interrupt(lambda: saved.append("ck")):
        raise KeyboardInterrupt
    assert saved == ["ck"]
    with pytest.raises(RuntimeError), save_on_interrupt(lambda: saved.append("no")):
        raise RuntimeError  # other errors: no checkpoint of a possibly broken state
    with save_on_interrupt(lambda: saved.append("no")):
        pass
    assert saved == ["ck"]


def test_interrupt_inside_open_run_keeps_the_saved_checkpoint(tmp_path: Path) -> None:
    def body(run) -> None:
        with save_on_interrupt(lambda: _write_checkpoint(run)):
            raise KeyboardInterrupt

    path = _fail_inside(KeyboardInterrupt(), body, runs_dir=tmp_path, run_name="r")
    assert (path / "checkpoints" / "last.pt").read_bytes() == b"state"


def test_run_parent_env_places_runs_directly_under_it(tmp_path: Path, monkeypatch) -> None:
    parent = tmp_path / "runs" / "pkg" / "sweeps" / "lr"
    monkeypatch.setenv(RUN_PARENT_ENV, str(parent))
    assert run_root("pkg", tmp_path / "ignored") == parent
    with open_run("pkg", "train", seed=1, runs_dir=tmp_path / "ignored", run_name="t1") as run:
        assert run.path == parent / "t1"
        run.last_checkpoint.parent.mkdir()
        run.last_checkpoint.write_bytes(b"1")
    assert resume_run_dir("pkg", "train", tmp_path / "ignored", "t1") == parent / "t1"
    assert make_run_dir("pkg", "evaluate", 0, run_name="e").parent == parent
    assert not (tmp_path / "ignored").exists()


def test_os_errors_propagate_and_leave_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        _fail_inside(RuntimeError(), runs_dir=blocker)
    assert info.value.filename is not None
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_testing_helpers(tmp_path: Path) -> None:
    from compkit_utils.testing import one_error_line, tree

    assert one_error_line("prog: error: bad --x\n", "prog") == "bad --x"
    with pytest.raises(AssertionError):
        one_error_line("prog: error: a\nmore\n", "prog")
    with pytest.raises(AssertionError):
        one_error_line("other: error: a\n", "prog")
    assert tree(tmp_path / "absent") == set()
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("x")
    assert tree(tmp_path) == {"a", "a/b", "a/f"}


def test_defer_interrupt_raises_sigint_when_the_body_ends() -> None:
    import signal

    from compkit_utils.runs import defer_interrupt
    from compkit_utils.testing import default_sigint

    reached = []

    def body() -> None:
        with defer_interrupt():
            signal.raise_signal(signal.SIGINT)
            reached.append("end of body")

    with default_sigint():  # Ctrl-C raises even if the runner ignores SIGINT
        with pytest.raises(KeyboardInterrupt):
            body()
        assert reached == ["end of body"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with defer_interrupt():  # no signal: nothing raised
            reached.append("again")
    assert reached == ["end of body", "again"]


def test_default_sigint_makes_ctrl_c_raise_under_a_runner_that_ignores_it() -> None:
    import signal

    from compkit_utils.testing import default_sigint

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for `cmd &` in a script
    try:
        with default_sigint(), pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored
        signal.raise_signal(signal.SIGINT)  # ignored again: nothing raised
    finally:
        signal.signal(signal.SIGINT, before)
