"""compile-seg under ``compkit sweep``: flag spelling of grid keys, runs equal direct runs."""

from __future__ import annotations

import json

from compile_seg.cli import main as compile_seg_main
from compkit_utils.sweep.cli import main
from compkit_utils.sweep.commands import resolve_command
from compkit_utils.sweep.grid import parse_grid
from compkit_utils.testing import one_error_line, tree


def test_grid_keys_use_compile_segs_flattened_flags(tmp_path, capsys):
    spec = resolve_command("compile-seg", ["train"])
    grid = parse_grid(["optim.learning_rate=1e-3,3e-3", "loss.beta-b=0.1", "hidden-dim=8"], spec)
    assert grid == {"learning-rate": ["1e-3", "3e-3"], "loss.beta-b": ["0.1"], "hidden-dim": ["8"]}
    argv = ["sweep", "compile-seg", "train", "--seeds", "0", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--grid", "train.learning-rate=1e-3"]) == 2
    err = one_error_line(capsys.readouterr().err, "compkit")
    assert "--grid key 'train.learning-rate' is not an option of compile-seg train" in err
    assert "learning-rate, loss.beta-b" in err
    assert tree(tmp_path) == set()


def test_sweep_runs_equal_direct_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["sweep", "compile-seg", "train", "--seeds", "0-1", "--runs-dir", str(runs)]
    assert main([*argv, "--threads-per-run", "1", "--", "--smoke"]) == 0
    assert "2 run(s) finished, 0 failed" in capsys.readouterr().out
    sweep = runs / "compile-seg" / "sweeps" / "train"
    assert json.loads((sweep / "sweep.json").read_text())["runs"]["seed=1"]["status"] == "finished"
    direct = tmp_path / "direct"
    for seed in (0, 1):
        args = ["train", "--smoke", "--seed", str(seed), "--threads", "1"]
        assert compile_seg_main([*args, "--runs-dir", str(direct), "--run-name", "d"]) == 0
        expected = (direct / "compile-seg" / "d" / "metrics.jsonl").read_text()
        assert (sweep / f"seed={seed}" / "metrics.jsonl").read_text() == expected
        assert "rec_acc" in (sweep / f"seed={seed}" / "stdout.log").read_text()
        (direct / "compile-seg" / "d").rename(direct / f"done{seed}")
