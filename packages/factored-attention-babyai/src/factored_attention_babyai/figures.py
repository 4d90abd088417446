"""``figures``: the paper's Figure 3 (spec §8.2) and Figure 4b (§8.3) from runs of this package.

Figure 3 — success vs demonstrations per goal. For every run of every sweep: the validation
points logged at steps ≤ ``--max-step`` are sorted by ID success (``vsucc/dataloader_idx_0``)
and the best ``--top`` (10) kept; the ID panel uses their ID success, the OOD panel the OOD
success (``vsucc/dataloader_idx_1``) *at the same points* (model selection on ID). Per model
and demonstrations-per-goal the [seeds × points] scores are aggregated with the IQM and a 95%
stratified-bootstrap CI (rliable). Writes ``figure3_id.png``, ``figure3_ood.png`` (log x axis,
CI bands) and ``figure3.json``.

Figure 4a — per-cell goal predictions: for an in-distribution and a held-out example room
(``--example-seeds``; default the first seed of the first ID goal and of the first OOD goal)
the rendered room and each label's mean σ(ŷ) over its checkpoints (std in the JSON); writes
``figure4a.png`` and ``figure4a.json``.

Figure 4b — the word × attribute correlations σ(clip(e^α·2·clip(cos, 0, 1) + β, −8, 8)) of
factored models (15 words × 17 attributes), and for ``simple`` models the 18 projected
(key/ball/box × colour) pairs; averaged over the checkpoints given per label. Writes
``figure4b.png`` and ``figure4b.json`` (with the sparsity check of the issue: each colour
word's strongest attribute is its colour, each object word's its type; function words < 0.1).

All figures are computed before anything is written; files are written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from factored_attention_babyai.figures_config import FiguresConfig

ID_KEY = "vsucc/dataloader_idx_0"
OOD_KEY = "vsucc/dataloader_idx_1"
TYPE_NAMES = (
    "unseen",
    "empty",
    "wall",
    "floor",
    "door",
    "key",
    "ball",
    "box",
    "goal",
    "lava",
    "agent",
)
COLOR_NAMES = ("red", "green", "blue", "purple", "yellow", "grey")
FUNCTION_WORDS = ("go", "to", "a", "the")


def parse_pairs(items: Sequence[str], bare: bool = False) -> dict[str, list[Path]]:
    """``LABEL=PATH`` items → label → paths (labels in first-seen order).

    With ``bare``, a bare ``PATH`` (an existing folder, or an item without ``=``) goes under
    the empty label: its curves are named after the runs' models (:func:`collect_runs`).
    """
    from factored_attention_babyai.figures_config import split_item

    out: dict[str, list[Path]] = {}
    for item in items:
        label, path = split_item(item, bare)
        out.setdefault(label, []).append(Path(path))
    return out


def select_points(
    records: Sequence[dict[str, Any]], max_step: int, top: int
) -> tuple[list[float], list[float]]:
    """The §8.2 selection rule for one run.

    Keeps the ``top`` validation points (step ≤ ``max_step``) with the highest ID success, ties
    broken by the earlier step; returns (their ID values, their OOD values).
    """
    points = [
        (float(r[ID_KEY]), int(r["step"]), float(r[OOD_KEY]))
        for r in records
        if ID_KEY in r and OOD_KEY in r and int(r["step"]) <= max_step
    ]
    points.sort(key=lambda p: (-p[0], p[1]))
    kept = points[:top]
    return [p[0] for p in kept], [p[2] for p in kept]


def _run_settings(sweep_dir: Path, run: str, config: dict[str, str]) -> dict[str, Any]:
    """The run's ``config.json`` (if any) overlaid with its sweep grid point."""
    cfg_file = sweep_dir / run / "config.json"
    saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return {**saved, **config}


def _per_goal(sweep_dir: Path, run: str, settings: dict[str, Any]) -> int:
    value = settings.get("per-goal", settings.get("per_goal"))
    if value is None:
        raise UserError(
            f"--sweeps {sweep_dir}: run {run} has no per-goal setting; sweep --grid per-goal=..."
        )
    return int(value)


def run_model(settings: dict[str, Any]) -> str | None:
    """The model of one run (``film``, ``transformer``, ``planner`` or ``cnn``), or None.

    ``train-bc`` runs name their ``--model``; ``train-planner`` runs are ``planner`` (K > 0) or
    ``cnn`` (K = 0). ``settings``: the run's config overlaid with its grid point.
    """
    if settings.get("model") is not None:
        return str(settings["model"])
    k = settings.get("k")
    if k is None:
        return None
    return "planner" if int(k) > 0 else "cnn"


def collect_runs(
    sweeps: dict[str, list[Path]], max_step: int, top: int
) -> dict[str, dict[int, list[tuple[list[float], list[float]]]]]:
    """Curve → demos per goal → per run (ID values, OOD values) of the selected points.

    A curve is a label of ``sweeps``; under the empty label every run goes to the curve named
    after its model (:data:`~.figures_config.CURVE_NAMES`), and a labelled sweep folder whose
    runs span several models is split into ``"LABEL: <model>"`` curves.
    """
    from compkit_utils.sweep.report import load_groups
    from factored_attention_babyai.figures_config import CURVE_NAMES

    out: dict[str, dict[int, list[tuple[list[float], list[float]]]]] = {}
    for label, dirs in sweeps.items():
        for sweep_dir in dirs:
            shown = f"{label}={sweep_dir}" if label else str(sweep_dir)
            if not sweep_dir.is_dir():
                raise UserError(f"--sweeps {shown}: no such sweep folder")
            found = []
            for group in load_groups([sweep_dir]):
                for run, records in group.runs.items():
                    ids, oods = select_points(records, max_step, top)
                    if not ids:
                        raise UserError(
                            f"--sweeps {shown}: run {run} logged no {ID_KEY} at steps ≤ {max_step}"
                        )
                    settings = _run_settings(sweep_dir, run, group.config)
                    limit = _per_goal(sweep_dir, run, settings)
                    model = run_model(settings)
                    if model is None and not label:
                        raise UserError(
                            f"--sweeps {shown}: run {run} names no model in its config.json; "
                            "give the curve a label: --sweeps LABEL=DIR"
                        )
                    found.append((model, limit, ids, oods))
            models = {model for model, *_ in found}
            for model, limit, ids, oods in found:
                name = CURVE_NAMES.get(str(model), str(model))
                curve = name if not label else f"{label}: {name}" if len(models) > 1 else label
                out.setdefault(curve, {}).setdefault(limit, []).append((ids, oods))
    return out


def iqm_ci(scores: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """IQM of [runs, points] scores and its 95% stratified-bootstrap CI (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    from compkit_utils.sweep.report import seeded_numpy

    with seeded_numpy(seed):
        points, cis = rly.get_interval_estimates(
            {"x": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
        )
    return float(points["x"][0]), float(cis["x"][0, 0]), float(cis["x"][1, 0])


def figure3_table(
    runs: dict[str, dict[int, list[tuple[list[float], list[float]]]]], reps: int, seed: int
) -> dict[str, Any]:
    """Label → panel ("id"/"ood") → rows {per_goal, iqm, ci_low, ci_high, runs, points}."""
    table: dict[str, Any] = {}
    for label, by_limit in runs.items():
        panels: dict[str, list[dict[str, float]]] = {"id": [], "ood": []}
        for limit in sorted(by_limit):
            pairs = by_limit[limit]
            k = min(len(ids) for ids, _ in pairs)  # rectangular: same point count per run
            for panel, pick in (("id", 0), ("ood", 1)):
                scores = np.array([p[pick][:k] for p in pairs], dtype=np.float64)
                iqm, low, high = iqm_ci(scores, reps, seed)
                panels[panel].append(
                    {"per_goal": limit, "iqm": iqm, "ci_low": low, "ci_high": high,
                     "runs": len(pairs), "points": k}
                )  # fmt: skip
        table[label] = panels
    return table


def _save_png(fig: Any, path: Path) -> None:
    from compkit_utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_figure3(table: dict[str, Any], panel: str, path: Path) -> None:
    """One panel (``id`` or ``ood``): IQM vs demos per goal (log x) with CI bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, panels in table.items():
        rows = panels[panel]
        x = [r["per_goal"] for r in rows]
        ax.plot(x, [r["iqm"] for r in rows], marker="o", label=label)
        ax.fill_between(x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], alpha=0.2)
        for r in rows:
            ax.annotate(f"{r['iqm']:.2f}", (r["per_goal"], r["iqm"]), fontsize=7,
                        textcoords="offset points", xytext=(0, 5), ha="center")  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("demonstrations per goal")
    ax.set_ylabel(f"success rate ({'in distribution' if panel == 'id' else 'held-out goals'})")
    ax.set_title("D_v_ID" if panel == "id" else "D_v_OOD")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def correlation_matrix(model: Any) -> tuple[np.ndarray, list[str]]:
    """Figure 4b matrix of one interaction model and its column names.

    Factored models: [15, 17] (types then colours); ``simple``: [15, 18] (key/ball/box × colour).
    """
    import torch

    from factored_attention_babyai.models.interaction import FactoredAttention, SimpleAttention

    with torch.no_grad():
        if isinstance(model, SimpleAttention):
            cos = model.attribute_cosines().clamp(0, 1)
            corr = torch.sigmoid((model.alpha.exp() * 2 * cos + model.beta).clamp(-8, 8))
            cols = [t * len(COLOR_NAMES) + c for t in (5, 6, 7) for c in range(len(COLOR_NAMES))]
            names = [f"{COLOR_NAMES[c]} {TYPE_NAMES[t]}" for t in (5, 6, 7) for c in range(6)]
            return corr[:, cols].numpy(), names
        if isinstance(model, FactoredAttention):
            return model.word_attribute_correlations().numpy(), [*TYPE_NAMES, *COLOR_NAMES]
    raise UserError(
        f"--interactions: a {type(model).__name__} has no word × attribute correlations; "
        "pass independent, independent_noreg or simple checkpoints"
    )


def sparsity_summary(matrix: np.ndarray, words: Sequence[str]) -> dict[str, Any]:
    """The issue's Figure 4b check on a [15, 17] factored matrix."""
    columns = [*TYPE_NAMES, *COLOR_NAMES]
    content = [w for w in words if w in COLOR_NAMES or w in ("key", "ball", "box")]
    correct = [w for w in content if columns[int(np.argmax(matrix[words.index(w)]))] == w]
    function_max = {w: float(matrix[words.index(w)].max()) for w in FUNCTION_WORDS}
    return {
        "content_words_correct": len(correct),
        "content_words": len(content),
        "wrong": sorted(set(content) - set(correct)),
        "function_word_max": function_max,
        "function_words_below_0.1": all(v < 0.1 for v in function_max.values()),
    }


def load_models(interactions: dict[str, list[Path]]) -> dict[str, list[Any]]:
    """Map each label to the interaction models of its checkpoints."""
    from factored_attention_babyai.interaction_io import load_interaction
    from factored_attention_babyai.vocab import WORDS

    return {
        label: [load_interaction(p, words=WORDS, flag=f"--interactions {label}=")[0] for p in paths]
        for label, paths in interactions.items()
    }


def figure4a(models: dict[str, list[Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per example seed: the rendered room, its mission and each label's mean/std σ(ŷ) [8, 8]."""
    import torch

    from factored_attention_babyai.env import make_env

    env = make_env(render_mode="rgb_array")
    examples = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            image = torch.from_numpy(obs["image"]).long()[None]
            tokens = torch.from_numpy(obs["mission_tokens"]).long()[None]
            maps = {}
            with torch.no_grad():
                for label, group in models.items():
                    probs = torch.stack([torch.sigmoid(m(image, tokens).logits[0]) for m in group])
                    std = probs.std(0, correction=0)
                    maps[label] = {"mean": probs.mean(0).numpy(), "std": std.numpy()}
            examples.append(
                {"seed": int(seed), "mission": obs["mission"], "frame": env.render(), "maps": maps}
            )
    finally:
        env.close()
    return {"examples": examples}


def plot_figure4a(fig4a: dict[str, Any], path: Path) -> None:
    """Rows: examples; columns: the rendered room, then each label's mean σ(ŷ) (> 0.1 printed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = fig4a["examples"]
    labels = list(examples[0]["maps"])
    fig, axes = plt.subplots(
        len(examples), 1 + len(labels), figsize=(3 * (1 + len(labels)), 3.2 * len(examples)),
        dpi=100, squeeze=False,
    )  # fmt: skip
    for row, example in zip(axes, examples, strict=True):
        row[0].imshow(example["frame"])
        row[0].set_title(f"{example['mission']} (seed {example['seed']})", fontsize=8)
        for ax, label in zip(row[1:], labels, strict=True):
            mean = example["maps"][label]["mean"]
            ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(label, fontsize=8)
            for (i, j), value in np.ndenumerate(mean):
                if value > 0.1:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def figure4b(interactions: dict[str, list[Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Average matrix per label (factored and simple models only): (plot data, JSON)."""
    from factored_attention_babyai.models.interaction import FactoredAttention, SimpleAttention
    from factored_attention_babyai.vocab import WORDS

    data: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for label, models in interactions.items():
        if not all(isinstance(m, FactoredAttention | SimpleAttention) for m in models):
            continue  # transformer / film: in Figure 4a only
        mats, names = [], []
        for model in models:
            matrix, names = correlation_matrix(model)
            mats.append(matrix)
        if len({m.shape for m in mats}) != 1:
            raise UserError(f"--interactions {label}: mixes model types; use one label per type")
        mean = np.mean(mats, axis=0)
        data[label] = (mean, names)
        summary[label] = {"checkpoints": len(models), "matrix": mean.tolist(), "columns": names}
        if mean.shape[1] == len(TYPE_NAMES) + len(COLOR_NAMES):
            summary[label]["check"] = sparsity_summary(mean, list(WORDS))
    return data, summary


def plot_figure4b(data: dict[str, Any], path: Path) -> None:
    """Heat maps side by side, values > 0.03 printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from factored_attention_babyai.vocab import WORDS

    fig, axes = plt.subplots(1, len(data), figsize=(7 * len(data), 6), dpi=100, squeeze=False)
    for ax, (label, (matrix, names)) in zip(axes[0], data.items(), strict=True):
        ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(WORDS)), WORDS, fontsize=7)
        ax.set_title(label)
        for (i, j), value in np.ndenumerate(matrix):
            if value > 0.03:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color="w")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def _default_example_seeds() -> list[int]:
    """One in-distribution and one held-out example: the first seed of each set's first goal."""
    from factored_attention_babyai.evaluate import fresh_goal_seeds
    from factored_attention_babyai.vocab import ID_GOALS, OOD_GOALS

    return [*fresh_goal_seeds(ID_GOALS[:1], 1), *fresh_goal_seeds(OOD_GOALS[:1], 1)]


def run_figures(cfg: FiguresConfig) -> dict[str, Any]:
    """Run ``figures``: compute everything, then write the files."""
    from compkit_utils.io import atomic_write_json

    outputs: list[str] = []
    if cfg.sweeps:
        outputs += ["figure3_id.png", "figure3_ood.png", "figure3.json"]
    if cfg.interactions:
        outputs += ["figure4a.png", "figure4a.json", "figure4b.png", "figure4b.json"]
    existing = [name for name in outputs if (cfg.out_dir / name).exists()]
    if existing and not cfg.overwrite:
        raise UserError(f"--out-dir {cfg.out_dir} already holds {existing[0]}; pass --overwrite")
    result: dict[str, Any] = {}
    table = None
    if cfg.sweeps:
        runs = collect_runs(parse_pairs(cfg.sweeps, bare=True), cfg.max_step, cfg.top)
        table = figure3_table(runs, cfg.reps, cfg.seed)
        result["figure3"] = table
    fig4 = fig4a = None
    if cfg.interactions:
        models = load_models(parse_pairs(cfg.interactions))
        fig4a = figure4a(models, cfg.example_seeds or _default_example_seeds())
        fig4 = figure4b(models)
        if not fig4[0]:
            outputs = [name for name in outputs if not name.startswith("figure4b")]
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if fig4a is not None:
        plot_figure4a(fig4a, cfg.out_dir / "figure4a.png")
        summary = [
            {"seed": e["seed"], "mission": e["mission"],
             "maps": {k: {s: v[s].tolist() for s in v} for k, v in e["maps"].items()}}
            for e in fig4a["examples"]
        ]  # fmt: skip
        atomic_write_json(cfg.out_dir / "figure4a.json", summary)
    if table is not None:
        plot_figure3(table, "id", cfg.out_dir / "figure3_id.png")
        plot_figure3(table, "ood", cfg.out_dir / "figure3_ood.png")
        atomic_write_json(cfg.out_dir / "figure3.json", table)
    if fig4 is not None and fig4[0]:
        plot_figure4b(fig4[0], cfg.out_dir / "figure4b.png")
        atomic_write_json(cfg.out_dir / "figure4b.json", fig4[1])
        result["figure4b"] = fig4[1]
    print(f"figures: wrote {', '.join(outputs)} to {cfg.out_dir}")
    return result
