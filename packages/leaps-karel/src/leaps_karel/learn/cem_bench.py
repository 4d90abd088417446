"""The learning rows of ``leaps-karel bench``: CEM iterations, the L^R reward, a training step.

* **CEM iteration** per task (spec §6.3's unit): decode P latents (z = μ₀ + σ₀ ε, the task's
  preset) greedily with the grammar mask and evaluate the P programs on the shared 10 initial
  states, the program cache emptied before every iteration ("cold"), wall time, one process.
  Measured with the machine as it is and beside one busy core
  (`compkit_utils.devices.busy_process`), and compared with the original's single-core
  figures (0.5–2.1 s per iteration). The decoder is the shipped LEAPS model when it is
  installed, else a random one (the row says which); a random decoder emits long programs
  that are mostly cut off at 45 tokens, so its evaluation part is not representative.
* **L^R reward**: programs/s of `leaps_karel.learn.losses.behaviour_rewards` (fresh demos of
  a ground-truth program + prefix match of a predicted one), sampler programs as both.
* **Stage-1 training step**: `leaps_karel.learn.pretrain.bench_pretrain_step` (ours vs a
  straightforward implementation, batch 16), when present and ``seconds >= 0.5``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

#: The original's seconds per CEM iteration on one core (spec §6.3).
ORIGINAL_ITERATION_S: dict[str, float] = {
    "stairclimber": 0.8,
    "fourcorner": 2.05,
    "topoff": 2.05,
    "maze": 0.5,
    "cleanhouse": 1.25,
    "harvester": 1.0,
}
#: Target speed-up over the original's single core (issue 12).
TARGET_SPEEDUP = 20.0


def bench_decoder(seed: int = 0) -> tuple[Callable[[Any], list[str]], str]:
    """The fast decoder of the shipped weights (else a random model) and its label."""
    from compkit_utils.errors import UserError
    from leaps_karel.learn.cem import make_decoder

    try:
        from leaps_karel.learn.weights import default_weights, read_metadata

        variant = read_metadata(default_weights()).get("variant", "?")
        return make_decoder(None), f"shipped {variant} weights"
    except (UserError, FileNotFoundError, ImportError):
        return make_decoder(None, random_decoder=True, seed=seed), "random decoder (no weights)"


def cold_iteration_s(
    task: str, decode: Callable[[Any], list[str]], seconds: float, seed: int = 0
) -> tuple[float, float]:
    """Wall and CPU seconds of one cold CEM iteration (decode P + evaluate P on 10 worlds)."""
    import torch

    from leaps_karel.learn.cem import initial_mean
    from leaps_karel.learn.cem_config import PRESETS
    from leaps_karel.learn.cem_scoring import TaskScorer

    s = PRESETS[task]
    scorer = TaskScorer(task, seed)
    generator = torch.Generator().manual_seed(seed)
    mu = initial_mean(s, generator)

    scorer.set_batch(1)

    def once() -> None:
        scorer.clear_cache()
        z = mu[None, :] + s.sigma * torch.randn(s.population, 256, generator=generator)
        scorer.score(decode(z))

    once()  # warm-up
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        once()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return elapsed / count, (time.process_time() - cpu) / count


def lr_reward_rate(seconds: float, seed: int = 0) -> float:
    """Programs/s of the L^R reward (`leaps_karel.learn.losses.behaviour_rewards`)."""
    import numpy as np

    from leaps_karel.bench import BENCH_PROGRAMS
    from leaps_karel.learn.losses import behaviour_rewards

    rng = np.random.default_rng(seed)
    gt = list(BENCH_PROGRAMS)
    pred = gt[1:] + gt[:1]
    behaviour_rewards(gt[:2], pred[:2], rng)  # warm-up
    count, start = 0, time.perf_counter()
    while True:
        behaviour_rewards(gt, pred, rng)
        count += len(gt)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def cem_rows(seconds: float, seed: int = 0, tasks: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The learning rows (dicts for `leaps_karel.bench.BenchRow`); [] without torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return []
    from compkit_utils.devices import busy_process, set_threads

    set_threads(1)
    decode, label = bench_decoder(seed)
    rows: list[dict[str, Any]] = []
    names = [t for t in ORIGINAL_ITERATION_S if not tasks or t in tasks]
    idle = {t: cold_iteration_s(t, decode, seconds, seed) for t in names}
    with busy_process():
        busy = {t: cold_iteration_s(t, decode, seconds, seed) for t in names}
    from leaps_karel.learn.cem_config import PRESETS

    for t in names:
        original = ORIGINAL_ITERATION_S[t]
        (wall, cpu), (busy_wall, _) = idle[t], busy[t]
        rows.append(
            {
                "name": f"CEM iterations/CPU-s, {t} (P={PRESETS[t].population}, 10 worlds)",
                "ours": 1.0 / cpu,
                "baseline": 1.0 / original,
                "unit": "/s",
                "note": (
                    f"{cpu * 1e3:.1f} ms CPU per iteration; wall {wall * 1e3:.1f} ms, "
                    f"{busy_wall * 1e3:.1f} ms beside a busy core ({original / busy_wall:.0f}x); "
                    f"original {original:g} s/iteration (spec §6.3, 1 core), target >= "
                    f"{TARGET_SPEEDUP:.0f}x; {label}"
                ),
                "table": "learning",
            }
        )
    try:
        rate = lr_reward_rate(seconds, seed)
    except ImportError:  # stage 1 not installed
        return rows
    rows.append(
        {
            "name": "L^R reward programs/s (10 fresh demos + prefix match)",
            "ours": rate,
            "baseline": 1 / 0.22,
            "unit": "/s",
            "note": "original ~0.22 s per reward on one core (spec §3.5)",
            "table": "learning",
        }
    )
    try:
        from leaps_karel.learn.pretrain import bench_pretrain_step
    except ImportError:
        return rows
    if seconds < 0.5:  # a quick check: the straightforward step alone takes seconds
        return rows
    step = bench_pretrain_step(batch_size=16, steps=1, seed=seed)
    rows.append(
        {
            "name": f"stage-1 supervised step (batch {step['batch']}, {step['variant']})",
            "ours": 1.0 / step["fast_s"],
            "baseline": 1.0 / step["reference_s"],
            "unit": "/s",
            "note": (
                f"{step['fast_s'] * 1e3:.0f} ms vs {step['reference_s'] * 1e3:.0f} ms for the "
                "straightforward implementation, same run"
            ),
            "table": "learning",
        }
    )
    return rows
