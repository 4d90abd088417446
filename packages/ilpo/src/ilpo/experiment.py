"""``ilpo experiment``: the paper's vector experiment in one command.

Stages, each in the experiment's run directory (``<runs-dir>/ilpo/<name>/``, which is the
runs root of its stages):

1. ``ilpo/expert``: the expert (``ilpo expert``);
2. ``ilpo/collect``: the noisy demonstrations (``ilpo collect``);
3. ``ilpo/lpn``: one LPN shared by every seed (``ilpo lpn``);
4. ``ilpo/sweeps/arn``, ``ilpo/sweeps/bc``, ``ilpo/sweeps/bco``: the online ILPO stage, BC
   and BCO over the seeds, through the sweep layer's local backend;
5. ``results.md``, ``results.json`` (final return after the interactions: mean and 95% CI
   over seeds via :mod:`compkit_utils.sweep.report`) and ``curves.png``.

A rerun with the same ``--run-name`` reuses every finished stage (the sweeps skip finished
runs; an interrupted LPN resumes from its checkpoint). ``checkpoints/last.pt`` of the
experiment records the stages done, which also keeps the directory if a later stage fails.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from compkit_utils.sweep.report import Row
    from ilpo.config_models import ExperimentConfig

__all__ = ["PRESETS", "Preset", "run_experiment"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """Settings of the stages."""

    seeds: str
    expert: tuple[str, ...] = ()
    collect: tuple[str, ...] = ()
    lpn: tuple[str, ...] = ()
    arn: tuple[str, ...] = ()
    bc: tuple[str, ...] = ()
    bco: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        seeds="0-9",
        lpn=("--epochs", "10"),
        bc=("--epochs", "20", "--eval-episodes", "20"),
        bco=("--idm-steps", "500", "--policy-steps", "500"),
    ),
    "faithful": Preset(seeds="0-49", lpn=("--epochs", "100")),
    "smoke": Preset(
        seeds="0-1",
        expert=("--smoke",),
        collect=("--smoke", "--transitions", "500"),
        lpn=("--smoke",),
        arn=("--smoke",),
        bc=("--smoke",),
        bco=("--smoke",),
    ),
}
IMAGE_PRESETS: dict[str, Preset] = {
    "quick": Preset(
        seeds="0-2",
        collect=("--transitions", "2000"),
        lpn=("--epochs", "6", "--ngf", "8", "--lr", "1e-3"),
        arn=("--steps", "300", "--heldout-episodes", "5", "--random-episodes", "5"),
    ),
    "smoke": Preset(
        seeds="0-1",
        collect=("--transitions", "40"),
        lpn=("--epochs", "1", "--ngf", "2"),
        arn=(
            "--steps",
            "40",
            "--eval-every",
            "20",
            "--heldout-episodes",
            "1",
            "--random-episodes",
            "1",
        ),
    ),
}
"""The image (MiniGrid) experiment: a new experiment, so only a quick preset (CPU minutes)."""
FINAL_METRIC = "eval/final_heldout_return"
CURVE_METRIC = "eval/return"


def _main(argv: list[str]) -> None:
    """Run one ``ilpo`` stage in-process; a failure stops the experiment."""
    from ilpo.cli import main

    code = main(argv)
    if code != 0:
        raise UserError(f"stage `ilpo {' '.join(argv[:1])}` failed (exit {code}); see above")


def _stage_dir(root: Path, name: str, done_file: str) -> tuple[Path, bool]:
    """(directory, finished?); an unfinished leftover without checkpoints is removed."""
    path = root / "ilpo" / name
    if (path / done_file).is_file():
        return path, True
    if path.exists() and not (path / "checkpoints" / "last.pt").is_file():
        shutil.rmtree(path)
    return path, False


def _sweep(
    root: Path, command: str, seeds: str, workers: int, args: tuple[str, ...]
) -> tuple[Path, float]:
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep, run_sweep

    prepared = prepare_sweep(
        SweepOptions(
            package="ilpo",
            command=(command,),
            seeds=seeds,
            args=args,
            runs_dir=str(root),
            workers=workers,
            threads_per_run=1,  # batch-32 MLPs: one thread is fastest, and stages overlap
            retry_failed=True,
        )
    )
    outcome = run_sweep(prepared, progress=False)
    outcome.raise_if_failed(command)
    print(
        f"experiment: {command} over seeds {seeds}: {len(outcome.results)} run(s) in "
        f"{outcome.wall_s:.1f} s, {len(outcome.skipped)} reused"
    )
    return outcome.sweep_dir, outcome.wall_s


def _single_value(run: Path, prefix: str) -> dict[str, Any]:
    """Row of a one-run reference (expert, demonstrator): mean over episodes, normal 95% CI."""
    from compkit_utils.logging import read_metrics

    record = read_metrics(run / "metrics.jsonl")[-1]
    mean, std = float(record[f"{prefix}/return_mean"]), float(record[f"{prefix}/return_std"])
    episodes = int(record[f"{prefix}/episodes"])
    half = 1.96 * std / math.sqrt(episodes)
    return {
        "n": 1,
        "unit": f"1 run, {episodes} episodes",
        "mean": mean,
        "std": std,
        "ci": [mean - half, mean + half],
    }


def _row(row: Row) -> dict[str, Any]:
    return {
        "n": row.n,
        "unit": f"{row.n} seeds",
        "mean": row.mean,
        "std": row.std,
        "iqm": row.iqm,
        "ci": list(row.mean_ci),
    }


def _fmt(x: float) -> str:
    return "—" if x != x else f"{x:.1f}"


def _table(env: str, rows: dict[str, dict[str, Any]], steps: int) -> str:
    lines = [
        f"# ILPO experiment on {env}",
        "",
        f"Final return after {steps} interactions (held-out episodes); mean and 95% CI "
        "(stratified bootstrap over seeds, rliable; for the one-run references: normal CI "
        "over episodes).",
        "",
        "| method | n | mean | std | mean 95% CI |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lo, hi = r["ci"]
        lines.append(
            f"| {name} | {r['unit']} | {_fmt(r['mean'])} | {_fmt(r['std'])} | "
            f"[{_fmt(lo)}, {_fmt(hi)}] |"
        )
    return "\n".join(lines) + "\n"


def _plot(
    path: Path,
    env: str,
    curves: dict[str, Path],
    lines: dict[str, float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from rliable import library as rly

    from compkit_utils.sweep.report import load_groups, seeded_numpy

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, sweep_dir in curves.items():
        runs = load_groups([sweep_dir])[0].runs.values()
        series = [
            {int(r["step"]): float(r[CURVE_METRIC]) for r in rs if CURVE_METRIC in r} for rs in runs
        ]
        steps = sorted(set.intersection(*(set(s) for s in series)))
        scores = np.array([[s[t] for t in steps] for s in series])
        with seeded_numpy(0):
            points, cis = rly.get_interval_estimates(
                {"x": scores}, lambda x: x.mean(axis=0), reps=1000
            )
        line = ax.plot(steps, points["x"], label=f"{label} (n={len(series)})")[0]
        ax.fill_between(steps, cis["x"][0], cis["x"][1], alpha=0.25, color=line.get_color())
    styles = {"Demonstrator": "k", "Expert (clean)": "0.5", "BC": "tab:green", "Random": "tab:red"}
    for label, value in lines.items():
        ax.axhline(value, linestyle="--", color=styles.get(label, "0.3"), label=label)
    ax.set_xlabel("environment interactions")
    ax.set_ylabel("return")
    ax.set_title(f"ILPO on {env}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _lpn_stage(
    root: Path,
    base: list[str],
    env: str,
    collect: Path,
    args: tuple[str, ...],
    mark: Callable[[str, float], None],
) -> Path:
    """Train (or resume, or reuse) the experiment's one LPN; returns its run directory."""
    lpn, done = _stage_dir(root, "lpn", "lpn.pt")
    if not done:
        t0 = time.perf_counter()
        resume = ["--resume"] if (lpn / "checkpoints" / "last.pt").is_file() else []
        argv = ["lpn", *base, "--run-name", "lpn", "--env", env, "--data", str(collect)]
        _main([*argv, *args, *resume])
        mark("lpn", time.perf_counter() - t0)
    return lpn


def run_experiment(cfg: ExperimentConfig) -> Path:
    """Run (or continue) the experiment; returns its run directory."""
    from compkit_utils.config import to_dict
    from compkit_utils.io import atomic_write_json, atomic_write_text
    from compkit_utils.runs import StageLog, check_resume_config, open_run, run_root, write_config
    from compkit_utils.sweep.report import load_groups, summarise
    from ilpo import __version__
    from ilpo.gridworld import is_image_env

    image = is_image_env(cfg.env)
    preset = (IMAGE_PRESETS if image else PRESETS)["smoke" if cfg.smoke else cfg.preset]
    seeds = cfg.seeds or preset.seeds
    config = to_dict(cfg)
    resume = (
        cfg.run_name is not None
        and (run_root("ilpo", cfg.runs_dir) / cfg.run_name / "checkpoints" / "last.pt").is_file()
    )
    with open_run(
        "ilpo",
        "experiment",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=resume,
    ) as run:
        root = run.path
        state_file = run.last_checkpoint
        if resume:
            fields = ["env", "preset", "seed", "smoke"]
            log = StageLog.load(
                state_file,
                config,
                "ilpo-experiment",
                __version__,
                check=lambda saved: check_resume_config(state_file, saved, config, fields),
            )
        else:
            write_config(root, cfg, "ilpo")
            log = StageLog(state_file, config, "ilpo-experiment", __version__)
        stages, mark = log.stages, log.mark

        base = ["--runs-dir", str(root), "--seed", str(cfg.seed)]
        expert, done = _stage_dir(root, "expert", "expert.zip")
        source = ["--env", cfg.env] if image else ["--expert", str(expert)]
        if not done and not image:  # the image env's expert is the built-in BFS
            t0 = time.perf_counter()
            _main(["expert", *base, "--run-name", "expert", "--env", cfg.env, *preset.expert])
            mark("expert", time.perf_counter() - t0)
        collect, done = _stage_dir(root, "collect", "dataset_info.json")
        if not done:
            t0 = time.perf_counter()
            _main(
                [
                    "collect",
                    *base,
                    "--run-name",
                    "collect",
                    *source,
                    *preset.collect,
                ]
            )
            mark("collect", time.perf_counter() - t0)
        env = ("--env", cfg.env)
        data = ("--data", str(collect))
        pool = ThreadPoolExecutor(max_workers=2) if cfg.overlap and not image else None
        try:
            baselines: dict[str, Any] = {}
            if pool is not None:  # BC and BCO need only the demonstrations: start them now
                for name, args in (("bc", preset.bc), ("bco", preset.bco)):
                    sweep_args = (*env, *data, *args)
                    baselines[name] = pool.submit(
                        _sweep, root, name, seeds, cfg.workers, sweep_args
                    )
            lpn = _lpn_stage(root, base, cfg.env, collect, preset.lpn, mark)
            arn_args = (*env, "--lpn", str(lpn), *preset.arn)
            arn_dir, s = _sweep(root, "arn", seeds, cfg.workers, arn_args)
            mark("arn", s)
            dirs: dict[str, Path] = {}
            for name, args in (("bc", preset.bc), ("bco", preset.bco)):
                if image:  # BC and BCO are the vector experiment's baselines
                    break
                if name in baselines:
                    dirs[name], s = baselines[name].result()
                else:
                    dirs[name], s = _sweep(root, name, seeds, cfg.workers, (*env, *data, *args))
                mark(name, s)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        arn_groups = load_groups([arn_dir])
        rows: dict[str, dict[str, Any]] = {"ILPO": _row(summarise(arn_groups, FINAL_METRIC)[0])}
        curves = {"ILPO": arn_dir}
        if dirs:
            rows["BCO"] = _row(summarise(load_groups([dirs["bco"]]), FINAL_METRIC)[0])
            rows["BC"] = _row(summarise(load_groups([dirs["bc"]]), "eval/return")[0])
            curves["BCO"] = dirs["bco"]
        rows["Demonstrator"] = _single_value(collect, "demonstrator")
        rows["Expert (clean)"] = _single_value(collect if image else expert, "expert")
        rows["Random"] = _row(summarise(arn_groups, "eval/random_return")[0])
        arn_cfg = json.loads(
            (next(iter(sorted(arn_dir.glob("seed=*")))) / "config.json").read_text()
        )
        steps = int(arn_cfg["steps"])
        atomic_write_text(root / "results.md", _table(cfg.env, rows, steps))
        atomic_write_json(
            root / "results.json",
            {
                "env": cfg.env,
                "preset": "smoke" if cfg.smoke else cfg.preset,
                "kind": "image" if image else "vector",
                "seeds": seeds,
                "metric": FINAL_METRIC,
                "rows": rows,
                "stage_seconds": stages,
            },
        )
        _plot(
            root / "curves.png",
            cfg.env,
            curves,
            {
                k: rows[k]["mean"]
                for k in ("Demonstrator", "Expert (clean)", "BC", "Random")
                if k in rows
            },
        )
        print((root / "results.md").read_text(), end="")
        print(f"experiment: results.md, results.json and curves.png in {root}")
    return root
