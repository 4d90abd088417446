"""The online and baseline commands: ``ilpo arn``, ``bc``, ``bco`` and ``bench``.

Each validates its input (LPN checkpoint, data, environment) before its run directory is
made, so bad input leaves nothing behind. ``arn``, ``bc`` and ``bco`` checkpoint as they go
and continue an interrupted run with ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compkit_utils.errors import UserError
from ilpo.commands import (
    _env_spaces,
    _load_data,
    _logger,
    _make_env_factory,
    load_lpn,
    vector_threads,
)

if TYPE_CHECKING:
    from ilpo.config_models import ArnConfig, BcConfig, BcoConfig, BenchConfig

__all__ = ["run_arn", "run_bc", "run_bco", "run_bench"]

Saver = Callable[[dict[str, Any]], None]


@contextlib.contextmanager
def _checkpointed(
    cfg: Any, command: str, fields: list[str]
) -> Iterator[tuple[Any, dict[str, Any] | None, Saver]]:
    """Open (or with ``cfg.resume`` reopen) the run of ``command``.

    Yields the run, the checkpoint to resume from (``None`` for a new run; its config must
    match ``cfg`` on ``fields``) and a function that writes ``checkpoints/last.pt`` (adding
    the config and the package version to the dictionary it is given).
    """
    from compkit_utils.checkpoints import load_checkpoint, save_checkpoint
    from compkit_utils.config import to_dict
    from compkit_utils.runs import check_resume_config, open_run, write_config
    from ilpo import __version__

    config = to_dict(cfg)
    with open_run(
        "ilpo",
        command,
        seed=cfg.seed,
        runs_dir=cfg.runs_dir,
        run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:
        state = None
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint)
            check_resume_config(run.last_checkpoint, state["config"], config, fields)
            print(f"{command}: resuming {run.path} at step {state['step']}")
        else:
            write_config(run.path, cfg, "ilpo")

        def save(checkpoint: dict[str, Any]) -> None:
            checkpoint["config"] = config
            checkpoint["package_version"] = __version__
            save_checkpoint(run.path / "checkpoints" / "last.pt", checkpoint)

        yield run, state, save


ARN_RESUME_FIELDS = [
    "lpn",
    "env",
    "steps",
    "epsilon",
    "batch_size",
    "lr",
    "eval_every",
    "eval_episodes",
    "eval_env",
    "acting",
    "label_distance",
    "heldout_episodes",
    "random_episodes",
    "seed",
]


# --------------------------------------------------------------------------------------------
# ilpo arn


def run_arn(cfg: ArnConfig) -> Path:
    """Online stage; writes ``<seed>.csv`` (``t,return``), metrics, ``arn.pt``, ``result.json``."""
    from compkit_utils.checkpoints import make_state, save_checkpoint
    from compkit_utils.devices import set_threads
    from compkit_utils.io import atomic_write_json
    from ilpo import __version__
    from ilpo.gridworld import N_ACTIONS, is_image_env
    from ilpo.lpn import LPN, ImageLPN, VectorLPN
    from ilpo.online import OnlineSettings, random_policy_return, run_online, write_curve_csv

    image = is_image_env(cfg.env)
    set_threads(vector_threads(cfg.threads, image=image))
    state_dim, n_actions = (0, N_ACTIONS) if image else _env_spaces(cfg.env)
    lpn: LPN
    if cfg.lpn is not None:
        lpn, extra = load_lpn(cfg.lpn, cfg.env)
    else:  # --smoke without --lpn: a freshly initialised small LPN
        torch.manual_seed(cfg.seed)
        lpn = ImageLPN(N_ACTIONS, ngf=4) if image else VectorLPN(state_dim, n_actions, ngf=16)
        extra = {"env": cfg.env, "delta_std": None}
    if isinstance(lpn, VectorLPN) and lpn.state_dim != state_dim:
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
    with _checkpointed(cfg, "arn", ARN_RESUME_FIELDS) as (run, state, save):
        t0 = time.perf_counter()
        resume_step = None if state is None else int(state["step"]) - 1
        with _logger(run.path, cfg.tensorboard, state is not None, resume_step) as logger:
            result = run_online(
                lpn,
                make_env,
                settings,
                cfg.seed,
                delta_std=delta_std,
                log=logger.log,
                save=save,
                resume=state,
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
                extra={
                    "kind": "ilpo-image-arn" if image else "ilpo-vector-arn",
                    "env": cfg.env,
                    "lpn": str(cfg.lpn),
                },
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
    from ilpo import __version__
    from ilpo.baselines import evaluate_greedy, train_bc

    set_threads(vector_threads(cfg.threads, image=False))
    _, n_actions = _env_spaces(cfg.env)
    data = _load_data(cfg.data, cfg.env, "bc", cfg.max_transitions, cfg.seed)
    assert data.actions is not None
    states = torch.from_numpy(data.states)
    actions = torch.from_numpy(data.actions)
    fields = ["data", "env", "epochs", "batch_size", "lr", "beta1", "max_transitions", "seed"]
    with _checkpointed(cfg, "bc", fields) as (run, state, save):
        resume_step = None if state is None else int(state["step"])
        with _logger(run.path, cfg.tensorboard, state is not None, resume_step) as logger:
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
                save=save,
                resume=state,
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
    from ilpo.baselines import BCOSettings
    from ilpo.baselines import run_bco as bco
    from ilpo.online import write_curve_csv

    set_threads(vector_threads(cfg.threads, image=False))
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
    fields = ["data", "env", "steps", "steps_per_iter", "idm_steps", "idm_lr", "policy_steps"]
    fields += ["policy_lr", "batch_size", "max_transitions", "eval_episodes", "heldout_episodes"]
    with _checkpointed(cfg, "bco", [*fields, "seed"]) as (run, state, save):
        t0 = time.perf_counter()
        resume_step = None
        if state is not None:  # metrics of iteration i are logged at t = i · steps_per_iter
            resume_step = int(state["step"]) * cfg.steps_per_iter - 1
        with _logger(run.path, cfg.tensorboard, state is not None, resume_step) as logger:
            result = bco(
                torch.from_numpy(data.states),
                torch.from_numpy(data.next_states),
                _make_env_factory(cfg.env),
                settings,
                cfg.seed,
                log=logger.log,
                save=save,
                resume=state,
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

    threads = set_threads(vector_threads(cfg.threads, image=False))
    result = bench(
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        warmup=cfg.warmup,
        online=cfg.online,
        baselines=cfg.baselines,
        seed=cfg.seed,
    )
    print(f"threads: {threads}")
    for line in result.lines():
        print(line)
    out = dataclasses.asdict(result)
    print(json.dumps(out))
    return out
