"""``compkit-toy train``: a tiny, torch-free training command for tests and the sweep benchmark.

It behaves like every compkit training command (``--seed``, ``--run-name``, ``--runs-dir``,
``--threads``, ``--resume``; a run directory with ``config.json``, ``metrics.jsonl`` and
``checkpoints/last.pt``) but its "training" is a closed-form noisy learning curve, so a run
takes milliseconds. Its checkpoint is a JSON file (named ``last.pt`` like every compkit
checkpoint, which is what sweeps look for).

Sweep it with ``compkit sweep compkit_utils.sweep.toy:COMMANDS train --seeds 0-3``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

PACKAGE = "compkit-toy"
INTERRUPT_ENV = "COMPKIT_TOY_INTERRUPT_AT"
"""Tests: stop with KeyboardInterrupt once this step's checkpoint is written."""


@dataclasses.dataclass(frozen=True)
class ToyTrainConfig:
    """Fit a closed-form learning curve: acc = 1 - exp(-lr·(step+1)) + noise."""

    steps: int = 20
    """Training steps (one metrics.jsonl record each)."""
    learning_rate: float = 0.1
    """How fast the curve rises."""
    noise: float = 0.02
    """Standard deviation of the per-step noise (seeded by seed and step)."""
    work_s: float = 0.0
    """Seconds of sleep per step (to time sweeps)."""
    fail_at: int | None = None
    """Raise an error at this step (to test failure handling)."""
    fail_seed: int | None = None
    """With --fail-at: fail only the run with this seed (default: every seed)."""
    crash: bool = False
    """With --fail-at: end the whole process (``os._exit``) instead of raising."""
    seed: int = 0
    """Seed of the noise."""
    threads: int | None = None
    """Recorded in config.json (the toy computes nothing in parallel)."""
    runs_dir: Path | None = None
    """Runs root (default: $RUNS_DIR, else ./runs)."""
    run_name: str | None = None
    """Run directory name (default train__<seed>__<UTC time>)."""
    resume: bool = False
    """Continue the run --run-name from checkpoints/last.pt."""


COMMANDS: dict[str, type] = {"train": ToyTrainConfig}


def curve(cfg: ToyTrainConfig, step: int) -> dict[str, float]:
    """The metrics of one step (a pure function of seed, step and settings)."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, step])
    base = math.exp(-cfg.learning_rate * (step + 1))
    return {
        "train/loss": float(base + cfg.noise * abs(rng.standard_normal())),
        "eval/acc": float(1.0 - base + cfg.noise * rng.standard_normal()),
    }


def train(cfg: ToyTrainConfig) -> Path:
    """Run (or resume) the toy training; returns the run directory."""
    from compkit_utils.errors import UserError
    from compkit_utils.io import atomic_write_json
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import open_run, write_config

    if cfg.steps < 1:
        raise UserError("--steps must be at least 1")
    interrupt_at = os.environ.get(INTERRUPT_ENV)
    with open_run(
        PACKAGE,
        "train",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        start = 0
        if run.resumed:
            start = int(json.loads(run.last_checkpoint.read_text())["step"])
            print(f"resuming {run.path.name} at step {start}")
        write_config(run.path, cfg, PACKAGE)
        with RunLogger(run.path, console_every=0, resume=run.resumed, resume_step=start - 1) as log:
            for step in range(start, cfg.steps):
                if step == cfg.fail_at and cfg.fail_seed in (None, cfg.seed):
                    if cfg.crash:
                        os._exit(3)
                    raise RuntimeError(f"toy failure at step {step} (--fail-at)")
                if cfg.work_s > 0:
                    time.sleep(cfg.work_s)
                log.log(step, curve(cfg, step))
                atomic_write_json(run.last_checkpoint, {"step": step + 1})
                if interrupt_at is not None and step + 1 == int(interrupt_at):
                    raise KeyboardInterrupt
    print(f"done: {run.path}")
    return run.path


def main(argv: list[str] | None = None) -> int:
    """Entry point (``argv`` for in-process calls); exit status 2 on bad input."""
    from compkit_utils.config import run_cli

    return run_cli(COMMANDS, lambda cfg: train(cfg) and 0, argv, prog=PACKAGE)
