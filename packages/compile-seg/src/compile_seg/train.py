"""``compile-seg train``: the original's training loop, seeded, logged and resumable.

Console output keeps the original's format: ``Training model...`` once, then at every
logged step (step % log_interval == 0)::

    step: <step>, nll_train: <6 decimals>, rec_acc_eval: <3 decimals>
    input sample: tensor([...])        # last sample of the batch, EOS dropped
    reconstruction: tensor([...])      # its evaluation-mode reconstruction

``nll_train`` is the NLL term of the training forward pass (before the update);
``rec_acc_eval`` is measured in evaluation mode on the same batch after the update. Every
logged step also evaluates a fixed held-out batch (its own seed, so the training stream is
untouched) and records everything in ``metrics.jsonl``:

* ``train/loss``, ``train/nll``, ``train/kl_z``, ``train/kl_b``, ``train/rec_acc_eval``;
* ``eval/rec_acc``, ``eval/boundary_precision``, ``eval/boundary_recall``,
  ``eval/boundary_f1``, ``eval/segmentation_exact`` on the held-out batch.

Evaluation draws no random numbers, so the logging interval does not change the run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compile_seg import __version__
from compile_seg.config import TrainConfig, smoke_train_config, validate_train_config
from compile_seg.data import generate_batch
from compile_seg.losses import compute_losses
from compile_seg.metrics import evaluate_batch
from compile_seg.model import CompILE, build_model
from compile_seg.perf import tune_allocator

PACKAGE = "compile-seg"
HELDOUT_STREAM = 0x5E6
"""Second word of the held-out batch's seed: ``default_rng([seed, HELDOUT_STREAM])``."""
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What a finished training run leaves behind.

    Attributes:
        run_dir: the run directory.
        model: the trained model (evaluation mode).
        final_metrics: the last logged record of ``metrics.jsonl``.
        heldout_metrics: held-out metrics of the final model.
    """

    run_dir: Path
    model: CompILE
    final_metrics: dict[str, float]
    heldout_metrics: dict[str, float]


def heldout_batch(cfg: TrainConfig) -> Any:
    """The fixed held-out batch of a run (a :class:`compile_seg.data.ToyBatch`)."""
    rng = np.random.default_rng([cfg.seed, HELDOUT_STREAM])
    data = cfg.data
    return generate_batch(
        rng, cfg.heldout_size, data.num_symbols, data.num_segments, data.max_segment_len
    )


TRAJECTORY_FIELDS = ("seed", "data", "model", "optim", "loss")
"""The config fields that must match for ``--resume`` to continue the same run."""


def train(cfg: TrainConfig, print_fn: Any = print) -> TrainResult:
    """Run (or resume) training as configured; see the module docstring for the output.

    Args:
        cfg: the resolved configuration (``--smoke`` is applied here).
        print_fn: where the original's log lines go (default ``print``).

    Returns:
        The run directory, trained model and final metrics.
    """
    from compkit_utils.checkpoints import CheckpointManager, load_checkpoint, make_state, restore
    from compkit_utils.config import to_dict
    from compkit_utils.errors import UserError
    from compkit_utils.logging import RunLogger
    from compkit_utils.runs import check_resume_config, make_run_dir, resume_run_dir, write_config
    from compkit_utils.seeding import seed_everything

    if cfg.smoke:
        cfg = smoke_train_config(cfg)
    validate_train_config(cfg)
    from compkit_utils.devices import pick_device, set_threads

    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    tune_allocator()

    resume_state = None
    if cfg.resume:
        run_dir = resume_run_dir(PACKAGE, "train", cfg.runs_dir, cfg.run_name)
        checkpoint = run_dir / "checkpoints" / "last.pt"
        resume_state = load_checkpoint(checkpoint)
        check_resume_config(
            checkpoint,
            resume_state.get("config", {}),
            to_dict(cfg),
            TRAJECTORY_FIELDS,
        )
    else:
        run_dir = make_run_dir(PACKAGE, "train", cfg.seed, cfg.runs_dir, cfg.run_name)
    write_config(run_dir, cfg, PACKAGE)

    rng = seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.data).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.learning_rate)
    start_step = 0
    if resume_state is not None:
        start_step = restore(resume_state, model, optimizer, rng)
        if start_step >= cfg.iterations:
            raise UserError(
                f"--resume: {run_dir} already finished {start_step} steps; raise --iterations "
                f"above {start_step} to train further"
            )
        _log.info("resuming %s at step %d", run_dir, start_step)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    heldout = heldout_batch(cfg)
    held_x, held_len, held_bounds = heldout.to_torch(device)
    data = cfg.data
    config_dict = to_dict(cfg)

    def save(step: int) -> None:
        state = make_state(
            step=step,
            model=model,
            optimizer=optimizer,
            config=config_dict,
            package_version=__version__,
            generator=rng,
        )
        checkpoints.save(state)

    final: dict[str, float] = {}
    logger = RunLogger(
        run_dir,
        console_every=0,
        tensorboard=cfg.log.tensorboard,
        wandb=cfg.log.wandb,
        resume=resume_state is not None,
        resume_step=start_step - 1,
        wandb_config=config_dict,
    )
    with logger:
        print_fn("Training model...")
        for step in range(start_step, cfg.iterations):
            batch = generate_batch(
                rng, data.batch_size, data.num_symbols, data.num_segments, data.max_segment_len
            )
            inputs, lengths, _ = batch.to_torch(device)
            model.train()
            out = model(inputs, lengths)
            losses = compute_losses(
                out,
                inputs,
                latent_dist=cfg.model.latent_dist,
                beta_b=cfg.loss.beta_b,
                beta_z=cfg.loss.beta_z,
                prior_rate=cfg.loss.prior_rate,
                boundary_prior=cfg.loss.boundary_prior,
            )
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            optimizer.step()

            if step % cfg.log_interval == 0:
                train_metrics, rec = evaluate_batch(model, inputs, lengths)
                held_metrics, _ = evaluate_batch(model, held_x, held_len, held_bounds)
                nll = losses.nll.item()
                acc = train_metrics["rec_acc"]
                last = inputs.shape[0] - 1
                print_fn(f"step: {step}, nll_train: {nll:.6f}, rec_acc_eval: {acc:.3f}")
                print_fn(f"input sample: {inputs[last, : int(lengths[last]) - 1].cpu()}")
                print_fn(f"reconstruction: {rec.sample(last).cpu()}")
                final = {
                    "train/loss": losses.total.item(),
                    "train/nll": nll,
                    "train/kl_z": losses.kl_z.item(),
                    "train/kl_b": losses.kl_b.item(),
                    "train/rec_acc_eval": acc,
                    **{f"eval/{key}": value for key, value in held_metrics.items()},
                }
                logger.log(step, final)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iterations:
                save(step + 1)
        save(cfg.iterations)

    held_metrics, _ = evaluate_batch(model, held_x, held_len, held_bounds)
    print_fn(
        f"held-out ({cfg.heldout_size} fresh sequences, final model): "
        f"rec_acc {held_metrics['rec_acc']:.3f}, boundary P/R/F1 "
        f"{held_metrics['boundary_precision']:.3f}/{held_metrics['boundary_recall']:.3f}/"
        f"{held_metrics['boundary_f1']:.3f}; run directory: {run_dir}"
        if "boundary_f1" in held_metrics
        else f"held-out rec_acc {held_metrics['rec_acc']:.3f}; run directory: {run_dir}"
    )
    return TrainResult(run_dir, model, final, held_metrics)
