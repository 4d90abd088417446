"""The paper's tables with one command each: ``table3``, ``table-reconstruction``, ``table9``.

Each command opens its own run directory and runs its searches there through the sweep layer
(the local backend of ``compkit sweep``: one sweep per task or target, ``--seeds`` as given),
so rerunning a table with the same ``--run-name`` reuses every finished search. Statistics are
``compkit report``'s (`compkit_utils.sweep.report.summarise`: mean, std, 95% stratified
bootstrap CI, rliable). Each writes ``results.md`` and ``results.json``; the equivalent
``compkit report`` command line is printed in ``results.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError
from leaps_karel.learn.cem_config import (
    PRESETS,
    TABLE3_PUBLISHED,
    TARGET_PROGRAMS,
    TARGET_PUBLISHED,
)

ALL_TASKS = ("stairclimber", "fourcorner", "topoff", "maze", "cleanhouse", "harvester")
#: Table 9's published LEAPS rows (original grid, 100 × 100), without the bonus.
TABLE9_PUBLISHED: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "stairclimber": ((1.00, 0.00), (1.00, 0.00)),
    "maze": ((1.00, 0.00), (1.00, 0.00)),
    "fourcorner": ((0.45, 0.40), (0.45, 0.37)),
    "topoff": ((0.81, 0.07), (0.21, 0.03)),
    "harvester": ((0.45, 0.28), (0.00, 0.00)),
}


def _sweep(
    root: Path, command: str, seeds: str, workers: int, args: tuple, grid: tuple = ()
) -> Path:
    """Run (or continue) the table's sweep of ``leaps-karel <command>``; its directory."""
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep, run_sweep

    prepared = prepare_sweep(
        SweepOptions(
            package="leaps-karel",
            command=(command,),
            seeds=seeds,
            args=tuple(args),
            grid=tuple(grid),
            name=command,
            runs_dir=str(root),
            workers=workers,
            retry_failed=True,
        )
    )
    outcome = run_sweep(prepared, progress=False)
    outcome.raise_if_failed(command)
    print(
        f"{command}: {len(outcome.results)} run(s) in {outcome.wall_s:.1f} s, "
        f"{len(outcome.skipped)} reused",
        flush=True,
    )
    return outcome.sweep_dir


def _stats(sweep_dir: Path, metric: str, key: str, seed: int) -> dict[str, dict[str, Any]]:
    """Statistics of ``metric`` per value of the grid key ``key``."""
    from compkit_utils.sweep.report import load_groups, summarise

    groups = load_groups([sweep_dir])
    rows = summarise(groups, metric, seed=seed)
    return {
        g.config[key]: {"n": r.n, "mean": r.mean, "std": r.std, "ci": list(r.mean_ci)}
        for g, r in zip(groups, rows, strict=True)
    }


def _runs(sweep_dir: Path, key: str) -> dict[str, list[dict[str, Any]]]:
    """``results.json`` of every finished run, per value of the grid key, by seed."""
    from compkit_utils.sweep.manifest import FINISHED, read_manifest

    manifest = read_manifest(sweep_dir)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, entry in sorted(manifest["runs"].items()):
        if entry.get("status") == FINISHED:
            results = json.loads((sweep_dir / name / "results.json").read_text())
            out.setdefault(entry["config"][key], []).append(results)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def _fmt(stats: dict[str, Any] | None, ci: bool = True) -> str:
    if not stats or stats["n"] == 0:
        return "—"
    std = "—" if math.isnan(stats["std"]) else f"{stats['std']:.2f}"
    text = f"{stats['mean']:.2f} ({std})"
    if ci:
        text += f" [{stats['ci'][0]:.2f}, {stats['ci'][1]:.2f}]"
    return text


def _open(cfg: Any, command: str) -> Any:
    """Open the table's run directory; continue it if ``--run-name`` names one with a last.pt."""
    import contextlib

    from compkit_utils.runs import open_run, run_root, write_config

    resume = (
        cfg.run_name is not None
        and (
            run_root("leaps-karel", cfg.runs_dir) / cfg.run_name / "checkpoints" / "last.pt"
        ).is_file()
    )

    @contextlib.contextmanager
    def opened() -> Any:
        with open_run(
            "leaps-karel",
            command,
            seed=cfg.seed,
            runs_dir=cfg.runs_dir,
            run_name=cfg.run_name,
            resume=resume,
        ) as run:
            if not resume:
                write_config(run.path, cfg, "leaps-karel")
            yield run

    return opened()


def _mark(run_path: Path, done: list[str]) -> None:
    """Keep the directory if a later stage fails (``open_run`` keeps runs with a last.pt)."""
    from compkit_utils.checkpoints import FORMAT_VERSION, save_checkpoint

    save_checkpoint(
        run_path / "checkpoints" / "last.pt",
        {"format_version": FORMAT_VERSION, "step": len(done), "extra": {"done": list(done)}},
    )


def _finish(path: Path, title: str, lines: list[str], data: dict[str, Any]) -> None:
    from compkit_utils.io import atomic_write_json, atomic_write_text

    atomic_write_text(path / "results.md", "\n".join([f"# {title}", "", *lines]) + "\n")
    atomic_write_json(path / "results.json", data)
    print((path / "results.md").read_text(), end="")
    print(f"wrote {path / 'results.md'} and results.json")


# ---------------------------------------------------------------------------- table 3
def table3(cfg: Any) -> int:
    """``leaps-karel table3``: CEM (and hill climbing) on the tasks over the seeds."""
    from leaps_karel.learn.commands import LEARN
    from leaps_karel.tasks.registry import get_spec

    tasks = [get_spec(t).name for t in cfg.tasks] or list(ALL_TASKS)
    if cfg.hill_climbing == "yes" and "search" not in LEARN:
        raise UserError("--hill-climbing yes: the search command is not installed")
    with_hc = cfg.hill_climbing == "yes" or (cfg.hill_climbing == "auto" and "search" in LEARN)
    budget = cfg.search_episodes or max(
        (PRESETS[t].population + 1) * 10 * (cfg.max_iterations or 1000) for t in tasks
    )
    grid = ("task=" + ",".join(tasks),)
    with _open(cfg, "table3") as run:
        cem_dir = _sweep(run.path, "cem", cfg.seeds, cfg.workers, cfg.cem_args(), grid)
        _mark(run.path, ["cem"])
        fresh = _stats(cem_dir, "eval/fresh", "task", cfg.seed)
        in_sample = _stats(cem_dir, "eval/in_sample", "task", cfg.seed)
        episodes = _stats(cem_dir, "cem/episodes", "task", cfg.seed)
        programs = _runs(cem_dir, "task")
        hc: dict[str, Any] = {}
        if with_hc:
            args = ("--quiet", "--episodes", str(budget), "--fresh-worlds", str(cfg.fresh_worlds))
            hc_dir = _sweep(run.path, "search", cfg.seeds, cfg.workers, args, grid)
            _mark(run.path, ["cem", "search"])
            hc = _stats(hc_dir, "eval/fresh", "task", cfg.seed)
        rows = {
            t: {
                "cem_fresh": fresh[t],
                "cem_in_sample": in_sample[t],
                "cem_episodes_mean": episodes[t]["mean"],
                "published": TABLE3_PUBLISHED[t],
                "hc_fresh": hc.get(t),
                "programs": [
                    {"seed": r["seed"], "program": r["program"], "fresh": r["fresh"]}
                    for r in programs[t]
                ],
            }
            for t in tasks
        }
        lines = [
            "Return without the +0.1 bonus; mean (std) [95% stratified-bootstrap CI of the "
            f"mean] over seeds {cfg.seeds}. *fresh*: the final program re-evaluated on "
            f"{cfg.fresh_worlds} initial states the search never saw; *in-sample*: its score on "
            "the last 10 shared initial states of the search (what CEM optimised)."
            + (f" Hill climbing: budget {budget:,} episodes per run." if with_hc else ""),
            "",
            "| task | CEM fresh | CEM in-sample | CEM episodes (mean) | paper (LEAPS) |"
            + (" hill climbing fresh |" if with_hc else ""),
            "|---|---|---|---:|---|" + ("---|" if with_hc else ""),
        ]
        for t, r in rows.items():
            pub = f"{r['published'][0]:.2f} ({r['published'][1]:.2f})"
            line = (
                f"| {t} | {_fmt(r['cem_fresh'])} | {_fmt(r['cem_in_sample'])} | "
                f"{r['cem_episodes_mean']:,.0f} | {pub} |"
            )
            lines.append(line + (f" {_fmt(r['hc_fresh'])} |" if with_hc else ""))
        lines += ["", "Found programs (fresh return without the bonus):", ""]
        for t, r in rows.items():
            for p in r["programs"]:
                ret = p["fresh"]["return_without_bonus"]
                lines.append(f"- {t}, seed {p['seed']}: {ret:.2f} `{p['program']}`")
        lines += ["", f"Same numbers: `compkit report {cem_dir} --metric eval/fresh`."]
        data = {"seeds": cfg.seeds, "hill_climbing_episodes": budget if with_hc else None}
        _finish(run.path, "LEAPS Table 3 (CEM)", lines, {**data, "rows": rows})
    return 0


# ---------------------------------------------------------------------------- reconstruction
def table_reconstruction(cfg: Any) -> int:
    """``leaps-karel table-reconstruction``: CEM towards the four target programs."""
    targets = list(cfg.targets) or list(TARGET_PROGRAMS)
    grid = ("target-program=" + ",".join(targets),)
    with _open(cfg, "table-reconstruction") as run:
        d = _sweep(run.path, "cem", cfg.seeds, cfg.workers, cfg.cem_args(), grid)
        _mark(run.path, ["cem"])
        key = "target-program"
        in_sample = _stats(d, "eval/in_sample_with_bonus", key, cfg.seed)
        fresh = _stats(d, "eval/fresh_with_bonus", key, cfg.seed)
        programs = _runs(d, key)
        rows = {
            t: {
                "target": TARGET_PROGRAMS[t],
                "in_sample_with_bonus": in_sample[t],
                "fresh_with_bonus": fresh[t],
                "published_with_bonus": TARGET_PUBLISHED[t],
                "programs": [{"seed": r["seed"], "program": r["program"]} for r in programs[t]],
            }
            for t in targets
        }
        lines = [
            "Reward = prefix match of the behaviour with the target's demonstrations + 0.1 "
            f"(spec §3.5), **bonus included** as the README reports it; seeds {cfg.seeds}, "
            "mean (std) [95% CI]. in-sample: the last 10 demonstrations of the search; fresh: "
            f"{cfg.fresh_worlds} new demonstrations.",
            "",
            "| target | CEM in-sample | CEM fresh | README |",
            "|---|---|---|---:|",
        ]
        for t, r in rows.items():
            lines.append(
                f"| {t} | {_fmt(r['in_sample_with_bonus'])} | {_fmt(r['fresh_with_bonus'])} | "
                f"{r['published_with_bonus']:.2f} |"
            )
        lines += ["", "Targets and found programs:", ""]
        for t, r in rows.items():
            lines.append(f"- {t}: `{r['target']}`")
            lines += [f"  - seed {p['seed']}: `{p['program']}`" for p in r["programs"]]
        _finish(run.path, "Program reconstruction with CEM", lines, {"rows": rows})
    return 0


# ---------------------------------------------------------------------------- table 9
def scaled_spec(task: str, size: int) -> Any:
    """The task's spec on a ``size × size`` grid, or None when the task has a fixed map."""
    from leaps_karel.tasks.registry import CleanHouse, get_spec

    cls = type(get_spec(task))
    if cls is CleanHouse:
        return None
    spec = cls.__new__(cls)
    spec.height = spec.width = size
    spec.__init__()
    return spec


def zero_shot(task: str, program: str, size: int, worlds: int, budget: int, seed: int) -> float:
    """Mean rollout score (no bonus) of ``program`` on ``worlds`` seeded ``size²`` worlds."""
    from leaps_karel.tasks.base import Options, Task

    spec = scaled_spec(task, size)
    result = Task(spec, seed=seed, num_worlds=worlds, options=Options(budget=budget))
    scores = result.scores(program, worlds)
    return 0.0 if scores is None else sum(scores) / len(scores)


def _mean_std(values: list[float]) -> dict[str, Any]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": std}


def table9(cfg: Any) -> int:
    """``leaps-karel table9``: zero-shot re-evaluation of the CEM programs on large grids."""
    from leaps_karel.tasks.registry import get_spec

    tasks = [get_spec(t).name for t in cfg.tasks] or list(ALL_TASKS)
    scalable = [t for t in tasks if scaled_spec(t, cfg.size) is not None]
    with _open(cfg, "table9") as run:
        if cfg.table3 is not None:
            sweep_dir = cfg.table3 / "leaps-karel" / "sweeps" / "cem"
            if not (sweep_dir / "sweep.json").is_file():
                raise UserError(
                    f"--table3 {cfg.table3}: no leaps-karel/sweeps/cem/sweep.json in it; pass "
                    "the run directory of `leaps-karel table3`"
                )
        else:
            grid = ("task=" + ",".join(scalable),)
            sweep_dir = _sweep(run.path, "cem", cfg.seeds, cfg.workers, cfg.cem_args(), grid)
            _mark(run.path, ["cem"])
        found = _runs(sweep_dir, "task")
        rows: dict[str, Any] = {}
        for task in tasks:
            if task not in scalable:
                rows[task] = {"note": "fixed 14x22 apartment map: cannot be built larger"}
                continue
            if task not in found:
                raise UserError(f"--table3 {cfg.table3}: it has no finished {task} run")
            results = found[task]
            large = {
                b: [
                    zero_shot(task, r["program"], cfg.size, cfg.worlds, b, 10_000 + r["seed"])
                    for r in results
                ]
                for b in (220, cfg.large_budget)
            }
            rows[task] = {
                "original": _mean_std([r["fresh"]["return_without_bonus"] for r in results]),
                "large_220": _mean_std(large[220]),
                "large_budget": _mean_std(large[cfg.large_budget]),
                "published": TABLE9_PUBLISHED.get(task),
                "programs": [r["program"] for r in results],
            }
        n = cfg.size
        lines = [
            "Return without the bonus, mean (std) over the seeds' CEM programs. *original*: "
            "fresh worlds of the task's own size (the cem runs' re-evaluation); "
            f"*{n}x{n}*: {cfg.worlds} seeded {n}x{n} worlds per program, with the original call "
            f"budget 220 and with {cfg.large_budget:,}.",
            "",
            f"| task | original | {n}x{n}, budget 220 | {n}x{n}, budget {cfg.large_budget:,} | "
            "paper original | paper 100x100 |",
            "|---|---|---|---|---|---|",
        ]
        for task, r in rows.items():
            if "note" in r:
                lines.append(f"| {task} | — | {r['note']} | — | — | — |")
                continue
            pub = r["published"]
            po, pl = (f"{p[0]:.2f} ({p[1]:.2f})" for p in pub) if pub else ("—", "—")
            lines.append(
                f"| {task} | {_fmt(r['original'], False)} | {_fmt(r['large_220'], False)} | "
                f"{_fmt(r['large_budget'], False)} | {po} | {pl} |"
            )
        _finish(run.path, f"Zero-shot generalisation to {n}x{n} (Table 9)", lines, {"rows": rows})
    return 0
