r"""``factored-attention-babyai experiment``: the paper's Figure 3 experiment in one command.

Stages, each in the experiment's folder ``<runs-dir>/factored-attention-babyai/<run-name>/``,
which is also the runs root of its sweeps (``factored-attention-babyai/sweeps/<name>/``):

1. ``data``: ``--data DIR`` (checked to hold max(size) + vlimit demonstrations of every ID
   goal and tlimit of every held-out goal) or, with ``--generate``, ``generate --per-goal
   max(size) + vlimit`` into ``data/`` (an interrupted generation resumes);
2. ``discriminator``: the sparse factored attention discriminator (``train-discriminator
   --model independent``) swept over ``per-goal`` × seeds. **One discriminator per data size
   and seed**: spec §5.1 — the planner uses "the independent discriminator trained with the
   same limit and seed (final weights)" — and §4.4 trains discriminators at every limit with
   10 seeds, so each planner run sees only its own demonstrations (no goal labels), as in the
   paper. Post-processing (spec §7) is the trainer's own: each run writes ``interaction.pt``
   (final weights, masking module and optimizer dropped), which the planner loads;
3. ``planner``: ``train-planner`` (K = 10) swept over the same ``per-goal`` × seeds with
   ``--interaction`` = the discriminator sweep folder (each planner run loads the
   discriminator run with its own ``--per-goal`` and ``--seed``);
4. ``baselines``: FiLM/GRU and the encoder–decoder Transformer by ``bc-grid``'s code path
   (:func:`factored_attention_babyai.grid.run_grid`: one sweep ``train-bc`` over model ×
   ``per-goal`` × seeds, which also writes ``bc-grid``'s ``results.md`` tables there);
5. ``figures``: Figure 3 by the ``figures`` code (the preset's ``top`` validation points —
   10 as in the paper, 3 in the ``cpu`` preset, whose runs log 10 — by ID success per
   run, OOD at the same points, IQM with 95% stratified-bootstrap CIs by rliable; the BC
   sweep split into one curve per model) into ``figures/figure3_{id,ood}.png`` and
   ``figure3.json``, and the same numbers as a table in ``results.md`` (with the equivalent
   commands) and ``results.json`` (with the seconds of each stage).

Everything (preset, dataset sizes, seeds) is checked before the folder is created.
``checkpoints/last.pt`` records the stages done (and keeps the folder if a later stage
fails); a rerun with the same ``--run-name`` skips finished stages and continues the sweeps
(finished runs are skipped, interrupted ones resume), and refuses other settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError
from factored_attention_babyai.figures_config import CURVE_NAMES

if TYPE_CHECKING:
    from factored_attention_babyai.experiment_config import ExperimentConfig, Preset

__all__ = ["LABELS", "run_experiment"]

PACKAGE = "factored-attention-babyai"
STAGES = ("data", "discriminator", "planner", "baselines", "figures")
LABELS = {key: CURVE_NAMES[key] for key in ("planner", "film", "transformer")}
"""Figure 3 curve labels (spec §8.1 names)."""
KIND = "experiment"
"""Tag of the experiment's stage record (``checkpoints/last.pt``)."""
RESUME_FIELDS = ["preset", "smoke", "data", "generate", "seeds"]
"""Settings a rerun must repeat (device and workers may change)."""


def check_dataset(data: Path, preset: Preset) -> Path:
    """The dataset folder, if it serves every size of ``preset``.

    Raises:
        UserError: not a dataset, or too few demonstrations (naming ``generate --per-goal``).
    """
    from factored_attention_babyai.data import dataset_dir, goal_lists
    from factored_attention_babyai.vocab import ID_GOALS, OOD_GOALS

    folder = dataset_dir(data)
    try:
        train, valid = goal_lists(folder, "train"), goal_lists(folder, "valid")
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"--data {data}: not a readable dataset of `generate` ({exc})") from exc
    have_id = min(len(train.get(goal, [])) for goal in ID_GOALS)
    have_ood = min(len(valid.get(goal, [])) for goal in OOD_GOALS)
    if have_id < preset.per_goal_needed or have_ood < preset.tlimit:
        raise UserError(
            f"--data {data}: holds {have_id} demonstrations per ID goal and {have_ood} per "
            f"held-out goal; sizes up to {max(preset.sizes)} need {preset.per_goal_needed} and "
            f"{preset.tlimit}: make it with `factored-attention-babyai generate --per-goal "
            f"{max(preset.per_goal_needed, preset.tlimit)}` (or pass --generate)"
        )
    return folder


def _main(argv: list[str]) -> None:
    """Run one command of this package in-process; a failure stops the experiment."""
    from factored_attention_babyai.cli import main

    code = main(argv)
    if code != 0:
        raise UserError(f"stage `{PACKAGE} {argv[0]}` failed (exit {code}); see above")


def _generate(root: Path, preset: Preset, workers: int) -> Path:
    """``generate`` into ``<root>/data`` (resuming an interrupted generation)."""
    out = root / "data"
    argv = ["generate", "--per-goal", str(max(preset.per_goal_needed, preset.tlimit))]
    argv += ["--out-dir", str(out), "--n-procs", str(workers), "--no-progress"]
    if preset.per_goal_needed < 64:  # tiny datasets: small seed blocks finish sooner
        argv += ["--block-size", "256"]
    if out.exists():
        argv.append("--resume")
    _main(argv)
    return out


def _sweep(
    root: Path,
    command: str,
    preset: Preset,
    seeds: str,
    args: list[str],
    cfg: ExperimentConfig,
) -> Path:
    """Run (or continue) the sweep of ``command`` over ``per-goal`` × seeds; its folder."""
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep, run_sweep

    prepared = prepare_sweep(
        SweepOptions(
            package=PACKAGE,
            command=(command,),
            seeds=seeds,
            grid=("per-goal=" + ",".join(str(n) for n in preset.sizes),),
            args=tuple(args),
            name=command,
            runs_dir=str(root),
            workers=cfg.workers,
            threads_per_run=cfg.threads_per_run,
            retry_failed=True,
        )
    )
    outcome = run_sweep(prepared, progress=False)
    outcome.raise_if_failed(command)
    print(
        f"experiment: {command}: {len(outcome.results)} run(s) in {outcome.wall_s:.1f} s, "
        f"{len(outcome.skipped)} reused; {outcome.sweep_dir}",
        flush=True,
    )
    return outcome.sweep_dir


def _baselines(root: Path, data: Path, preset: Preset, seeds: str, cfg: ExperimentConfig) -> Path:
    """Both BC baselines through ``bc-grid``'s code path (one sweep over model × per-goal)."""
    from factored_attention_babyai.bc_config import BcGridConfig
    from factored_attention_babyai.grid import run_grid

    grid_cfg = BcGridConfig(
        data=data,
        per_goal=preset.sizes,
        models=("film", "transformer"),
        seeds=seeds,
        steps=preset.bc_steps,
        eval_every=preset.bc_eval_every,
        vlimit=preset.vlimit,
        tlimit=preset.tlimit,
        workers=cfg.workers,
        name="train-bc",
        device=cfg.device,
        runs_dir=root,
    )
    return run_grid(grid_cfg, threads_per_run=cfg.threads_per_run)


def figure3_runs(root: Path, max_step: int, top: int) -> dict[str, dict[int, list[Any]]]:
    """Curve → demos per goal → per run (ID, OOD values of its selected points), spec §8.2.

    One curve per model: the planner sweep and the BC sweep split by its ``model`` grid key.
    """
    from factored_attention_babyai.figures import collect_runs

    sweeps = root / PACKAGE / "sweeps"
    runs = collect_runs({"": [sweeps / "train-planner", sweeps / "train-bc"]}, max_step, top)
    return {label: runs[label] for label in LABELS.values() if label in runs}


def _ci(row: dict[str, Any]) -> str:
    return f"{row['iqm']:.3f} | [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def results_markdown(
    table: dict[str, Any], preset_name: str, preset: Preset, seeds: str, commands: list[str]
) -> str:
    """``results.md``: the Figure 3 numbers (IQM and 95% CI) per model and size, ID and OOD."""
    lines = [
        f"# factored-attention-babyai experiment (preset {preset_name})",
        "",
        f"Success rate of greedy rollouts on the 24 × {preset.vlimit} ID-validation seeds "
        f"(in distribution) and the 12 × {preset.tlimit} held-out-goal seeds (OOD). Spec §8.2: "
        f"per run the {preset.top} validation points (steps ≤ {preset.max_step}) with the best ID "
        "success, the OOD success at those same points; IQM over runs × points with a 95% "
        f"stratified-bootstrap CI (rliable, {preset.reps} repetitions). Seeds {seeds}.",
        "",
        "| model | demos per goal | runs | points per run | ID IQM | ID 95% CI | "
        "OOD IQM | OOD 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, panels in table.items():
        for id_row, ood_row in zip(panels["id"], panels["ood"], strict=True):
            lines.append(
                f"| {label} | {id_row['per_goal']} | {id_row['runs']} | {id_row['points']} | "
                f"{_ci(id_row)} | {_ci(ood_row)} |"
            )
    lines += ["", "Figure: `figures/figure3_id.png`, `figures/figure3_ood.png`.", "", "Made by:"]
    lines += ["", "```", *commands, "```", ""]
    return "\n".join(lines)


def _figures(root: Path, preset: Preset) -> dict[str, Any]:
    """Figure 3 by the ``figures`` code into ``figures/``; returns its table."""
    from compkit_utils.io import atomic_write_json
    from factored_attention_babyai.figures import figure3_table, plot_figure3

    table = figure3_table(figure3_runs(root, preset.max_step, preset.top), preset.reps, 0)
    out = root / "figures"
    out.mkdir(exist_ok=True)
    plot_figure3(table, "id", out / "figure3_id.png")
    plot_figure3(table, "ood", out / "figure3_ood.png")
    atomic_write_json(out / "figure3.json", table)
    return table


def _commands(cfg: ExperimentConfig, data: Path, preset: Preset, seeds: str) -> list[str]:
    """The experiment command and the equivalent stage commands (for results.md)."""
    exp = f"{PACKAGE} experiment --preset {cfg.preset_name}"
    exp += " --generate" if cfg.generates else f" --data {data}"
    if cfg.seeds is not None:
        exp += f" --seeds {cfg.seeds}"
    grid = "per-goal=" + ",".join(str(n) for n in preset.sizes)
    limits = f"--vlimit {preset.vlimit} --tlimit {preset.tlimit}"
    sweeps = f"RUNS/{PACKAGE}/sweeps"
    return [
        f"{exp} --run-name NAME",
        "# equivalent stages (RUNS = the experiment folder):",
        f"compkit sweep {PACKAGE} train-discriminator --seeds {seeds} --grid {grid} "
        f"--runs-dir RUNS -- --data {data} --model independent {limits} "
        + " ".join(preset.discriminator),
        f"compkit sweep {PACKAGE} train-planner --seeds {seeds} --grid {grid} --runs-dir RUNS "
        f"-- --data {data} --interaction {sweeps}/train-discriminator {limits} "
        + " ".join(preset.planner),
        f"{PACKAGE} bc-grid --data {data} --per-goal {' '.join(map(str, preset.sizes))} "
        f"--seeds {seeds} --name train-bc --runs-dir RUNS {limits} "
        f"--eval-every {preset.bc_eval_every}"
        + ("" if preset.bc_steps is None else f" --steps {preset.bc_steps}"),
        f"{PACKAGE} figures --out-dir RUNS/figures --max-step {preset.max_step} --top {preset.top} "
        f"--sweeps {sweeps}/train-planner {sweeps}/train-bc  # one curve per model",
    ]


def run_experiment(cfg: ExperimentConfig) -> Path:
    """Run (or continue) the experiment; returns its folder."""
    from compkit_utils.config import to_dict
    from compkit_utils.io import atomic_write_json, atomic_write_text
    from compkit_utils.runs import StageLog, open_run, run_root, write_config
    from factored_attention_babyai import __version__
    from factored_attention_babyai.experiment_config import PRESETS

    preset = PRESETS[cfg.preset_name]
    seeds = cfg.seeds or preset.seeds
    config = {**to_dict(cfg), "preset": cfg.preset_name, "generate": cfg.generates}
    data = None if cfg.data is None else check_dataset(cfg.data, preset)  # before any folder
    if data is not None:
        config["data"] = str(data.resolve())
    state_file = None
    if cfg.run_name is not None:
        candidate = run_root(PACKAGE, cfg.runs_dir) / cfg.run_name / "checkpoints" / "last.pt"
        state_file = candidate if candidate.is_file() else None
    log: StageLog | None = None
    if state_file is not None:  # a rerun: same settings, then reuse what is done
        name = str(cfg.run_name)
        log = StageLog.load(
            state_file, config, KIND, __version__, check=lambda s: _check_rerun(name, s, config)
        )
    with open_run(
        PACKAGE,
        "experiment",
        seed=0,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=state_file is not None,
    ) as run:
        root = run.path
        if state_file is None:
            write_config(root, cfg, PACKAGE)
        if log is None:
            log = StageLog(run.last_checkpoint, config, KIND, __version__)
            log.mark(None)  # from here on the folder is kept (a rerun continues it)
        stages = log.stages

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            return log.timed(stage, fn, label="experiment: ")

        if data is None:
            timed("data", lambda: _generate(root, preset, cfg.workers))
            data = root / "data"
        else:
            timed("data", lambda: None)
        common = ["--data", str(data), "--vlimit", str(preset.vlimit)]
        common += ["--tlimit", str(preset.tlimit), "--device", cfg.device]
        disc_args = [*common, "--model", "independent", *preset.discriminator]
        disc_dir = root / PACKAGE / "sweeps" / "train-discriminator"
        plan_args = [*common, "--interaction", str(disc_dir), *preset.planner]
        for stage, command, args in (
            ("discriminator", "train-discriminator", disc_args),
            ("planner", "train-planner", plan_args),
        ):
            timed(stage, lambda c=command, a=args: _sweep(root, c, preset, seeds, a, cfg))
        timed("baselines", lambda: _baselines(root, data, preset, seeds, cfg))
        if "figures" in stages:
            print("experiment: figures: reused")
        else:
            t0 = time.perf_counter()
            table = _figures(root, preset)
            commands = _commands(cfg, data, preset, seeds)
            text = results_markdown(table, cfg.preset_name, preset, seeds, commands)
            atomic_write_text(root / "results.md", text)
            log.mark("figures", time.perf_counter() - t0)
            summary = {"preset": cfg.preset_name, "seeds": seeds, "sizes": list(preset.sizes)}
            atomic_write_json(
                root / "results.json", {**summary, "figure3": table, "stage_seconds": stages}
            )
        print((root / "results.md").read_text(), end="")
        print(f"experiment: results.md, results.json and figures/ in {root}")
    return root


def _check_rerun(name: str, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a rerun into an experiment folder made with other settings (one line)."""
    for key in RESUME_FIELDS:
        if saved.get(key) != current.get(key):
            raise UserError(
                f"--run-name {name}: that experiment was made with {key} {saved.get(key)!r} "
                f"(now {current.get(key)!r}); rerun it with its own settings or pick another "
                "--run-name"
            )
