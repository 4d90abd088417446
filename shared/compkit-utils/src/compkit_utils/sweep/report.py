"""``compkit report``: tables (and learning curves) over a sweep's seeds, with rliable CIs.

For every grid point of every sweep directory given, one value per run is taken from its
``metrics.jsonl`` (the metric at the final step, at its best step, at a given step, or the
first step where it reaches a threshold) and summarised over seeds: n, mean, standard
deviation, interquartile mean (IQM) and 95% stratified-bootstrap confidence intervals of
the mean and the IQM (``rliable``, the library of Agarwal et al., 2021). The bootstrap is
seeded, so the same runs always give the same table.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError, install_hint
from compkit_utils.sweep.manifest import FINISHED, read_manifest


@dataclasses.dataclass(frozen=True)
class Group:
    """The runs of one grid point of one sweep.

    Attributes:
        sweep: the sweep's name (its folder name).
        config: grid key → value, as in ``sweep.json``.
        runs: run name → its ``metrics.jsonl`` records (finished runs only).
    """

    sweep: str
    config: dict[str, str]
    runs: dict[str, list[dict[str, Any]]]

    @property
    def label(self) -> str:
        """``sweep`` plus the grid point (``key=value`` pairs), or just ``sweep``."""
        point = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.sweep} [{point}]" if point else self.sweep


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: a grid point's statistics over its seeds."""

    sweep: str
    config: str
    n: int
    runs: int
    mean: float
    std: float
    iqm: float
    mean_ci: tuple[float, float]
    iqm_ci: tuple[float, float]


def load_groups(sweep_dirs: Sequence[str | Path]) -> list[Group]:
    """Read the finished runs of each sweep directory, grouped by grid point.

    Raises:
        UserError: a directory is not a sweep, or has no finished run.
    """
    from compkit_utils.logging import read_metrics

    groups = []
    for sweep_dir in map(Path, sweep_dirs):
        manifest = read_manifest(sweep_dir)
        by_point: dict[str, Group] = {}
        for name, entry in manifest["runs"].items():
            if entry.get("status") != FINISHED:
                continue
            metrics_path = sweep_dir / name / "metrics.jsonl"
            if not metrics_path.is_file():
                raise UserError(f"{metrics_path} not found (the run is marked finished)")
            key = json.dumps(entry["config"], sort_keys=False)
            group = by_point.setdefault(key, Group(sweep_dir.name, entry["config"], {}))
            group.runs[name] = read_metrics(metrics_path)
        if not by_point:
            raise UserError(f"{sweep_dir}: no finished run yet; run the sweep first")
        groups.extend(by_point.values())
    return groups


def metric_names(groups: Sequence[Group]) -> list[str]:
    """Every metric key found in the runs (sorted)."""
    names = set()
    for group in groups:
        for records in group.runs.values():
            for record in records:
                names.update(k for k in record if k != "step")
    return sorted(names)


def run_value(
    records: Sequence[dict[str, Any]],
    metric: str,
    *,
    at: str = "final",
    mode: str = "max",
    reach: float | None = None,
    x: str = "step",
) -> float | None:
    """One number per run.

    Args:
        records: the run's ``metrics.jsonl`` records (each has ``step``).
        metric: the metric key (``eval/rec_acc``).
        at: ``final`` (last step that logged the metric), ``best`` (per ``mode``) or a step.
        mode: ``max`` or ``min``: what "best" and "reach" mean.
        reach: if given, the value is the first step where the metric is ≥ ``reach``
            (``mode=max``) or ≤ ``reach`` (``mode=min``); ``None`` if it never gets there.
        x: the record key that counts progress (``step``; ``env_steps`` for frames); a
            step given in ``at`` and the ``reach`` result are in this unit.

    Returns:
        The value, or ``None`` if the run has no such value.
    """
    points = [(float(r[x]), float(r[metric])) for r in records if metric in r and x in r]
    if not points:
        return None
    if reach is not None:
        for step, value in points:
            if (value >= reach) if mode == "max" else (value <= reach):
                return float(step)
        return None
    if at == "final":
        return points[-1][1]
    if at == "best":
        values = [v for _, v in points]
        return max(values) if mode == "max" else min(values)
    wanted = float(at)
    for step, value in points:
        if step == wanted:
            return value
    return None


def _interval_estimates(values: Any, reps: int, seed: int) -> tuple[Any, Any]:
    """Point estimates and 95% CIs of (mean, IQM) via rliable's stratified bootstrap."""
    import numpy as np

    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError as exc:
        raise UserError(
            "compkit report needs the report extra: " + install_hint("compkit-utils", "report")
        ) from exc

    def both(scores: Any) -> Any:
        return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])

    scores = {"x": np.asarray(values, dtype=np.float64).reshape(-1, 1)}
    with seeded_numpy(seed):
        points, cis = rly.get_interval_estimates(scores, both, reps=reps)
    return points["x"], cis["x"]


@contextlib.contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for the body, then restore its state.

    rliable's stratified bootstrap draws its resampling indices from ``np.random``
    (not from its ``random_state`` argument), so this is what makes the CIs reproducible.
    """
    import numpy as np

    state = np.random.get_state()  # noqa: NPY002 - rliable draws from the global RNG
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def summarise(
    groups: Sequence[Group],
    metric: str,
    *,
    at: str = "final",
    mode: str = "max",
    reach: float | None = None,
    reps: int = 2000,
    seed: int = 0,
    x: str = "step",
) -> list[Row]:
    """One :class:`Row` per group (see :func:`run_value` for the arguments).

    Raises:
        UserError: the metric is unknown (listing the known ones), or bad ``at``/``mode``.
    """
    import numpy as np

    if mode not in ("max", "min"):
        raise UserError(f"--mode {mode!r}: expected max or min")
    if at not in ("final", "best") and not at.lstrip("-").isdigit():
        raise UserError(f"--at {at!r}: expected final, best or a step number")
    known = metric_names(groups)
    if x != "step" and x not in known:
        raise UserError(f"--x {x!r} is not in the runs' metrics.jsonl; known: " + ", ".join(known))
    if metric not in known:
        raise UserError(
            f"--metric {metric!r} is not in the runs' metrics.jsonl; known: " + ", ".join(known)
        )
    rows = []
    for group in groups:
        values = [
            run_value(records, metric, at=at, mode=mode, reach=reach, x=x)
            for records in group.runs.values()
        ]
        kept = np.array([v for v in values if v is not None], dtype=np.float64)
        nan = float("nan")
        if kept.size == 0:
            rows.append(
                Row(
                    group.sweep,
                    _point(group),
                    0,
                    len(values),
                    nan,
                    nan,
                    nan,
                    (nan, nan),
                    (nan, nan),
                )
            )
            continue
        points, cis = _interval_estimates(kept, reps, seed)
        std = float(kept.std(ddof=1)) if kept.size > 1 else nan
        rows.append(
            Row(
                group.sweep,
                _point(group),
                int(kept.size),
                len(values),
                float(points[0]),
                std,
                float(points[1]),
                (float(cis[0, 0]), float(cis[1, 0])),
                (float(cis[0, 1]), float(cis[1, 1])),
            )
        )
    return rows


CSV_HEADER = (
    *("value", "sweep", "config", "n", "runs", "mean", "std", "iqm"),
    *("mean_ci_low", "mean_ci_high", "iqm_ci_low", "iqm_ci_high"),
)


def _point(group: Group) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.config.items()) or "-"


def _fmt(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.{digits}g}"


def format_rows(rows: Sequence[Row], fmt: str, *, title: str) -> str:
    """Render rows as ``markdown``, ``csv`` or ``json``."""
    if fmt == "json":
        return (
            json.dumps({"value": title, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2)
            + "\n"
        )
    header = ["sweep", "config", "n", "mean", "std", "IQM", "mean 95% CI", "IQM 95% CI"]
    table = []
    for r in rows:
        n = f"{r.n}" if r.n == r.runs else f"{r.n}/{r.runs}"
        table.append(
            [
                r.sweep,
                r.config,
                n,
                _fmt(r.mean),
                _fmt(r.std),
                _fmt(r.iqm),
                f"[{_fmt(r.mean_ci[0])}, {_fmt(r.mean_ci[1])}]",
                f"[{_fmt(r.iqm_ci[0])}, {_fmt(r.iqm_ci[1])}]",
            ]
        )
    if fmt == "csv":  # full precision, one column per number
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for r in rows:
            writer.writerow(
                [title, r.sweep, r.config, r.n, r.runs, r.mean, r.std, r.iqm, *r.mean_ci, *r.iqm_ci]
            )
        return out.getvalue()
    if fmt != "markdown":
        raise UserError(f"--format {fmt!r}: expected markdown, csv or json")
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    lines.extend("| " + " | ".join(line) + " |" for line in table)
    return "\n".join(lines) + "\n"


def describe(metric: str, at: str, mode: str, reach: float | None, x: str = "step") -> str:
    """The table's title: which value per run it summarises."""
    if reach is not None:
        return f"first {x} with {metric} {'≥' if mode == 'max' else '≤'} {reach:g}"
    if at == "final":
        return f"{metric} at the final {x}"
    if at == "best":
        return f"{metric} at the best {x} ({mode})"
    return f"{metric} at {x} {at}"


def plot_curves(
    groups: Sequence[Group],
    metric: str,
    path: str | Path,
    *,
    reps: int = 1000,
    seed: int = 0,
    x: str = "step",
) -> Path:
    """Learning curves (mean over seeds) with 95% bootstrap bands, one line per grid point.

    Only the steps that every run of a group logged are drawn.

    Raises:
        UserError: matplotlib or rliable is missing.
    """
    import numpy as np

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from rliable import library as rly
    except ImportError as exc:
        raise UserError(
            "--plot needs the report extra: " + install_hint("compkit-utils", "report")
        ) from exc

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for group in groups:
        series = [
            {float(r[x]): float(r[metric]) for r in records if metric in r and x in r}
            for records in group.runs.values()
        ]
        common = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not common:
            continue
        scores = np.array([[s[step] for step in common] for s in series])  # (runs, steps)
        with seeded_numpy(seed):
            points, cis = rly.get_interval_estimates(
                {"x": scores}, lambda x: x.mean(axis=0), reps=reps
            )
        line = ax.plot(common, points["x"], label=f"{group.label} (n={len(series)})")[0]
        ax.fill_between(common, cis["x"][0], cis["x"][1], alpha=0.25, color=line.get_color())
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
