"""``rim-cells bench --contended``: the comparison beside a busy process, then no stray child."""

from __future__ import annotations

import glob
import json
import sys

import pytest

from rim_cells.cli import main


def _children() -> set[int]:
    pids: set[int] = set()
    for path in glob.glob("/proc/self/task/*/children"):
        with open(path, encoding="ascii") as f:
            pids |= {int(p) for p in f.read().split()}
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_contended_prints_the_ratio_and_leaves_no_process(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = _children()
    out_file = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--seq-len", "3", "--batch-size", "2", "--hidden-size", "8"]
    argv += ["--sweep-units", "--contended", "--out", str(out_file)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "contended: beside 1 busy process" in text
    assert "default/1 thread" in text
    assert "RIMCell loop / nn.LSTM under contention" in text
    result = json.loads(out_file.read_text())
    contended = result["contended"]
    assert contended["threads"] >= 1
    assert set(contended["ratio_default_to_1"]) == {"nn.LSTM", "RIMCell loop", "RIM"}
    assert set(contended["median_ms"]["RIM"]) == {"default", "1", "all"}
    assert result["config"]["threads"] >= 1  # the count in force, not None
    assert _children() <= before


def test_the_command_line_requests_thread_invariant_blas(monkeypatch, capsys):
    import compkit_utils.devices

    calls: list[str] = []
    monkeypatch.setattr(
        compkit_utils.devices, "prefer_thread_invariant_blas", lambda: calls.append("x")
    )
    assert main(["bench", "--threads", "0"]) == 2
    assert calls == ["x"]
    assert "--threads" in capsys.readouterr().err
