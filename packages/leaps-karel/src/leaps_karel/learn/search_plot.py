"""Best return versus episodes for CEM (latent space) and hill climbing (program space).

Both ``leaps-karel cem`` and ``leaps-karel search`` count episodes the same way (every program
evaluation = ``worlds_per_eval`` episodes) and score with the same task return, so their
curves share one x axis. A CEM run logs each iteration's best score (``cem/best_score``, with
the +0.1 bonus, not monotone); a search run logs its best return so far
(``search/best_return``). `best_return_curve` turns either into "best return (without the
bonus) reached within x episodes"; `plot_best_return_vs_episodes` draws the mean over seeds
with the min-max band per method, `plot_best_return_panels` one such panel per task.
matplotlib is imported only when plotting (``plot`` extra).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.errors import UserError, install_hint
from leaps_karel.tasks.base import SYNTAX_BONUS


def best_return_curve(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Episodes and the best return (without the bonus) reached by then, for one run.

    Args:
        run_dir: a ``leaps-karel cem`` or ``leaps-karel search`` run directory.

    Returns:
        ``(episodes, best)``, both ``(N,)``: increasing episode counts and the running best
        return (non-decreasing).

    Raises:
        UserError: no ``metrics.jsonl``, or one written by another command.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the run's metrics ({exc.strerror})") from exc
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not a metrics.jsonl file (line {exc.lineno})") from exc
    xs: list[float] = []
    ys: list[float] = []
    for r in records:
        if "search/best_return" in r:
            xs.append(r["search/episodes"])
            ys.append(r["search/best_return"])
        elif "cem/best_score" in r:
            xs.append(r["cem/episodes"])
            ys.append(max(r["cem/best_score"] - SYNTAX_BONUS, 0.0))
    if not xs:
        raise UserError(
            f"{path}: no best-return records; pass run directories of `leaps-karel cem` or "
            "`leaps-karel search`"
        )
    order = np.argsort(np.asarray(xs), kind="stable")
    episodes = np.asarray(xs, dtype=np.int64)[order]
    best = np.maximum.accumulate(np.asarray(ys, dtype=np.float64)[order])
    return episodes, best


def _on_grid(episodes: np.ndarray, best: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The step function ``best`` (last value at or before x; NaN before the first)."""
    index = np.searchsorted(episodes, grid, side="right") - 1
    out = best[np.clip(index, 0, None)].astype(np.float64)
    out[index < 0] = np.nan
    return out


def _curves(
    run_dirs_by_method: Mapping[str, Sequence[str | Path]],
) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    if not run_dirs_by_method or not any(run_dirs_by_method.values()):
        raise UserError("no run directories to plot; pass at least one cem or search run")
    return {
        label: [best_return_curve(d) for d in dirs]
        for label, dirs in run_dirs_by_method.items()
        if dirs
    }


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError(
            f"plotting needs matplotlib: {install_hint('leaps-karel', 'plot')}"
        ) from exc
    return plt


def _draw(
    ax: Any, curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], title: str | None, log_x: bool
) -> None:
    """One panel: mean over runs and min-max band per method."""
    for label, runs in curves.items():
        end = max(int(e[-1]) for e, _ in runs)
        grid = np.unique(np.concatenate([e for e, _ in runs] + [np.array([end])]))
        values = np.stack([_on_grid(e, b, grid) for e, b in runs])
        for row, (e, b) in zip(values, runs, strict=True):
            row[grid > e[-1]] = b[-1]
        with warnings.catch_warnings():  # columns before any run's first record are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        (line,) = ax.step(grid, mean, where="post", label=f"{label} ({len(runs)} runs)")
        ax.fill_between(grid, lo, hi, step="post", alpha=0.2, color=line.get_color())
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("episodes")
    ax.set_ylabel("best return (without the +0.1 bonus)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    if title:
        ax.set_title(title)


def _save(plt: Any, fig: Any, out_png: str | Path) -> Path:
    from compkit_utils.io import atomic_path

    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out


def plot_best_return_vs_episodes(
    run_dirs_by_method: Mapping[str, Sequence[str | Path]],
    out_png: str | Path,
    *,
    title: str | None = None,
    log_x: bool = True,
) -> Path:
    """Plot best return versus episodes, one line (mean over runs) and band per method.

    A run that stopped early (solved) keeps its final best up to the longest run of its
    method.

    Args:
        run_dirs_by_method: label → run directories (e.g. ``{"CEM (LEAPS)": [...],
            "hill climbing": [...]}``), typically the seeds of one task.
        out_png: the image to write (atomically).
        title: the plot title.
        log_x: logarithmic episode axis.

    Returns:
        ``out_png``.

    Raises:
        UserError: matplotlib is missing, no runs are given, or a run has no curve.
    """
    curves = _curves(run_dirs_by_method)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    _draw(ax, curves, title, log_x)
    return _save(plt, fig, out_png)


def plot_best_return_panels(
    panels: Mapping[str, Mapping[str, Sequence[str | Path]]],
    out_png: str | Path,
    *,
    columns: int = 3,
    log_x: bool = True,
) -> Path:
    """`plot_best_return_vs_episodes` for several tasks, one panel each, in one image.

    Args:
        panels: panel title (e.g. the task) → label → run directories.
        out_png: the image to write (atomically).
        columns: panels per row.
        log_x: logarithmic episode axes.

    Returns:
        ``out_png``.

    Raises:
        UserError: matplotlib is missing, no panels, a panel without runs, or a run without
            a curve.
    """
    if not panels:
        raise UserError("no panels to plot; pass at least one task with cem or search runs")
    curves = {title: _curves(runs) for title, runs in panels.items()}
    plt = _pyplot()
    rows = -(-len(curves) // columns)
    cols = min(columns, len(curves))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, panel) in zip(axes.flat, curves.items(), strict=False):
        _draw(ax, panel, title, log_x)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    return _save(plt, fig, out_png)
