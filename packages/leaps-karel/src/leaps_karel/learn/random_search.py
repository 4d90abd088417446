"""LEAPS-rand-8 / LEAPS-rand-64: random search in the program embedding (spec §7).

The paper describes these baselines only as "random search in the LEAPS embedding instead of
CEM, 8 or 64 candidates per step". Protocol chosen here (and documented in
``docs/leaps-karel/learning.md``): every iteration draws ``k`` latents from the prior
N(0, I) — the distribution the VAE's KL term shapes the embedding towards — decodes them
greedily and scores them on the iteration's shared initial states (the same world schedule as
CEM: a new batch every 100 iterations). The incumbent is the best program seen so far; it is
re-scored when the initial states change (one more evaluation). Its score is the iteration's
best score, so the early-stop rule, the iteration budget and the episode accounting
(evaluations × worlds per evaluation) are CEM's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from leaps_karel.learn.cem import LATENT, Decode, Iteration, batch_of, is_solved
from leaps_karel.learn.cem_config import CemSettings

if TYPE_CHECKING:
    from leaps_karel.learn.cem_scoring import Scorer


class RandomSearch:
    """Best-of-random-latents search with `CemSearch`'s interface.

    Args:
        settings: resolved settings; ``population`` is k (8 or 64).
        decode: ``z [n, 256] → n`` program texts.
        scorer: the reward on shared initial states.
        seed: seeds the latent draws.
    """

    def __init__(
        self, settings: CemSettings, decode: Decode, scorer: Scorer, seed: int = 0
    ) -> None:
        import torch

        self.s = settings
        self.decode = decode
        self.scorer = scorer
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.episodes = 0
        self.history: list[float] = []
        self.best_program = ""
        self.best_score = 0.0
        self._batch = -1

    @property
    def done(self) -> bool:
        """Solved (CEM's stop rule) or out of iterations."""
        return self.iteration >= self.s.max_iterations or is_solved(self.history, self.s)

    def step(self) -> Iteration:
        """Draw, decode and score k latents; keep the best program so far."""
        import torch

        s = self.s
        k = self.iteration + 1
        batch = batch_of(k, s)
        self.scorer.set_batch(batch)
        evaluated = s.population
        if self.best_program and batch != self._batch:
            self.best_score = float(self.scorer.score([self.best_program])[0])
            evaluated += 1
        self._batch = batch
        z = torch.randn(s.population, LATENT, generator=self.generator)
        texts = self.decode(z)
        returns = self.scorer.score(texts)
        top = int(np.argmax(returns))  # first of the best: earlier draws win ties
        if not self.best_program or returns[top] > self.best_score:
            self.best_program, self.best_score = texts[top], float(returns[top])
        self.episodes += evaluated * s.worlds_per_eval
        self.history.append(self.best_score)
        self.iteration = k
        return Iteration(
            k,
            self.best_program,
            self.best_score,
            1.0,
            self.episodes,
            float(returns.max()),
            float(returns.mean()),
            self.scorer.evaluations,
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs."""
        return {
            "iteration": self.iteration,
            "episodes": self.episodes,
            "history": list(self.history),
            "best_program": self.best_program,
            "best_score": self.best_score,
            "batch": self._batch,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`."""
        self.iteration = int(state["iteration"])
        self.episodes = int(state["episodes"])
        self.history = [float(x) for x in state["history"]]
        self.best_program = str(state["best_program"])
        self.best_score = float(state["best_score"])
        self._batch = int(state["batch"])
        self.generator.set_state(state["generator"])
