"""Configuration of ``leaps-karel search``: hill climbing in program space (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from compkit_utils.errors import UserError
from compkit_utils.validate import OutputDir, Range
from leaps_karel.config import Seed, TaskName, TaskOptionsConfig

#: Most initial-state batches one search may use (each batch regenerates the shared worlds).
MAX_BATCHES = 1000


@dataclass(frozen=True)
class SearchConfig:
    """Program-space search: hill climbing over programs for a task (no weights, no torch).

    Carvalho, Tjhia & Lelis (ICLR 2024): from a random program, draw up to k neighbours (one
    random AST node replaced by a freshly sampled subtree), move to the first that scores
    higher, restart from a random program when none does. Returns and episodes are counted as
    in `leaps-karel cem`: each program evaluation runs the task on the shared initial states
    (10 episodes), which are regenerated periodically.
    """

    task: TaskName = "maze"
    """Task to solve."""
    episodes: Annotated[int, Range(1)] = 1_000_000
    """Episode budget: program evaluations × --worlds-per-eval."""
    neighbours: Annotated[int, Range(1)] = 250
    """k, neighbours drawn from the current program before a restart."""
    max_depth: Annotated[int, Range(1)] = 4
    """Program depth limit (1 + control structures nested inside each other)."""
    max_sequence: Annotated[int, Range(1)] = 6
    """Statements in a row (one block) at most."""
    max_tokens: Annotated[int, Range(5)] = 45
    """Program tokens at most (DEF run m( … m) included)."""
    worlds_per_eval: Annotated[int, Range(1)] = 10
    """Shared initial states per program evaluation (as CEM)."""
    regenerate_every: Annotated[int | None, Range(0)] = None
    """New shared initial states every N program evaluations (0 = never; default: as many as
    100 CEM iterations of the task's preset, 100 × (population + 1))."""
    skip_first_batch: bool = True
    """Use the seeded generator's second batch of initial states first (as CEM)."""
    solved_score: float = 1.1
    """Stop once a program scores this (return + 0.1 bonus) on the shared initial states
    (and, with --confirm-solved, on the confirmation batches)."""
    confirm_solved: bool = True
    """Before accepting a program that reaches --solved-score, score it on the next
    --confirm-batches batches of initial states (counted in the budget); if it falls short on
    one, search on from it with that batch as the shared initial states.
    --no-confirm-solved: accept it at once (the original's rule)."""
    confirm_batches: Annotated[int, Range(1, 100)] = 10
    """Fresh batches a solving program must also solve (with --confirm-solved)."""
    fresh_worlds: Annotated[int, Range(1)] = 100
    """Fresh initial states for re-evaluating the final program."""
    log_every: Annotated[int, Range(1)] = 1000
    """A metrics record at least every N evaluations (and at every new best)."""
    options: TaskOptionsConfig = field(default_factory=TaskOptionsConfig)
    """Task options (budget, quirks)."""
    quiet: bool = False
    """No line per new best program."""
    seed: Seed = 0
    """Seeds the initial states (as CEM's --seed) and the search's random choices."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    """Root of run folders (default: $RUNS_DIR, else 'runs')."""
    run_name: str | None = None
    smoke: bool = False
    """A 2,000-episode search with 20 neighbours and 10 fresh worlds, for checking an install."""

    @classmethod
    def smoke_defaults(cls) -> SearchConfig:
        """``--smoke``: 2,000 episodes, k = 20, 10 fresh worlds."""
        return cls(smoke=True, episodes=2000, neighbours=20, fresh_worlds=10)

    def regeneration_interval(self) -> int:
        """Program evaluations between two sets of initial states (0 = never)."""
        if self.regenerate_every is not None:
            return self.regenerate_every
        from leaps_karel.learn.cem_config import PRESETS
        from leaps_karel.tasks.registry import get_spec

        return 100 * (PRESETS[get_spec(self.task).name].population + 1)

    def max_evaluations(self) -> int:
        """Program evaluations the episode budget allows."""
        return self.episodes // self.worlds_per_eval

    def check(self) -> None:
        """Cross-field rules; raises `UserError` naming the flag."""
        if self.max_evaluations() < 1:
            raise UserError(
                f"--episodes {self.episodes} is less than one evaluation "
                f"(--worlds-per-eval {self.worlds_per_eval}); raise --episodes"
            )
        every = self.regeneration_interval()
        if every and self.max_evaluations() // every > MAX_BATCHES:
            raise UserError(
                f"--regenerate-every {every} gives more than {MAX_BATCHES} sets of initial "
                f"states for --episodes {self.episodes}; raise --regenerate-every (or 0 = never)"
            )
