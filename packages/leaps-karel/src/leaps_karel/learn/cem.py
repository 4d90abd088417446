"""Stage 2 of LEAPS: the cross-entropy method over the program embedding (spec §6).

`CemSearch` is the algorithm, independent of where programs come from: it takes a ``decode``
function (``z [P, 256] → P program texts``; the greedy grammar-masked decoder of the trained
VAE) and a `Scorer`. The building blocks (`sigma_at`, `select_elites`, `new_mean`,
`initial_mean`, `batch_of`, `is_solved`) are public so that tests check them against
hand-computed cases. `main` is the ``leaps-karel cem`` command (run directory, resume,
results).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from leaps_karel.learn.cem_config import CemSettings
from leaps_karel.tasks.base import SYNTAX_BONUS

if TYPE_CHECKING:
    import torch

    from leaps_karel.learn.cem_scoring import Scorer

LATENT = 256
#: Tolerance of the early-stop comparison (a mean of ten 1.1 is not always ≥ 1.1 in floats).
SOLVED_TOL = 1e-9

Decode = Callable[["torch.Tensor"], list[str]]


# ---------------------------------------------------------------------------- building blocks
def sigma_at(k: int, s: CemSettings) -> float:
    """σ of iteration ``k`` (1-based): σ₀ for k ≤ 2, then σ₀·γ^(k−2) down to ``final_sigma``.

    ``γ = (final_sigma / σ₀)^(1 / sigma_decay_steps)``; without ``exp_sigma_decay`` σ₀ always.
    """
    if not s.exp_sigma_decay or k <= 2:
        return s.sigma
    steps = min(k - 2, s.sigma_decay_steps)
    gamma = (s.final_sigma / s.sigma) ** (1.0 / s.sigma_decay_steps)
    return float(s.sigma * gamma**steps)


def select_elites(
    returns: np.ndarray, texts: Sequence[str], n_elite: int, tiebreak: str = "program_text"
) -> np.ndarray:
    """Indices of the ``n_elite`` best candidates, ascending (the last is the best).

    Sorted by (return, program text) ascending as the original does (``tiebreak =
    "program_text"``) or by (return, population index) (``"index"``).
    """
    order = list(range(len(returns)))
    if tiebreak == "program_text":
        order.sort(key=lambda i: (float(returns[i]), texts[i]))
    else:
        order.sort(key=lambda i: (float(returns[i]), i))
    return np.array(order[len(order) - n_elite :], dtype=np.int64)


def new_mean(
    z: torch.Tensor,
    returns: np.ndarray,
    reduction: str = "weighted_mean",
    weights_include_bonus: bool = True,
) -> torch.Tensor:
    """The new mean from the elite latents ``z [n, 256]`` and their returns ``(n,)``.

    ``mean``: their average. ``weighted_mean``: ``Σ rᵢ zᵢ / (Σ rᵢ + 10⁻⁵)`` with the returns
    as weights (bonus included, as the original; without it, invalid programs weigh 0 and if
    every weight is 0 the plain average is used).
    """
    import torch

    if reduction == "mean":
        return z.mean(dim=0)
    w = np.asarray(returns, dtype=np.float64)
    if not weights_include_bonus:
        w = np.clip(w - SYNTAX_BONUS, 0.0, None)
        if w.sum() == 0:
            return z.mean(dim=0)
    weights = torch.as_tensor(w, dtype=z.dtype)
    return (weights[:, None] * z).sum(dim=0) / (weights.sum() + 1e-5)


def initial_mean(s: CemSettings, generator: torch.Generator) -> torch.Tensor:
    """μ₀ ``[256]`` for ``s.init`` (``ones`` = ``s.ones_value`` · 1: 0.01 in the original)."""
    import torch

    if s.init == "normal":
        return torch.randn(LATENT, generator=generator)
    if s.init == "tiny_normal":
        return 0.1 * torch.randn(LATENT, generator=generator)
    if s.init == "ones":
        return torch.full((LATENT,), float(s.ones_value))
    return torch.zeros(LATENT)


def batch_of(k: int, s: CemSettings) -> int:
    """Initial-state batch of iteration ``k`` (1-based): a new one every ``regenerate_every``."""
    first = 1 if s.skip_first_batch else 0
    if s.regenerate_every == 0:
        return first
    return first + (k - 1) // s.regenerate_every


def last_batch(s: CemSettings) -> int:
    """The last batch a run of ``s.max_iterations`` iterations can use."""
    return batch_of(s.max_iterations, s)


def is_solved(history: Sequence[float], s: CemSettings) -> bool:
    """The original's stop rule: ≥ window iterations, window mean and last ≥ solved score."""
    if len(history) < s.solved_window:
        return False
    window = history[-s.solved_window :]
    threshold = s.solved_score - SOLVED_TOL
    return float(np.mean(window)) >= threshold and history[-1] >= threshold


# ---------------------------------------------------------------------------- the search
@dataclass
class Iteration:
    """What one iteration produced (one line of ``metrics.jsonl``).

    Attributes:
        iteration: 1-based iteration number.
        best_program: the iteration's best program (decode of the new mean by default).
        best_score: its return on the iteration's shared initial states (bonus included).
        sigma: σ used to sample this iteration's population.
        episodes: rollouts the original would have run so far ((P + 1) · W per iteration).
        population_max: best return in the population.
        population_mean: mean return of the population.
        evaluations: distinct programs executed so far (the cache's misses).
    """

    iteration: int
    best_program: str
    best_score: float
    sigma: float
    episodes: int
    population_max: float
    population_mean: float
    evaluations: int


class CemSearch:
    """CEM over latent programs (spec §6.1) with the original's quirks as settings.

    Args:
        settings: the resolved hyper-parameters.
        decode: ``z [n, 256] → n`` program texts (greedy, grammar-masked).
        scorer: the reward on shared initial states.
        seed: seeds μ₀ and the population noise (a private ``torch.Generator``).
    """

    def __init__(
        self, settings: CemSettings, decode: Decode, scorer: Scorer, seed: int = 0
    ) -> None:
        import torch

        settings.check()
        self.s = settings
        self.decode = decode
        self.scorer = scorer
        self.generator = torch.Generator().manual_seed(seed)
        self.mu = initial_mean(settings, self.generator)
        self.sigma = settings.sigma
        self.iteration = 0
        self.episodes = 0
        self.history: list[float] = []
        self.best_program = ""
        self.best_score = 0.0
        # The next population, drawn and decoded together with the new mean (one decoder
        # call per iteration): (z, σ, texts or None when it still has to be decoded).
        self._next: tuple[torch.Tensor, float, list[str] | None] | None = None

    @property
    def done(self) -> bool:
        """Solved (the stop rule) or out of iterations."""
        return self.iteration >= self.s.max_iterations or is_solved(self.history, self.s)

    def _sample(self, k: int) -> tuple[torch.Tensor, float]:
        import torch

        sigma = self.sigma if self.s.reestimate_sigma and k > 1 else sigma_at(k, self.s)
        eps = torch.randn(self.s.population, LATENT, generator=self.generator)
        return self.mu[None, :] + sigma * eps, sigma

    def step(self) -> Iteration:
        """Run one iteration."""
        s = self.s
        k = self.iteration + 1
        self.scorer.set_batch(batch_of(k, s))
        if self._next is not None:
            z, sigma, pending = self._next
            texts = pending if pending is not None else self.decode(z)
            self._next = None
        else:
            z, sigma = self._sample(k)
            texts = self.decode(z)
        returns = self.scorer.score(texts)
        elite = select_elites(returns, texts, s.elites, s.elite_tiebreak)
        self.mu = new_mean(z[elite], returns[elite], s.reduction, s.weights_include_bonus)
        if s.reestimate_sigma:
            spread = float(z[elite].std(dim=0, unbiased=False).mean())
            self.sigma = max(s.final_sigma, spread)
        evaluated = s.population
        if s.best_program == "decoded_mean":
            if k < s.max_iterations:  # decode the new mean with the next population
                import torch

                z_next, sigma_next = self._sample(k + 1)
                decoded = self.decode(torch.cat([self.mu[None, :], z_next]))
                self._next = (z_next, sigma_next, decoded[1:])
                self.best_program = decoded[0]
            else:
                self.best_program = self.decode(self.mu[None, :])[0]
            self.best_score = float(self.scorer.score([self.best_program])[0])
            evaluated += 1
        else:
            self.best_program = texts[int(elite[-1])]
            self.best_score = float(returns[int(elite[-1])])
        self.episodes += evaluated * s.worlds_per_eval
        self.history.append(self.best_score)
        self.iteration = k
        return Iteration(
            k,
            self.best_program,
            self.best_score,
            sigma,
            self.episodes,
            float(returns.max()),
            float(returns.mean()),
            self.scorer.evaluations,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs (plain types and tensors)."""
        return {
            "mu": self.mu.clone(),
            "sigma": self.sigma,
            "iteration": self.iteration,
            "episodes": self.episodes,
            "history": list(self.history),
            "best_program": self.best_program,
            "best_score": self.best_score,
            "generator": self.generator.get_state(),
            "evaluations": self.scorer.evaluations,
            "next_z": None if self._next is None else self._next[0].clone(),
            "next_sigma": None if self._next is None else self._next[1],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`."""
        self.mu = state["mu"].clone()
        self.sigma = float(state["sigma"])
        self.iteration = int(state["iteration"])
        self.episodes = int(state["episodes"])
        self.history = [float(x) for x in state["history"]]
        self.best_program = str(state["best_program"])
        self.best_score = float(state["best_score"])
        self.generator.set_state(state["generator"])
        self.scorer.evaluations = int(state["evaluations"])
        next_z = state.get("next_z")
        self._next = None if next_z is None else (next_z.clone(), float(state["next_sigma"]), None)


# ---------------------------------------------------------------------------- the command
def make_decoder(
    weights: Any = None, random_decoder: bool = False, seed: int = 0, kind: str = "fast"
) -> Decode:
    """The greedy grammar-masked decoder of a `ProgramVAE` as ``z [n, 256] → n`` texts.

    Args:
        weights: a weights file (``None``: the shipped LEAPS weights).
        random_decoder: a randomly initialised model (seeded by ``seed``) instead.
        seed: seed of the random model.
        kind: ``fast`` (`leaps_karel.learn.cem_decode.FastDecoder`) or ``model``
            (``ProgramVAE.decode_greedy``); both give the same programs.
    """
    import torch

    from leaps_karel.learn.grammar import ids_to_program
    from leaps_karel.learn.model import ProgramVAE

    if random_decoder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ProgramVAE()
    else:
        from leaps_karel.learn.weights import load_model

        model = load_model(weights)
    model.eval()
    if kind == "fast":
        from leaps_karel.learn.cem_decode import FastDecoder

        return FastDecoder(model)

    def decode(z: torch.Tensor) -> list[str]:
        with torch.inference_mode():
            ids = model.decode_greedy(z)
        return [ids_to_program(row) for row in ids.tolist()]

    return decode


def make_scorer(cfg: Any, settings: CemSettings) -> Scorer:
    """The task (or target-program) scorer of a `CemConfig`."""
    from leaps_karel.cli import _options
    from leaps_karel.learn.cem_scoring import TargetScorer, TaskScorer

    target = cfg.target_text()
    if target is not None:
        return TargetScorer(target, cfg.seed, settings.worlds_per_eval, cfg.options.budget)
    w = settings.worlds_per_eval
    return TaskScorer(
        cfg.task,
        cfg.seed,
        _options(cfg.options),
        w,
        workers=cfg.workers,
        fresh_start=(last_batch(settings) + 1) * w,
    )


def make_search(settings: CemSettings, method: str, decode: Decode, scorer: Scorer, seed: int):
    """`CemSearch` (``method = "cem"``) or `RandomSearch` (``rand-8``, ``rand-64``)."""
    if method == "cem":
        return CemSearch(settings, decode, scorer, seed)
    from leaps_karel.learn.random_search import RandomSearch

    return RandomSearch(settings, decode, scorer, seed)


#: Config fields that may change on ``--resume`` (they do not shape the search).
RESUME_FREE = {"quiet", "workers", "threads", "runs_dir", "run_name", "resume", "smoke"}
RESUME_FREE |= {"checkpoint_every", "fresh_worlds", "decoder"}


def _line(it: Iteration) -> str:
    return (
        f"iter {it.iteration:4d} | best {it.best_score:.4f} "
        f"(w/o bonus {max(it.best_score - SYNTAX_BONUS, 0.0):.4f}) | sigma {it.sigma:.4f} | "
        f"episodes {it.episodes} | {it.best_program}"
    )


def _results(cfg: Any, search: Any, scorer: Scorer, seconds: float) -> dict[str, Any]:
    in_sample = scorer.detail(search.best_program)
    fresh = scorer.fresh(search.best_program, cfg.fresh_worlds)
    return {
        "task": cfg.task if cfg.target_program is None else None,
        "target_program": cfg.target_text(),
        "method": cfg.method,
        "preset": cfg.preset_name(),
        "seed": cfg.seed,
        "program": search.best_program,
        "iterations": search.iteration,
        "episodes": search.episodes,
        "solved_early": is_solved(search.history, search.s),
        "in_sample": {
            "what": f"final best program on the last {search.s.worlds_per_eval} shared "
            "initial states the search saw",
            "return_with_bonus": in_sample.value,
            "return_without_bonus": in_sample.mean,
            "worlds": search.s.worlds_per_eval,
        },
        "fresh": {
            "what": f"final best program re-evaluated on {cfg.fresh_worlds} fresh initial "
            "states never used by the search",
            "return_with_bonus": fresh.value,
            "return_without_bonus": fresh.mean,
            "worlds": cfg.fresh_worlds,
        },
        "valid": fresh.valid,
        "distinct_programs_executed_this_process": scorer.evaluations,
        "seconds_this_process": seconds,
    }


def main(cfg: Any) -> int:
    """``leaps-karel cem``: run (or resume) one search and write its run directory."""
    import time

    from compkit_utils.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint
    from compkit_utils.config import to_dict
    from compkit_utils.devices import set_threads
    from compkit_utils.io import atomic_write_json, atomic_write_text
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import (
        check_resume_config,
        defer_interrupt,
        open_run,
        save_on_interrupt,
        write_config,
    )
    from leaps_karel import __version__

    set_threads(cfg.threads)
    settings = cfg.settings()
    config = to_dict(cfg)
    decode = make_decoder(cfg.weights, cfg.random_decoder, cfg.seed, cfg.decoder)
    scorer = make_scorer(cfg, settings)
    search = make_search(settings, cfg.method, decode, scorer, cfg.seed)
    with open_run(
        "leaps-karel",
        "cem",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        if run.resumed:
            saved = load_checkpoint(run.last_checkpoint)
            check_resume_config(
                run.last_checkpoint, saved["config"], config, sorted(set(config) - RESUME_FREE)
            )
            search.load_state_dict(saved["extra"]["search"])
        else:
            write_config(run.path, cfg, "leaps-karel")
        what = cfg.target_text() or cfg.task
        print(
            f"cem: {cfg.method} on {what}, preset {cfg.preset_name()}, P={settings.population}, "
            f"elites {settings.elites}, sigma0 {settings.sigma}, seed {cfg.seed}, "
            f"run {run.path}"
        )

        def save() -> None:
            save_checkpoint(
                run.last_checkpoint,
                {
                    "format_version": FORMAT_VERSION,
                    "step": search.iteration,
                    "config": config,
                    "package_version": __version__,
                    "extra": {"kind": "leaps-cem", "search": search.state_dict()},
                },
            )

        start = time.perf_counter()
        logger = RunLogger(
            run.path,
            console_every=0,
            resume=run.resumed,
            resume_step=search.iteration,
            package="leaps-karel",
        )
        try:
            with logger, save_on_interrupt(save):
                while not search.done:
                    it = search.step()
                    with defer_interrupt():
                        logger.log(
                            it.iteration,
                            {
                                "cem/best_score": it.best_score,
                                "cem/episodes": it.episodes,
                                "cem/sigma": it.sigma,
                                "cem/population_max": it.population_max,
                                "cem/population_mean": it.population_mean,
                            },
                        )
                        if it.iteration % cfg.checkpoint_every == 0:
                            save()
                    if not cfg.quiet:
                        print(_line(it), flush=True)
                results = _results(cfg, search, scorer, time.perf_counter() - start)
                logger.log(
                    search.iteration,
                    {
                        "cem/episodes": search.episodes,
                        "eval/in_sample": results["in_sample"]["return_without_bonus"],
                        "eval/in_sample_with_bonus": results["in_sample"]["return_with_bonus"],
                        "eval/fresh": results["fresh"]["return_without_bonus"],
                        "eval/fresh_with_bonus": results["fresh"]["return_with_bonus"],
                    },
                )
                save()
        finally:
            close = getattr(scorer, "close", None)
            if close is not None:
                close()
        atomic_write_text(run.path / "program.txt", search.best_program + "\n")
        atomic_write_json(run.path / "results.json", results)
        r_in, r_fresh = results["in_sample"], results["fresh"]
        print(f"program: {search.best_program}")
        print(
            f"in-sample ({r_in['worlds']} worlds): {r_in['return_without_bonus']:.4f} without "
            f"bonus, {r_in['return_with_bonus']:.4f} with bonus; fresh ({r_fresh['worlds']} "
            f"worlds): {r_fresh['return_without_bonus']:.4f} without bonus, "
            f"{r_fresh['return_with_bonus']:.4f} with bonus"
        )
        print(f"cem: {search.iteration} iterations, {search.episodes} episodes; {run.path}")
    return 0
