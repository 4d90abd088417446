"""``compile-seg bench --contended``: the comparison beside a busy process, then no stray child."""

from __future__ import annotations

import glob
import sys

import pytest

from compile_seg.cli import main


def _children() -> set[int]:
    pids: set[int] = set()
    for path in glob.glob("/proc/self/task/*/children"):
        with open(path, encoding="ascii") as f:
            pids |= {int(p) for p in f.read().split()}
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_contended_prints_default_and_one_thread_and_leaves_no_process(capsys):
    before = _children()
    args = ["bench", "--repeats", "1", "--warmup", "0", "--batch-size", "8", "--skip-reference"]
    assert main([*args, "--threads", "2", "--contended"]) == 0
    out = capsys.readouterr().out
    assert "train step (ms)" in out  # the idle table is still there
    assert "contended: beside 1 busy process" in out
    assert "the default thread count is 2 (--threads)" in out
    assert "default/1 thread" in out
    lines = [line for line in out.splitlines() if line.startswith(("train step", "evaluation"))]
    assert len(lines) == 4  # idle and contended rows
    assert all(line.rstrip().endswith("x") for line in lines[2:])
    assert _children() <= before


def test_contended_default_policy_is_named(capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    args = ["bench", "--repeats", "1", "--warmup", "0", "--batch-size", "8", "--skip-reference"]
    assert main([*args, "--contended"]) == 0
    out = capsys.readouterr().out
    assert "cores busy" in out or "idle cores unknown" in out or "1 core available" in out


def test_the_command_line_requests_thread_invariant_blas(monkeypatch, capsys):
    import compkit_utils.devices

    calls: list[str] = []
    monkeypatch.setattr(
        compkit_utils.devices, "prefer_thread_invariant_blas", lambda: calls.append("x")
    )
    assert main(["bench", "--threads", "0"]) == 2
    assert calls == ["x"]
    assert "--threads" in capsys.readouterr().err
