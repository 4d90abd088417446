"""figures: the Figure 3 selection rule on synthetic logs, the table and plots from a synthetic
sweep, Figure 4b's matrix and sparsity check, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.checkpoints import make_state, save_checkpoint
from compkit_utils.testing import one_error_line, tree
from factored_attention_babyai.cli import main
from factored_attention_babyai.figures import select_points, sparsity_summary
from factored_attention_babyai.models.interaction import FactoredAttention, FilmInteraction
from factored_attention_babyai.vocab import WORDS

PROG = "factored-attention-babyai"
ID, OOD = "vsucc/dataloader_idx_0", "vsucc/dataloader_idx_1"


def test_selection_keeps_the_best_id_points_and_their_ood_values() -> None:
    records = [{"step": s, "loss": 1.0} for s in range(1, 5)]  # training records are skipped
    ids = [0.2, 0.9, 0.5, 0.9, 0.7, 1.0]
    oods = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    steps = [500, 1000, 1500, 2000, 2500, 3000]  # step 3000 lies beyond max_step
    records += [{"step": s, ID: i, OOD: o} for s, i, o in zip(steps, ids, oods, strict=True)]
    got_id, got_ood = select_points(records, max_step=2500, top=3)
    assert got_id == [0.9, 0.9, 0.7]  # ties: the earlier step first
    assert got_ood == [0.1, 0.3, 0.4]  # OOD at the same points, not the best OOD
    assert select_points(records, max_step=400, top=3) == ([], [])


def _sweep(root: Path, name: str, values: dict[int, list[float]]) -> Path:
    """A finished compkit sweep over per-goal, 3 seeds, 4 validation points per run."""
    sweep = root / name
    runs = {}
    for per_goal, base in values.items():
        for seed, offset in enumerate(base):
            run = f"per-goal={per_goal}__seed={seed}"
            (sweep / run).mkdir(parents=True)
            lines = [
                {"step": 500 * (j + 1), ID: offset + 0.01 * j, OOD: offset / 2 + 0.01 * j}
                for j in range(4)
            ]
            (sweep / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
            runs[run] = {"status": "finished", "config": {"per-goal": str(per_goal)}}
    (sweep / "sweep.json").write_text(json.dumps({"runs": runs}))
    return sweep


def test_figure3_from_sweeps(tmp_path: Path) -> None:
    a = _sweep(tmp_path, "a", {50: [0.2, 0.3, 0.4], 250: [0.6, 0.7, 0.8]})
    b = _sweep(tmp_path, "b", {50: [0.1, 0.1, 0.1], 250: [0.1, 0.2, 0.3]})
    out = tmp_path / "fig"
    args = ["figures", "--sweeps", f"Ours={a}", f"BC={b}", "--out-dir", str(out), "--reps", "200"]
    assert main([*args, "--top", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "figure3.json", "figure3_id.png", "figure3_ood.png",
    ]  # fmt: skip
    table = json.loads((out / "figure3.json").read_text())
    row = table["Ours"]["id"][0]
    assert row["per_goal"] == 50
    assert (row["runs"], row["points"]) == (3, 2)
    # Top 2 of each run: offset + 0.03 and + 0.02; IQM of the 6 values (25% trimmed).
    values = np.sort([o + d for o in (0.2, 0.3, 0.4) for d in (0.03, 0.02)])
    assert row["iqm"] == pytest.approx(_iqm(values), abs=1e-9)
    assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
    assert table["Ours"]["ood"][1]["iqm"] == pytest.approx(
        _iqm(np.array([o / 2 + d for o in (0.6, 0.7, 0.8) for d in (0.03, 0.02)])), abs=1e-9
    )
    assert main(args) == 2  # files exist: refused without --overwrite


def _model_sweep(root: Path, models: dict[str, float]) -> Path:
    """A train-bc sweep over ``--grid model=... per-goal=50``, 2 seeds, one level per model."""
    sweep = root / "bc"
    runs = {}
    for model, level in models.items():
        for seed in range(2):
            run = f"model={model}__per-goal=50__seed={seed}"
            (sweep / run).mkdir(parents=True)
            line = {"step": 500, ID: level, OOD: level / 2}
            (sweep / run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
            runs[run] = {"status": "finished", "config": {"model": model, "per-goal": "50"}}
    (sweep / "sweep.json").write_text(json.dumps({"runs": runs}))
    return sweep


def test_curves_are_named_after_the_runs_models(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Bare sweep folders: one curve per model; a labelled sweep over models is split."""
    bc = _model_sweep(tmp_path, {"film": 0.2, "transformer": 0.0})
    planner = _sweep(tmp_path, "p", {50: [0.7, 0.8, 0.9]})
    for run in planner.glob("per-goal=*"):
        (run / "config.json").write_text(json.dumps({"k": 10, "per_goal": 50}))
    out = tmp_path / "fig"
    argv = ["figures", "--top", "1", "--reps", "200", "--out-dir", str(out), "--overwrite"]
    assert main([*argv, "--sweeps", str(planner), str(bc)]) == 0
    table = json.loads((out / "figure3.json").read_text())
    assert list(table) == [
        "Factored/MVProp planner", "GRU-Encoder ResNet/FiLM", "Encoder-Decoder Transformer",
    ]  # fmt: skip
    assert table["GRU-Encoder ResNet/FiLM"]["id"][0]["iqm"] == pytest.approx(0.2)
    assert table["Encoder-Decoder Transformer"]["ood"][0]["runs"] == 2
    assert main([*argv, "--sweeps", f"BC={bc}", f"Ours={planner}"]) == 0
    table = json.loads((out / "figure3.json").read_text())
    assert list(table) == [
        "BC: GRU-Encoder ResNet/FiLM", "BC: Encoder-Decoder Transformer", "Ours",
    ]  # fmt: skip
    unnamed = _sweep(tmp_path, "u", {50: [0.1, 0.2, 0.3]})  # no model in grid or config.json
    assert main([*argv, "--sweeps", str(unnamed)]) == 2
    assert "LABEL=DIR" in one_error_line(capsys.readouterr().err, PROG)
    assert main([*argv, "--sweeps", f"=={unnamed}"]) == 2
    assert "expected LABEL=SWEEP_DIR" in one_error_line(capsys.readouterr().err, PROG)


def _iqm(values: np.ndarray) -> float:
    """25%-trimmed mean of 6 values: the middle 4 (what rliable's IQM computes)."""
    assert len(values) == 6
    return float(np.sort(values)[1:5].mean())


KEPT = Path(__file__).resolve().parents[1] / "results" / "cpu-980"


def test_kept_980_logs_give_the_documented_figure3_statistic(tmp_path: Path) -> None:
    """The planner logs kept in results/ redraw the docs' 980-demo numbers (planner.md)."""
    sweep = KEPT / "train-planner-7000"
    out = tmp_path / "fig"
    argv = ["figures", "--top", "3", "--reps", "200", "--out-dir", str(out)]
    assert main([*argv, "--sweeps", f"Factored/MVProp={sweep}"]) == 0
    cell = json.loads((out / "figure3.json").read_text())["Factored/MVProp"]
    assert [(c["per_goal"], c["runs"], c["points"]) for c in cell["id"]] == [(980, 3, 3)]
    assert round(cell["id"][0]["iqm"], 3) == 0.945  # ≥ 0.9: the ID target
    assert round(cell["ood"][0]["iqm"], 3) == 0.925
    assert main([*argv, "--max-step", "5000", "--overwrite", "--sweeps", f"M={sweep}"]) == 0
    early = json.loads((out / "figure3.json").read_text())["M"]
    assert round(early["id"][0]["iqm"], 3) == 0.824


def test_kept_980_baselines_lie_below_the_planner(tmp_path: Path) -> None:
    """results/cpu-980: bare sweep folders give one curve per model (bc-980 is split);
    the baselines' numbers of baselines.md and the planner's OOD CI above theirs."""
    out = tmp_path / "fig"
    sweeps = [str(KEPT / "train-planner-7000"), str(KEPT / "bc-980")]
    argv = ["figures", "--top", "3", "--reps", "200", "--out-dir", str(out), "--sweeps", *sweeps]
    assert main(argv) == 0
    table = json.loads((out / "figure3.json").read_text())
    planner, film, transformer = (
        "Factored/MVProp planner", "GRU-Encoder ResNet/FiLM", "Encoder-Decoder Transformer",
    )  # fmt: skip
    assert list(table) == [planner, film, transformer]
    cells = {label: {p: table[label][p][0] for p in ("id", "ood")} for label in table}
    assert [cells[label]["id"]["runs"] for label in table] == [3, 3, 3]
    iqm = {label: tuple(round(cells[label][p]["iqm"], 3) for p in ("id", "ood")) for label in table}
    assert iqm == {planner: (0.945, 0.925), film: (0.164, 0.156), transformer: (0.0, 0.0)}
    assert cells[planner]["ood"]["ci_low"] > max(
        cells[b]["ood"]["ci_high"] for b in (film, transformer)
    )


def test_kept_50_logs_give_the_documented_claim(tmp_path: Path) -> None:
    """results/cpu-50 redraws planner.md's 50-demo table: planner OOD CI above both baselines'."""
    kept = KEPT.parent / "cpu-50"
    out = tmp_path / "fig"
    sweeps = [
        f"P={kept / 'train-planner'}",
        f"F={kept / 'film-50'}",
        *(
            f"T={kept / name}"
            for name in ("transformer-50", "transformer-50-s1", "transformer-50-s2")
        ),
    ]
    argv = ["figures", "--top", "3", "--reps", "200", "--out-dir", str(out), "--sweeps", *sweeps]
    assert main(argv) == 0
    table = json.loads((out / "figure3.json").read_text())
    cells = {label: {p: table[label][p][0] for p in ("id", "ood")} for label in "PFT"}
    for label in "PFT":
        assert (cells[label]["id"]["per_goal"], cells[label]["id"]["runs"]) == (50, 3)
    iqm = {label: tuple(round(cells[label][p]["iqm"], 3) for p in ("id", "ood")) for label in "PFT"}
    assert iqm == {"P": (0.739, 0.747), "F": (0.167, 0.148), "T": (0.0, 0.0)}
    assert cells["P"]["ood"]["ci_low"] > max(cells[b]["ood"]["ci_high"] for b in "FT")


def test_missing_sweep_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = tree(tmp_path)
    args = ["figures", "--sweeps", f"X={tmp_path / 'nope'}", "--out-dir", str(tmp_path / "f")]
    assert main(args) == 2
    assert "no such sweep folder" in one_error_line(capsys.readouterr().err, PROG)
    assert tree(tmp_path) == before
    assert main(["figures", "--out-dir", str(tmp_path / "f")]) == 2
    assert "--sweeps" in one_error_line(capsys.readouterr().err, PROG)


def _sparse_model() -> FactoredAttention:
    """Each content word's vector is its attribute's; function words orthogonal to all."""
    model = FactoredAttention(len(WORDS))
    eye = torch.eye(48)
    attribs = eye[:17].clone()
    words = eye[20 : 20 + len(WORDS)].clone()
    for w in ("key", "ball", "box"):
        words[WORDS.index(w)] = attribs[{"key": 5, "ball": 6, "box": 7}[w]]
    for c, colour in enumerate(("red", "green", "blue", "purple", "yellow", "grey")):
        words[WORDS.index(colour)] = attribs[11 + c]
    with torch.no_grad():
        model.attrib_embeddings.copy_(attribs)
        model.word_embeddings.copy_(words)
        model.alpha.fill_(math.log(3.0))
        model.beta.fill_(-5.0)
    return model


def test_figure4b_matrix_and_check(tmp_path: Path) -> None:
    model = _sparse_model()
    extra = {"kind": "interaction", "interaction_model": "independent", "words": list(WORDS)}
    save_checkpoint(tmp_path / "i.pt", make_state(step=1, model=model, extra=extra))
    torch.manual_seed(1)
    film = FilmInteraction(len(WORDS))
    extra_film = {**extra, "interaction_model": "film"}
    save_checkpoint(tmp_path / "f.pt", make_state(step=1, model=film, extra=extra_film))
    out = tmp_path / "fig"
    items = [
        f"Sparse={tmp_path / 'i.pt'}",
        f"FiLM={tmp_path / 'f.pt'}",
        f"FiLM={tmp_path / 'f.pt'}",
    ]
    args = ["figures", "--interactions", *items, "--example-seeds", "7", "11"]
    assert main([*args, "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "figure4a.json", "figure4a.png", "figure4b.json", "figure4b.png",
    ]  # fmt: skip
    examples = json.loads((out / "figure4a.json").read_text())
    assert [e["seed"] for e in examples] == [7, 11]
    assert set(examples[0]["maps"]) == {"Sparse", "FiLM"}
    assert np.array(examples[0]["maps"]["FiLM"]["std"]).max() == 0.0  # the same checkpoint twice
    assert np.array(examples[1]["maps"]["Sparse"]["mean"]).shape == (8, 8)
    all_summaries = json.loads((out / "figure4b.json").read_text())
    assert set(all_summaries) == {"Sparse"}  # FiLM has no word × attribute matrix
    summary = all_summaries["Sparse"]
    check = summary["check"]
    assert check["content_words_correct"] == check["content_words"] == 9
    assert check["function_words_below_0.1"]
    matrix = np.array(summary["matrix"])
    assert matrix[WORDS.index("red"), 11] == pytest.approx(1 / (1 + math.exp(-1)))
    # A dense model fails the check.
    dense = sparsity_summary(np.full((15, 17), 0.5), list(WORDS))
    assert dense["content_words_correct"] < 9
    assert not dense["function_words_below_0.1"]
