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
  ``eval/boundary_f1``, ``eval/segmentation_exact`` on the held-out batch;
* a last record at ``step = iterations`` with the same metrics of the final model on the
  held-out batch, under ``heldout/...``.

A progress bar over the steps goes to stderr when it is a terminal. Ctrl-C saves
``checkpoints/last.pt`` at the last finished step; ``--resume`` continues from it.

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
from compile_seg.config import TrainConfig
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

    The run directory comes from :func:`compkit_utils.runs.open_run`: a failure before the
    first checkpoint leaves nothing behind, and Ctrl-C writes ``checkpoints/last.pt`` at the
    last finished step (``--resume`` continues from there, exactly as if uninterrupted).

    Args:
        cfg: the resolved configuration (``--smoke`` defaults are applied by the CLI,
            :meth:`TrainConfig.smoke_defaults`).
        print_fn: where the original's log lines go (default ``print``).

    Returns:
        The run directory, trained model and final metrics.
    """
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.runs import open_run
    from compkit_utils.validate import validate_config

    validate_config(cfg)
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    tune_allocator()
    with open_run(
        PACKAGE,
        "train",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        return _train_in(run.path, cfg, device, print_fn)


def _train_in(run_dir: Path, cfg: TrainConfig, device: torch.device, print_fn: Any) -> TrainResult:
    """The training loop inside an open run directory (see :func:`train`)."""
    from compkit_utils.checkpoints import CheckpointManager, load_checkpoint, make_state, restore
    from compkit_utils.config import to_dict
    from compkit_utils.errors import UserError
    from compkit_utils.logging import RunLogger, progress
    from compkit_utils.runs import (
        check_resume_config,
        defer_interrupt,
        save_on_interrupt,
        write_config,
    )
    from compkit_utils.seeding import seed_everything

    resume_state = None
    if cfg.resume:
        checkpoint = run_dir / "checkpoints" / "last.pt"
        resume_state = load_checkpoint(checkpoint)
        check_resume_config(
            checkpoint,
            resume_state.get("config", {}),
            to_dict(cfg),
            TRAJECTORY_FIELDS,
        )
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
    write_config(run_dir, cfg, PACKAGE)
    checkpoints = CheckpointManager(run_dir / "checkpoints")
    heldout = heldout_batch(cfg)
    heldout_tensors = heldout.to_torch(device)
    held_x, held_len, held_bounds = heldout_tensors
    data = cfg.data
    config_dict = to_dict(cfg)
    # Steps finished so far, and the RNG states at the start of the unfinished step: an
    # interrupt inside a step saves the state before it, so the step is redone exactly.
    done = start_step
    step_start_rng: tuple[Any, torch.Tensor, torch.Tensor | None] | None = None

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

    def save_interrupted() -> None:
        if step_start_rng is not None:  # rewind the RNGs to the start of step `done`
            rng.bit_generator.state, cpu_state, cuda_state = step_start_rng
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
        save(done)
        _log.warning("interrupted: saved %s at step %d", checkpoints.last_path, done)

    final: dict[str, float] = {}
    logger = RunLogger(
        run_dir,
        console_every=0,
        tensorboard=cfg.log.tensorboard,
        wandb=cfg.log.wandb,
        resume=resume_state is not None,
        resume_step=start_step - 1,
        wandb_config=config_dict,
        package=PACKAGE,
    )
    with logger, save_on_interrupt(save_interrupted):
        print_fn("Training model...")
        steps = range(start_step, cfg.iterations)
        for step in progress(steps, total=cfg.iterations, initial=start_step, desc="train"):
            step_start_rng = (
                rng.bit_generator.state,
                torch.get_rng_state(),
                torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            )
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
            with defer_interrupt():  # the update and its bookkeeping are never cut in half
                optimizer.step()
                if step % cfg.log_interval == 0:
                    final = _log_step(
                        step, model, inputs, lengths, losses, heldout_tensors, logger, print_fn
                    )
                if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.iterations:
                    save(step + 1)
                done, step_start_rng = step + 1, None
        with defer_interrupt():
            save(cfg.iterations)
            held_metrics, _ = evaluate_batch(model, held_x, held_len, held_bounds)
            logger.log(cfg.iterations, {f"heldout/{k}": v for k, v in held_metrics.items()})

    print_fn(
        f"held-out ({cfg.heldout_size} fresh sequences, final model): "
        f"rec_acc {held_metrics['rec_acc']:.3f}, boundary P/R/F1 "
        f"{held_metrics['boundary_precision']:.3f}/{held_metrics['boundary_recall']:.3f}/"
        f"{held_metrics['boundary_f1']:.3f}; run directory: {run_dir}"
        if "boundary_f1" in held_metrics
        else f"held-out rec_acc {held_metrics['rec_acc']:.3f}; run directory: {run_dir}"
    )
    return TrainResult(run_dir, model, final, held_metrics)


def _log_step(
    step: int,
    model: CompILE,
    inputs: torch.Tensor,
    lengths: torch.Tensor,
    losses: Any,
    heldout_inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    logger: Any,
    print_fn: Any,
) -> dict[str, float]:
    """Evaluate the updated model on the training batch and the held-out batch; log both.

    Args:
        step: the step just taken.
        model: the model after the update.
        inputs: ``(B, T)`` the step's training tokens.
        lengths: ``(B,)`` their lengths.
        losses: the step's :class:`compile_seg.losses.Losses` (before the update).
        heldout_inputs: ``(inputs (N, T'), lengths (N,), boundaries (N, M))`` held out.
        logger: the run's :class:`compkit_utils.logging.RunLogger`.
        print_fn: where the original's three lines go.

    Returns:
        The logged record (without ``step``).
    """
    train_metrics, rec = evaluate_batch(model, inputs, lengths)
    held_metrics, _ = evaluate_batch(model, *heldout_inputs)
    nll = losses.nll.item()
    acc = train_metrics["rec_acc"]
    last = inputs.shape[0] - 1
    print_fn(f"step: {step}, nll_train: {nll:.6f}, rec_acc_eval: {acc:.3f}")
    print_fn(f"input sample: {inputs[last, : int(lengths[last]) - 1].cpu()}")
    print_fn(f"reconstruction: {rec.sample(last).cpu()}")
    record = {
        "train/loss": losses.total.item(),
        "train/nll": nll,
        "train/kl_z": losses.kl_z.item(),
        "train/kl_b": losses.kl_b.item(),
        "train/rec_acc_eval": acc,
        **{f"eval/{key}": value for key, value in held_metrics.items()},
    }
    logger.log(step, record)
    return record
