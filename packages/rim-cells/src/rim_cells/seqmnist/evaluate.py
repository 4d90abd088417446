"""``rim-cells seqmnist evaluate``: accuracy of a checkpoint at several image sizes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compkit_utils.checkpoints import load_checkpoint
from compkit_utils.config import from_dict
from compkit_utils.devices import pick_device, set_threads
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json
from rim_cells.config import SeqMnistEvaluateConfig, SeqMnistTrainConfig, upgrade_saved_config
from rim_cells.seqmnist.data import load_sequences
from rim_cells.seqmnist.model import SequenceClassifier

if TYPE_CHECKING:
    from torch import nn


@torch.no_grad()
def accuracy(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int, device: torch.device
) -> float:
    """Fraction of correctly classified sequences (model in eval mode, batched)."""
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        tokens = torch.from_numpy(x[start : start + batch_size]).to(device)
        logits = model(tokens)
        labels = torch.from_numpy(y[start : start + batch_size]).to(device)
        correct += int((logits.argmax(-1) == labels).sum())
    return correct / max(len(x), 1)


def evaluate_sizes(
    model: nn.Module,
    tests: dict[int, tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    device: torch.device,
) -> dict[int, float]:
    """Accuracy for every test image side."""
    return {side: accuracy(model, x, y, batch_size, device) for side, (x, y) in tests.items()}


def load_trained(
    path: str | None, device: torch.device
) -> tuple[SeqMnistTrainConfig, SequenceClassifier, dict[str, Any]]:
    """Rebuild the training config and the trained model from a checkpoint."""
    if not path:
        raise UserError("--checkpoint is required (a run's checkpoints/last.pt)")
    state = load_checkpoint(path)
    saved = upgrade_saved_config(state["config"])
    cfg = from_dict(SeqMnistTrainConfig, saved, source=f"{path} (config)")
    model = SequenceClassifier(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the stored model config ({exc})") from exc
    return cfg, model.to(device).eval(), state


def format_table(rows: list[dict[str, Any]], sides: list[int]) -> list[str]:
    """Fixed-width accuracy table lines (percent)."""
    head = f"{'epoch':>5} {'loss':>8} {'train':>7} " + " ".join(f"{f'{s}x{s}':>7}" for s in sides)
    lines = [head]
    for row in rows:
        cells = " ".join(f"{100 * row['acc'][s]:7.2f}" for s in sides)
        lines.append(f"{row['epoch']:>5} {row['loss']:8.4f} {100 * row['train_acc']:7.2f} {cells}")
    return lines


def evaluate(cfg: SeqMnistEvaluateConfig) -> None:
    """Evaluate ``cfg.checkpoint`` and print one accuracy per test image side."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    train_cfg, model, state = load_trained(cfg.checkpoint, device)
    data_cfg = train_cfg.data
    overrides: dict[str, Any] = {}
    if cfg.test_limit is not None:
        overrides["test_limit"] = cfg.test_limit
    if cfg.test_sizes is not None:
        overrides["test_sizes"] = cfg.test_sizes
    if cfg.data_dir is not None:
        overrides["data_dir"] = cfg.data_dir
    data = load_sequences(dataclasses.replace(data_cfg, **overrides), train_cfg.seed)
    accs = evaluate_sizes(model, data.tests, train_cfg.optim.eval_batch_size, device)
    print(f"checkpoint {cfg.checkpoint} (epoch {state['extra'].get('epoch', '?')})")
    print(f"{'size':>7} {'accuracy %':>10}")
    for side, acc in accs.items():
        print(f"{f'{side}x{side}':>7} {100 * acc:10.2f}")
    if cfg.out:
        result = {"checkpoint": cfg.checkpoint, "accuracy": {str(s): a for s, a in accs.items()}}
        atomic_write_json(Path(cfg.out), result)
