"""``compkit bench-sweep``: the issue's three sweep targets, measured (timings, not tests).

1. Local backend overhead per run (toy runs of ~0 s on one worker), with interpreter
   start and ``import torch`` measured separately.
2. compile-seg seeds on 2 workers × 1 thread vs. one after another at the default threads
   (if compile-seg is installed).
3. Ray backend overhead per run on a local instance (if ray is installed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from importlib import util
from pathlib import Path

from compkit_utils.sweep.core import (
    SweepOptions,
    SweepOutcome,
    free_cores,
    prepare_sweep,
    run_sweep,
)

TOY = "compkit_utils.sweep.toy:COMMANDS"


def _timed_python(code: str) -> float:
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - begin


def _sweep(runs_dir: Path, name: str, **kwargs: object) -> SweepOutcome:
    options = SweepOptions(runs_dir=str(runs_dir), name=name, **kwargs)  # type: ignore[arg-type]
    outcome = run_sweep(prepare_sweep(options), progress=False)
    if outcome.failed:
        first = outcome.failed[0]
        raise RuntimeError(f"benchmark run {first.name} failed: {first.error}")
    return outcome


def _overhead(outcome: SweepOutcome, startup: float) -> float:
    runs = len(outcome.results)
    inside = sum(r.seconds for r in outcome.results)
    return (outcome.wall_s - startup - inside) / runs


def run_bench(args: argparse.Namespace) -> int:
    """Run the measurements and print one line each (with the ratios to the targets)."""
    with tempfile.TemporaryDirectory(prefix="compkit-bench-") as tmp:
        runs_dir = Path(args.runs_dir or tmp)
        print(f"cores: {free_cores()}, python: {sys.version.split()[0]}")
        if "local" not in args.skip:
            bare = _timed_python("pass")
            torch_s = _timed_python("import torch") - bare
            print(f"process start: {bare:.2f} s; import torch: {torch_s:.2f} s (once per worker)")
            seeds = f"0-{args.runs - 1}"
            outcome = _sweep(
                runs_dir,
                "bench-local",
                package=TOY,
                command=("train",),
                seeds=seeds,
                args=("--steps", "1"),
                workers=1,
                threads_per_run=1,
            )
            timings = outcome.results[0].worker
            startup = bare + sum(timings.values())
            per_run = _overhead(outcome, startup)
            print(
                f"local overhead per run: {per_run:.3f} s over {args.runs} runs "
                f"(target <= 0.5 s: {per_run / 0.5:.2f}x of the budget); worker start "
                f"{startup:.2f} s once"
            )
        if "compile-seg" not in args.skip and util.find_spec("compile_seg") is not None:
            seeds = f"0-{args.seeds - 1}"
            common = {"package": "compile-seg", "command": ("train",), "seeds": seeds}
            sequential = _sweep(runs_dir, "bench-sequential", workers=1, **common)
            parallel = _sweep(runs_dir, "bench-parallel", workers=2, threads_per_run=1, **common)
            # What a user without the sweep does: one command after another, each a fresh
            # process (interpreter start and `import torch` every time), default threads.
            begin = time.perf_counter()
            for seed in range(args.seeds):
                command = [sys.executable, "-m", "compile_seg.cli", "train", "--seed", str(seed)]
                command += ["--runs-dir", str(runs_dir / "bench-commands")]
                subprocess.run(command, check=True, capture_output=True)
            commands_s = time.perf_counter() - begin
            print(
                f"compile-seg {args.seeds} seeds: 2 workers x 1 thread {parallel.wall_s:.1f} s; "
                f"{args.seeds} commands one after another (default threads) {commands_s:.1f} s, "
                f"ratio {parallel.wall_s / commands_s:.2f} (target <= 0.6); the same runs in "
                f"one warm process at {sequential.threads} threads {sequential.wall_s:.1f} s, "
                f"ratio {parallel.wall_s / sequential.wall_s:.2f}"
            )
        if "ray" not in args.skip and util.find_spec("ray") is not None:
            from compkit_utils.sweep.ray_backend import connect

            begin = time.perf_counter()
            ray, _ = connect(None, 1)
            init_s = time.perf_counter() - begin
            try:
                warm = _sweep(
                    runs_dir,
                    "bench-ray-warmup",
                    package=TOY,
                    command=("train",),
                    seeds="0",
                    args=("--steps", "1"),
                    backend="ray",
                    threads_per_run=1,
                )
                outcome = _sweep(
                    runs_dir,
                    "bench-ray",
                    package=TOY,
                    command=("train",),
                    seeds=f"0-{args.runs - 1}",
                    args=("--steps", "1"),
                    backend="ray",
                    threads_per_run=1,
                )
                per_run = _overhead(outcome, 0.0)
                print(
                    f"ray overhead per run: {per_run:.3f} s over {args.runs} runs on a local "
                    f"instance of 1 CPU (target <= 1 s: {per_run:.2f}x); ray.init {init_s:.1f} s, "
                    f"first run (worker start) {warm.wall_s:.1f} s"
                )
            finally:
                ray.shutdown()
    return 0
