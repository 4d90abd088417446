"""``compile-seg evaluate``: metrics of a checkpoint on fresh data, and a figure.

Writes an ``evaluate__<seed>__<time>`` run directory with ``config.json``,
``metrics.jsonl`` (one record at the checkpoint's step with ``eval/...`` keys) and
``segmentation.png`` (input, predicted and true boundaries, reconstruction for a few
sequences).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compile_seg.config import EvaluateConfig, TrainConfig
from compile_seg.data import generate_batch
from compile_seg.metrics import Reconstruction, evaluate_batch
from compile_seg.model import CompILE, build_model
from compile_seg.perf import tune_allocator

PACKAGE = "compile-seg"


@dataclasses.dataclass
class EvaluateResult:
    """Outcome of an evaluation.

    Attributes:
        run_dir: the evaluation's run directory.
        metrics: ``eval/...`` metrics on the fresh data.
        figure: path of ``segmentation.png``.
        checkpoint: the checkpoint evaluated.
    """

    run_dir: Path
    metrics: dict[str, float]
    figure: Path
    checkpoint: Path


def load_trained(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[CompILE, TrainConfig, int]:
    """Load a checkpoint written by ``compile-seg train``.

    Args:
        path: a ``.pt`` file or a train run directory (its ``checkpoints/last.pt``).
        device: where to put the model.

    Returns:
        ``(model in eval mode, its training config, its step)``.

    Raises:
        UserError: the file is missing, unreadable or not a compile-seg checkpoint.
    """
    from compkit_utils.checkpoints import load_checkpoint
    from compkit_utils.config import from_dict
    from compkit_utils.errors import UserError

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise UserError(f"{path}: not a compile-seg train checkpoint (no model/data config)")
    cfg = from_dict(TrainConfig, config, source=f"{path} (config)")
    model = build_model(cfg.model, cfg.data)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the saved config ({exc})") from exc
    return model.to(device).eval(), cfg, int(state["step"])


def _find_smoke_checkpoint(cfg: EvaluateConfig) -> Path | None:
    from compkit_utils.runs import run_root

    root = run_root(PACKAGE, cfg.runs_dir)
    found = []
    for last in root.glob("*/checkpoints/last.pt"):
        config_path = last.parent.parent / "config.json"
        try:
            if json.loads(config_path.read_text()).get("smoke") is True:
                found.append(last)
        except (OSError, json.JSONDecodeError):
            continue
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def evaluate(cfg: EvaluateConfig, print_fn: Any = print) -> EvaluateResult:
    """Evaluate a checkpoint (see the module docstring).

    Everything that can fail on bad input (the checkpoint, its config) is checked before
    the run directory is created; a failure after that removes it again
    (:func:`compkit_utils.runs.open_run`).

    Args:
        cfg: the configuration (``--smoke`` defaults are applied by the CLI,
            :meth:`EvaluateConfig.smoke_defaults`).
        print_fn: where the summary lines go.
    """
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import open_run, write_config
    from compkit_utils.validate import validate_config

    validate_config(cfg)
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    tune_allocator()
    checkpoint = cfg.checkpoint
    if checkpoint is None:  # --smoke (validate_config demands --checkpoint otherwise)
        checkpoint = _find_smoke_checkpoint(cfg)
        if checkpoint is None:
            from compile_seg.train import train

            print_fn("no smoke run found; training one first (train --smoke)")
            smoke = dataclasses.replace(
                TrainConfig.smoke_defaults(),
                seed=cfg.seed,
                runs_dir=cfg.runs_dir,
                device=cfg.device,
                threads=cfg.threads,
            )
            checkpoint = train(smoke, print_fn=print_fn).run_dir / "checkpoints" / "last.pt"
    model, train_cfg, step = load_trained(Path(checkpoint), device)
    data = train_cfg.data
    batch = generate_batch(
        np.random.default_rng(cfg.seed),
        cfg.num_samples,
        data.num_symbols,
        data.num_segments,
        data.max_segment_len,
    )
    inputs, lengths, bounds = batch.to_torch(device)
    metrics, rec = evaluate_batch(model, inputs, lengths, bounds)
    metrics = {f"eval/{key}": value for key, value in metrics.items()}

    with open_run(
        PACKAGE, "evaluate", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, PACKAGE)
        with RunLogger(run.path, console_every=0, package=PACKAGE) as logger:
            logger.log(step, metrics)
        count = min(cfg.num_figure, cfg.num_samples)
        figure = save_figure(
            run.path / "segmentation.png",
            batch.inputs,
            batch.lengths,
            batch.boundaries,
            rec,
            count,
        )
    print_fn(f"checkpoint: {checkpoint} (step {step}, {train_cfg.model.latent_dist} latents)")
    print_fn(f"fresh sequences: {cfg.num_samples} (seed {cfg.seed})")
    for key, value in metrics.items():
        print_fn(f"{key}: {value:.4f}")
    print_fn(f"figure: {figure}")
    return EvaluateResult(run.path, metrics, figure, Path(checkpoint))


def save_figure(
    path: Path,
    inputs: np.ndarray,
    lengths: np.ndarray,
    true_boundaries: np.ndarray,
    rec: Reconstruction,
    count: int,
) -> Path:
    """Draw ``count`` sequences: input and reconstruction rows, boundaries as lines.

    Args:
        path: the PNG to write (atomically).
        inputs: ``(B, T)`` tokens.
        lengths: ``(B,)`` lengths including the EOS.
        true_boundaries: ``(B, M)`` true boundary positions.
        rec: the evaluation reconstruction of the same batch.
        count: number of sequences to draw (the first ``count``).
    """
    # The object-oriented API renders with Agg and leaves pyplot's global state alone.
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from compkit_utils.io import atomic_path

    rows = max(count, 1)
    steps = inputs.shape[1]
    fig = Figure(figsize=(0.55 * steps + 2.5, 1.3 * rows + 0.8))
    axes = fig.subplots(rows, 1, squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    positions = rec.positions.cpu().numpy()
    tokens = rec.tokens.cpu().numpy()
    for row in range(rows):
        ax = axes[row, 0]
        ax.set_xlim(-0.5, steps - 0.5)
        ax.set_ylim(1.5, -0.5)
        ax.set_yticks([0, 1], ["input", "recon."])
        ax.set_xticks(range(steps))
        ax.tick_params(length=0, labelsize=7)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if row >= count:
            continue
        length = int(lengths[row])
        for y, seq in ((0, inputs[row, : length - 1]), (1, tokens[row])):
            for t, token in enumerate(seq):
                if token < 0:
                    continue
                ax.add_patch(Rectangle((t - 0.45, y - 0.4), 0.9, 0.8, color=cmap(int(token) % 10)))
                ax.text(t, y, str(int(token)), ha="center", va="center", fontsize=8, color="white")
        ax.text(length - 1, 0, "EOS", ha="center", va="center", fontsize=6, color="0.4")
        for pos in positions[row, :-1]:
            ax.axvline(pos - 0.5, color="crimson", linewidth=2)
        for pos in true_boundaries[row, :-1]:
            ax.axvline(pos - 0.5, ymin=0.5, ymax=1.0, color="black", linestyle="--", linewidth=1)
        ax.set_title(
            f"sequence {row}: accuracy {float(rec.accuracy[row]):.2f}", fontsize=8, loc="left"
        )
    legend = [
        Line2D([0], [0], color="crimson", linewidth=2, label="predicted boundary"),
        Line2D([0], [0], color="black", linestyle="--", linewidth=1, label="true boundary"),
    ]
    fig.legend(handles=legend, loc="upper right", fontsize=7, frameon=False)
    fig.suptitle("CompILE segmentation (evaluation mode)", fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
