r"""``factored-attention-babyai bc-grid``: the baselines over data sizes and seeds.

One ``compkit sweep`` of ``train-bc`` over ``model × per-goal`` and the seeds (one ordinary
run directory per point and seed under ``<runs-dir>/factored-attention-babyai/sweeps/<name>/``;
rerunning continues it), then ``compkit report`` tables (n, mean, std, IQM and 95%
stratified-bootstrap CIs) of the model-selected success rates: the best ID success of each
run and the OOD success at that same validation (``selected/vsucc/dataloader_idx_{0,1}``).
The tables go to ``results.md`` in the sweep folder and to the console.

The paper's full grid (8 sizes × 10 seeds, 70,000 / 120,000 steps) is the same sweep with
other arguments; for a GPU::

    compkit sweep factored-attention-babyai train-bc --seeds 0-9 --name bc-film \
        --grid per-goal=50,100,250,500,1000,2500,5000,9980 -- --model film --data DATA \
        --device cuda
    compkit sweep factored-attention-babyai train-bc --seeds 0-9 --name bc-transformer \
        --grid per-goal=50,100,250,500,1000,2500,5000,9980 -- --model transformer \
        --data DATA --device cuda
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from factored_attention_babyai.bc_config import BcGridConfig

__all__ = ["METRICS", "run_grid"]

PACKAGE = "factored-attention-babyai"
METRICS = {
    "selected/vsucc/dataloader_idx_0": "ID success (best validation)",
    "selected/vsucc/dataloader_idx_1": "OOD success at the best ID validation",
}


def _smoke_dataset(root: Path) -> Path:
    """A tiny dataset for ``--smoke`` via ``generate --smoke`` into ``root``."""
    from factored_attention_babyai.cli import main

    code = main(["generate", "--per-goal", "6", "--out-dir", str(root), "--no-progress"])
    if code != 0:
        raise UserError(f"bc-grid --smoke: generating a tiny dataset failed (exit {code})")
    return root


def _check_sizes(data: Path, cfg: BcGridConfig) -> None:
    """Refuse sizes the dataset cannot serve before any run starts (one line, exit 2)."""
    from factored_attention_babyai.data import goal_lists
    from factored_attention_babyai.vocab import ID_GOALS

    try:
        lists = goal_lists(data, "train")
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"--data {data}: not a readable dataset of `generate` ({exc})") from exc
    total = min((len(lists.get(goal, [])) for goal in ID_GOALS), default=0)
    largest = max(cfg.per_goal)
    if largest + cfg.vlimit > total:
        raise UserError(
            f"--per-goal {largest}: {data} holds {total} demonstrations per goal, of which "
            f"{cfg.vlimit} are ID validation; pass sizes up to {max(total - cfg.vlimit, 0)} or "
            f"generate --per-goal {largest + cfg.vlimit}"
        )


def run_grid(cfg: BcGridConfig, *, threads_per_run: int | None = None) -> Path:
    """Run (or continue) the sweep and write the tables; returns the sweep folder.

    Args:
        cfg: the grid.
        threads_per_run: CPU threads of each run (default: the sweep layer's, free cores //
            workers); ``experiment`` passes its ``--threads-per-run``.
    """
    from compkit_utils.io import atomic_write_text
    from compkit_utils.runs import run_root
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep, run_sweep
    from compkit_utils.sweep.report import format_rows, load_groups, summarise

    data = cfg.data
    if data is None:  # --smoke
        data = run_root(PACKAGE, cfg.runs_dir) / "sweeps" / f"{cfg.name}-data"
        if not (data / "data.hdf5").is_file():
            _smoke_dataset(data)
    else:
        from factored_attention_babyai.data import dataset_dir

        data = dataset_dir(data)
    _check_sizes(data, cfg)
    args = [
        "--data",
        str(data),
        "--eval-every",
        str(cfg.eval_every),
        "--vlimit",
        str(cfg.vlimit),
        "--tlimit",
        str(cfg.tlimit),
        "--device",
        cfg.device,
    ]
    if cfg.steps is not None:
        args += ["--steps", str(cfg.steps)]
    grid = (
        "model=" + ",".join(cfg.models),
        "per-goal=" + ",".join(str(n) for n in cfg.per_goal),
    )
    prepared = prepare_sweep(
        SweepOptions(
            package=PACKAGE,
            command=("train-bc",),
            seeds=cfg.seeds,
            grid=grid,
            args=tuple(args),
            name=cfg.name,
            runs_dir=None if cfg.runs_dir is None else str(cfg.runs_dir),
            workers=cfg.workers,
            threads_per_run=threads_per_run,
        )
    )
    outcome = run_sweep(prepared, progress=False)
    sweep_dir = outcome.sweep_dir
    print(
        f"bc-grid: {len(outcome.results)} run(s) in {outcome.wall_s:.1f} s, "
        f"{len(outcome.skipped)} reused; {sweep_dir}"
    )
    outcome.raise_if_failed("train-bc")
    groups = load_groups([sweep_dir])
    tables = []
    for metric, title in METRICS.items():
        rows = summarise(groups, metric, at="final")
        tables.append(format_rows(rows, "markdown", title=f"{title} (`{metric}`)"))
    command = (
        f"compkit sweep {PACKAGE} train-bc --seeds {cfg.seeds} --name {cfg.name} "
        f"--grid {' '.join(grid)} -- {' '.join(args)}"
    )
    text = f"<!-- made by: {command} -->\n\n" + "\n\n".join(tables) + "\n"
    atomic_write_text(sweep_dir / "results.md", text)
    print(text)
    return sweep_dir
