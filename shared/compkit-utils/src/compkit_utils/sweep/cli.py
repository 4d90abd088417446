"""The ``compkit`` command: ``sweep``, ``report`` and ``bench-sweep``.

Only argparse and the standard library are imported here: ``compkit --help`` imports
neither torch nor ray.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from compkit_utils.config import os_error_message
from compkit_utils.errors import UserError

PROG = "compkit"

SWEEP_EPILOG = """\
examples:
  compkit sweep compile-seg train --seeds 0-9 --grid learning-rate=1e-3,3e-3 --workers 2
  compkit sweep rim-cells minigrid train --seeds 0-4 --grid model.memory=rim,lstm \\
      -- --frames 80000
  compkit sweep compile-seg train --seeds 0-9 --backend ray --address auto

Arguments after -- are passed unchanged to every run. Grid keys are the command's flags
(learning-rate, loss.beta-b, model.memory) or its dotted config fields
(optim.learning_rate). Runs go to <runs-dir>/<package>/sweeps/<name>/<run>/; rerunning
the same sweep skips finished runs and resumes interrupted ones.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Seed/config sweeps of compkit commands and their tables."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{sweep,report,bench-sweep}")

    sweep = sub.add_parser(
        "sweep",
        help="run a command over seeds and a grid (local pool or Ray)",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("package", help="package (compile-seg, rim-cells, ...) or module:attr")
    sweep.add_argument("command", nargs="+", help="the subcommand path (train; minigrid train)")
    sweep.add_argument("--seeds", required=True, help="seeds: 0-9, 0,3,7 or 0-4,10-12")
    sweep.add_argument(
        "--grid",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=V1,V2",
        help="grid axes; every combination runs with every seed",
    )
    sweep.add_argument("--name", help="sweep name (default: the command, e.g. train)")
    sweep.add_argument("--runs-dir", help="runs root (default: $RUNS_DIR, else ./runs)")
    sweep.add_argument("--workers", type=int, default=1, help="parallel runs (default 1)")
    sweep.add_argument(
        "--threads-per-run",
        type=int,
        help="CPU threads per run (default: free cores // workers, at least 1)",
    )
    sweep.add_argument("--backend", choices=("local", "ray"), default="local")
    sweep.add_argument(
        "--address",
        help="Ray cluster to join: auto, host:port or ray://host:port (default: a local instance)",
    )
    sweep.add_argument("--retry-failed", action="store_true", help="rerun runs that failed")

    report = sub.add_parser("report", help="tables with bootstrap CIs over a sweep's seeds")
    report.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="sweep directories")
    report.add_argument("--metric", required=True, help="metric key, e.g. eval/rec_acc")
    report.add_argument("--at", default="final", help="final (default), best, or a step number")
    report.add_argument(
        "--mode", choices=("max", "min"), default="max", help="what best/reach mean"
    )
    report.add_argument(
        "--reach",
        type=float,
        help="report the first step where the metric reaches this value instead",
    )
    report.add_argument(
        "--x", default="step", help="progress key of the records: step (default), env_steps, ..."
    )
    report.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    report.add_argument("--plot", help="also draw learning curves with 95%% CI bands to this PNG")
    report.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")

    bench = sub.add_parser("bench-sweep", help="time the sweep backends (not a test)")
    bench.add_argument("--runs", type=int, default=20, help="toy runs per overhead measurement")
    bench.add_argument("--seeds", type=int, default=10, help="compile-seg seeds (10)")
    bench.add_argument(
        "--skip", action="extend", nargs="+", default=[], choices=("local", "compile-seg", "ray")
    )
    bench.add_argument("--runs-dir", help="where the benchmark's sweeps go (default: a temp dir)")
    return parser


def _sweep(args: argparse.Namespace, extra: list[str]) -> int:
    from compkit_utils.sweep.core import SweepOptions, prepare_sweep, run_sweep

    options = SweepOptions(
        package=args.package,
        command=tuple(args.command),
        seeds=args.seeds,
        grid=tuple(args.grid),
        args=tuple(extra),
        name=args.name,
        runs_dir=args.runs_dir,
        workers=args.workers,
        threads_per_run=args.threads_per_run,
        backend=args.backend,
        address=args.address,
        retry_failed=args.retry_failed,
    )
    prepared = prepare_sweep(options)
    outcome = run_sweep(prepared)
    done = len(outcome.results) - len(outcome.failed)
    print(
        f"{outcome.sweep_dir}: {done} run(s) finished, {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} skipped (done before), {outcome.threads} thread(s) per run, "
        f"{outcome.wall_s:.1f} s"
    )
    for result in outcome.failed:
        print(f"  FAILED {result.name}: {result.error}")
    if outcome.failed:
        print("rerun with --retry-failed to try the failed runs again")
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from compkit_utils.sweep.report import (
        describe,
        format_rows,
        load_groups,
        plot_curves,
        summarise,
    )

    if args.reps < 100:
        raise UserError(f"--reps {args.reps}: use at least 100 bootstrap resamples")
    groups = load_groups(args.sweep_dirs)
    rows = summarise(
        groups,
        args.metric,
        at=args.at,
        mode=args.mode,
        reach=args.reach,
        reps=args.reps,
        seed=args.seed,
        x=args.x,
    )
    title = describe(args.metric, args.at, args.mode, args.reach, args.x)
    sys.stdout.write(format_rows(rows, args.format, title=title))
    if args.plot:
        path = plot_curves(groups, args.metric, args.plot, seed=args.seed, x=args.x)
        print(f"learning curves: {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``compkit``; ``argv`` lets tests call it in-process.

    Returns:
        The exit status: 0 done, 1 some run failed, 2 bad input (one line on stderr).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    try:
        if extra and args.action != "sweep":
            raise UserError(f"compkit {args.action} takes no arguments after --")
        match args.action:
            case "sweep":
                return _sweep(args, extra)
            case "report":
                return _report(args)
            case "bench-sweep":
                from compkit_utils.sweep.bench import run_bench

                return run_bench(args)
            case _:
                raise AssertionError(f"unhandled command: {args.action!r}")
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    except OSError as exc:  # a runs directory that is read-only, full, or in the way
        if exc.filename is None:
            raise
        print(f"{PROG}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
