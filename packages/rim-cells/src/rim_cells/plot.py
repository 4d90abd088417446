"""``rim-cells plot-activations``: which RIM units are active at each step (a heat-map).

matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compkit_utils.errors import UserError, install_hint
from compkit_utils.io import atomic_path

if TYPE_CHECKING:
    import torch

    from rim_cells.config import PlotActivationsConfig
    from rim_cells.seqmnist.model import SequenceClassifier


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise UserError(f"plotting needs matplotlib: {install_hint('rim-cells', 'plot')}") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_model_activations(
    model: SequenceClassifier,
    tokens: np.ndarray,
    label: int,
    side: int,
    out: str | Path,
    device: torch.device,
    dpi: int = 80,
) -> Path:
    """Run one image through a RIM classifier and save the activation heat-map.

    Panels: the binarised input image; active units (unit × time step, dark = active);
    each unit's input attention on the real (non-null) input; the pixel sequence.

    Args:
        model: a trained classifier with ``cfg.kind == "rim"``.
        tokens: ``(side², )`` 0/1 pixels.
        label: the true class (shown in the title).
        side: image side (to draw the image).
        out: PNG path (written atomically).
        device: the model's device.
        dpi: figure resolution.
    """
    import torch

    if model.cfg.kind != "rim":
        raise UserError("plot-activations needs a RIM model (--model.kind rim)")
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(tokens)[None]).to(device)
        logits, infos = model(x, return_info=True)  # type: ignore[misc]
    info = infos[0]
    # the classifier's RIM is batch-first: info tensors are (batch, time, N)
    mask = info.mask[0].cpu().numpy().T.astype(float)  # (N, T)
    attention = info.input_attention[0].cpu().numpy().T  # (N, T)
    pred = int(logits.argmax(-1)[0])
    plt = _pyplot()
    steps = mask.shape[1]
    fig = plt.figure(figsize=(9, 3.6), dpi=dpi)
    grid = fig.add_gridspec(3, 2, width_ratios=[1, 6], height_ratios=[3, 3, 1])
    ax_img = fig.add_subplot(grid[:, 0])
    ax_img.imshow(np.asarray(tokens).reshape(side, side), cmap="gray_r")
    ax_img.set_title(f"label {label}, pred {pred}", fontsize=9)
    ax_img.axis("off")
    ax_mask = fig.add_subplot(grid[0, 1])
    ax_mask.imshow(mask, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    ax_mask.set_ylabel("unit", fontsize=8)
    rim = model.cfg.rim
    ax_mask.set_title(f"active units (k={rim.k_active} of {rim.num_units})", fontsize=9)
    ax_mask.set_xticks([])
    ax_att = fig.add_subplot(grid[1, 1], sharex=ax_mask)
    im = ax_att.imshow(attention, aspect="auto", cmap="viridis", interpolation="nearest")
    ax_att.set_ylabel("unit", fontsize=8)
    ax_att.set_title("attention on the real input (vs null)", fontsize=9)
    fig.colorbar(im, ax=ax_att, fraction=0.02, pad=0.01)
    ax_att.set_xticks([])
    ax_px = fig.add_subplot(grid[2, 1], sharex=ax_mask)
    ax_px.imshow(np.asarray(tokens)[None].astype(float), aspect="auto", cmap="gray_r")
    ax_px.set_yticks([])
    ax_px.set_xlabel(f"time step (pixel, row-major; {steps} steps)", fontsize=8)
    for ax in (ax_mask, ax_att):
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def plot_activations(cfg: PlotActivationsConfig) -> None:
    """Load a trained RIM classifier and plot its activations on one test image."""
    from compkit_utils.devices import pick_device
    from rim_cells.seqmnist.data import load_sequences
    from rim_cells.seqmnist.evaluate import load_trained

    device = pick_device("cpu")
    train_cfg, model, _ = load_trained(cfg.checkpoint, device)
    data_cfg = dataclasses.replace(
        train_cfg.data,
        test_limit=cfg.index + 1,
        train_limit=1,
        data_dir=cfg.data_dir or train_cfg.data.data_dir,
    )
    side = cfg.size or train_cfg.data.train_size or load_sequences(data_cfg, 0).train_size
    data = load_sequences(dataclasses.replace(data_cfg, test_sizes=(side,)), train_cfg.seed)
    x, y = data.tests[side]
    if cfg.index >= len(x):
        raise UserError(f"--index {cfg.index} is beyond the {len(x)} test images")
    out = plot_model_activations(
        model, x[cfg.index], int(y[cfg.index]), side, cfg.out, device, dpi=cfg.dpi
    )
    print(f"wrote {out}")
