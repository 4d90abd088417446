"""Configuration of the paper-table commands (``table3``, ``table-reconstruction``, ``table9``).

Torch-free. Each table runs its searches through the sweep layer (``compkit sweep``'s local
backend, one sweep per task or target) inside the table's own run directory and summarises
them with ``compkit report``'s statistics (`compkit_utils.sweep.report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputDir, InputFile, OutputDir, Range
from leaps_karel.config import TaskChoice
from leaps_karel.learn.cem_config import TARGET_PROGRAMS


@dataclass(frozen=True)
class TableCommon:
    """Settings shared by the table commands (the CEM runs of every seed)."""

    seeds: str = "0-4"
    """Seeds of the searches, as compkit sweep takes them (the paper: 5 seeds)."""
    workers: Annotated[int, Range(1)] = 2
    """Searches run side by side (sweep workers)."""
    max_iterations: Annotated[int | None, Range(1)] = None
    """CEM iterations at most (default: the presets' 1000)."""
    fresh_worlds: Annotated[int, Range(1)] = 100
    """Fresh initial states for re-evaluating each final program."""
    weights: Annotated[Path | None, InputFile()] = None
    """Decoder weights (default: the shipped LEAPS weights)."""
    random_decoder: bool = False
    """A random decoder instead of weights (tests and timing only; results meaningless)."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Root of run folders (default: $RUNS_DIR, else 'runs')."""
    run_name: str | None = None
    """Name of the table's run; rerunning with the same name continues it (finished searches
    are reused)."""
    seed: Annotated[int, Range(0)] = 0
    """Seed of the bootstrap confidence intervals."""
    smoke: bool = False
    """Two seeds, two CEM iterations, a random decoder: checks the pipeline in seconds."""

    def check(self) -> None:
        """Cross-field rules."""
        if self.weights is not None and self.random_decoder:
            raise UserError("give either --weights or --random-decoder, not both")
        from compkit_utils.sweep.grid import parse_seeds

        parse_seeds(self.seeds)

    def cem_args(self) -> tuple[str, ...]:
        """Fixed arguments of every ``leaps-karel cem`` run of the table."""
        args: list[str] = ["--quiet", "--fresh-worlds", str(self.fresh_worlds)]
        if self.max_iterations is not None:
            args += ["--max-iterations", str(self.max_iterations)]
        if self.weights is not None:
            args += ["--weights", str(self.weights)]
        if self.random_decoder:
            args += ["--random-decoder"]
        return tuple(args)


_SMOKE = {"seeds": "0-1", "max_iterations": 2, "random_decoder": True, "fresh_worlds": 10}


@dataclass(frozen=True)
class Table3Config(TableCommon):
    """Table 3's LEAPS row: CEM over 5 seeds per task, beside the paper and hill climbing."""

    tasks: Annotated[tuple[str, ...], TaskChoice()] = ()
    """Tasks (default: all six)."""
    hill_climbing: Literal["auto", "yes", "no"] = "auto"
    """Add the hill-climbing column (auto: when the search command exists)."""
    search_episodes: Annotated[int | None, Range(1)] = None
    """Hill climbing's episode budget (default: CEM's largest, (P+1) x 10 x iterations)."""

    @classmethod
    def smoke_defaults(cls) -> Table3Config:
        """``--smoke``: MAZE only, 2 seeds, 2 iterations, 500 hill-climbing episodes."""
        return cls(smoke=True, tasks=("maze",), search_episodes=500, **_SMOKE)  # type: ignore[arg-type]


def _target_names() -> list[str]:
    return list(TARGET_PROGRAMS)


@dataclass(frozen=True)
class ReconstructionTableConfig(TableCommon):
    """Program reconstruction with CEM (spec §8.3): the four README targets over 5 seeds."""

    targets: Annotated[tuple[str, ...], Choice(_target_names)] = ()
    """Targets (default: test1..test4)."""
    population: Annotated[int | None, Range(1)] = None
    """CEM population (default: the base preset's 384)."""

    @classmethod
    def smoke_defaults(cls) -> ReconstructionTableConfig:
        """``--smoke``: test1 only, 2 seeds, 2 iterations of 16."""
        return cls(smoke=True, targets=("test1",), population=16, **_SMOKE)  # type: ignore[arg-type]

    def cem_args(self) -> tuple[str, ...]:
        """The common arguments plus the population."""
        extra = ("--population", str(self.population)) if self.population else ()
        return (*TableCommon.cem_args(self), *extra)


@dataclass(frozen=True)
class Table9Config(TableCommon):
    """Table 9's LEAPS rows: the CEM programs re-evaluated zero-shot on 100x100 grids."""

    tasks: Annotated[tuple[str, ...], TaskChoice()] = ()
    """Tasks (default: the paper's five and CLEANHOUSE, reported as not scalable)."""
    table3: Annotated[Path | None, InputDir()] = None
    """A table3 run directory whose programs are re-evaluated (default: run the CEM sweeps)."""
    size: Annotated[int, Range(8)] = 100
    """Grid side of the zero-shot evaluation."""
    worlds: Annotated[int, Range(1)] = 10
    """Initial states per program at the large size."""
    large_budget: Annotated[int, Range(1)] = 100_000
    """A second call budget for the large grid (the original's 220 is the first)."""

    @classmethod
    def smoke_defaults(cls) -> Table9Config:
        """``--smoke``: MAZE only, 2 seeds, 2 iterations, a 20 x 20 grid."""
        return cls(smoke=True, tasks=("maze",), size=20, worlds=3, **_SMOKE)  # type: ignore[arg-type]


__all__ = ["ReconstructionTableConfig", "Table3Config", "Table9Config", "TableCommon"]
