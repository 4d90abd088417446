"""``factored-attention-babyai train-bc``: behaviour cloning of the baselines (spec §6).

Step-based training on padded demonstration batches (32 demos, shuffled each epoch; all
frames of a batch are independent samples), loss = CE on valid steps − 0.01 × entropy over
all positions (:func:`~factored_attention_babyai.models.common.bc_loss`). Identical padding
frames of a demo are passed once with their count as weight, which gives the loss, gradients
and batch-norm statistics of the full padded batch at a fraction of the cost.

Every ``--eval-every`` steps and at the end: greedy rollouts from the stored seeds of the
ID-validation and OOD demos (:func:`~factored_attention_babyai.evaluate.evaluate_goal_sets`),
logged as ``vsucc/dataloader_idx_0`` (ID) and ``vsucc/dataloader_idx_1`` (OOD), the scalar
names of the original (§7; training: ``tloss``, ``tentropy``, ``lr-Adam``/``lr-AdamW``), in
``metrics.jsonl`` and, with ``--tensorboard``, TensorBoard. ``selected/vsucc/...`` carry the
model selection on ID success: the best ID success so far and the OOD success at that same
validation (what ``compkit report`` tabulates for the grid). The ``--top-k`` checkpoints by ID
success stay in ``checkpoints/best/`` (listed in ``best_k_models.yaml``); ``model.pt`` holds
the final weights. ``--resume`` continues from ``checkpoints/last.pt`` bit for bit (data
order, optimizer, schedule, best-k list); Ctrl-C writes ``last.pt`` first.

``--precision mixed`` trains under autocast: float16 with loss scaling on CUDA (the
original's setting: its baselines always trained in 16-bit on a GPU), bfloat16 on a CPU
(about 1.7× faster FiLM steps on AVX-512 BF16 hardware). Validation rollouts run in float32.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compkit_utils.errors import UserError
from factored_attention_babyai.bc_data import BcData, load_bc_data, make_smoke_data

if TYPE_CHECKING:
    from factored_attention_babyai.bc_config import BcConfig

__all__ = ["BC_KIND", "build_policy", "lr_multiplier", "make_batch", "train_bc"]

BC_KIND = "factored-attention-babyai-bc"
RESUME_FIELDS = [
    "model",
    "data",
    "per_goal",
    "vlimit",
    "tlimit",
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "decay",
    "seed",
    "precision",
    "padding_frames",
]


def build_policy(model: str) -> torch.nn.Module:
    """A freshly initialised policy: ``"film"`` or ``"transformer"``."""
    if model == "film":
        from factored_attention_babyai.models.film import FilmPolicy

        return FilmPolicy()
    if model == "transformer":
        from factored_attention_babyai.models.transformer_policy import TransformerPolicy

        return TransformerPolicy()
    raise UserError(f"--model must be film or transformer, got {model!r}")


def lr_multiplier(model: str, step: int, total: int, warmup: float, decay: bool = True) -> float:
    """LR multiplier at ``step`` (0-based) of ``total``.

    FiLM: 1 (the original's StepLR is never applied, §6.1). Transformer: linear warm-up
    0 → 1 over the first ``warmup`` fraction, then ``10^(−2·progress)`` with progress going
    0 → 1 over the rest (0.01 at the final step); 1 after the warm-up if not ``decay``.
    """
    if model == "film":
        return 1.0
    warm = round(warmup * total)
    if step < warm:
        return step / warm
    if not decay:
        return 1.0
    rest = max(total - 1 - warm, 1)
    return 10.0 ** (-2.0 * min((step - warm) / rest, 1.0))


def cpu_has_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX, as oneDNN sees it)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse ``--precision mixed`` on a CPU without native bfloat16 (one line, before any run).

    Without it torch emulates bfloat16, and a training step runs 5–15× slower than in
    float32 (measured: FiLM 0.07 vs 0.96 steps/s on an AVX2-only CPU), the opposite of the
    option's purpose.
    """
    if precision == "mixed" and device.type == "cpu" and not cpu_has_bfloat16():
        capability = torch.backends.cpu.get_cpu_capability()
        raise UserError(
            f"--precision mixed: this CPU has no native bfloat16 arithmetic (torch sees "
            f"{capability}; bfloat16 needs AVX-512 BF16 or AMX) and would train several times "
            "slower than float32; use --precision 32 (the default)"
        )


def mixed_precision(
    precision: str, device: torch.device
) -> tuple[bool, torch.dtype, torch.amp.GradScaler]:
    """``--precision`` → (autocast on, its dtype, the loss scaler).

    ``mixed``: float16 with loss scaling on CUDA (the original's 16-bit training), bfloat16
    without scaling elsewhere; ``32``: autocast off and a disabled scaler.
    """
    mixed = precision == "mixed"
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return mixed, dtype, torch.amp.GradScaler(device.type, enabled=mixed and device.type == "cuda")


def make_batch(
    data: BcData, index: np.ndarray, device: torch.device, *, padding: bool = True
) -> dict[str, torch.Tensor]:
    """The frames of demos ``index``: every valid frame plus one weighted padding frame each.

    ``padding=False`` leaves the padding frames out (``valid`` is then all True and every
    weight 1): the batch of ``train-bc --no-padding-frames``.

    Returns:
        ``images [F, 8, 8, 3]`` uint8, ``directions [F]``, ``missions [F, 5]``,
        ``actions [F]``, ``valid [F]`` bool, ``weights [F]`` float (the padding frame of a
        demo of length T weighs Tmax − T).
    """
    lengths = data.lengths[index]
    tmax = data.images.shape[1]
    mask = np.arange(tmax)[None, :] < lengths[:, None]  # [B, Tmax]
    images = data.images[index][mask]
    directions = data.directions[index][mask]
    actions = data.actions[index][mask]
    missions = np.repeat(data.missions[index], lengths, axis=0)
    pad = np.flatnonzero(lengths < tmax) if padding else np.zeros(0, dtype=np.int64)
    n_pad = len(pad)
    images = np.concatenate((images, np.zeros((n_pad, *images.shape[1:]), dtype=images.dtype)))
    directions = np.concatenate((directions, np.zeros(n_pad, dtype=directions.dtype)))
    actions = np.concatenate((actions, np.zeros(n_pad, dtype=actions.dtype)))
    missions = np.concatenate((missions, data.missions[index][pad]))
    weights = np.concatenate((np.ones(int(mask.sum())), (tmax - lengths[pad]).astype(np.float64)))
    valid = np.concatenate((np.ones(int(mask.sum()), dtype=bool), np.zeros(n_pad, dtype=bool)))
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images)).to(device),
        "directions": torch.from_numpy(directions.astype(np.int64)).to(device),
        "missions": torch.from_numpy(missions.astype(np.int64)).to(device),
        "actions": torch.from_numpy(actions.astype(np.int64)).to(device),
        "valid": torch.from_numpy(valid).to(device),
        "weights": torch.from_numpy(weights.astype(np.float32)).to(device),
    }


def _batch_index(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Demos of ``step``: epoch e = step // ceil(n / B) shuffles with seed (seed, e)."""
    per_epoch = math.ceil(n / batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[i * batch_size : (i + 1) * batch_size]


def _write_best_yaml(path: Path, best: list[tuple[float, int, str]]) -> None:
    from compkit_utils.io import atomic_write_text

    lines = [f"{name}: {score!r}" for score, _, name in best]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def train_bc(cfg: BcConfig) -> Path:
    """Run ``train-bc``; returns the run directory."""
    from compkit_utils.checkpoints import (
        CheckpointManager,
        load_checkpoint,
        make_state,
        save_checkpoint,
    )
    from compkit_utils.config import to_dict
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.logging import RunLogger, progress
    from compkit_utils.runs import (
        check_resume_config,
        defer_interrupt,
        open_run,
        save_on_interrupt,
        write_config,
    )
    from compkit_utils.seeding import restore_rng_state, seed_everything
    from factored_attention_babyai import __version__
    from factored_attention_babyai.evaluate import evaluate_goal_sets
    from factored_attention_babyai.models.common import bc_loss

    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    check_precision(cfg.precision, device)
    if cfg.data is None:
        data = make_smoke_data(cfg.seed, vlimit=cfg.vlimit, tlimit=cfg.tlimit)
    else:
        data = load_bc_data(cfg.data, per_goal=cfg.per_goal, vlimit=cfg.vlimit, tlimit=cfg.tlimit)
    total = cfg.total_steps
    n = len(data.lengths)
    config = to_dict(cfg)
    opt_name = "Adam" if cfg.model == "film" else "AdamW"
    with open_run(
        "factored-attention-babyai",
        "train-bc",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        state: dict[str, Any] | None = None
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint, map_location=device)
            saved = state.get("extra") or {}
            if saved.get("kind") != BC_KIND:
                raise UserError(f"--resume: {run.last_checkpoint} is not a train-bc checkpoint")
            saved_config = {"padding_frames": True, "decay": True, **state["config"]}  # older runs
            check_resume_config(run.last_checkpoint, saved_config, config, RESUME_FIELDS)
        else:
            write_config(run.path, cfg, "factored-attention-babyai")
        seed_everything(cfg.seed)
        model = build_policy(cfg.model).to(device)
        if cfg.model == "film":
            opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        mixed, amp_dtype, scaler = mixed_precision(cfg.precision, device)
        manager = CheckpointManager(run.path / "checkpoints", keep_last=1)
        best_dir = run.path / "checkpoints" / "best"
        best: list[tuple[float, int, str]] = []  # (ID success, step, file name)
        selected = [-1.0, 0.0]  # (best ID success so far, OOD success at that validation)
        start = 0
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            restore_rng_state(state["rng"])
            start = int(state["step"])
            best = [(float(s), int(k), str(f)) for s, k, f in state["extra"]["best"]]
            selected = [float(v) for v in state["extra"]["selected"]]
            if state["extra"].get("scaler"):
                scaler.load_state_dict(state["extra"]["scaler"])
        print(
            f"train-bc: {cfg.model}, {n} demos ({data.source}), {total} steps of batch "
            f"{cfg.batch_size}, validation on {len(data.id_seeds)} ID + {len(data.ood_seeds)} "
            f"OOD seeds every {cfg.eval_every}, device {device}"
        )
        done = start

        def extra() -> dict[str, Any]:
            return {
                "kind": BC_KIND,
                "model": cfg.model,
                "best": [list(b) for b in best],
                "selected": list(selected),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            }

        def save(step: int) -> None:
            manager.save(
                make_state(
                    step=step,
                    model=model,
                    optimizer=opt,
                    config=config,
                    package_version=__version__,
                    extra=extra(),
                )
            )

        def validate(step: int) -> dict[str, float]:
            results = evaluate_goal_sets(
                model, {"id": data.id_seeds, "ood": data.ood_seeds}, batch_size=cfg.eval_batch
            )
            id_succ = results["id"].success_rate
            ood_succ = results["ood"].success_rate
            if id_succ > selected[0]:
                selected[:] = [id_succ, ood_succ]
            metrics = {
                "vsucc/dataloader_idx_0": id_succ,
                "vsucc/dataloader_idx_1": ood_succ,
                "selected/vsucc/dataloader_idx_0": selected[0],
                "selected/vsucc/dataloader_idx_1": selected[1],
                "vlength/dataloader_idx_0": float(results["id"].length.mean()),
                "vlength/dataloader_idx_1": float(results["ood"].length.mean()),
            }
            name = f"step_{step:06d}.pt"
            if len(best) < cfg.top_k or id_succ > best[-1][0]:
                save_checkpoint(
                    best_dir / name,
                    make_state(
                        step=step,
                        model=model,
                        config=config,
                        package_version=__version__,
                        extra={"kind": BC_KIND, "model": cfg.model, "vsucc": metrics},
                    ),
                )
                best.append((id_succ, step, name))
                best.sort(key=lambda b: (-b[0], b[1]))
                for _, _, old in best[cfg.top_k :]:
                    (best_dir / old).unlink(missing_ok=True)
                del best[cfg.top_k :]
                _write_best_yaml(run.path / "best_k_models.yaml", best)
            return metrics

        t0 = time.perf_counter()
        with (
            RunLogger(
                run.path,
                console_every=0,
                tensorboard=cfg.tensorboard,
                resume=run.resumed,
                resume_step=start,
                package="factored-attention-babyai",
            ) as logger,
            save_on_interrupt(lambda: save(done)),
        ):
            model.train()
            for step in progress(range(start, total), total=total, initial=start, desc="bc"):
                mult = lr_multiplier(cfg.model, step, total, cfg.warmup, cfg.decay)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * mult
                batch = make_batch(
                    data,
                    _batch_index(n, cfg.batch_size, cfg.seed, step),
                    device,
                    padding=cfg.padding_frames,
                )
                with torch.autocast(device.type, dtype=amp_dtype, enabled=mixed):
                    logits = model(
                        batch["images"],
                        batch["directions"],
                        batch["missions"],
                        frame_weights=batch["weights"],
                    )
                loss, _, entropy = bc_loss(
                    logits, batch["actions"], batch["valid"], batch["weights"]
                )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                with defer_interrupt():
                    scaler.step(opt)
                    scaler.update()
                    done = step + 1
                    metrics: dict[str, float] = {
                        "tloss": float(loss.detach()),
                        "tentropy": float(entropy.detach()),
                        f"lr-{opt_name}": cfg.lr * mult,
                    }
                    if done % cfg.eval_every == 0 or done == total:
                        metrics.update(validate(done))
                        logger.log(done, metrics, console=True)
                        save(done)
                    else:
                        logger.log(done, metrics, console=False)
        final = make_state(
            step=total, model=model, config=config, package_version=__version__, extra=extra()
        )
        save_checkpoint(run.path / "model.pt", final)
        seconds = time.perf_counter() - t0
        top = best[0] if best else (float("nan"), 0, "")
        print(
            f"train-bc: {total - start} steps in {seconds:.1f} s; best ID success {top[0]:.3f} "
            f"at step {top[1]}; {run.path}"
        )
    return run.path
