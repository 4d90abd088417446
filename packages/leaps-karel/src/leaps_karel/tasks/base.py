"""Task protocol shared by the six LEAPS tasks (spec §10.1).

A `TaskSpec` describes one task (generator + reward). A `Task` is a spec bound to a seeded,
fixed list of initial worlds, which is what the original CEM driver evaluates programs on.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compkit_utils.errors import UserError
from leaps_karel.dsl import ParseError, Program, ids_to_tokens, to_text
from leaps_karel.interpreter import DEFAULT_BUDGET, CompiledProgram, compile_program
from leaps_karel.world import World

#: Bonus added to the mean score of a valid program (the original's "syntax bonus").
SYNTAX_BONUS = 0.1
#: Return of a program that fails the validity test (§6.3).
INVALID_RETURN = 0.01


@dataclass(frozen=True)
class Options:
    """Behaviour switches of the tasks; the defaults reproduce the original exactly.

    Attributes:
        short_rollouts_score_zero: a rollout with 0 or 1 executed actions scores 0 (§10.1 step
            3, quirk 6). ``False``: a 1-action rollout scores its reward.
        marker_total_lag: FOURCORNER / HARVESTER add an action's put/pick to their marker total
            only after that action's reward (quirk 13). ``False``: no lag.
        topoff_last_cell_marker: TOPOFF's bottom-right cell holds a marker, as in every released
            CEM run (quirk 8). ``False``: the intended variant, where it is forced empty.
        stairclimber_off_stairs_penalty: STAIRCLIMBER rewards −1 while the agent is off the
            stairs, as the paper describes (the released sparse variant never penalises).
        syntax_bonus: added to the mean score of a valid program.
        invalid_return: return of an invalid program.
        budget: the interpreter's call budget.
    """

    short_rollouts_score_zero: bool = True
    marker_total_lag: bool = True
    topoff_last_cell_marker: bool = True
    stairclimber_off_stairs_penalty: bool = False
    syntax_bonus: float = SYNTAX_BONUS
    invalid_return: float = INVALID_RETURN
    budget: int = DEFAULT_BUDGET


@dataclass
class Rollout:
    """One execution of a program on one initial world, with per-step rewards.

    Attributes:
        actions: executed action ids.
        rewards: task reward after every action (``len(rewards) == len(actions)``).
        world: the final world.
        score: the rollout's score under the protocol (last-step reward; 0 for short rollouts
            when `Options.short_rollouts_score_zero`).
    """

    actions: list[int]
    rewards: list[float]
    world: World
    score: float


class TaskSpec(abc.ABC):
    """One task: world size, initial-state generator and reward.

    Subclasses implement `generate`, `context` and `reward`; the fast evaluation path uses
    `final_reward`, which by default evaluates `reward` on the final world.
    """

    #: Registry name (lower case).
    name: str = ""
    #: Name used in the paper.
    title: str = ""
    #: Gymnasium id part: ``compkit/Karel-<env_name>-v0``.
    env_name: str = ""
    height: int = 0
    width: int = 0
    #: ``"sparse"`` or ``"dense"``.
    reward_type: str = ""
    #: One-line description for ``leaps-karel tasks``.
    description: str = ""
    #: Whether `reward` reads its ``total_before`` argument (the marker total).
    needs_total: bool = False

    @abc.abstractmethod
    def generate(self, rng: np.random.Generator, options: Options) -> World:
        """One initial world."""

    def context(self, init: World, options: Options) -> dict[str, Any]:
        """Per-rollout information the reward needs, derived from the initial world."""
        return {}

    @abc.abstractmethod
    def reward(self, ctx: dict[str, Any], world: World, total_before: int) -> float:
        """Reward after an action.

        Args:
            ctx: the rollout's context (may be updated, e.g. "reached the goal").
            world: the world after the action.
            total_before: the marker total the task's counter holds at this step (before the
                action with the original's lag, after it without).
        """

    def final_reward(
        self,
        ctx: dict[str, Any],
        init: World,
        final: World,
        total_before: int,
        program: str,
        options: Options,
    ) -> float:
        """Reward of the last action, computed from the final world (fast path).

        Must not modify ``ctx`` (it is shared by every evaluation on this initial world).
        """
        return self.reward(ctx, final, total_before)


def program_text(program: Program | str | Sequence[int] | Sequence[str]) -> str | None:
    """Normalised program text (ids converted, padding dropped); None for bad token ids.

    The text is not checked; see `is_valid` for the validity test (§6.3).
    """
    if isinstance(program, Program):
        return to_text(program)
    if isinstance(program, str):
        return " ".join(program.split())
    seq = list(program)
    if seq and isinstance(seq[0], str):
        return " ".join(str(t) for t in seq)
    try:
        return " ".join(ids_to_tokens(int(i) for i in seq))
    except (ParseError, TypeError, ValueError):
        return None


def compile_valid(text: str | None, budget: int) -> CompiledProgram | None:
    """The compiled (counting) program if ``text`` passes the validity test, else None."""
    if text is None or len(text.split()) <= 4:
        return None
    try:
        return compile_program(text, budget=budget, record=False)
    except ParseError:
        return None


class Task:
    """A task bound to a fixed list of seeded initial worlds.

    Args:
        spec: the task.
        seed: seeds the NumPy generator that draws the initial worlds.
        num_worlds: how many initial worlds to draw up front (more are drawn on demand).
        options: behaviour switches (defaults = the original).
    """

    def __init__(
        self,
        spec: TaskSpec,
        seed: int = 0,
        num_worlds: int = 10,
        options: Options | None = None,
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.options = options or Options()
        self._rng = np.random.default_rng(seed)
        self._fixed = False
        self.initial_worlds: list[World] = []
        self._contexts: list[dict[str, Any]] = []
        self._ensure(num_worlds)

    @classmethod
    def from_worlds(
        cls, spec: TaskSpec, worlds: Sequence[World], options: Options | None = None
    ) -> Task:
        """A task evaluated on exactly the given initial worlds (e.g. the original's).

        Asking such a task for more rollouts than it has worlds raises `UserError`.
        """
        task = cls(spec, seed=0, num_worlds=0, options=options)
        for w in worlds:
            task._add(w.copy())
        task._fixed = True
        return task

    @property
    def name(self) -> str:
        return self.spec.name

    def _add(self, world: World) -> None:
        world.tables  # noqa: B018 - build the lookup tables once, shared by every copy
        self.initial_worlds.append(world)
        self._contexts.append(self.spec.context(world, self.options))

    def _ensure(self, num_worlds: int) -> None:
        if self._fixed and num_worlds > len(self.initial_worlds):
            raise UserError(
                f"this {self.spec.name} task has {len(self.initial_worlds)} fixed initial "
                f"worlds; asked for {num_worlds}"
            )
        while len(self.initial_worlds) < num_worlds:
            self._add(self.spec.generate(self._rng, self.options))

    def replace_options(self, **changes: Any) -> Task:
        """The same initial worlds under other options."""
        task = Task.from_worlds(
            self.spec, self.initial_worlds, dataclasses.replace(self.options, **changes)
        )
        task._fixed = self._fixed
        if not self._fixed:
            task._rng = copy.deepcopy(self._rng)  # further worlds continue the same stream
        return task

    # ---------------------------------------------------------------- evaluation
    def scores(
        self, program: Program | str | Sequence[int], num_worlds: int = 10
    ) -> list[float] | None:
        """Per-rollout scores on the first ``num_worlds`` worlds; None for an invalid program."""
        text = program_text(program)
        opts = self.options
        fn = compile_valid(text, opts.budget)
        if fn is None or text is None:
            return None
        self._ensure(num_worlds)
        spec = self.spec
        lag = opts.marker_total_lag
        needs_total = spec.needs_total
        final_reward = spec.final_reward
        min_actions = 2 if opts.short_rollouts_score_zero else 1
        out = []
        for init, ctx in zip(
            self.initial_worlds[:num_worlds], self._contexts[:num_worlds], strict=True
        ):
            w = init.copy()
            na, _, _, delta = fn(w)
            if na < min_actions:
                out.append(0.0)
                continue
            total = 0
            if needs_total:
                total = sum(w.markers)
                if lag:
                    total -= delta
            out.append(final_reward(ctx, init, w, total, text, opts))
        return out

    def evaluate(self, program: Program | str | Sequence[int], num_worlds: int = 10) -> float:
        """The original's return: mean last-step reward + 0.1, or 0.01 for an invalid program.

        Args:
            program: a `Program`, program text, or token ids (padding id 50 ends the program).
            num_worlds: number of initial worlds (rollouts).
        """
        scores = self.scores(program, num_worlds)
        if scores is None:
            return self.options.invalid_return
        if not scores:
            return self.options.syntax_bonus
        return sum(scores) / len(scores) + self.options.syntax_bonus

    def rollout(self, program: Program | str, index: int = 0) -> Rollout:
        """Execute on initial world ``index`` recording actions and per-step rewards.

        Raises:
            ParseError: an unparsable program.
        """
        self._ensure(index + 1)
        text = program if isinstance(program, str) else to_text(program)
        fn = compile_program(text, budget=self.options.budget)
        init = self.initial_worlds[index]
        w = init.copy()
        actions = fn(w)[0]
        rewards = step_rewards(self.spec, init, actions, self.options)
        min_actions = 2 if self.options.short_rollouts_score_zero else 1
        score = rewards[-1] if len(actions) >= min_actions else 0.0
        return Rollout(actions, rewards, w, score)


def step_rewards(spec: TaskSpec, init: World, actions: Sequence[int], options: Options) -> list:
    """Replay ``actions`` from ``init`` and compute the reward after every action."""
    ctx = spec.context(init, options)
    w = init.copy()
    total = sum(w.markers)
    rewards = []
    for a in actions:
        w.step(a)
        new_total = sum(w.markers)
        rewards.append(spec.reward(ctx, w, total if options.marker_total_lag else new_total))
        total = new_total
    return rewards
