"""``rim-cells seqmnist train``: sequential MNIST/digits with per-epoch generalisation tests."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from compkit_utils.checkpoints import CheckpointManager, load_checkpoint, make_state, restore
from compkit_utils.config import to_dict
from compkit_utils.devices import pick_device, set_threads
from compkit_utils.errors import UserError
from compkit_utils.logging import RunLogger, progress
from compkit_utils.runs import (
    check_resume_config,
    make_run_dir,
    package_version,
    resume_run_dir,
    write_config,
)
from compkit_utils.seeding import seed_everything
from rim_cells.config import (
    SeqDataConfig,
    SeqMnistTrainConfig,
    SeqModelConfig,
    SeqOptimConfig,
    upgrade_saved_config,
)
from rim_cells.seqmnist.data import load_sequences
from rim_cells.seqmnist.evaluate import evaluate_sizes, format_table
from rim_cells.seqmnist.model import SequenceClassifier

log = logging.getLogger(__name__)
PACKAGE = "rim-cells"


def smoke_config(cfg: SeqMnistTrainConfig) -> SeqMnistTrainConfig:
    """Tiny offline settings that still run every part of training."""
    rim = dataclasses.replace(
        cfg.model.rim,
        num_units=3,
        k_active=2,
        hidden_size=8,
        input_key_size=8,
        input_value_size=16,
        comm_key_size=8,
        num_comm_heads=2,
    )
    model = dataclasses.replace(cfg.model, rim=rim, lstm_hidden=24, embedding_size=8)
    data = dataclasses.replace(
        cfg.data, dataset="digits", train_limit=96, test_limit=48, test_sizes=(8, 10)
    )
    optim = dataclasses.replace(cfg.optim, batch_size=32, eval_batch_size=64)
    return dataclasses.replace(cfg, model=model, data=data, optim=optim, epochs=1)


def validate(cfg: SeqMnistTrainConfig) -> None:
    """Reject inconsistent settings with one clear line each."""
    m: SeqModelConfig = cfg.model
    if not 1 <= m.rim.k_active <= m.rim.num_units:
        raise UserError(
            f"--model.k-active {m.rim.k_active} must be between 1 and --model.num-units "
            f"{m.rim.num_units}"
        )
    for name in ("hidden_size", "num_units"):
        if getattr(m.rim, name) < 1:
            raise UserError(f"--model.{name.replace('_', '-')} must be >= 1")
    for name in ("lstm_hidden", "embedding_size"):
        if getattr(m, name) < 1:
            raise UserError(f"--model.{name.replace('_', '-')} must be >= 1")
    o: SeqOptimConfig = cfg.optim
    if o.lr <= 0 or o.batch_size < 1 or o.eval_batch_size < 1:
        raise UserError("--optim.lr must be > 0 and batch sizes >= 1")
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {cfg.epochs}")
    d: SeqDataConfig = cfg.data
    if d.train_limit is not None and d.train_limit < 1:
        raise UserError("--data.train-limit must be >= 1")


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
    """Train, test on every image side after each epoch, checkpoint every epoch."""
    if cfg.smoke:
        cfg = smoke_config(cfg)
    validate(cfg)
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    run_dir = (
        resume_run_dir(PACKAGE, "train", cfg.runs_dir, cfg.run_name)
        if cfg.resume
        else make_run_dir(PACKAGE, "train", cfg.seed, cfg.runs_dir, cfg.run_name)
    )
    manager = CheckpointManager(run_dir / "checkpoints", keep_last=2)
    seed_everything(cfg.seed)
    data = load_sequences(cfg.data, cfg.seed)
    model = SequenceClassifier(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    start_epoch, step, history = 0, 0, []
    if cfg.resume:
        latest = manager.last_path
        state = load_checkpoint(latest, map_location=device)
        check_resume_config(
            latest,
            upgrade_saved_config(state["config"]),
            to_dict(cfg),
            TRAJECTORY_FIELDS,
            ignore=RESUME_MAY_CHANGE,
        )
        step = restore(state, model, optimizer)
        start_epoch = int(state["extra"]["epoch"])
        history = [
            {**row, "acc": {int(s): a for s, a in row["acc"].items()}}
            for row in state["extra"]["history"]
        ]
        log.info("resumed %s at epoch %d", run_dir, start_epoch)
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
    with RunLogger(
        run_dir,
        console_every=0,
        tensorboard=cfg.log.tensorboard,
        wandb=cfg.log.wandb,
        resume=cfg.resume,
        resume_step=step,
        wandb_config=to_dict(cfg),
    ) as logger:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            model.train()
            order = (
                np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
                if cfg.optim.shuffle
                else np.arange(n_train)
            )
            total_loss, total_correct = 0.0, 0
            batches = range(0, n_train, cfg.optim.batch_size)
            for start in progress(batches, total=len(batches), desc=f"epoch {epoch + 1}"):
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
                optimizer.step()
                step += 1
                total_loss += loss.item() * len(index)
                total_correct += int((logits.argmax(-1) == labels).sum())
            train_time = time.perf_counter() - started
            accs = evaluate_sizes(model, data.tests, cfg.optim.eval_batch_size, device)
            row = {
                "epoch": epoch + 1,
                "loss": total_loss / n_train,
                "train_acc": total_correct / n_train,
                "acc": accs,
            }
            history.append(row)
            metrics = {
                "epoch": epoch + 1,
                "train/loss": row["loss"],
                "train/acc": row["train_acc"],
                **{f"eval/acc_{s}": a for s, a in accs.items()},
                "time/train_epoch_s": train_time,
            }
            logger.log(step, metrics)
            print(format_table([row], sides)[1], flush=True)
            manager.save(
                make_state(
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    config=to_dict(dataclasses.replace(cfg, resume=False)),
                    package_version=package_version(PACKAGE),
                    extra={"epoch": epoch + 1, "history": _plain_history(history)},
                )
            )
    if cfg.plot:
        if cfg.model.kind != "rim":
            raise UserError("--plot needs --model.kind rim (an LSTM has no units to show)")
        from rim_cells.plot import plot_model_activations

        out = run_dir / "activations.png"
        test_x, test_y = data.tests[sides[0]]
        plot_model_activations(model, test_x[0], int(test_y[0]), sides[0], out, device)
        print(f"wrote {out}")


def _plain_history(history: list[dict]) -> list[dict]:
    """History with string keys (checkpoint dictionaries hold only plain data)."""
    return [{**row, "acc": {str(s): float(a) for s, a in row["acc"].items()}} for row in history]
