"""Command configurations of the ``leaps-karel`` CLI (frozen dataclasses; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class TaskOptionsConfig:
    """Task behaviour switches; the defaults reproduce the original LEAPS code exactly."""

    short_rollouts_score_zero: bool = True
    """A rollout with 0 or 1 executed actions scores 0 (original quirk)."""
    marker_total_lag: bool = True
    """FOURCORNER/HARVESTER count an action's put/pick only after its reward (original quirk)."""
    topoff_last_cell_marker: bool = True
    """TOPOFF's bottom-right cell holds a marker, as in the released CEM runs."""
    stairclimber_off_stairs_penalty: bool = False
    """STAIRCLIMBER rewards -1 off the stairs, as the paper describes."""
    budget: int = 220
    """Interpreter call budget."""


@dataclass(frozen=True)
class RunConfig:
    """Execute a program on a task world or a world file and print the trace."""

    program: str = ""
    """Program text, e.g. 'DEF run m( move m)'."""
    program_file: Path | None = None
    """Read the program from this file instead."""
    task: str = "maze"
    """Task whose initial world is used (ignored with --world)."""
    index: int = 0
    """Which of the task's seeded initial worlds."""
    seed: int = 0
    """Seed of the task's initial worlds."""
    world: Path | None = None
    """JSON world file {"grid": [...], "agent": [row, col, dir]} instead of a task world."""
    mode: Literal["no_crash", "crash"] = "no_crash"
    """no_crash: reward semantics; crash: dataset-generation semantics."""
    trace: bool = False
    """Print the world after every action."""
    render_out: Path | None = None
    """Write the visited states as an image/animation (PNG/GIF) via leaps_karel.render."""
    options: TaskOptionsConfig = TaskOptionsConfig()
    """Task options (budget, quirks)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Task return of programs (mean last-step reward over the rollouts + 0.1)."""

    task: str = "stairclimber"
    """Task name (see `leaps-karel tasks`)."""
    program: str = ""
    """Program text."""
    program_file: Path | None = None
    """File with one program per line (blank lines and lines starting with '%' skipped)."""
    seed: int = 0
    """Seed of the task's initial worlds."""
    num_worlds: int = 10
    """Rollouts per program."""
    per_rollout: bool = False
    """Also print every rollout's score."""
    workers: int = 1
    """Processes for many programs (0 = one per CPU)."""
    options: TaskOptionsConfig = TaskOptionsConfig()
    """Task options (budget, quirks)."""


@dataclass(frozen=True)
class TasksConfig:
    """List the six tasks with their grid size, reward type and description."""


@dataclass(frozen=True)
class BenchConfig:
    """Measure interpreter and task-evaluation speed beside a reference implementation."""

    seconds: float = 1.0
    """Time spent on each measurement (per side)."""
    seed: int = 0
    """Seed of the benchmark worlds."""
    tasks: tuple[str, ...] = ("stairclimber", "fourcorner", "topoff", "maze", "cleanhouse", "harvester")
    """Tasks for the task-evaluation figure."""
