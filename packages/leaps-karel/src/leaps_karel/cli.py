"""The ``leaps-karel`` command line: run, evaluate, tasks, bench, generate-dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from compkit_utils.config import run_cli
from compkit_utils.errors import UserError
from leaps_karel.config import (
    BenchConfig,
    EvaluateConfig,
    GenerateDatasetConfig,
    RunConfig,
    TaskOptionsConfig,
    TasksConfig,
    VerifyDatasetConfig,
)
from leaps_karel.learn.commands import LEARN_COMMANDS, dispatch_learn

COMMANDS: dict[str, type] = {
    "run": RunConfig,
    "evaluate": EvaluateConfig,
    "tasks": TasksConfig,
    "bench": BenchConfig,
    "generate-dataset": GenerateDatasetConfig,
    "verify-dataset": VerifyDatasetConfig,
    **LEARN_COMMANDS,
}


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as exc:
        raise UserError(f"{path}: {what} file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} file ({exc})") from exc


def _programs(program: str, program_file: Path | None, *, many: bool) -> list[str]:
    if program and program_file is not None:
        raise UserError("give either --program or --program-file, not both")
    if program_file is not None:
        text = _read_text(program_file, "program")
        if many:
            progs = [
                ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("%")
            ]
        else:
            progs = [" ".join(text.split())]
        if not progs or not progs[0]:
            raise UserError(f"{program_file}: no program in the file")
        return progs
    if not program.strip():
        raise UserError("no program given; use --program 'DEF run m( ... m)' or --program-file")
    return [program]


def _options(cfg: TaskOptionsConfig) -> Any:
    from leaps_karel.tasks import Options

    return Options(
        short_rollouts_score_zero=cfg.short_rollouts_score_zero,
        marker_total_lag=cfg.marker_total_lag,
        topoff_last_cell_marker=cfg.topoff_last_cell_marker,
        stairclimber_off_stairs_penalty=cfg.stairclimber_off_stairs_penalty,
        budget=cfg.budget,
    )


def load_world(path: Path) -> Any:
    """Read a JSON world file ``{"grid": [...], "agent": [row, col, dir]}``.

    Raises:
        UserError: missing file, invalid JSON or malformed world, naming the file.
    """
    from leaps_karel.world import World

    text = _read_text(path, "world")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return World.from_dict(data, source=str(path))


def _run(cfg: RunConfig) -> int:
    from leaps_karel.dsl import parse
    from leaps_karel.interpreter import execute, replay
    from leaps_karel.tasks import make
    from leaps_karel.tasks.base import step_rewards
    from leaps_karel.world import ACTION_NAMES

    (text,) = _programs(cfg.program, cfg.program_file, many=False)
    if cfg.render is not None and cfg.render_out is None:
        raise UserError(f"--render {cfg.render} needs --render-out PATH (the file to write)")
    program = parse(text, strict=cfg.mode == "crash")
    options = _options(cfg.options)
    task = None
    if cfg.world is not None:
        world = load_world(cfg.world)
        source = str(cfg.world)
    else:
        task = make(cfg.task, seed=cfg.seed, num_worlds=cfg.index + 1, options=options)
        world = task.initial_worlds[cfg.index]
        source = f"task {task.name}, seed {cfg.seed}, world {cfg.index}"
    result = execute(program, world, options.budget, mode=cfg.mode)
    rewards = (
        step_rewards(task.spec, world, result.actions, options)
        if task is not None and cfg.mode == "no_crash"
        else None
    )
    print(f"program: {text}")
    print(f"world: {source}")
    print(world.render_ascii())
    states = replay(world, result.actions) if cfg.trace or cfg.render_out else []
    if cfg.trace:
        for i, a in enumerate(result.actions):
            reward = f"  reward {rewards[i]:.4f}" if rewards is not None else ""
            print(f"\nstep {i + 1}: {ACTION_NAMES[a]}{reward}")
            print(states[i + 1].render_ascii())
    else:
        print("actions: " + " ".join(ACTION_NAMES[a] for a in result.actions))
        print("\nfinal world:")
        print(result.world.render_ascii())
    print(
        f"\n{len(result.actions)} actions, counter {result.n}, status {result.status}"
        + (f", finished {result.finished}")
    )
    if rewards is not None:
        min_actions = 2 if options.short_rollouts_score_zero else 1
        score = rewards[-1] if len(rewards) >= min_actions else 0.0
        print(f"rollout score {score:.6f} (last-step reward)")
    if cfg.render_out is not None:
        from leaps_karel import render

        names = [ACTION_NAMES[a] for a in result.actions]
        written = render.write_trace(states, cfg.render_out, fmt=cfg.render, actions=names)
        print(f"wrote {written}")
    return 0


def _evaluate(cfg: EvaluateConfig) -> int:
    from leaps_karel.batch import evaluate_batch
    from leaps_karel.tasks import make

    programs = _programs(cfg.program, cfg.program_file, many=True)
    if not cfg.allow_invalid:
        from leaps_karel.dsl import ParseError, is_valid, parse

        for number, text in enumerate(programs, start=1):
            if is_valid(text):
                continue
            where = f"{cfg.program_file}: program {number}" if cfg.program_file else "--program"
            try:
                parse(text)
                reason = "is too short to be valid (4 tokens or fewer)"
            except ParseError as exc:
                reason = str(exc)
            raise UserError(
                f"{where}: {reason} (pass --allow-invalid to score it as the original: 0.01)"
            )
    task = make(cfg.task, seed=cfg.seed, num_worlds=cfg.num_worlds, options=_options(cfg.options))
    returns = evaluate_batch(
        task, programs, num_worlds=cfg.num_worlds, workers=cfg.workers, progress=True
    )
    for text, ret in zip(programs, returns, strict=True):
        print(f"{ret:.6f}\t{text}")
        if cfg.per_rollout:
            scores = task.scores(text, cfg.num_worlds)
            if scores is None:
                print("\tinvalid program (return 0.01)")
            else:
                print("\tscores: " + " ".join(f"{s:.4f}" for s in scores))
    return 0


def _tasks(cfg: TasksConfig) -> int:
    from leaps_karel.tasks import describe

    for name, grid, reward_type, description in describe():
        print(f"{name:<13} {grid:<6} {reward_type:<7} {description}")
    return 0


def _bench(cfg: BenchConfig) -> int:
    import os

    from leaps_karel.bench import format_table, run_bench
    from leaps_karel.tasks.registry import get_spec, task_names

    tasks = tuple(get_spec(t).name for t in cfg.tasks) if cfg.tasks else tuple(task_names())
    print(
        f"leaps-karel bench: {cfg.seconds:g} s of CPU time per measurement, seed {cfg.seed}, "
        "one process; rates are per CPU-second"
    )
    rows = run_bench(cfg.seconds, cfg.seed, tasks)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(format_table(rows))
    print(f"\nload average (1 min) at the end: {load:.2f}; python {sys.version.split()[0]}")
    return 0


def _verify_dataset(cfg: VerifyDatasetConfig) -> int:
    from leaps_karel.dataset import default_data_dir
    from leaps_karel.reader import KarelProgramDataset

    path = cfg.path if cfg.path is not None else default_data_dir()
    folder = path if path.is_dir() else path.parent
    if not (folder / "dataset_info.json").is_file():
        raise UserError(
            f"{folder}: no dataset_info.json, so the checksums cannot be checked; regenerate "
            f"the dataset with `leaps-karel generate-dataset --out-dir {folder} --overwrite`"
        )
    data = KarelProgramDataset(path, validate=True)
    print(f"{data.file}: {len(data)} programs, all readable; checksums match")
    return 0


def _dispatch(cfg: object) -> int:
    status = dispatch_learn(cfg)
    if status is not None:
        return status
    match cfg:
        case RunConfig():
            return _run(cfg)
        case EvaluateConfig():
            return _evaluate(cfg)
        case TasksConfig():
            return _tasks(cfg)
        case BenchConfig():
            return _bench(cfg)
        case GenerateDatasetConfig():
            from leaps_karel.dataset import generate_dataset_command

            return generate_dataset_command(cfg)
        case VerifyDatasetConfig():
            return _verify_dataset(cfg)
        case _:
            raise AssertionError(f"unhandled command config: {cfg!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``leaps-karel``; ``argv`` lets tests call it in-process."""
    return run_cli(
        COMMANDS,
        _dispatch,
        argv,
        prog="leaps-karel",
        description="LEAPS Karel: run and evaluate DSL programs on the six tasks; benchmark.",
    )


def entry() -> None:
    """Console-script entry: exit with `main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
