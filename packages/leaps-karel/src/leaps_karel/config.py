"""Command configurations of the ``leaps-karel`` CLI (frozen dataclasses; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


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
    render: Literal["gif", "png", "txt"] | None = None
    """Format of --render-out: gif (a frame per action), png (sheet of all frames), txt
    (ASCII frames); default: from the file suffix."""
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
    allow_invalid: bool = False
    """Score programs that do not parse as the original did (return 0.01) instead of stopping
    with an error; for scoring generated candidates."""
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
    tasks: tuple[str, ...] = (
        "stairclimber",
        "fourcorner",
        "topoff",
        "maze",
        "cleanhouse",
        "harvester",
    )
    """Tasks for the task-evaluation figure."""


@dataclass(frozen=True)
class DatasetConfig:
    """What determines a generated dataset's content; the defaults are the original's.

    ``data_info`` records ``num_val = num_test = ⌊0.15 N⌋`` and ``num_train`` the rest (the
    paper's 35 000 / 7 500 / 7 500 for N = 50 000); consumers re-split the programs (spec §9).
    """

    num_programs: int = 50_000
    """Programs to generate (the paper's dataset has 50 000)."""
    seed: int = 123
    """Seed of the program stream and of every program's worlds (the original used 123)."""
    height: int = 8
    """World rows H."""
    width: int = 8
    """World columns W."""
    wall_prob: float = 0.1
    """Probability that an interior cell is a wall."""
    marker_prob: float = 0.1
    """Probability that a free cell starts with one marker."""
    max_program_length: int = 50
    """Longest program kept, in tokens (DEF ... m) included)."""
    max_depth: int = 6
    """Sampler depth limit."""
    max_nesting_depth: int = 4
    """Sampler nesting limit."""
    min_demo_length: int = 4
    """Fewest states (initial state included) of a kept demonstration."""
    max_demo_length: int = 20
    """Most states of a kept demonstration."""
    min_max_demo_length: int = 2
    """A program is dropped when its longest demonstration has fewer states."""
    num_demo_per_program: int = 10
    """Demonstrations per program."""
    max_demo_generation_trial: int = 100
    """Worlds tried per program before it is dropped."""

    def validate(self) -> None:
        """Check ranges; raises `UserError` naming the field."""
        from compkit_utils.errors import UserError

        checks = [
            (self.num_programs >= 1, "--num-programs must be >= 1"),
            (self.height >= 3 and self.width >= 3, "--height and --width must be >= 3"),
            (0.0 <= self.wall_prob < 1.0, "--wall-prob must be in [0, 1)"),
            (0.0 <= self.marker_prob <= 1.0, "--marker-prob must be in [0, 1]"),
            (self.max_program_length >= 5, "--max-program-length must be >= 5"),
            (
                1 <= self.min_demo_length <= self.max_demo_length,
                "need 1 <= --min-demo-length <= --max-demo-length",
            ),
            (self.num_demo_per_program >= 1, "--num-demo-per-program must be >= 1"),
            (
                self.max_demo_generation_trial >= self.num_demo_per_program,
                "--max-demo-generation-trial must be >= --num-demo-per-program",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"generate-dataset: {message}")


@dataclass(frozen=True)
class GenerateDatasetConfig:
    """Generate the pre-training dataset: programs + demonstrations (original HDF5 layout)."""

    out_dir: Path | None = None
    """Output folder; default $COMPKIT_DATA_DIR/karel-programs, else
    ~/.cache/compkit/karel-programs (with --smoke: a run folder under --runs-dir)."""
    data: Annotated[DatasetConfig, tyro.conf.OmitArgPrefixes] = DatasetConfig()
    """Dataset content."""
    n_procs: int = 1
    """Worker processes; the output is identical for any value."""
    shard_size: int = 200
    """Candidate programs per shard (unit of work and of resumption; output unchanged)."""
    compression: Literal["gzip", "lzf", "none"] = "gzip"
    """HDF5 filter of the large datasets ('none' = the original's plain layout, ~69 kB/program)."""
    overwrite: bool = False
    """Replace an existing dataset or interrupted generation in --out-dir."""
    resume: bool = False
    """Continue an interrupted generation in --out-dir (same settings; finished shards kept)."""
    keep_shards: bool = False
    """Keep the per-shard files (.shards/) after merging."""
    smoke: bool = False
    """Tiny run (20 programs) into a fresh run folder, for checking an install."""
    runs_dir: Path | None = None
    """Root of run folders for --smoke (default: $RUNS_DIR, else 'runs')."""
