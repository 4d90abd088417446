"""The model commands: ``ilpo lpn``, ``arn``, ``bc``, ``bco`` and ``bench``.

Each command validates what it can (data, checkpoints, environment) before or at the top of
its run directory, so bad input leaves nothing behind (``open_run`` removes a run that fails
before its first checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compkit_utils.errors import UserError

if TYPE_CHECKING:
    from ilpo.config_models import ArnConfig, BcConfig, BcoConfig, BenchConfig, LpnConfig
    from ilpo.data.transitions import Transitions
    from ilpo.lpn import VectorLPN

__all__ = ["LPN_FILE", "load_lpn", "run_arn", "run_bc", "run_bco", "run_bench", "run_lpn"]

LPN_KIND = "ilpo-vector-lpn"
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
    from ilpo.lpn import VectorLPN, latent_usage, make_optimizer, train_step

    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    state_dim, n_actions = _env_spaces(cfg.env)
    data = _load_data(cfg.data, cfg.env, "states", cfg.max_transitions, cfg.seed)
    n_latent = cfg.latents or n_actions
    states = torch.from_numpy(data.states).to(device)
    next_states = torch.from_numpy(data.next_states).to(device)
    delta_std = (next_states - states).std(dim=0).cpu()
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
        model = VectorLPN(state_dim, n_latent, ngf=cfg.ngf).to(device)
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
        extra = {
            "kind": LPN_KIND,
            "env": cfg.env,
            "state_dim": state_dim,
            "n_latent": n_latent,
            "ngf": cfg.ngf,
            "delta_std": delta_std,
        }
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
            f"lpn: {n} transitions of {cfg.env}, |Z| = {n_latent}, {cfg.epochs} epochs × "
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
                    out = train_step(model, opt, states[idx], next_states[idx])
                    sums += torch.stack([out.min_loss.detach(), out.exp_loss.detach()]) * len(idx)
                    best_all.append(out.best)
                    probs_all.append(out.probs.detach())
                with defer_interrupt():
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


def load_lpn(path: Path, env: str | None = None) -> tuple[VectorLPN, dict[str, Any]]:
    """Load an LPN from an ``ilpo lpn`` run folder or checkpoint; check its environment."""
    from compkit_utils.checkpoints import load_checkpoint
    from ilpo.lpn import VectorLPN

    file = path
    if path.is_dir():
        file = path / LPN_FILE
        if not file.is_file():
            file = path / "checkpoints" / "last.pt"
    state = load_checkpoint(file)
    extra = state.get("extra") or {}
    if extra.get("kind") != LPN_KIND:
        raise UserError(f"{file}: not an LPN checkpoint; pass the run folder of `ilpo lpn`")
    if env is not None and extra["env"] != env:
        raise UserError(
            f"{file}: the LPN was trained on {extra['env']}, not {env}; pass an LPN of {env} "
            f"or --env {extra['env']}"
        )
    model = VectorLPN(int(extra["state_dim"]), int(extra["n_latent"]), ngf=int(extra["ngf"]))
    model.load_state_dict(state["model"])
    return model, extra


# --------------------------------------------------------------------------------------------
# ilpo arn


def run_arn(cfg: ArnConfig) -> Path:
    """Online stage; writes ``<seed>.csv`` (``t,return``), metrics, ``arn.pt``, ``result.json``."""
    from compkit_utils.checkpoints import make_state, save_checkpoint
    from compkit_utils.devices import set_threads
    from compkit_utils.io import atomic_write_json
    from compkit_utils.runs import open_run, write_config
    from ilpo import __version__
    from ilpo.lpn import VectorLPN
    from ilpo.online import OnlineSettings, random_policy_return, run_online, write_curve_csv

    set_threads(cfg.threads)
    state_dim, n_actions = _env_spaces(cfg.env)
    if cfg.lpn is not None:
        lpn, extra = load_lpn(cfg.lpn, cfg.env)
    else:  # --smoke without --lpn: a freshly initialised small LPN
        torch.manual_seed(cfg.seed)
        lpn = VectorLPN(state_dim, n_actions, ngf=16)
        extra = {"env": cfg.env, "delta_std": None}
    if lpn.state_dim != state_dim:
        raise UserError(
            f"{cfg.lpn}: LPN states have {lpn.state_dim} entries, {cfg.env} has {state_dim}"
        )
    delta_std = extra.get("delta_std")
    if cfg.label_distance == "scaled" and delta_std is None:
        raise UserError(
            "--label-distance scaled needs an LPN trained by `ilpo lpn` (it stores the scale)"
        )
    settings = OnlineSettings(
        steps=cfg.steps,
        epsilon=cfg.epsilon,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        eval_env=cfg.eval_env,
        acting=cfg.acting,
        label_distance=cfg.label_distance,
        heldout_episodes=cfg.heldout_episodes,
    )
    make_env = _make_env_factory(cfg.env)
    with open_run(
        "ilpo", "arn", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "ilpo")
        t0 = time.perf_counter()
        with _logger(run.path, cfg.tensorboard) as logger:
            result = run_online(
                lpn, make_env, settings, cfg.seed, delta_std=delta_std, log=logger.log
            )
            random_ret = None
            if cfg.random_episodes:
                random_ret = random_policy_return(
                    make_env, n_actions, cfg.random_episodes, cfg.seed
                )
                logger.log(cfg.steps, {"eval/random_return": random_ret[0]}, console=False)
        seconds = time.perf_counter() - t0
        csv = write_curve_csv(run.path / f"{cfg.seed}.csv", result.curve)
        save_checkpoint(
            run.path / "arn.pt",
            make_state(
                step=cfg.steps,
                model=result.arn,
                config=dataclasses.asdict(settings),
                package_version=__version__,
                extra={"kind": "ilpo-vector-arn", "env": cfg.env, "lpn": str(cfg.lpn)},
            ),
        )
        summary = {
            "env": cfg.env,
            "seed": cfg.seed,
            "curve": result.curve,
            "final_return": result.curve[-1][1],
            "final_heldout_mean": None if result.final_heldout is None else result.final_heldout[0],
            "final_heldout_std": None if result.final_heldout is None else result.final_heldout[1],
            "random_return_mean": None if random_ret is None else random_ret[0],
            "arn_updates": result.updates,
            "seconds": seconds,
        }
        atomic_write_json(run.path / "result.json", summary)
        tail = "" if result.final_heldout is None else f"; held-out {result.final_heldout[0]:.1f}"
        print(
            f"arn: {cfg.steps} steps in {seconds:.1f} s, "
            f"last point {result.curve[-1][1]:.1f}{tail}; {csv}"
        )
    return run.path


# --------------------------------------------------------------------------------------------
# ilpo bc / bco


def run_bc(cfg: BcConfig) -> Path:
    """BC with true actions; writes ``bc.pt``, metrics and ``result.json`` (eval over episodes)."""
    from compkit_utils.checkpoints import make_state, save_checkpoint
    from compkit_utils.devices import set_threads
    from compkit_utils.io import atomic_write_json
    from compkit_utils.runs import open_run, write_config
    from ilpo import __version__
    from ilpo.baselines import evaluate_greedy, train_bc

    set_threads(cfg.threads)
    _, n_actions = _env_spaces(cfg.env)
    data = _load_data(cfg.data, cfg.env, "bc", cfg.max_transitions, cfg.seed)
    assert data.actions is not None
    states = torch.from_numpy(data.states)
    actions = torch.from_numpy(data.actions)
    with open_run("ilpo", "bc", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name) as run:
        write_config(run.path, cfg, "ilpo")
        with _logger(run.path, cfg.tensorboard) as logger:
            model = train_bc(
                states,
                actions,
                n_actions,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                beta1=cfg.beta1,
                seed=cfg.seed,
                log=logger.log,
            )
            mean, std = evaluate_greedy(
                _make_env_factory(cfg.env), model, cfg.eval_episodes, cfg.seed
            )
            logger.log(cfg.epochs, {"eval/return": mean, "eval/return_std": std})
        save_checkpoint(
            run.path / "bc.pt",
            make_state(
                step=cfg.epochs, model=model, package_version=__version__, extra={"env": cfg.env}
            ),
        )
        atomic_write_json(
            run.path / "result.json",
            {"env": cfg.env, "return_mean": mean, "return_std": std, "episodes": cfg.eval_episodes},
        )
        print(f"bc: return {mean:.2f} ± {std:.2f} over {cfg.eval_episodes} episodes ({run.path})")
    return run.path


def run_bco(cfg: BcoConfig) -> Path:
    """BCO(α); writes ``<seed>.csv``, metrics and ``result.json``."""
    from compkit_utils.devices import set_threads
    from compkit_utils.io import atomic_write_json
    from compkit_utils.runs import open_run, write_config
    from ilpo.baselines import BCOSettings
    from ilpo.baselines import run_bco as bco
    from ilpo.online import write_curve_csv

    set_threads(cfg.threads)
    _env_spaces(cfg.env)
    data = _load_data(cfg.data, cfg.env, "states", cfg.max_transitions, cfg.seed)
    settings = BCOSettings(
        steps=cfg.steps,
        steps_per_iter=cfg.steps_per_iter,
        idm_steps=cfg.idm_steps,
        idm_lr=cfg.idm_lr,
        policy_steps=cfg.policy_steps,
        policy_lr=cfg.policy_lr,
        batch_size=cfg.batch_size,
        eval_episodes=cfg.eval_episodes,
        heldout_episodes=cfg.heldout_episodes,
    )
    with open_run(
        "ilpo", "bco", seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name
    ) as run:
        write_config(run.path, cfg, "ilpo")
        t0 = time.perf_counter()
        with _logger(run.path, cfg.tensorboard) as logger:
            result = bco(
                torch.from_numpy(data.states),
                torch.from_numpy(data.next_states),
                _make_env_factory(cfg.env),
                settings,
                cfg.seed,
                log=logger.log,
            )
        seconds = time.perf_counter() - t0
        csv = write_curve_csv(run.path / f"{cfg.seed}.csv", result.curve)
        atomic_write_json(
            run.path / "result.json",
            {
                "env": cfg.env,
                "seed": cfg.seed,
                "curve": result.curve,
                "final_heldout_mean": None
                if result.final_heldout is None
                else result.final_heldout[0],
                "final_heldout_std": None
                if result.final_heldout is None
                else result.final_heldout[1],
                "seconds": seconds,
            },
        )
        print(
            f"bco: {cfg.steps} steps in {seconds:.1f} s, "
            f"last point {result.curve[-1][1]:.1f}; {csv}"
        )
    return run.path


# --------------------------------------------------------------------------------------------
# ilpo bench


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Print and return the timings of :func:`ilpo.bench.run_bench`."""
    from compkit_utils.devices import set_threads
    from ilpo.bench import run_bench as bench

    threads = set_threads(cfg.threads)
    result = bench(
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        warmup=cfg.warmup,
        online=cfg.online,
        seed=cfg.seed,
    )
    print(f"threads: {threads}")
    for line in result.lines():
        print(line)
    out = dataclasses.asdict(result)
    print(json.dumps(out))
    return out
