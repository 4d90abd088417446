"""``rim-cells seqmnist train``: sequential MNIST/digits with per-epoch generalisation tests."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compkit_utils.checkpoints import CheckpointManager, load_checkpoint, make_state, restore
from compkit_utils.config import to_dict
from compkit_utils.devices import pick_device, set_threads
from compkit_utils.logging import RunLogger, progress
from compkit_utils.runs import (
    check_resume_config,
    defer_interrupt,
    open_run,
    package_version,
    save_on_interrupt,
    write_config,
)
from compkit_utils.seeding import capture_rng_state, seed_everything
from rim_cells.config import SeqMnistTrainConfig, upgrade_saved_config
from rim_cells.seqmnist.data import load_sequences
from rim_cells.seqmnist.evaluate import evaluate_sizes, format_table
from rim_cells.seqmnist.model import SequenceClassifier

log = logging.getLogger(__name__)
PACKAGE = "rim-cells"


TRAJECTORY_FIELDS = ("seed", "data", "model", "optim")
"""Config fields that must match for ``--resume``; epochs, device, threads may change."""
RESUME_MAY_CHANGE = {"data": ("data_dir", "download")}
"""Sub-fields that may differ on ``--resume`` (where the data lives)."""


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """Cross-entropy, plus ``entropy_coef`` times the mean predictive entropy."""
    loss = F.cross_entropy(logits, labels)
    if entropy_coef:
        logp = F.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        loss = loss + entropy_coef * entropy
    return loss


def train(cfg: SeqMnistTrainConfig) -> None:
    """Train, test on every image side after each epoch, checkpoint every epoch.

    The run directory comes from `compkit_utils.runs.open_run` (created atomically, locked
    while training, removed again if training fails before its first checkpoint). Ctrl-C
    writes a checkpoint at the current batch; ``--resume`` continues from it exactly (same
    batches, same dropout draws).
    """
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    with open_run(
        PACKAGE,
        "train",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        _train(cfg, run.path, device)


def _train(cfg: SeqMnistTrainConfig, run_dir: Path, device: torch.device) -> None:
    manager = CheckpointManager(run_dir / "checkpoints", keep_last=2)
    seed_everything(cfg.seed)
    state = None
    if cfg.resume:
        state = load_checkpoint(manager.last_path, map_location=device)
        check_resume_config(
            manager.last_path,
            upgrade_saved_config(state["config"]),
            to_dict(cfg),
            TRAJECTORY_FIELDS,
            ignore=RESUME_MAY_CHANGE,
        )
    data = load_sequences(cfg.data, cfg.seed)
    model = SequenceClassifier(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    start_epoch, start_batch, step, history = 0, 0, 0, []
    partial = {"loss": 0.0, "correct": 0}
    if state is not None:
        step = restore(state, model, optimizer)
        extra = state["extra"]
        start_epoch = int(extra["epoch"])
        start_batch = int(extra.get("batch", 0))
        partial = {"loss": float(extra.get("loss", 0.0)), "correct": int(extra.get("correct", 0))}
        history = [
            {**row, "acc": {int(s): a for s, a in row["acc"].items()}} for row in extra["history"]
        ]
        log.info("resumed %s at epoch %d, batch %d", run_dir, start_epoch, start_batch)
    else:
        write_config(run_dir, cfg, PACKAGE)
    sides = sorted(data.tests)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"run dir {run_dir}; {cfg.model.kind} with {n_params:,} parameters; "
        f"train {len(data.train_x)} × {data.train_size}², test sides {sides}"
    )
    table = format_table(history, sides)
    for line in table:
        print(line, flush=True)
    n_train = len(data.train_x)
    saved_config = to_dict(dataclasses.replace(cfg, resume=False))
    # What Ctrl-C saves: the position after the last finished batch and the RNG states then.
    position: dict[str, Any] = {"epoch": start_epoch, "batch": start_batch, **partial}
    rng_before_batch = capture_rng_state()

    def save(extra: dict[str, Any], rng: dict[str, Any] | None = None) -> None:
        state = make_state(
            step=step,
            model=model,
            optimizer=optimizer,
            config=saved_config,
            package_version=package_version(PACKAGE),
            extra={**extra, "history": _plain_history(history)},
        )
        if rng is not None:
            state["rng"] = rng
        manager.save(state)

    with (
        RunLogger(
            run_dir,
            console_every=0,
            tensorboard=cfg.log.tensorboard,
            wandb=cfg.log.wandb,
            resume=cfg.resume,
            resume_step=step,
            wandb_config=to_dict(cfg),
        ) as logger,
        save_on_interrupt(lambda: save(position, rng_before_batch)),
    ):
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            model.train()
            order = (
                np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
                if cfg.optim.shuffle
                else np.arange(n_train)
            )
            first = start_batch if epoch == start_epoch else 0
            total_loss, total_correct = (
                (position["loss"], position["correct"]) if first else (0.0, 0)
            )
            batches = range(first * cfg.optim.batch_size, n_train, cfg.optim.batch_size)
            for index_in_epoch, start in enumerate(
                progress(batches, total=len(batches), desc=f"epoch {epoch + 1}"), first
            ):
                index = order[start : start + cfg.optim.batch_size]
                tokens = torch.from_numpy(data.train_x[index]).to(device)
                labels = torch.from_numpy(data.train_y[index]).to(device)
                logits = model(tokens)
                assert isinstance(logits, torch.Tensor)
                loss = loss_fn(logits, labels, cfg.optim.entropy_coef)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                batch_loss = loss.item() * len(index)
                batch_correct = int((logits.argmax(-1) == labels).sum())
                with defer_interrupt():  # the update and its bookkeeping are not cut apart
                    optimizer.step()
                    step += 1
                    total_loss += batch_loss
                    total_correct += batch_correct
                    position = {
                        "epoch": epoch,
                        "batch": index_in_epoch + 1,
                        "loss": total_loss,
                        "correct": total_correct,
                    }
                    rng_before_batch = capture_rng_state()
            train_time = time.perf_counter() - started
            accs = evaluate_sizes(model, data.tests, cfg.optim.eval_batch_size, device)
            row = {
                "epoch": epoch + 1,
                "loss": total_loss / n_train,
                "train_acc": total_correct / n_train,
                "acc": accs,
            }
            metrics = {
                "epoch": epoch + 1,
                "train/loss": row["loss"],
                "train/acc": row["train_acc"],
                **{f"eval/acc_{s}": a for s, a in accs.items()},
                "time/train_epoch_s": train_time,
            }
            logger.log(step, metrics)
            print(format_table([row], sides)[1], flush=True)
            with defer_interrupt():
                history.append(row)
                position = {"epoch": epoch + 1, "batch": 0, "loss": 0.0, "correct": 0}
                save(position)
                rng_before_batch = capture_rng_state()
        if cfg.plot:
            from rim_cells.plot import plot_model_activations

            out = run_dir / "activations.png"
            test_x, test_y = data.tests[sides[0]]
            plot_model_activations(model, test_x[0], int(test_y[0]), sides[0], out, device)
            print(f"wrote {out}")


def _plain_history(history: list[dict]) -> list[dict]:
    """History with string keys (checkpoint dictionaries hold only plain data)."""
    return [{**row, "acc": {str(s): float(a) for s, a in row["acc"].items()}} for row in history]
