"""``ilpo lpn`` and the helpers the model commands share (:mod:`ilpo.commands_online`).

Each command validates what it can (data, checkpoints, environment) before or at the top of
its run directory, so bad input leaves nothing behind (``open_run`` removes a run that fails
before its first checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor

    from ilpo.config_models import LpnConfig
    from ilpo.data.frames import FramePairs
    from ilpo.data.transitions import Transitions
    from ilpo.lpn import LPN

__all__ = ["LPN_FILE", "load_lpn", "random_transitions", "run_lpn"]

LPN_KIND = "ilpo-vector-lpn"
IMAGE_LPN_KIND = "ilpo-image-lpn"
VECTOR_NGF, IMAGE_NGF = 128, 15
SMOKE_FRAMES = 48
LPN_FILE = "lpn.pt"
SMOKE_TRANSITIONS = 600


def _env_spaces(env_id: str) -> tuple[int, int]:
    """(state dimension, action count) of a vector env with discrete actions."""
    from ilpo.experts import make_env

    env = make_env(env_id)
    try:
        shape = env.observation_space.shape
        n = getattr(env.action_space, "n", None)
    finally:
        env.close()
    if shape is None or len(shape) != 1 or n is None:
        raise UserError(f"{env_id}: needs vector observations and discrete actions")
    return int(shape[0]), int(n)


def _make_env_factory(env_id: str) -> Any:
    from ilpo.gridworld import is_image_env, make_image_env

    if is_image_env(env_id):
        return lambda: make_image_env(env_id)
    from ilpo.experts import make_env

    return lambda: make_env(env_id)


def random_transitions(env_id: str, n: int, seed: int) -> Transitions:
    """``n`` transitions of the uniform-random policy (whole episodes; for ``--smoke``)."""
    from ilpo.data.transitions import Transitions
    from ilpo.experts import make_env

    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    s_list, a_list, n_list, e_list = [], [], [], []
    episode = 0
    try:
        while len(s_list) < n:
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                a = int(rng.integers(env.action_space.n))
                nxt, _, term, trunc, _ = env.step(a)
                s_list.append(np.asarray(obs, dtype=np.float32))
                a_list.append(a)
                n_list.append(np.asarray(nxt, dtype=np.float32))
                e_list.append(episode)
                obs, done = nxt, term or trunc
            episode += 1
    finally:
        env.close()
    return Transitions(
        states=np.stack(s_list),
        next_states=np.stack(n_list),
        actions=np.asarray(a_list, dtype=np.int64),
        episode_ids=np.asarray(e_list, dtype=np.int64),
        source=f"<random policy on {env_id}>",
    )


def _load_data(
    data: Path | None, env: str, kind: str, max_transitions: int | None, seed: int
) -> Transitions:
    from ilpo.data import load_transitions

    if data is None:  # --smoke without --data
        t = random_transitions(env, SMOKE_TRANSITIONS, seed)
        return t.without_actions() if kind == "states" else t
    return load_transitions(data, kind=kind, max_transitions=max_transitions, env=env)  # type: ignore[arg-type]


def _logger(
    run_path: Path, tensorboard: bool, resume: bool = False, step: int | None = None
) -> Any:
    from compkit_utils.logging import RunLogger

    return RunLogger(
        run_path,
        console_every=1,
        tensorboard=tensorboard,
        resume=resume,
        resume_step=step,
        package="ilpo",
    )


# --------------------------------------------------------------------------------------------
# ilpo lpn


def vector_threads(threads: int | None, *, image: bool) -> int | None:
    """The torch thread count of an ilpo command.

    ``--threads`` if given; else one thread for the vector domain (batch-32 MLPs: an LPN step
    took 0.96 ms on one thread against 1.57 ms on two on an idle 2-core machine); else ``None``
    (one thread per idle core) for the image domain.
    """
    if threads is None and not image:
        return 1
    return threads


def _lpn_inputs(cfg: LpnConfig, device: Any) -> tuple[Tensor, Tensor, Any, Any, dict[str, Any]]:
    """Data, batch preprocessing, model factory and checkpoint extras of ``ilpo lpn``.

    Vector envs: float states ``[N, d]`` and the :class:`~ilpo.lpn.VectorLPN`; image envs:
    uint8 frames ``[N, 128, 128, 3]`` (converted per batch) and the U-Net
    :class:`~ilpo.lpn.ImageLPN`.
    """
    from ilpo.gridworld import N_ACTIONS, is_image_env
    from ilpo.lpn import ImageLPN, VectorLPN

    if is_image_env(cfg.env):
        from ilpo.data.frames import frames_to_model

        frames = _load_frames(cfg.data, cfg.env, cfg.max_transitions, cfg.seed)
        n_latent = cfg.latents or N_ACTIONS
        ngf = cfg.ngf or IMAGE_NGF
        extra = {"kind": IMAGE_LPN_KIND, "env": cfg.env, "n_latent": n_latent, "ngf": ngf}
        return (
            torch.from_numpy(frames.states).to(device),
            torch.from_numpy(frames.next_states).to(device),
            frames_to_model,
            lambda: ImageLPN(n_latent, ngf=ngf),
            extra,
        )
    state_dim, n_actions = _env_spaces(cfg.env)
    data = _load_data(cfg.data, cfg.env, "states", cfg.max_transitions, cfg.seed)
    n_latent = cfg.latents or n_actions
    ngf = cfg.ngf or VECTOR_NGF
    states = torch.from_numpy(data.states).to(device)
    next_states = torch.from_numpy(data.next_states).to(device)
    extra = {
        "kind": LPN_KIND,
        "env": cfg.env,
        "state_dim": state_dim,
        "n_latent": n_latent,
        "ngf": ngf,
        "delta_std": (next_states - states).std(dim=0).cpu(),
    }
    return states, next_states, lambda x: x, lambda: VectorLPN(state_dim, n_latent, ngf=ngf), extra


def _load_frames(data: Path | None, env: str, max_pairs: int | None, seed: int) -> FramePairs:
    from ilpo.data.frames import FramePairs, load_frames

    if data is None:  # --smoke without --data: frames of the uniform-random policy
        from ilpo.collect_images import frame_rollouts

        arrays, _ = frame_rollouts(env, SMOKE_FRAMES, greedy_prob=0.0, seed=seed)
        return FramePairs(arrays["states"], arrays["next_states"], arrays["actions"], env)
    return load_frames(data, max_pairs=max_pairs, env=env)


def run_lpn(cfg: LpnConfig) -> Path:
    """Train the LPN; returns the run directory (``checkpoints/``, ``lpn.pt``, metrics)."""
    from compkit_utils.checkpoints import (
        CheckpointManager,
        load_checkpoint,
        make_state,
        restore,
        save_checkpoint,
    )
    from compkit_utils.config import to_dict
    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.logging import progress
    from compkit_utils.runs import (
        check_resume_config,
        defer_interrupt,
        open_run,
        save_on_interrupt,
        write_config,
    )
    from compkit_utils.seeding import seed_everything
    from ilpo import __version__
    from ilpo.gridworld import is_image_env
    from ilpo.lpn import latent_usage, make_optimizer, train_step

    set_threads(vector_threads(cfg.threads, image=is_image_env(cfg.env)))
    device = pick_device(cfg.device)
    states, next_states, prep, make_model, extra = _lpn_inputs(cfg, device)
    n = len(states)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    config = to_dict(cfg)
    with open_run(
        "ilpo",
        "lpn",
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        seed_everything(cfg.seed)
        model = make_model().to(device)
        opt = make_optimizer(model, lr=cfg.lr, beta1=cfg.beta1)
        manager = CheckpointManager(run.path / "checkpoints")
        start = 0
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint, map_location=device)
            check_resume_config(
                run.last_checkpoint,
                state["config"],
                config,
                [
                    "data",
                    "env",
                    "latents",
                    "batch_size",
                    "lr",
                    "beta1",
                    "ngf",
                    "max_transitions",
                    "seed",
                ],
            )
            start = restore(state, model, opt)  # type: ignore[arg-type]
        else:
            write_config(run.path, cfg, "ilpo")
        done = start

        def save(epoch: int) -> None:
            state = make_state(
                step=epoch,
                model=model,
                optimizer=opt,  # type: ignore[arg-type]
                config=config,
                package_version=__version__,
                extra=extra,
            )
            manager.save(state)

        print(
            f"lpn: {n} transitions of {cfg.env}, |Z| = {extra['n_latent']}, {cfg.epochs} epochs × "
            f"{steps_per_epoch} steps, device {device}"
        )
        with (
            _logger(run.path, cfg.tensorboard, run.resumed, start) as logger,
            save_on_interrupt(lambda: save(done)),
        ):
            for epoch in progress(
                range(start, cfg.epochs), total=cfg.epochs, initial=start, desc="lpn"
            ):
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                perm = torch.randperm(n, generator=gen).to(device)
                sums = torch.zeros(2, device=device)
                best_all, probs_all = [], []
                for i in range(steps_per_epoch):
                    idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                    out = train_step(model, opt, prep(states[idx]), prep(next_states[idx]))
                    sums += torch.stack([out.min_loss.detach(), out.exp_loss.detach()]) * len(idx)
                    best_all.append(out.best)
                    probs_all.append(out.probs.detach())
                with defer_interrupt():
                    n_latent = int(extra["n_latent"])
                    usage = latent_usage(torch.cat(best_all), torch.cat(probs_all), n_latent)
                    metrics: dict[str, float] = {
                        "train/min_loss": float(sums[0]) / n,
                        "train/exp_loss": float(sums[1]) / n,
                    }
                    for z in range(n_latent):
                        metrics[f"train/min_usage_{z}"] = usage["min_usage"][z]
                        metrics[f"train/policy_usage_{z}"] = usage["policy_usage"][z]
                    done = epoch + 1
                    logger.log(done, metrics)
                    if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
                        save(done)
        final = make_state(
            step=cfg.epochs, model=model, config=config, package_version=__version__, extra=extra
        )
        save_checkpoint(run.path / LPN_FILE, final)
        print(f"lpn: saved {run.path / LPN_FILE}")
    return run.path


def load_lpn(path: Path, env: str | None = None) -> tuple[LPN, dict[str, Any]]:
    """Load an LPN (vector or image) from an ``ilpo lpn`` run folder or checkpoint.

    Raises:
        UserError: not an LPN checkpoint, or one trained on another env than ``env``.
    """
    from compkit_utils.checkpoints import load_checkpoint
    from ilpo.lpn import ImageLPN, VectorLPN

    file = path
    if path.is_dir():
        file = path / LPN_FILE
        if not file.is_file():
            file = path / "checkpoints" / "last.pt"
    state = load_checkpoint(file)
    extra = state.get("extra") or {}
    if extra.get("kind") not in (LPN_KIND, IMAGE_LPN_KIND):
        raise UserError(f"{file}: not an LPN checkpoint; pass the run folder of `ilpo lpn`")
    if env is not None and extra["env"] != env:
        raise UserError(
            f"{file}: the LPN was trained on {extra['env']}, not {env}; pass an LPN of {env} "
            f"or --env {extra['env']}"
        )
    model: LPN
    if extra["kind"] == IMAGE_LPN_KIND:
        model = ImageLPN(int(extra["n_latent"]), ngf=int(extra["ngf"]))
    else:
        model = VectorLPN(int(extra["state_dim"]), int(extra["n_latent"]), ngf=int(extra["ngf"]))
    model.load_state_dict(state["model"])
    return model, extra
