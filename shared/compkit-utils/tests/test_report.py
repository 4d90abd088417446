"""compkit report: statistics per grid point, formats, reach/best/step, plots, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from compkit_utils.sweep.cli import main
from compkit_utils.sweep.report import load_groups, run_value, summarise
from compkit_utils.testing import one_error_line, tree

# Final eval/acc per seed of the two grid points (five seeds each).
FINAL = {"0.1": [0.50, 0.60, 0.70, 0.80, 0.90], "0.3": [0.91, 0.92, 0.95, 0.97, 0.99]}


def make_sweep(root: Path, name: str = "train", *, finals=FINAL, unfinished: bool = False) -> Path:
    """A sweep directory as compkit sweep leaves it: sweep.json and runs' metrics.jsonl."""
    sweep = root / "compkit-toy" / "sweeps" / name
    runs = {}
    for lr, values in finals.items():
        for seed, final in enumerate(values):
            run = f"learning-rate={lr}__seed={seed}"
            (sweep / run).mkdir(parents=True)
            records = [
                {
                    "step": step,
                    "env_steps": 100 * (step + 1),
                    "eval/acc": final * (step + 1) / 4,
                    "train/loss": 1.0 / (step + 1),
                }
                for step in range(4)
            ]
            (sweep / run / "metrics.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in records)
            )
            runs[run] = {"config": {"learning-rate": lr}, "seed": seed, "status": "finished"}
    if unfinished:
        runs["learning-rate=0.1__seed=9"] = {
            "config": {"learning-rate": "0.1"},
            "seed": 9,
            "status": "failed",
        }
    manifest = {"package": "compkit-toy", "command": ["train"], "grid": {}, "runs": runs}
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "sweep.json").write_text(json.dumps(manifest))
    return sweep


def test_statistics_per_grid_point(tmp_path):
    sweep = make_sweep(tmp_path, unfinished=True)
    rows = summarise(load_groups([sweep]), "eval/acc", reps=500)
    assert [r.config for r in rows] == ["learning-rate=0.1", "learning-rate=0.3"]
    for row, values in zip(rows, FINAL.values(), strict=True):
        assert row.n == 5  # the failed run is left out
        assert row.mean == pytest.approx(np.mean(values))
        assert row.std == pytest.approx(np.std(values, ddof=1))
        # IQM of 5 values: the middle 50% (rliable's trimmed mean over 25%..75%).
        assert row.iqm == pytest.approx(np.mean(sorted(values)[1:4]))
        assert row.mean_ci[0] <= row.mean <= row.mean_ci[1]
        assert row.iqm_ci[0] <= row.iqm <= row.iqm_ci[1]
        assert min(values) <= row.mean_ci[0] < row.mean_ci[1] <= max(values)


def test_value_at_final_best_step_and_reach():
    records = [{"step": 0, "a": 0.2}, {"step": 5, "a": 0.9}, {"step": 10, "a": 0.7}]
    assert run_value(records, "a") == 0.7
    assert run_value(records, "a", at="best") == 0.9
    assert run_value(records, "a", at="best", mode="min") == 0.2
    assert run_value(records, "a", at="5") == 0.9
    assert run_value(records, "a", at="7") is None
    assert run_value(records, "a", reach=0.8) == 5.0
    assert run_value(records, "a", reach=0.99) is None
    assert run_value(records, "a", reach=0.5, mode="min") == 0.0
    assert run_value(records, "missing") is None


def test_markdown_is_deterministic_and_side_by_side(tmp_path, capsys):
    a = make_sweep(tmp_path, "baseline")
    b = make_sweep(tmp_path, "variant", finals={"0.1": [0.1, 0.2, 0.3]})
    argv = ["report", str(a), str(b), "--metric", "eval/acc", "--reps", "500"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == first  # seeded bootstrap
    lines = first.splitlines()
    assert lines[0] == "**eval/acc at the final step**"
    assert lines[2].startswith("| sweep | config | n | mean | std | IQM |")
    assert lines[4].startswith("| baseline | learning-rate=0.1 | 5 | 0.7 | 0.1581 | 0.7 |")
    assert lines[6].startswith("| variant | learning-rate=0.1 | 3 | 0.2 | 0.1 |")
    assert main([*argv, "--seed", "1"]) == 0
    assert capsys.readouterr().out != first  # another bootstrap seed moves the CIs


def test_csv_json_reach_and_plot(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    base = ["report", str(sweep), "--metric", "eval/acc", "--reps", "200"]
    assert main([*base, "--reach", "0.44", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["value"] == "first step with eval/acc ≥ 0.44"
    # lr 0.1: finals 0.5..0.9 reach 0.44 at steps 3,2,2,2,1; lr 0.3: all at step 1.
    assert float(rows[0]["mean"]) == pytest.approx(2.0)
    assert float(rows[1]["mean"]) == pytest.approx(1.0)
    assert main([*base, "--reach", "0.44", "--x", "env_steps", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["value"] == "first env_steps with eval/acc ≥ 0.44"
    assert [float(r["mean"]) for r in rows] == pytest.approx([300.0, 200.0])
    assert main([*base, "--at", "best", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][1]["mean"] == pytest.approx(np.mean(FINAL["0.3"]))
    assert main([*base, "--reach", "0.95", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (rows[0]["n"], rows[0]["runs"]) == ("0", "5")  # never reached
    assert math.isnan(float(rows[0]["mean"]))
    assert (rows[1]["n"], rows[1]["runs"]) == ("3", "5")
    plot = tmp_path / "out" / "curves.png"
    assert main([*base, "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--metric", "eval/nope"],
            "--metric 'eval/nope' is not in the runs' metrics.jsonl; "
            "known: env_steps, eval/acc, train/loss",
        ),
        (["--metric", "eval/acc", "--at", "last"], "--at 'last': expected final, best"),
        (["--metric", "eval/acc", "--reps", "10"], "--reps 10"),
        (["--metric", "eval/acc", "--x", "frames"], "--x 'frames' is not in the runs'"),
    ],
)
def test_bad_report_input(tmp_path, capsys, args, message):
    sweep = make_sweep(tmp_path)
    before = tree(tmp_path)
    assert main(["report", str(sweep), *args]) == 2
    assert message in one_error_line(capsys.readouterr().err, "compkit")
    assert tree(tmp_path) == before


def test_not_a_sweep_dir_and_no_finished_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--metric", "a"]) == 2
    assert "sweep.json not found" in one_error_line(capsys.readouterr().err, "compkit")
    sweep = make_sweep(tmp_path, finals={})
    assert main(["report", str(sweep), "--metric", "a"]) == 2
    assert "no finished run yet" in one_error_line(capsys.readouterr().err, "compkit")
