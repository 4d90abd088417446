"""compkit_utils.runs.StageLog: the stage record of multi-stage commands."""

from __future__ import annotations

import pytest

from compkit_utils.errors import UserError


def test_stage_log_records_skips_and_reloads_stages(tmp_path, capsys):
    from compkit_utils.runs import StageLog

    path = tmp_path / "checkpoints" / "last.pt"
    log = StageLog(path, {"preset": "quick"}, "demo-experiment", "1.0")
    log.mark(None)  # the record exists before any stage finished
    calls: list[str] = []
    assert log.timed("a", lambda: calls.append("a") or 7, label="x: ") == 7
    log.mark("b", 2.5)
    assert log.timed("a", lambda: calls.append("again"), label="x: ") is None
    assert calls == ["a"]
    assert "x: a: reused" in capsys.readouterr().out

    seen: list[dict[str, object]] = []
    again = StageLog.load(path, {"preset": "quick"}, "demo-experiment", "1.0", check=seen.append)
    assert seen == [{"preset": "quick"}]
    assert set(again.stages) == {"a", "b"}
    assert again.stages["b"] == 2.5
    with pytest.raises(UserError, match="is not the checkpoint of a other run"):
        StageLog.load(path, {}, "other", "1.0")
