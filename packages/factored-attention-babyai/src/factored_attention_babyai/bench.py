"""``factored-attention-babyai bench``: timings of evaluation, BC training and generation.

* **Evaluator**: :func:`~factored_attention_babyai.evaluate.rollout` (all episodes' envs
  stepped together, one batched policy call per time step) against the reference written
  here, :func:`reference_rollout` — one environment at a time, the same policy called on one
  frame per step, every episode stepped to its end. Same policy, same seeds; the per-episode
  results are checked to agree and the ratio is reported (target ≥ 10×). The vectorised
  evaluator drives the BC policies through their eval-only rollout sessions
  (:mod:`factored_attention_babyai.models.inference`) and cuts episodes that enter a cycle;
  it is also timed without the cut (the same frames as the reference: batching alone) and
  without the session, in wall-clock and CPU seconds. The default policies are freshly
  initialised ones, which never succeed and nearly always loop at once (the cut's best
  case); ``--checkpoints`` adds trained policies of ``train-bc`` / ``train-planner``.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from factored_attention_babyai.bc_config import BcBenchConfig
    from factored_attention_babyai.evaluate import Episodes, Policy

__all__ = ["load_policy", "reference_rollout", "run_bench", "time_bc_steps", "time_evaluator"]


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


def load_policy(path: Path) -> tuple[str, torch.nn.Module]:
    """A trained policy from a ``train-bc`` or ``train-planner`` checkpoint.

    Returns:
        ``(label, policy)``: ``film`` / ``transformer`` / ``planner`` (+ the file name) and the
        module with the checkpoint's weights, on the CPU.

    Raises:
        UserError: a missing, corrupt or foreign checkpoint.
    """
    from compkit_utils.checkpoints import load_checkpoint
    from compkit_utils.errors import UserError
    from factored_attention_babyai.planner import PLANNER_KIND, MVPropPlanner
    from factored_attention_babyai.train_bc import BC_KIND, build_policy

    state = load_checkpoint(path)
    extra = state.get("extra") or {}
    kind = extra.get("kind")
    policy: torch.nn.Module
    if kind == BC_KIND:
        label = str(extra["model"])
        policy = build_policy(label)
    elif kind == PLANNER_KIND:
        from factored_attention_babyai.models.interaction import build_interaction
        from factored_attention_babyai.vocab import WORDS

        label = "planner"
        interaction = build_interaction(str(extra["interaction_model"]), len(WORDS))
        policy = MVPropPlanner(interaction, k=int(extra["k"]))
    else:
        raise UserError(
            f"--checkpoints {path}: not a train-bc or train-planner checkpoint; pass the "
            "model.pt (or a checkpoints/*.pt) of such a run"
        )
    try:
        policy.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(
            f"--checkpoints {path}: its weights do not fit a {label} policy "
            f"({exc.__class__.__name__}); it was written by another version"
        ) from exc
    where = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return f"{label} ({where}, step {state.get('step', '?')})", policy


def time_evaluator(
    model: str, episodes: int, seed: int, policy: Policy | None = None
) -> dict[str, float]:
    """Seconds of the vectorised evaluator and of the reference on the same seeds.

    Four runs on the same seeds: the vectorised evaluator as used in training (the policy's
    rollout session, cycles cut), the same without the cycle cut (so the same frames as the
    reference: the gain of batching alone), the same without the session either (the plain
    ``forward`` on every batch), and the one-env-at-a-time reference. Wall-clock and CPU
    seconds of each (on a shared machine the CPU seconds are the steadier comparison).
    ``policy``: a trained policy to time (default: a fresh ``model`` from ``seed``).
    """
    from factored_attention_babyai.evaluate import rollout
    from factored_attention_babyai.train_bc import build_policy

    if policy is None:
        torch.manual_seed(seed)
        policy = build_policy(model)
    seeds = np.arange(episodes) + 10**6 * (seed + 1)
    rollout(policy, seeds[:1], cut_cycles=False)  # warm-up (allocator, kernels)
    fast, t_fast, c_fast = _timed(lambda: rollout(policy, seeds))
    whole, t_whole, c_whole = _timed(lambda: rollout(policy, seeds, cut_cycles=False))
    plain, t_plain, _ = _timed(lambda: rollout(policy, seeds, fast=False, cut_cycles=False))
    slow, t_slow, c_slow = _timed(lambda: reference_rollout(policy, seeds))
    agree = all(
        np.array_equal(a.length, slow.length) and np.array_equal(a.success, slow.success)
        for a in (fast, whole, plain)
    )
    return {
        "vectorised_s": t_fast,
        "vectorised_uncut_s": t_whole,
        "vectorised_plain_s": t_plain,
        "reference_s": t_slow,
        "ratio": t_slow / t_fast,
        "ratio_uncut": t_slow / t_whole,
        "ratio_plain": t_slow / t_plain,
        "vectorised_cpu_s": c_fast,
        "vectorised_uncut_cpu_s": c_whole,
        "reference_cpu_s": c_slow,
        "ratio_cpu": c_slow / max(c_fast, 1e-9),
        "ratio_uncut_cpu": c_slow / max(c_whole, 1e-9),
        "frames": int(slow.length.sum()),
        "policy_frames": fast.frames,
        "success": float(slow.success.mean()),
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
    for path in cfg.checkpoints:
        label, trained = load_policy(path)
        while label in out["evaluator"]:  # the same file given twice
            label += "'"
        out["evaluator"][label] = time_evaluator(label, cfg.episodes, cfg.seed, trained)
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
            f"evaluator {model}: vectorised {r['vectorised_s']:.2f} s (cycles not cut "
            f"{r['vectorised_uncut_s']:.2f} s, nor the rollout session "
            f"{r['vectorised_plain_s']:.2f} s), one env at a time {r['reference_s']:.2f} s, "
            f"ratio {r['ratio']:.1f}x (cycles "
            f"not cut {r['ratio_uncut']:.1f}x, nor the session {r['ratio_plain']:.1f}x; in CPU "
            f"seconds {r['ratio_cpu']:.1f}x and {r['ratio_uncut_cpu']:.1f}x); success "
            f"{r['success']:.2f}, the policy called on {r['policy_frames']} of {r['frames']} "
            f"frames, per-episode agreement {r['agreement']:.2f}"
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
