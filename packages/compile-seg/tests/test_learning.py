"""Learning tests (``slow``): the default configuration recovers the toy segmentation.

Measured for the original (method spec, section 7.1): rec_acc_eval >= 0.99 first at steps
23-25 and 1.000 at 26-31 (Gaussian); 1.000 at 47-76 with concrete latents.

The tests run with one torch thread (the package's test fixture), so their trajectories are
the same on every machine with the same kernels.
"""

from __future__ import annotations

import pytest

from compile_seg.config import LatentDist, ModelConfig, TrainConfig
from compile_seg.train import train
from compkit_utils.logging import read_metrics


def _accuracies(tmp_path, seed: int, latent_dist: LatentDist, iterations: int) -> dict[int, float]:
    cfg = TrainConfig(
        iterations=iterations,
        log_interval=1,
        seed=seed,
        device="cpu",
        runs_dir=tmp_path,
        run_name=f"{latent_dist}_{seed}",
        heldout_size=64,
        checkpoint_every=1000,
        model=ModelConfig(latent_dist=latent_dist),
    )
    result = train(cfg, print_fn=lambda line: None)
    return {r["step"]: r["train/rec_acc_eval"] for r in read_metrics(result.run_dir)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_gaussian_reaches_099_by_step_40(tmp_path, seed):
    acc = _accuracies(tmp_path, seed, "gaussian", iterations=41)
    assert max(acc.values()) >= 0.99, acc
    first = min(step for step, value in acc.items() if value >= 0.99)
    assert first <= 40


@pytest.mark.slow
def test_concrete_reaches_100_by_step_100(tmp_path):
    # 1.000 as printed (3 decimals). Training is chaotic: changing the summation order of
    # a float reduction (thread count, kernel backend) moves each seed's first 1.000 by tens
    # of steps. Over seeds 0-9 about 85% reach it within 100 steps (the original: 47-76 for
    # its seeds), and the rest stall just below (0.985-0.9994) (docs/compile-seg). The
    # test asks for 4 of seeds 0-4, and for every seed to pass 0.98.
    best = {
        seed: max(_accuracies(tmp_path, seed, "concrete", iterations=100).values())
        for seed in range(5)
    }
    assert sum(value >= 0.9995 for value in best.values()) >= 4, best
    assert min(best.values()) >= 0.98, best
