"""Configuration of ``leaps-karel cem`` (stage 2 of LEAPS): presets, quirks, targets.

Torch-free, so that ``leaps-karel --help`` stays instant. `CemConfig` is the command line;
`resolve` turns it into `CemSettings`, the complete set of search hyper-parameters (a preset of
spec §6.2 with the explicit flags laid over it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from compkit_utils.errors import UserError
from compkit_utils.validate import Choice, InputFile, OutputDir, Range
from leaps_karel.config import Seed, TaskName, TaskOptionsConfig

InitType = Literal["normal", "tiny_normal", "ones", "zeros"]
Reduction = Literal["mean", "weighted_mean"]
Method = Literal["cem", "rand-8", "rand-64"]

#: The four program-reconstruction targets of spec §8.3 (original README ``tasks/test1..4``).
TARGET_PROGRAMS: dict[str, str] = {
    "test1": "DEF run m( WHILE c( frontIsClear c) w( turnRight move pickMarker turnRight w) m)",
    "test2": (
        "DEF run m( IFELSE c( markersPresent c) i( move turnRight i) ELSE e( move e) move move "
        "WHILE c( leftIsClear c) w( turnLeft w) m)"
    ),
    "test3": (
        "DEF run m( IF c( frontIsClear c) i( putMarker i) move IF c( rightIsClear c) i( move i) "
        "IFELSE c( frontIsClear c) i( move i) ELSE e( move e) m)"
    ),
    "test4": (
        "DEF run m( WHILE c( leftIsClear c) w( turnLeft w) IF c( frontIsClear c) i( putMarker "
        "move i) move IF c( rightIsClear c) i( turnRight move i) IFELSE c( frontIsClear c) i( "
        "move i) ELSE e( turnLeft move e) m)"
    ),
}
#: Mean return reported by the original README for the four targets (bonus included).
TARGET_PUBLISHED: dict[str, float] = {"test1": 1.06, "test2": 0.87, "test3": 0.85, "test4": 0.57}
#: The paper's Table 3 LEAPS row (return without the bonus, 5 seeds).
TABLE3_PUBLISHED: dict[str, tuple[float, float]] = {
    "stairclimber": (1.00, 0.00),
    "fourcorner": (0.45, 0.40),
    "topoff": (0.81, 0.07),
    "maze": (1.00, 0.00),
    "cleanhouse": (0.18, 0.14),
    "harvester": (0.45, 0.28),
}


@dataclass(frozen=True)
class CemSettings:
    """Every hyper-parameter of one CEM (or random-search) run, resolved.

    Attributes:
        population: P, latents sampled per iteration.
        elitism_rate: fraction kept as elites; ``n_elite = round(P · rate)`` unless set.
        n_elite: explicit elite count (``None``: from the rate).
        sigma: σ₀, the sampling standard deviation.
        exp_sigma_decay: decay σ exponentially from iteration 3 to ``final_sigma``.
        final_sigma: the σ the decay reaches after ``sigma_decay_steps`` steps.
        sigma_decay_steps: number of decay steps (500 in the original).
        init: initial mean: ``normal`` N(0, I), ``tiny_normal`` N(0, 0.1² I), ``ones``
            (``ones_value`` · 1), ``zeros``.
        ones_value: the constant of ``init = ones`` (the original code: 0.01; its README: 1).
        reduction: new mean from the elites: plain ``mean`` or return-``weighted_mean``.
        weights_include_bonus: ``weighted_mean`` weights are returns with the +0.1 bonus.
        elite_tiebreak: sort key among equal returns: ``program_text`` (original) or
            ``index`` (population order).
        best_program: the iteration's best: ``decoded_mean`` (decode of the new mean, the
            original) or ``best_elite`` (the top elite).
        reestimate_sigma: σ from the elites' spread (mean per-dimension std, at least
            ``final_sigma``) instead of the schedule; the original never re-estimates.
        max_iterations: iterations at most (1000).
        solved_score: early-stop threshold on the best score (1.1 = 1.0 + bonus).
        solved_window: the last this many best scores must average ≥ ``solved_score``.
        worlds_per_eval: initial states per evaluation (10).
        regenerate_every: new shared initial states every this many iterations (0 = never).
        skip_first_batch: the first set used is the generator's second batch (the original
            driver resets right after construction).
    """

    population: int
    elitism_rate: float
    sigma: float
    exp_sigma_decay: bool
    init: InitType
    n_elite: int | None = None
    final_sigma: float = 0.1
    sigma_decay_steps: int = 500
    ones_value: float = 0.01
    reduction: Reduction = "weighted_mean"
    weights_include_bonus: bool = True
    elite_tiebreak: Literal["program_text", "index"] = "program_text"
    best_program: Literal["decoded_mean", "best_elite"] = "decoded_mean"
    reestimate_sigma: bool = False
    max_iterations: int = 1000
    solved_score: float = 1.1
    solved_window: int = 10
    worlds_per_eval: int = 10
    regenerate_every: int = 100
    skip_first_batch: bool = True

    @property
    def elites(self) -> int:
        """The elite count: ``n_elite`` or ``round(population · elitism_rate)``."""
        if self.n_elite is not None:
            return self.n_elite
        return round(self.population * self.elitism_rate)

    def check(self) -> None:
        """Cross-field rules; raises `UserError` naming the flag."""
        if self.elites > self.population:
            raise UserError(
                f"--n-elite ({self.elites}) must not exceed --population ({self.population})"
            )
        if self.elites < 1:
            raise UserError(
                f"--population {self.population} × --elitism-rate {self.elitism_rate} rounds "
                "to 0 elites; raise either or pass --n-elite"
            )


#: Per-task settings of the released code (spec §6.2); ``base`` = the base config's defaults,
#: also used for program reconstruction (the README names no per-target configuration).
PRESETS: dict[str, CemSettings] = {
    "stairclimber": CemSettings(32, 0.05, 0.25, True, "tiny_normal"),
    "fourcorner": CemSettings(64, 0.20, 0.5, False, "tiny_normal"),
    "topoff": CemSettings(64, 0.05, 0.25, False, "tiny_normal"),
    "maze": CemSettings(16, 0.10, 0.1, False, "ones"),
    "cleanhouse": CemSettings(32, 0.05, 0.25, True, "ones"),
    "harvester": CemSettings(32, 0.10, 0.5, True, "normal"),
    "base": CemSettings(384, 0.2, 1.0, False, "normal", reduction="mean"),
}
OVERRIDABLE = tuple(f.name for f in dataclasses.fields(CemSettings))


def _preset_names() -> list[str]:
    return list(PRESETS)


def _target_names() -> list[str]:
    return list(TARGET_PROGRAMS)


PositiveFloat = Annotated[float | None, Range(0, None, lo_open=True)]


@dataclass(frozen=True)
class CemConfig:
    """Stage 2 of LEAPS: cross-entropy search in the program embedding for a task.

    Every search setting defaults to the task's preset (spec §6.2); a flag overrides it.
    """

    task: TaskName = "maze"
    """Task to solve (ignored with --target-program)."""
    target_program: str | None = None
    """Reconstruct this program instead (reward = prefix match of its behaviour, spec §3.5):
    test1..test4 or program text."""
    method: Method = "cem"
    """cem, or random search in the embedding with 8 / 64 samples per iteration."""
    preset: Annotated[str | None, Choice(_preset_names)] = None
    """Settings preset (default: the task's; 'base' with --target-program)."""
    population: Annotated[int | None, Range(1)] = None
    elitism_rate: Annotated[float | None, Range(0, 1, lo_open=True)] = None
    n_elite: Annotated[int | None, Range(1)] = None
    """Elite count (default: round(population × elitism rate))."""
    sigma: PositiveFloat = None
    """σ₀."""
    exp_sigma_decay: bool | None = None
    final_sigma: PositiveFloat = None
    sigma_decay_steps: Annotated[int | None, Range(1)] = None
    init: InitType | None = None
    ones_value: float | None = None
    """Constant of --init ones (original code 0.01, its README 1)."""
    reduction: Reduction | None = None
    weights_include_bonus: bool | None = None
    """weighted_mean weights include the +0.1 syntax bonus (original: yes)."""
    elite_tiebreak: Literal["program_text", "index"] | None = None
    """Order among equal returns (original: program text)."""
    best_program: Literal["decoded_mean", "best_elite"] | None = None
    """The iteration's best program (original: greedy decode of the new mean)."""
    reestimate_sigma: bool | None = None
    """Re-estimate σ from the elites (original: never)."""
    max_iterations: Annotated[int | None, Range(1)] = None
    solved_score: float | None = None
    """Early stop when the best score reaches this over --solved-window iterations."""
    solved_window: Annotated[int | None, Range(1)] = None
    worlds_per_eval: Annotated[int | None, Range(1)] = None
    regenerate_every: Annotated[int | None, Range(0)] = None
    """New shared initial states every N iterations (0 = never)."""
    skip_first_batch: bool | None = None
    """Use the seeded generator's second batch of initial states first (original)."""
    fresh_worlds: Annotated[int, Range(1)] = 100
    """Fresh initial states for re-evaluating the final program."""
    weights: Annotated[Path | None, InputFile()] = None
    """Decoder weights (default: the shipped LEAPS weights)."""
    random_decoder: bool = False
    """Use a randomly initialised decoder seeded by --seed (tests and timing only)."""
    decoder: Literal["fast", "model"] = "fast"
    """fast: NumPy greedy decoding with precomputed terms; model: ProgramVAE.decode_greedy
    (the same programs, slower)."""
    options: TaskOptionsConfig = dataclasses.field(default_factory=TaskOptionsConfig)
    """Task options (budget, quirks)."""
    workers: Annotated[int, Range(1)] = 1
    """Processes that evaluate the programs of an iteration not scored before."""
    quiet: bool = False
    """No line per iteration."""
    checkpoint_every: Annotated[int, Range(1)] = 50
    seed: Seed = 0
    threads: Annotated[int | None, Range(1)] = None
    """Torch threads (default: $OMP_NUM_THREADS, else one per idle core)."""
    runs_dir: Annotated[Path | None, OutputDir()] = None
    run_name: str | None = None
    resume: bool = False
    """Continue the run named by --run-name (else the newest cem run with a last.pt)."""
    smoke: bool = False
    """Three iterations with a random decoder, for checking an install."""

    @classmethod
    def smoke_defaults(cls) -> CemConfig:
        """``--smoke``: 3 iterations, random decoder, 10 fresh worlds."""
        return cls(smoke=True, max_iterations=3, random_decoder=True, fresh_worlds=10)

    def target_text(self) -> str | None:
        """The target program text (a named target resolved), or None."""
        if self.target_program is None:
            return None
        return TARGET_PROGRAMS.get(self.target_program, self.target_program)

    def preset_name(self) -> str:
        """The preset in use."""
        if self.preset is not None:
            return self.preset
        if self.target_program is not None:
            return "base"
        from leaps_karel.tasks.registry import get_spec

        return get_spec(self.task).name

    def settings(self) -> CemSettings:
        """The preset with every given flag laid over it."""
        changes = {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}
        settings = dataclasses.replace(PRESETS[self.preset_name()], **changes)
        if self.method != "cem":
            size = int(self.method.split("-")[1])
            settings = dataclasses.replace(settings, population=size, n_elite=1)
        return settings

    def check(self) -> None:
        """Cross-field rules; raises `UserError`."""
        target = self.target_text()
        if target is not None:
            from leaps_karel.dsl import ParseError, is_valid, parse

            if not is_valid(target):
                try:
                    parse(target)
                    why = "is too short to be valid"
                except ParseError as exc:
                    why = str(exc)
                raise UserError(
                    f"--target-program {self.target_program!r}: {why}; pass test1..test4 or a "
                    "program 'DEF run m( ... m)'"
                )
        if self.weights is not None and self.random_decoder:
            raise UserError("give either --weights or --random-decoder, not both")
        self.settings().check()
