"""``rim-cells minigrid train``: recurrent PPO on a MiniGrid task, with RIM or LSTM memory."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from compkit_utils.checkpoints import CheckpointManager, load_checkpoint, make_state, restore
from compkit_utils.config import from_dict, to_dict
from compkit_utils.devices import pick_device, set_threads
from compkit_utils.logging import RunLogger, progress
from compkit_utils.runs import (
    defer_interrupt,
    open_run,
    package_version,
    save_on_interrupt,
    write_config,
)
from compkit_utils.seeding import seed_everything
from compkit_utils.validate import validate_config
from rim_cells.config import upgrade_saved_config
from rim_cells.minigrid.config import MiniGridTrainConfig, zero_shot_envs
from rim_cells.minigrid.envs import make_env, make_vector_env
from rim_cells.minigrid.evaluate import evaluate_policy
from rim_cells.minigrid.model import ActorCritic
from rim_cells.minigrid.ppo import RecurrentPPO

_log = logging.getLogger(__name__)
PACKAGE = "rim-cells"
COMMAND = "minigrid-train"


def train(cfg: MiniGridTrainConfig) -> Path:
    """Train, log ``metrics.jsonl`` (``step`` = PPO updates, plus ``env_steps``), checkpoint.

    The run directory comes from `compkit_utils.runs.open_run` (created atomically, locked
    while training, removed again if training fails before its first checkpoint); Ctrl-C
    writes a checkpoint at the last finished update. With ``resume`` the run named
    ``run_name`` (default: the newest one) continues from its ``last.pt``: model, optimizer,
    RNG states and counters are restored and its saved config is used (only ``frames``,
    ``device``, ``threads`` and ``log`` may change). The environments restart fresh episodes
    (seeded from the seed and the update index) and the memory starts at zero, so a resumed
    run is deterministic but not bit-identical to an uninterrupted one.

    Returns:
        The run directory.
    """
    make_env(cfg.env.env_id).close()  # a bad environment id fails before any run exists
    with open_run(
        PACKAGE,
        COMMAND,
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        state = None
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint)
            saved = from_dict(
                MiniGridTrainConfig,
                upgrade_saved_config(state["config"], total_hidden=True),
                source=f"{run.last_checkpoint} (config)",
            )
            cfg = dataclasses.replace(
                saved,
                frames=cfg.frames,
                device=cfg.device,
                threads=cfg.threads,
                log=cfg.log,
                runs_dir=cfg.runs_dir,
                run_name=run.path.name,
                resume=True,
            )
            validate_config(cfg)
        manager = CheckpointManager(run.path / "checkpoints", keep_last=cfg.log.keep_last)
        previous_threads = torch.get_num_threads()
        set_threads(cfg.threads)
        try:
            return _train(cfg, run.path, manager, state)
        finally:
            torch.set_num_threads(previous_threads)


def _train(
    cfg: MiniGridTrainConfig, run_dir: Path, manager: CheckpointManager, state: dict | None
) -> Path:
    rng = seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    write_config(run_dir, cfg, PACKAGE)

    model = ActorCritic(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.ppo.lr, eps=cfg.ppo.adam_eps)
    update, env_steps = 0, 0
    if state is not None:
        update = restore(state, model, optimizer, rng)
        env_steps = int(state["extra"]["env_steps"])
        _log.info("resuming %s at update %d (%d frames)", run_dir, update, env_steps)
    envs = make_vector_env(cfg.env.env_id, cfg.env.num_envs, cfg.env.vectorization)
    algo = RecurrentPPO(
        model, envs, cfg.ppo, optimizer, rng, env_seed=cfg.seed + update, device=device
    )
    if state is not None:
        algo.load_state_dict(state["extra"].get("ppo", {}))
    num_updates = math.ceil(cfg.frames / algo.frames_per_update)
    _log.info(
        "training %s memory on %s: %d updates of %d frames, %d parameters, device %s",
        cfg.model.memory,
        cfg.env.env_id,
        num_updates,
        algo.frames_per_update,
        sum(p.numel() for p in model.parameters()),
        device,
    )

    def checkpoint() -> None:
        manager.save(
            make_state(
                step=update,
                model=model,
                optimizer=optimizer,
                config=to_dict(cfg),
                package_version=package_version(PACKAGE),
                generator=rng,
                extra={"kind": "minigrid-ppo", "env_steps": env_steps, "ppo": algo.state_dict()},
            )
        )

    logger = RunLogger(
        run_dir,
        console_every=cfg.log.console_every,
        tensorboard=cfg.log.tensorboard,
        wandb=cfg.log.wandb,
        resume=state is not None,
        resume_step=update,
        wandb_config=to_dict(cfg),
    )
    try:
        with logger, save_on_interrupt(checkpoint):
            updates = range(update, num_updates)
            for _ in progress(updates, total=len(updates), desc="updates"):
                start = time.perf_counter()
                exps, episodes = algo.collect()
                rollout_s = time.perf_counter() - start
                with defer_interrupt():  # an update is finished (and counted) or not started
                    losses = algo.update(exps)
                    update += 1
                    env_steps += algo.frames_per_update
                duration = time.perf_counter() - start
                metrics: dict[str, float] = {"env_steps": env_steps}
                metrics.update({f"train/{k}": v for k, v in episodes.items()})
                metrics.update(losses)
                metrics["time/fps"] = algo.frames_per_update / duration
                metrics["time/rollout_s"] = rollout_s
                metrics["time/update_s"] = duration - rollout_s
                logger.log(update, metrics)
                if update % cfg.log.save_every == 0 or update == num_updates:
                    checkpoint()
            if cfg.eval_episodes > 0:
                final: dict[str, float] = {"env_steps": env_steps}
                # The training env as eval/..., each larger variant as zeroshot/<env id>/...
                for index, env_id in enumerate(zero_shot_envs(cfg.env.env_id)):
                    results = evaluate_policy(
                        model,
                        env_id,
                        cfg.eval_episodes,
                        num_envs=cfg.env.num_envs,
                        seed=cfg.seed + 1_000_000,
                        device=device,
                    )
                    prefix = "eval" if index == 0 else f"zeroshot/{env_id}"
                    final.update({f"{prefix}/{k}": v for k, v in results.items()})
                logger.log(update, final, console=True)
    finally:
        envs.close()
    return run_dir
