"""``train-discriminator``: goal learning without goal labels (spec §4) and ``export-interaction``.

Each step draws a batch of positive/negative pairs of end-of-demonstration states
(:func:`~.disc_core.sample_pairs`), computes L_int + L_img (+ λ_t·R for ``independent`` and
``simple``) and takes an Adam step on the interaction model and the masking module. Every
``--val-every`` steps the interaction model scores the initial frames of the ID-validation and
OOD demonstrations against their goal masks (soft precision/recall/F1, pos-weighted BCE); the
best ``--top-k`` checkpoints by ID soft F1 are kept in ``checkpoints/best/``. At the end the
final and best weights are post-processed into ``interaction.pt`` / ``interaction_best.pt``,
the files ``train-planner`` loads (:mod:`.interaction_io`).

Metric names are the original's (spec §7, as ``train-bc``): ``bce`` (L_int), ``timg``
(L_img), ``me`` (mask entropy), ``l1c`` (R), ``loss``, ``l1_weight``, ``lr-Adam``; ``vsprec``,
``vsrecall``, ``vsf1``, ``vtarget`` with suffix ``/dataloader_idx_0`` (ID) and
``/dataloader_idx_1`` (OOD).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError
from factored_attention_babyai.interaction_io import (
    BEST_INTERACTION_FILE,
    INTERACTION_FILE,
    KIND_DISCRIMINATOR,
    resolve_checkpoint,
    to_interaction_state,
)

if TYPE_CHECKING:
    import torch

    from factored_attention_babyai.disc_config import DiscriminatorConfig, ExportInteractionConfig
    from factored_attention_babyai.disc_core import Discriminator, GoalDemos

log = logging.getLogger(__name__)
PACKAGE = "factored-attention-babyai"
COMMAND = "train-discriminator"
#: Config fields that must match for --resume.
RESUME_FIELDS = (
    "model", "data", "per_goal", "vlimit", "tlimit", "steps", "batch_size", "lr",
    "l1_start", "l1_end", "l1_final", "seed",
)  # fmt: skip


def lr_multiplier(step: int, total: int, model: str, warmup: int = 2000) -> float:
    """Transformer schedule: linear warm-up over ``warmup`` steps, then 10^(−2·progress); else 1."""
    if model != "transformer":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    return 10.0 ** (-2.0 * min(step / max(total, 1), 1.0))


class TopK:
    """The best ``k`` checkpoints by a score: files in ``directory``, listed in ``index``.

    Args:
        directory: the ``checkpoints/best`` folder.
        index: the ``best_k_models.yaml`` list (``<file>: <score>`` lines, best first).
        k: how many to keep.
        entries: the list to start from (a resumed run's, from its checkpoint).
    """

    def __init__(
        self, directory: Path, index: Path, k: int, entries: dict[str, float] | None = None
    ) -> None:
        self.directory = directory
        self.index = index
        self.k = k
        self.entries: dict[str, float] = dict(entries or {})

    def offer(self, step: int, score: float, make_state: Any) -> bool:
        """Save ``make_state()`` as ``step_<step>.pt`` if ``score`` enters the top k."""
        from compkit_utils.checkpoints import save_checkpoint
        from compkit_utils.io import atomic_write_text

        if math.isnan(score):
            return False
        if len(self.entries) >= self.k and score <= min(self.entries.values()):
            return False
        name = f"step_{step:06d}.pt"
        self.directory.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.directory / name, make_state())
        self.entries[name] = score
        while len(self.entries) > self.k:
            worst = min(self.entries, key=lambda key: self.entries[key])
            del self.entries[worst]
            (self.directory / worst).unlink(missing_ok=True)
        ranked = sorted(self.entries.items(), key=lambda item: (-item[1], item[0]))
        atomic_write_text(self.index, "".join(f"{name}: {score!r}\n" for name, score in ranked))
        return True

    def best(self) -> Path | None:
        """The best file, if any."""
        if not self.entries:
            return None
        return self.directory / max(self.entries, key=lambda key: self.entries[key])


def validate(disc: Discriminator, sets: dict[int, Any]) -> dict[str, float]:
    """Score each validation set's initial frames → ``<metric>/dataloader_idx_<i>``."""
    import torch

    from factored_attention_babyai.disc_core import goal_metrics

    out: dict[str, float] = {}
    was_training = disc.training
    disc.eval()
    with torch.no_grad():
        for idx, (images, missions, targets) in sets.items():
            logits = disc.model(images, missions).logits
            for key, value in goal_metrics(logits, targets).items():
                out[f"{key}/dataloader_idx_{idx}"] = value
    disc.train(was_training)
    return out


def train_discriminator(cfg: DiscriminatorConfig) -> Path:
    """Run ``train-discriminator``; returns the run folder."""
    import numpy as np
    import torch

    from compkit_utils.checkpoints import (
        CheckpointManager,
        load_checkpoint,
        make_state,
        restore,
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
    from compkit_utils.seeding import seed_everything
    from factored_attention_babyai import __version__
    from factored_attention_babyai.disc_core import (
        Discriminator,
        discriminator_losses,
        sample_pairs,
    )
    from factored_attention_babyai.models.interaction import l1_weight

    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    config = to_dict(cfg)
    with open_run(
        PACKAGE, COMMAND, seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:  # fmt: skip
        state = None
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint, map_location=device)
            check_resume_config(run.last_checkpoint, state["config"], config, RESUME_FIELDS)
        demos, val_sets, words = load_discriminator_data(cfg, device)
        seed_everything(cfg.seed)
        disc = Discriminator(cfg.model, len(words)).to(device)
        optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
        start = 0
        if state is not None:
            start = restore(state, disc, optimizer)
        else:
            write_config(run.path, cfg, PACKAGE)
        manager = CheckpointManager(run.path / "checkpoints", keep_last=1)
        top = TopK(
            run.path / "checkpoints" / "best", run.path / "best_k_models.yaml", cfg.top_k,
            (state or {}).get("extra", {}).get("best"),
        )  # fmt: skip
        done = start

        def snapshot(with_optimizer: bool = True) -> dict[str, Any]:
            extra = {
                "kind": KIND_DISCRIMINATOR, "interaction_model": cfg.model, "words": list(words),
                "best": dict(top.entries),
            }  # fmt: skip
            return make_state(
                step=done, model=disc, optimizer=optimizer if with_optimizer else None,
                config=config, package_version=__version__, extra=extra,
            )  # fmt: skip

        log.info(
            "%s: %s on %d goals × %d demos, %d steps of %d pair items, device %s",
            COMMAND, cfg.model, demos.n_goals, demos.per_goal, cfg.steps, cfg.batch_size,
            device,
        )  # fmt: skip
        with (
            RunLogger(
                run.path, console_every=0, tensorboard=cfg.tensorboard, resume=run.resumed,
                resume_step=start, package=PACKAGE,
            ) as logger,
            save_on_interrupt(lambda: manager.save(snapshot())),
        ):  # fmt: skip
            disc.train()
            for step in progress(
                range(start, cfg.steps), total=cfg.steps, initial=start, desc=COMMAND
            ):
                rng = np.random.default_rng([cfg.seed, step])  # resumable without state
                batch = sample_pairs(demos, rng, cfg.batch_size // 2)
                batch = type(batch)(*(t.to(device, non_blocking=True) for t in batch))
                losses = discriminator_losses(disc, batch)
                lam = l1_weight(step, cfg.l1_start, cfg.l1_end, cfg.l1_final)
                loss = losses.bce + losses.timg
                if losses.l1c is not None and lam > 0:
                    loss = loss + lam * losses.l1c
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_multiplier(step, cfg.steps, cfg.model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                with defer_interrupt():
                    optimizer.step()
                    done = step + 1
                    metrics = {
                        "loss": loss.detach(), "bce": losses.bce.detach(),
                        "timg": losses.timg.detach(), "me": losses.me, "l1_weight": lam,
                        "lr-Adam": optimizer.param_groups[0]["lr"],
                    }  # fmt: skip
                    if losses.l1c is not None:
                        metrics["l1c"] = losses.l1c.detach()
                    if done % cfg.val_every == 0 or done == cfg.steps:
                        metrics.update(validate(disc, val_sets))
                        top.offer(
                            done, metrics["vsf1/dataloader_idx_0"],
                            lambda: snapshot(with_optimizer=False),
                        )  # fmt: skip
                    logger.log(done, {k: float(v) for k, v in metrics.items()}, console=False)
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                        manager.save(snapshot())
        final = snapshot(with_optimizer=False)
        save_checkpoint(run.path / INTERACTION_FILE, to_interaction_state(final, str(run.path)))
        best = top.best()
        if best is not None:
            best_state = load_checkpoint(best)
            save_checkpoint(
                run.path / BEST_INTERACTION_FILE, to_interaction_state(best_state, str(best))
            )
        print(f"{COMMAND}: wrote {run.path / INTERACTION_FILE}")
    return run.path


def load_discriminator_data(
    cfg: DiscriminatorConfig, device: torch.device
) -> tuple[GoalDemos, dict[int, tuple[torch.Tensor, ...]], tuple[str, ...]]:
    """The training subset grouped by goal and the ID / OOD validation initial frames.

    Returns:
        (demos, {0: ID set, 1: OOD set} of (images, missions, goal masks) on ``device``, words).
    """
    from factored_attention_babyai.data_views import group_by_goal, initial_frames, load_demos
    from factored_attention_babyai.vocab import WORDS

    data = load_demos(
        cfg.data, seed=cfg.seed, per_goal=cfg.per_goal, vlimit=cfg.vlimit, tlimit=cfg.tlimit
    )
    sets = {0: initial_frames(data.id_seeds, device), 1: initial_frames(data.ood_seeds, device)}
    return group_by_goal(data), sets, WORDS


def export_interaction(cfg: ExportInteractionConfig) -> Path:
    """Run ``export-interaction``: write the post-processed interaction checkpoint."""
    from compkit_utils.checkpoints import load_checkpoint, save_checkpoint

    source = resolve_checkpoint(cfg.checkpoint)
    out = cfg.out or source.with_name(f"{source.stem}.interaction.pt")
    if out.exists() and not cfg.overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it or another --out")
    state = load_checkpoint(source)
    if (state.get("extra") or {}).get("kind") not in (KIND_DISCRIMINATOR, "interaction"):
        to_interaction_state(state, str(source))  # raises the one-line error
    save_checkpoint(out, to_interaction_state(state, str(source)))
    print(f"export-interaction: wrote {out}")
    return out
