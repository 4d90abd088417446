"""``leaps-karel pretrain``: stage 1 of LEAPS (learning spec §3–§5).

Each epoch: one supervised pass (L^P + β·KL + λ_L·L^L, Adam, StepLR), validation metrics,
then — for the variants with L^R, once the validation greedy program accuracy reached the
threshold — the REINFORCE phase over the training set. Metrics go to ``metrics.jsonl`` (and
TensorBoard); ``checkpoints/last.pt`` is written after every epoch and on Ctrl-C,
``checkpoints/best.pt`` whenever the validation total supervised loss is the lowest so far, and
at the end the best model is exported to ``weights/<VARIANT>.safetensors`` in the run (and to
``--export`` when given).

Determinism: every epoch reseeds torch and NumPy from (seed, epoch), validation draws its
latents from its own generator, and a Ctrl-C checkpoint stores the phase, position and random
states, so a resumed seeded CPU run logs exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compkit_utils.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint
from compkit_utils.devices import pick_device, prepare_cpu_runtime, set_threads
from compkit_utils.errors import UserError
from compkit_utils.logging import RunLogger, progress
from compkit_utils.runs import defer_interrupt, open_run, save_on_interrupt, write_config
from leaps_karel.learn.data import ProgramData, load_program_data, smoke_program_data, split_indices
from leaps_karel.learn.grammar import ids_to_program
from leaps_karel.learn.losses import (
    behaviour_rewards,
    kl_loss,
    reinforce_loss,
    sequence_accuracy,
    sequence_loss,
)
from leaps_karel.learn.model import END_ACTION, ProgramVAE
from leaps_karel.learn.pretrain_config import VARIANTS, PretrainConfig, Variant
from leaps_karel.learn.weights import export_weights

__all__ = ["Trainer", "bench_pretrain_step", "evaluate", "main"]

PAD = 50
PACKAGE = "leaps-karel"


def _batch(data: ProgramData, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "ids": torch.as_tensor(data.ids[index], device=device),
        "lengths": torch.as_tensor(data.lengths[index], device=device),
        "s0": torch.as_tensor(data.states(index), device=device),
        "actions": torch.as_tensor(data.actions[index], device=device),
    }


def supervised_losses(
    model: ProgramVAE,
    batch: dict[str, torch.Tensor],
    variant: Variant,
    kl_coef: float,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """L^P, KL, L^L and the total of spec §3.4 on one batch (teacher forcing).

    Returns:
        a dict with the scalar tensors ``total``, ``program``, ``kl``, ``executor`` and, for
        the metrics, ``logits`` ``[B, 45, 51]``, ``targets`` ``[B, 45]``, ``z`` ``[B, H]`` and
        (when the executor is trained) ``exec_logits`` / ``exec_targets`` ``[B·D, S(, 6)]``.
    """
    ids = batch["ids"]
    mu, log_sigma = model.encode(ids, batch["lengths"])
    z = model.sample_z(mu, log_sigma, generator)
    logits = model.decode_teacher(z, ids)
    targets = ids[:, 1:]
    program, _ = sequence_loss(logits, targets, PAD)
    kl = kl_loss(mu, log_sigma)
    out: dict[str, Any] = {"program": program, "kl": kl, "logits": logits, "targets": targets}
    out["z"] = z
    total = program + kl_coef * kl
    executor = torch.zeros((), device=ids.device)
    if variant.executor_loss > 0:
        b, d = batch["actions"].shape[:2]
        s0 = batch["s0"].reshape(b * d, *batch["s0"].shape[2:])
        exec_logits, exec_targets = model.executor.teacher_forced(
            z.repeat_interleave(d, 0),
            s0,
            batch["actions"].reshape(b * d, -1),
            variant.environment_states,
            model.cfg.executor_steps,
        )
        executor, _ = sequence_loss(exec_logits, exec_targets, END_ACTION)
        total = total + variant.executor_loss * executor
        out["exec_logits"], out["exec_targets"] = exec_logits, exec_targets
    out["executor"], out["total"] = executor, total
    return out


@torch.no_grad()
def evaluate(
    model: ProgramVAE,
    data: ProgramData,
    index: np.ndarray,
    variant: Variant,
    cfg: PretrainConfig,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """The metrics of spec §5 on the programs ``index`` (latents drawn from ``seed``).

    Returns:
        losses (``loss``, ``program_loss``, ``kl``, ``executor_loss``), teacher-forced and
        greedy token / program accuracy, and — when the executor is trained — its
        teacher-forced and greedy action / demo accuracy; means weighted by batch size.
    """
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    sums: dict[str, float] = {}
    count = 0
    for start in range(0, len(index), cfg.batch_size):
        rows = index[start : start + cfg.batch_size]
        batch = _batch(data, rows, device)
        out = supervised_losses(model, batch, variant, cfg.kl_coef, gen)
        n = len(rows)
        stats = {
            "loss": out["total"].item(),
            "program_loss": out["program"].item(),
            "kl": out["kl"].item(),
        }
        tf = sequence_accuracy(out["logits"].argmax(-1), out["targets"], PAD)
        greedy = sequence_accuracy(model.decode(out["z"]), out["targets"], PAD)
        stats |= {"token_acc": tf[0], "program_acc": tf[1]}
        stats |= {"greedy_token_acc": greedy[0], "greedy_program_acc": greedy[1]}
        if variant.executor_loss > 0:
            stats["executor_loss"] = out["executor"].item()
            act, demo = sequence_accuracy(
                out["exec_logits"].argmax(-1), out["exec_targets"], END_ACTION
            )
            stats |= {"action_acc": act, "demo_acc": demo}
            d = batch["actions"].shape[1]
            actions = batch["actions"].reshape(n * d, -1)
            real = int((actions < END_ACTION).sum(-1).max())
            _, pred = model.executor.rollout(
                out["z"].repeat_interleave(d, 0),
                batch["s0"].reshape(n * d, *batch["s0"].shape[2:]),
                cfg.model.executor_steps,
                variant.environment_states,
                min_steps=real + 1,
            )
            target = torch.full_like(pred, END_ACTION)
            width = min(pred.shape[1], actions.shape[1])
            target[:, :width] = actions[:, :width]
            act, demo = sequence_accuracy(pred, target, END_ACTION)
            stats |= {"greedy_action_acc": act, "greedy_demo_acc": demo}
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v * n
        count += n
    model.train()
    return {k: v / max(count, 1) for k, v in sums.items()}


class Trainer:
    """Model, optimisers and position of one pretraining run (checkpointable)."""

    def __init__(self, cfg: PretrainConfig, data: ProgramData, device: torch.device) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.variant = VARIANTS[cfg.variant]
        self.train_idx, self.val_idx, self.test_idx = split_indices(len(data), cfg.seed)
        limit = cfg.val_limit or len(self.val_idx)
        self.val_eval = self.val_idx[:limit]
        self.train_eval = self.train_idx[: min(limit, len(self.val_idx))]
        torch.manual_seed(cfg.seed)
        self.model = ProgramVAE(cfg.model).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, cfg.lr_step_epochs, cfg.lr_gamma)
        self.rl_opt = torch.optim.Adam(self.model.parameters(), lr=cfg.rl_lr, eps=1e-5)
        self.epoch = 0  # completed epochs
        self.phase, self.index = "sup", 0  # position inside the current epoch
        self.rl_updates = 0
        self.rl_on = False
        self.best = float("inf")
        self.acc: dict[str, float] = {}  # training-metric sums of the current epoch
        self.rng = np.random.default_rng([cfg.seed, 0])
        self.pending: dict[str, float] = {}  # validation metrics of the current epoch

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (plain tensors / containers)."""
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "rl_opt": self.rl_opt.state_dict(),
            "epoch": self.epoch,
            "phase": self.phase,
            "index": self.index,
            "rl_updates": self.rl_updates,
            "rl_on": self.rl_on,
            "best": self.best,
            "acc": dict(self.acc),
            "pending": dict(self.pending),
            "torch_rng": torch.get_rng_state(),
            "np_rng": repr(self.rng.bit_generator.state),
            "variant": self.variant.name,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore `state` (as written by `state`)."""
        import ast

        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rl_opt.load_state_dict(state["rl_opt"])
        self.epoch, self.phase, self.index = state["epoch"], state["phase"], state["index"]
        self.rl_updates, self.rl_on, self.best = state["rl_updates"], state["rl_on"], state["best"]
        self.acc, self.pending = dict(state["acc"]), dict(state["pending"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = ast.literal_eval(state["np_rng"])

    # ------------------------------------------------------------------ phases
    def start_epoch(self) -> None:
        """Reseed for epoch ``self.epoch`` (a fresh epoch, not a resumed one)."""
        torch.manual_seed(self.cfg.seed * 100_003 + self.epoch)
        self.rng = np.random.default_rng([self.cfg.seed, self.epoch])
        self.phase, self.index, self.acc, self.pending = "sup", 0, {}, {}

    def supervised_step(self, rows: np.ndarray) -> None:
        """One Adam step of the supervised loss on the programs ``rows``."""
        out = supervised_losses(
            self.model, _batch(self.data, rows, self.device), self.variant, self.cfg.kl_coef
        )
        self.opt.zero_grad(set_to_none=True)
        out["total"].backward()
        self.opt.step()
        tf = sequence_accuracy(out["logits"].argmax(-1), out["targets"], PAD)
        stats = {
            "loss": out["total"].item(),
            "program_loss": out["program"].item(),
            "kl": out["kl"].item(),
            "token_acc": tf[0],
            "program_acc": tf[1],
        }
        if self.variant.executor_loss > 0:
            stats["executor_loss"] = out["executor"].item()
            act = sequence_accuracy(out["exec_logits"].argmax(-1), out["exec_targets"], 5)
            stats |= {"action_acc": act[0], "demo_acc": act[1]}
        for k, v in stats.items():
            self.acc[k] = self.acc.get(k, 0.0) + v
        self.acc["_batches"] = self.acc.get("_batches", 0.0) + 1

    def rl_update(self, rows: np.ndarray) -> dict[str, float]:
        """One REINFORCE update (spec §3.5) on the programs ``rows``."""
        cfg, model = self.cfg, self.model
        batch = _batch(self.data, rows, self.device)
        with torch.no_grad():
            mu, log_sigma = model.encode(batch["ids"], batch["lengths"])
            eps = torch.randn_like(mu)
            sampled = model.decode(mu + torch.exp(log_sigma) * eps, sample=True)
        preds = [ids_to_program(r) for r in sampled.tolist()]
        seeds = self.rng.integers(0, 2**63 - 1, size=len(rows)).tolist()
        rewards = behaviour_rewards(
            self.data.texts(rows), preds, seeds, wall_prob=cfg.rl_wall_prob,
            workers=cfg.rl_workers,
        )  # fmt: skip
        adv = torch.as_tensor((rewards - rewards.mean()) / (rewards.std() + 1e-5), device=mu.device)
        lr = cfg.rl_lr * max(0.0, 1.0 - self.rl_updates / cfg.rl_decay_updates)
        for group in self.rl_opt.param_groups:
            group["lr"] = lr
        inputs = torch.cat([torch.zeros_like(sampled[:, :1]), sampled], 1)
        entropy = 0.0
        for part in np.array_split(np.arange(len(rows)), cfg.rl_minibatches):
            sel = torch.as_tensor(part, device=mu.device)
            mu_p, ls_p = model.encode(batch["ids"][sel], batch["lengths"][sel])
            if cfg.rl_resample_z:  # [quirk] a new z′, not the z that produced ρ̂
                z = model.sample_z(mu_p, ls_p)
            else:
                z = mu_p + torch.exp(ls_p) * eps[sel]
            logits = model.decode_teacher(z, inputs[sel])
            loss, ent = reinforce_loss(logits, sampled[sel], adv[sel], cfg.rl_entropy_coef)
            loss = loss + cfg.rl_kl_coef * kl_loss(mu_p, ls_p)
            self.rl_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.rl_clip)
            self.rl_opt.step()
            entropy += ent.item() / cfg.rl_minibatches
        self.rl_updates += 1
        valid = float((rewards > 0.05).mean())
        return {"reward": float(rewards.mean()), "valid": valid, "entropy": entropy}

    def train_order(self) -> np.ndarray:
        """The epoch's shuffled training programs (a function of seed and epoch)."""
        return np.random.default_rng([self.cfg.seed, self.epoch, 1]).permutation(self.train_idx)


def _epoch(trainer: Trainer, logger: RunLogger, run_path: Path, bar: bool) -> None:
    cfg, t = trainer.cfg, trainer
    started = time.perf_counter()
    order = t.train_order()
    n_batches = len(order) // cfg.batch_size or 1
    if t.phase == "sup":
        steps = range(t.index, n_batches)
        for b in (
            progress(steps, total=n_batches, initial=t.index, desc=f"epoch {t.epoch + 1}")
            if bar
            else steps
        ):
            rows = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            with defer_interrupt():
                t.supervised_step(rows)
                t.index = b + 1
        t.sched.step()
        t.phase, t.index = "eval", 0
    if t.phase == "eval":
        val = evaluate(
            t.model, t.data, t.val_eval, t.variant, cfg, cfg.seed + 7 * t.epoch, t.device
        )
        train = evaluate(
            t.model, t.data, t.train_eval, t.variant, cfg, cfg.seed + 7 * t.epoch + 1, t.device
        )
        nb = t.acc.pop("_batches", 1.0)
        t.pending = {f"train/{k}": v / nb for k, v in t.acc.items()}
        t.pending |= {
            f"train/greedy_{k.removeprefix('greedy_')}": v
            for k, v in train.items()
            if k.startswith("greedy")
        }
        t.pending |= {f"eval/{k}": v for k, v in val.items()}
        t.rl_on = t.variant.rl and val["greedy_program_acc"] >= cfg.rl_threshold
        if val["loss"] < t.best:
            t.best = val["loss"]
            save_checkpoint(
                run_path / "checkpoints" / "best.pt",
                {
                    "format_version": FORMAT_VERSION,
                    "model": t.model.state_dict(),
                    "epoch": t.epoch + 1,
                    "eval": val,
                },
            )
        t.phase, t.index = "rl", 0
    if t.phase == "rl" and t.rl_on:
        order_rl = np.random.default_rng([cfg.seed, t.epoch, 2]).permutation(t.train_idx)
        n_updates = max(1, len(order_rl) // cfg.rl_batch)
        if cfg.rl_updates_per_epoch is not None:
            n_updates = min(n_updates, cfg.rl_updates_per_epoch)
        steps = range(t.index, n_updates)
        for u in (
            progress(steps, total=n_updates, initial=t.index, desc="  REINFORCE") if bar else steps
        ):
            rows = order_rl[u * cfg.rl_batch : (u + 1) * cfg.rl_batch]
            with defer_interrupt():
                stats = t.rl_update(rows)
                for k, v in stats.items():
                    t.pending[f"rl/{k}"] = t.pending.get(f"rl/{k}", 0.0) + v / n_updates
                t.index = u + 1
    with defer_interrupt():
        t.epoch += 1
        t.pending["train/lr"] = t.opt.param_groups[0]["lr"]
        t.pending["train/rl_phase"] = float(t.rl_on)
        t.pending["time/epoch_s"] = time.perf_counter() - started
        logger.log(t.epoch, dict(sorted(t.pending.items())))
        t.start_epoch()
        save_checkpoint(run_path / "checkpoints" / "last.pt", t.state())


def _load_data(cfg: PretrainConfig) -> ProgramData:
    if cfg.data is None and cfg.smoke:
        return smoke_program_data(32, cfg.seed, cfg.max_program_tokens)
    if cfg.data is None:
        from leaps_karel.dataset import default_data_dir

        path = default_data_dir()
        if not path.exists():
            raise UserError(
                f"--data not given and {path} holds no dataset; generate one with "
                "`leaps-karel generate-dataset` or pass --data DIR"
            )
    else:
        path = cfg.data
    data = load_program_data(path, cfg.max_program_tokens, progress=cfg.progress)
    if VARIANTS[cfg.variant].executor_loss > 0 and data.hw != cfg.model.executor_hw:
        raise UserError(
            f"{path}: demos on {data.hw[0]}×{data.hw[1]} grids, but the executor is built for "
            f"{cfg.model.executor_hw[0]}×{cfg.model.executor_hw[1]}; pass --model.executor-hw "
            f"{data.hw[0]} {data.hw[1]} or use an 8×8 dataset"
        )
    if len(data) < 10:
        raise UserError(f"{path}: only {len(data)} usable programs; need at least 10 to split")
    return data


def main(cfg: PretrainConfig) -> int:
    """Run ``leaps-karel pretrain``; returns the exit status."""
    prepare_cpu_runtime()
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    data = _load_data(cfg)
    with open_run(PACKAGE, "pretrain", seed=cfg.seed, runs_dir=cfg.runs_dir,
                  run_name=cfg.run_name, resume=cfg.resume) as run:  # fmt: skip
        trainer = Trainer(cfg, data, device)
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint, map_location=device)
            if state.get("variant") != cfg.variant:
                raise UserError(
                    f"{run.last_checkpoint}: a {state.get('variant')} run; resume it with "
                    f"--variant {state.get('variant')}"
                )
            trainer.load(state)
        else:
            write_config(run.path, cfg, PACKAGE)
            trainer.start_epoch()
        sizes = f"{len(trainer.train_idx)} / {len(trainer.val_idx)} / {len(trainer.test_idx)}"
        print(f"pretrain {cfg.variant}: {sizes} train / val / test programs; run {run.path}")
        (run.path / "checkpoints").mkdir(exist_ok=True)
        with (
            RunLogger(
                run.path,
                tensorboard=cfg.tensorboard,
                resume=run.resumed,
                resume_step=trainer.epoch,
                package=PACKAGE,
            ) as logger,  # fmt: skip
            save_on_interrupt(lambda: save_checkpoint(run.last_checkpoint, trainer.state())),
        ):
            while trainer.epoch < cfg.epochs:
                _epoch(trainer, logger, run.path, cfg.progress)
        best = load_checkpoint(run.path / "checkpoints" / "best.pt", map_location=device)
        trainer.model.load_state_dict(best["model"])
        meta = {"epochs": str(best["epoch"]), "eval": repr(best["eval"])}
        out = export_weights(trainer.model, run.path / "weights" / f"{cfg.variant}.safetensors",
                             variant=cfg.variant, extra=meta)  # fmt: skip
        print(f"best epoch {best['epoch']}: eval greedy program accuracy "
              f"{best['eval']['greedy_program_acc']:.4f}; weights {out}")  # fmt: skip
        if cfg.export is not None:
            export_weights(trainer.model, cfg.export, variant=cfg.variant, extra=meta,
                           include_executor=False)  # fmt: skip
            print(f"exported {cfg.export}")
    return 0


def bench_pretrain_step(
    batch_size: int = 256, steps: int = 3, variant: str = "LEAPS", seed: int = 0
) -> dict[str, Any]:
    """Seconds per supervised training step: this implementation vs a straightforward one.

    Both train the same model on the same in-memory batch (programs and demos from the
    engine's generator); the reference (`leaps_karel.learn.pretrain_reference`) decodes step by
    step with a per-program Python grammar automaton and runs the executor step by step with a
    per-demo Python simulator.

    Returns:
        ``{"batch": B, "variant": ..., "fast_s": s, "reference_s": s, "speedup": ratio}``.
    """
    from leaps_karel.learn.pretrain_reference import reference_step

    prepare_cpu_runtime()
    cfg = dataclasses.replace(PretrainConfig(), variant=variant, batch_size=batch_size)
    data = smoke_program_data(batch_size, seed)
    rows = np.arange(len(data))
    device = torch.device("cpu")
    torch.manual_seed(seed)
    trainer = Trainer(cfg, data, device)
    var = VARIANTS[variant]

    def fast() -> None:
        trainer.supervised_step(rows)

    def ref() -> None:
        reference_step(trainer.model, trainer.opt, _batch(data, rows, device), var, cfg.kl_coef)

    timings = {}
    for name, fn in (("fast", fast), ("reference", ref)):
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        timings[name] = (time.perf_counter() - start) / steps
    return {
        "batch": len(rows),
        "variant": variant,
        "fast_s": timings["fast"],
        "reference_s": timings["reference"],
        "speedup": timings["reference"] / timings["fast"],
    }
