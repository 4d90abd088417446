"""Command configurations of the ``leaps-karel`` CLI (frozen dataclasses; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from compkit_utils.validate import Choice, InputFile, InputPath, OutputDir, Range


def _task_names() -> list[str]:
    from leaps_karel.tasks.registry import task_names

    return task_names()


class TaskChoice(Choice):
    """A task of the registry, spelled as `leaps_karel.tasks.registry.get_spec` accepts it.

    Any case, ``-``/``_`` ignored, aliases; the error lists the registered names.
    """

    def __init__(self) -> None:
        super().__init__(_task_names)

    def validate(self, value: Any, flag: str) -> None:
        """Raise `UserError` unless ``value`` names a registered task."""
        from compkit_utils.errors import UserError
        from leaps_karel.tasks.registry import get_spec

        try:
            get_spec(str(value))
        except UserError:
            listed = ", ".join(self.options())
            raise UserError(f"{flag} must be one of {listed}; got {value!r}") from None


#: A task name of the registry (``leaps-karel tasks``), checked when the command runs.
TaskName = Annotated[str, TaskChoice()]
Seed = Annotated[int, Range(0)]


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
    budget: Annotated[int, Range(0)] = 220
    """Interpreter call budget."""


@dataclass(frozen=True)
class RunConfig:
    """Execute a program on a task world or a world file and print the trace."""

    program: str = ""
    """Program text, e.g. 'DEF run m( move m)'."""
    program_file: Annotated[Path | None, InputFile()] = None
    """Read the program from this file instead."""
    task: TaskName = "maze"
    """Task whose initial world is used (ignored with --world)."""
    index: Annotated[int, Range(0)] = 0
    """Which of the task's seeded initial worlds."""
    seed: Seed = 0
    """Seed of the task's initial worlds."""
    world: Annotated[Path | None, InputFile()] = None
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

    task: TaskName = "stairclimber"
    """Task name (see `leaps-karel tasks`)."""
    program: str = ""
    """Program text."""
    program_file: Annotated[Path | None, InputFile()] = None
    """File with one program per line (blank lines and lines starting with '%' skipped)."""
    seed: Seed = 0
    """Seed of the task's initial worlds."""
    num_worlds: Annotated[int, Range(1)] = 10
    """Rollouts per program."""
    per_rollout: bool = False
    """Also print every rollout's score."""
    allow_invalid: bool = False
    """Score programs that do not parse as the original did (return 0.01) instead of stopping
    with an error; for scoring generated candidates."""
    workers: Annotated[int, Range(0)] = 1
    """Processes for many programs (0 = one per CPU)."""
    options: TaskOptionsConfig = TaskOptionsConfig()
    """Task options (budget, quirks)."""


@dataclass(frozen=True)
class TasksConfig:
    """List the six tasks with their grid size, reward type and description."""


@dataclass(frozen=True)
class BenchConfig:
    """Measure interpreter and task-evaluation speed beside a reference implementation."""

    seconds: Annotated[float, Range(0, None, lo_open=True)] = 1.0
    """Time spent on each measurement (per side)."""
    seed: Seed = 0
    """Seed of the benchmark worlds."""
    tasks: Annotated[tuple[str, ...], TaskChoice()] = ()
    """Tasks for the task-evaluation figure (default: every task of the registry)."""


@dataclass(frozen=True)
class DatasetConfig:
    """What determines a generated dataset's content; the defaults are the original's.

    ``data_info`` records ``num_val = num_test = ⌊0.15 N⌋`` and ``num_train`` the rest (the
    paper's 35 000 / 7 500 / 7 500 for N = 50 000); consumers re-split the programs (spec §9).
    """

    num_programs: Annotated[int, Range(1)] = 50_000
    """Programs to generate (the paper's dataset has 50 000)."""
    seed: Seed = 123
    """Seed of the program stream and of every program's worlds (the original used 123)."""
    height: Annotated[int, Range(3)] = 8
    """World rows H."""
    width: Annotated[int, Range(3)] = 8
    """World columns W."""
    wall_prob: Annotated[float, Range(0, 1, hi_open=True)] = 0.1
    """Probability that an interior cell is a wall."""
    marker_prob: Annotated[float, Range(0, 1)] = 0.1
    """Probability that a free cell starts with one marker."""
    max_program_length: Annotated[int, Range(5)] = 50
    """Longest program kept, in tokens (DEF ... m) included)."""
    max_depth: Annotated[int, Range(1)] = 6
    """Sampler depth limit."""
    max_nesting_depth: Annotated[int, Range(1)] = 4
    """Sampler nesting limit."""
    min_demo_length: Annotated[int, Range(1)] = 4
    """Fewest states (initial state included) of a kept demonstration."""
    max_demo_length: Annotated[int, Range(1)] = 20
    """Most states of a kept demonstration."""
    min_max_demo_length: Annotated[int, Range(1)] = 2
    """A program is dropped when its longest demonstration has fewer states."""
    num_demo_per_program: Annotated[int, Range(1)] = 10
    """Demonstrations per program."""
    max_demo_generation_trial: Annotated[int, Range(1)] = 100
    """Worlds tried per program before it is dropped."""

    def check(self) -> None:
        """Cross-field rules (the field ranges are markers); raises `UserError`."""
        from compkit_utils.errors import UserError

        if self.min_demo_length > self.max_demo_length:
            raise UserError(
                f"--min-demo-length ({self.min_demo_length}) must be <= --max-demo-length "
                f"({self.max_demo_length})"
            )
        if self.max_demo_generation_trial < self.num_demo_per_program:
            raise UserError(
                f"--max-demo-generation-trial ({self.max_demo_generation_trial}) must be >= "
                f"--num-demo-per-program ({self.num_demo_per_program})"
            )

    def validate(self) -> None:
        """Check the field ranges and `check` (for callers outside the CLI)."""
        from compkit_utils.validate import validate_config

        validate_config(self)


@dataclass(frozen=True)
class GenerateDatasetConfig:
    """Generate the pre-training dataset: programs + demonstrations (original HDF5 layout)."""

    out_dir: Annotated[Path | None, OutputDir()] = None
    """Output folder; default $COMPKIT_DATA_DIR/karel-programs, else
    ~/.cache/compkit/karel-programs (with --smoke: a run folder under --runs-dir)."""
    data: Annotated[DatasetConfig, tyro.conf.OmitArgPrefixes] = DatasetConfig()
    """Dataset content."""
    n_procs: Annotated[int, Range(1)] = 1
    """Worker processes; the output is identical for any value."""
    shard_size: Annotated[int, Range(1)] = 200
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
    """Tiny run (default 20 programs) into a fresh run folder, for checking an install."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Root of run folders for --smoke (default: $RUNS_DIR, else 'runs')."""

    @classmethod
    def smoke_defaults(cls) -> GenerateDatasetConfig:
        """The ``--smoke`` defaults: 20 programs (explicit flags still win)."""
        return cls(data=DatasetConfig(num_programs=20), smoke=True)


@dataclass(frozen=True)
class VerifyDatasetConfig:
    """Check a generated dataset: SHA-256 of every file, and every program readable."""

    path: Annotated[Path | None, InputPath()] = None
    """Dataset folder (or its data.hdf5); default: the generate-dataset default --out-dir."""
