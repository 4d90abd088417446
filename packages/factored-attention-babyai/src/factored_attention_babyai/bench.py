"""``factored-attention-babyai bench``: timings of evaluation, BC training and generation.

* **Evaluator**: :func:`~factored_attention_babyai.evaluate.rollout` (all episodes' envs
  stepped together, one batched policy call per time step) against the reference written
  here, :func:`reference_rollout` — one environment at a time, the same policy called on one
  frame per step. Same freshly initialised policy (so every episode runs the full 64 steps:
  both do the same work), same seeds; the per-episode results are checked to agree and the
  ratio is reported (target ≥ 10×). The vectorised evaluator drives the BC policies through
  their eval-only rollout sessions (:mod:`factored_attention_babyai.models.inference`); the
  same batched loop without the session is timed too, and wall-clock and CPU seconds are
  both reported.
* **BC training**: steps/s at batch 32 (bot demonstrations made on the spot, the dataset's
  padding conventions) for each model, with :func:`~factored_attention_babyai.train_bc.make_batch`
  and the loss of the trainer, in float32 and under bfloat16 autocast (``--precision mixed``).
* **Generation**: demos/s and the projected time of the full 36 × 10,000 dataset, via the
  generator's ``bench_generation`` when the package has it.

``--contended`` repeats everything beside a busy process
(:func:`compkit_utils.devices.busy_process`). Timings are reports, never pass/fail.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from factored_attention_babyai.bc_config import BcBenchConfig
    from factored_attention_babyai.evaluate import Episodes, Policy

__all__ = ["reference_rollout", "run_bench", "time_bc_steps", "time_evaluator"]


def reference_rollout(policy: Policy, seeds: Sequence[int] | np.ndarray) -> Episodes:
    """The straightforward evaluator: one env, one episode after another, batch-1 policy."""
    from factored_attention_babyai.env import make_env
    from factored_attention_babyai.evaluate import Episodes

    if isinstance(policy, torch.nn.Module):
        policy.eval()
    env = make_env()
    success, length, missions = [], [], []
    with torch.inference_mode():
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            missions.append(obs["mission"])
            steps = 0
            while True:
                scores = policy(
                    torch.from_numpy(obs["image"][None]),
                    torch.tensor([obs["direction"]]),
                    torch.from_numpy(obs["mission_tokens"][None]),
                )
                obs, reward, terminated, truncated, _ = env.step(int(scores.argmax()))
                steps += 1
                if terminated or truncated:
                    break
            success.append(reward > 0)
            length.append(steps)
    env.close()
    return Episodes(
        np.asarray(seeds, dtype=np.int64),
        np.asarray(success, dtype=bool),
        np.asarray(length, dtype=np.int64),
        tuple(missions),
    )


def _timed(fn: Any) -> tuple[Any, float, float]:
    """``fn()``, its wall-clock seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def time_evaluator(model: str, episodes: int, seed: int) -> dict[str, float]:
    """Seconds of the vectorised evaluator and of the reference on the same seeds.

    Three runs on the same seeds: the vectorised evaluator as used in training (through the
    policy's rollout session), the same without the session (the plain ``forward`` on every
    batch), and the one-env-at-a-time reference. Wall-clock and CPU seconds of each (on a
    shared machine the CPU seconds are the steadier comparison).
    """
    from factored_attention_babyai.evaluate import rollout
    from factored_attention_babyai.train_bc import build_policy

    torch.manual_seed(seed)
    policy = build_policy(model)
    seeds = np.arange(episodes) + 10**6 * (seed + 1)
    rollout(policy, seeds[:1])  # warm-up (allocator, kernels)
    fast, t_fast, c_fast = _timed(lambda: rollout(policy, seeds))
    plain, t_plain, c_plain = _timed(lambda: rollout(policy, seeds, fast=False))
    slow, t_slow, c_slow = _timed(lambda: reference_rollout(policy, seeds))
    agree = all(
        np.array_equal(a.length, slow.length) and np.array_equal(a.success, slow.success)
        for a in (fast, plain)
    )
    frames = int(fast.length.sum())
    return {
        "vectorised_s": t_fast,
        "vectorised_plain_s": t_plain,
        "reference_s": t_slow,
        "ratio": t_slow / t_fast,
        "ratio_plain": t_slow / t_plain,
        "vectorised_cpu_s": c_fast,
        "vectorised_plain_cpu_s": c_plain,
        "reference_cpu_s": c_slow,
        "ratio_cpu": c_slow / max(c_fast, 1e-9),
        "frames": frames,
        "agreement": float(agree),
    }


def time_bc_steps(
    model: str, steps: int, seed: int, batch_size: int = 32, mixed: bool = False
) -> float:
    """Training steps per second at ``batch_size`` demos (bot demos, warm-up excluded).

    ``mixed``: under bfloat16 autocast, as ``train-bc --precision mixed`` on a CPU.
    """
    from factored_attention_babyai.bc_data import make_smoke_data
    from factored_attention_babyai.models.common import bc_loss
    from factored_attention_babyai.train_bc import _batch_index, build_policy, make_batch

    data = make_smoke_data(seed, demos=2 * batch_size)
    torch.manual_seed(seed)
    policy = build_policy(model)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    n = len(data.lengths)

    def step(i: int) -> None:
        batch = make_batch(data, _batch_index(n, batch_size, seed, i), torch.device("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            logits = policy(
                batch["images"],
                batch["directions"],
                batch["missions"],
                frame_weights=batch["weights"],
            )
        loss, _, _ = bc_loss(logits, batch["actions"], batch["valid"], batch["weights"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    return steps / (time.perf_counter() - t0)


def _generation(seed: int) -> dict[str, Any] | None:
    try:
        module = importlib.import_module("factored_attention_babyai.generate")
    except ImportError:
        return None
    bench = getattr(module, "bench_generation", None)
    if bench is None:
        return None
    result: Any = bench(seed=seed)
    if isinstance(result, dict):
        return result
    return dataclasses.asdict(result)


def _measure(cfg: BcBenchConfig) -> dict[str, Any]:
    from factored_attention_babyai.train_bc import cpu_has_bfloat16

    out: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "evaluator": {},
        "bc_steps_per_s": {},
        "bc_steps_per_s_mixed": {},
    }
    for model in cfg.models:
        out["evaluator"][model] = time_evaluator(model, cfg.episodes, cfg.seed)
        out["bc_steps_per_s"][model] = time_bc_steps(model, cfg.steps, cfg.seed, cfg.batch_size)
        # Without native bfloat16 train-bc refuses --precision mixed (emulated: 5-15x slower).
        out["bc_steps_per_s_mixed"][model] = (
            time_bc_steps(model, cfg.steps, cfg.seed, cfg.batch_size, mixed=True)
            if cpu_has_bfloat16()
            else None
        )
    if cfg.generation:
        out["generation"] = _generation(cfg.seed)
    if not cfg.smoke:  # part 2: planner and discriminator steps vs their references
        from factored_attention_babyai.bench_steps import (
            bench_discriminator_step,
            bench_planner_step,
        )

        out["planner_step"] = bench_planner_step()
        out["discriminator_step"] = bench_discriminator_step()
    return out


def _print(label: str, result: dict[str, Any]) -> None:
    print(f"[{label}]")
    batch = result["batch_size"]
    for model, r in result["evaluator"].items():
        print(
            f"evaluator {model}: vectorised {r['vectorised_s']:.2f} s (without the rollout "
            f"session {r['vectorised_plain_s']:.2f} s), one env at a time "
            f"{r['reference_s']:.2f} s, ratio {r['ratio']:.1f}x "
            f"(without the session {r['ratio_plain']:.1f}x; in CPU seconds "
            f"{r['vectorised_cpu_s']:.2f} vs {r['reference_cpu_s']:.2f}, {r['ratio_cpu']:.1f}x; "
            f"{r['frames']} frames, per-episode agreement {r['agreement']:.2f})"
        )
    for model, rate in result["bc_steps_per_s"].items():
        mixed = result["bc_steps_per_s_mixed"][model]
        mixed_text = (
            f"{mixed:.2f} steps/s"
            if mixed is not None
            else "not timed (this CPU has no native bfloat16; train-bc refuses it)"
        )
        print(
            f"train-bc {model}: {rate:.2f} steps/s at batch {batch} ({3600 * rate:.0f} steps/h); "
            f"--precision mixed (bfloat16) {mixed_text}"
        )
    for key in ("planner_step", "discriminator_step"):
        if key in result:
            r = result[key]
            print(
                f"{r['what']}: {r['ours_ms']:.0f} ms, reference {r['reference_ms']:.0f} ms, "
                f"speed-up {r['speedup']:.2f}x (batch {r['batch_size']}, same loss: "
                f"{r['loss_match']})"
            )
    gen = result.get("generation")
    if gen is not None:
        print("generation: " + ", ".join(f"{k} {v}" for k, v in gen.items()))


def run_bench(cfg: BcBenchConfig) -> dict[str, Any]:
    """Measure, print a report and a JSON line; returns the figures."""
    from compkit_utils.devices import busy_process, set_threads

    threads = set_threads(cfg.threads)
    print(f"threads: {threads}")
    result = {"idle": _measure(cfg)}
    _print("idle", result["idle"])
    if cfg.contended:
        with busy_process():
            result["contended"] = _measure(cfg)
        _print("beside a busy process", result["contended"])
    print(json.dumps(result))
    return result
