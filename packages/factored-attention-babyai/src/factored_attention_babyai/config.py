"""Configuration of the dataset commands (``generate``) as frozen dataclasses.

Every field declares its valid values with a :mod:`compkit_utils.validate` marker; cross-field
rules live in ``check`` methods. ``--smoke`` only changes defaults (``smoke_defaults``), so
explicit flags win. This module imports no torch, so ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal, Self

from compkit_utils.validate import InputPath, OutputDir, Range

__all__ = ["GenerateConfig", "InspectConfig"]


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """Generate the 36-goal GoToLocal demonstration dataset (HDF5, optionally TFDS)."""

    out_dir: Annotated[Path | None, OutputDir()] = None
    """Output folder; default $COMPKIT_DATA_DIR/babyai-gotolocal, else
    ~/.cache/compkit/babyai-gotolocal (with --smoke: a run folder under --runs-dir)."""
    per_goal: Annotated[int, Range(1)] = 10_000
    """Accepted demonstrations per goal (36 goals; the paper's dataset has 10,000)."""
    min_length: Annotated[int, Range(1)] = 7
    """Keep a demonstration only if it has at least this many actions (final `done` included)."""
    seed_start: Annotated[int, Range(0)] = 1
    """First seed of the scan (seeds seed_start, seed_start+1, ... are tried in order)."""
    n_procs: Annotated[int, Range(1)] = 1
    """Worker processes solving blocks of seeds; the output is identical for any value."""
    block_size: Annotated[int, Range(1)] = 4096
    """Consecutive seeds per block (the unit of work and of --resume; output unchanged)."""
    formats: tuple[Literal["hdf5", "tfds"], ...] = ("hdf5",)
    """Storage formats written (hdf5 = data.hdf5; tfds = an ArrayRecord TFDS dataset)."""
    overwrite: bool = False
    """Replace an existing dataset or interrupted generation in --out-dir."""
    resume: bool = False
    """Continue an interrupted generation in --out-dir (same settings; verified shards kept)."""
    keep_shards: bool = False
    """Keep the per-shard files (.shards/) after merging."""
    progress: bool = True
    """Show a progress bar per goal quota (on stderr)."""
    smoke: bool = False
    """Seconds-long run (1 demonstration per goal) into a fresh run folder (checks an install)."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Root of run folders for --smoke (default: $RUNS_DIR, else 'runs')."""

    @classmethod
    def smoke_defaults(cls) -> Self:
        """The ``--smoke`` defaults: 1 demonstration per goal, both formats."""
        return cls(smoke=True, per_goal=1, block_size=256, formats=("hdf5", "tfds"), progress=False)


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """Verify a generated dataset (SHA-256) and print its §2.6 subsets (writes nothing)."""

    data: Annotated[Path, InputPath()]
    """Dataset folder written by `generate` (or its data.hdf5)."""
    format: Literal["hdf5", "tfds"] = "hdf5"
    """Which copy to read (both hold the same rows)."""
    per_goal: Annotated[int | None, Range(1)] = None
    """Training demonstrations per goal (default: all but the ID-validation ones)."""
    vlimit: Annotated[int, Range(0)] = 20
    """ID-validation demonstrations per goal (the last of each ID goal)."""
    tlimit: Annotated[int, Range(1)] = 40
    """OOD-validation demonstrations per goal (the first of each held-out goal)."""
    goals: tuple[str, ...] = ()
    """Restrict to these goals (mission strings, e.g. 'go to the red key'); default all."""
