"""``train-planner``: the MVProp planner of spec §5, trained offline from demonstrations.

Per frame (a Markov policy: only the current frame is seen, spec §9 item 6): the frozen
interaction model gives the goal map g = σ(ŷ) and the cell features φ (the two factor
embeddings concatenated, 96); :class:`~.models.mvprop.MVProp` turns them into a value map;
:class:`~.models.qnet.QNetwork` reads [direction, φ, V, r] and outputs 7 Q-values; acting is
argmax Q. ``--k 0`` is the "Factored/CNN policy" ablation (V ≡ 0).

Loss (§5.4) over a batch of demos, all frames independent: L_Q = MSE(Q(s_t, a_t), γ^(T−1−t))
on valid steps; L_reg = MSE(Q(s_t, a), 0) over the non-demonstrated actions of valid steps;
L_V = mean V² over all Tmax frames, padding included (the original's quirk, kept: the
identical padding frames of a demo enter once with their count as weight, so the value is
that of the full padded batch). Loss = L_Q + 0.01·(L_reg + L_V); logged as ``path``, ``reg``,
``vreg``. Validation by greedy rollouts on the ID / OOD seeds (``vsucc/dataloader_idx_0``,
``/dataloader_idx_1``) with the part-1 evaluator, top-k checkpoints by ID success, ``model.pt``
at the end.

``--precision mixed`` runs the forward pass under autocast: float16 with loss scaling on CUDA
(the original trained its planner in 16-bit on a GPU), bfloat16 on a CPU, where it mainly
speeds up the Q-network's matrix products. Validation rollouts run in float32.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from compkit_utils.errors import UserError
from factored_attention_babyai.models.mvprop import MVProp
from factored_attention_babyai.models.qnet import QNetwork

if TYPE_CHECKING:
    from factored_attention_babyai.planner_config import PlannerConfig

__all__ = [
    "PLANNER_KIND",
    "MVPropPlanner",
    "PlannerOutput",
    "batch_index",
    "frame_returns",
    "planner_batch",
    "planner_loss",
    "train_planner",
]

PLANNER_KIND = "planner"
PACKAGE = "factored-attention-babyai"
COMMAND = "train-planner"
RESUME_FIELDS = [
    "interaction", "interaction_model", "k", "data", "per_goal", "vlimit", "tlimit",
    "batch_size", "lr", "gamma", "reg_weight", "precision", "seed",
]  # fmt: skip
"""Settings a ``--resume`` must repeat. ``--steps`` may change: the learning rate is constant
and the batches depend only on the step, so a run resumed with more steps continues exactly
as a run started with them (one that has finished can be extended)."""


#: Frames per chunk when the planner runs without gradients (:meth:`MVPropPlanner.forward`).
EVAL_CHUNK = 64


class PlannerOutput(NamedTuple):
    """Q-values [B, 7] and the maps behind them: value V, reward r, propagation p [B, H, W]."""

    q: Tensor
    value: Tensor
    reward: Tensor
    prop: Tensor


class MVPropPlanner(nn.Module):
    """Frozen interaction model → MVProp → Q-network.

    Args:
        interaction: a trained interaction model (frozen here: no gradients, eval mode).
        k: MVProp iterations (0: no propagation).
    """

    def __init__(self, interaction: nn.Module, k: int = 10) -> None:
        super().__init__()
        self.interaction = interaction.requires_grad_(False).eval()
        self.mvprop = MVProp(feature_dim=96, k=k)
        self.qnet = QNetwork(feature_dim=96)

    def train(self, mode: bool = True) -> MVPropPlanner:
        """Train MVProp and the Q-network; the interaction model always stays in eval mode."""
        super().train(mode)
        self.interaction.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """MVProp and Q-network parameters (what the optimizer updates)."""
        return [*self.mvprop.parameters(), *self.qnet.parameters()]

    def attribute_table(self) -> Tensor:
        """The interaction model's attribute table A [17, E] (φ = [A[type], A[11 + colour]])."""
        table = self.interaction.attrib_embeddings
        if isinstance(table, nn.Embedding):
            return table.weight
        assert isinstance(table, Tensor)
        return table

    def maps(
        self,
        images: Tensor,
        directions: Tensor,
        missions: Tensor,
        *,
        factored: bool = True,
        rows: Tensor | None = None,
    ) -> PlannerOutput:
        """Q-values and value maps of single frames.

        Args:
            images: [B, 8, 8, 3] observations (uint8 or long).
            directions: [B] agent directions.
            missions: [B, 5] token ids.
            factored: compute the Q-network's first convolution from attribute-table rows
                (:meth:`~.models.qnet.QNetwork.forward_factored`, the same function, faster);
                False runs the plain convolution (the reference).
            rows: the Q-network's first-layer rows for the current weights
                (:meth:`~.models.qnet.QNetwork.forward_factored`), to share them between
                chunks; computed when None.
        """
        with torch.no_grad():
            out = self.interaction(images.long(), missions)
            goal = torch.sigmoid(out.logits)
            features = out.factors.permute(0, 2, 3, 1, 4).flatten(-2)  # [B, H, W, 2E]
        prop, value, reward = self.mvprop(features, goal)
        if factored:
            table = self.attribute_table().detach()
            q = self.qnet.forward_factored(directions, images, table, value, reward, rows)
        else:
            q = self.qnet(directions, features, value, reward)
        return PlannerOutput(q, value, reward, prop)

    def forward(self, images: Tensor, directions: Tensor, missions: Tensor) -> Tensor:
        """Q-values [B, 7] (the evaluator's policy interface: argmax = greedy action).

        Without gradients the frames go through in chunks of :data:`EVAL_CHUNK`: the
        Q-network's cell rows of a chunk (64 frames × 64 cells × 584 floats, 9.6 MB) stay in
        cache between its layers, where those of a 480-frame batch (72 MB) do not: 0.50 against
        0.70 ms per frame on one AVX2 core (with :func:`compkit_utils.devices.keep_freed_memory`),
        the same function.
        """
        n = images.shape[0]
        if torch.is_grad_enabled() or n <= EVAL_CHUNK:
            return self.maps(images, directions, missions).q
        table = self.attribute_table().detach()
        rows = self.qnet.lookup_rows(table, images.shape[1], images.shape[2])  # once per call
        return torch.cat(
            [
                self.maps(
                    images[i : i + EVAL_CHUNK],
                    directions[i : i + EVAL_CHUNK],
                    missions[i : i + EVAL_CHUNK],
                    rows=rows,
                ).q
                for i in range(0, n, EVAL_CHUNK)
            ]
        )


def frame_returns(lengths: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = γ^(T−1−t) for every valid frame, demo after demo (the order of ``make_batch``)."""
    return np.concatenate([gamma ** np.arange(n - 1, -1, -1, dtype=np.float64) for n in lengths])


def planner_loss(
    out: PlannerOutput,
    actions: Tensor,
    returns: Tensor,
    valid: Tensor,
    weights: Tensor,
    reg_weight: float = 0.01,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_Q + reg_weight·(L_reg + L_V) (spec §5.4).

    Args:
        out: the planner's output on F frames.
        actions: [F] demonstrated actions (ignored on padding frames).
        returns: [F] Monte-Carlo targets (ignored on padding frames).
        valid: [F] bool, a real (not padding) frame.
        weights: [F] how many padded-batch frames each row stands for (1 on valid frames).
        reg_weight: weight of L_reg + L_V.

    Returns:
        (the loss, {"path": L_Q, "reg": L_reg, "vreg": L_V}).
    """
    q = out.q[valid].float()
    taken = q.gather(1, actions[valid].unsqueeze(1)).squeeze(1)
    path = F.mse_loss(taken, returns[valid].float())
    others = torch.ones_like(q, dtype=torch.bool).scatter_(1, actions[valid].unsqueeze(1), False)
    reg = q[others].pow(2).mean()
    per_frame = out.value.float().pow(2).flatten(1).mean(1)
    vreg = (per_frame * weights).sum() / weights.sum()
    loss = path + reg_weight * (reg + vreg)
    return loss, {"path": path.detach(), "reg": reg.detach(), "vreg": vreg.detach()}


def load_planner_interaction(cfg: PlannerConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen interaction model of ``--interaction`` (untrained with --smoke and none given)."""
    from factored_attention_babyai.interaction_io import load_interaction
    from factored_attention_babyai.models.interaction import build_interaction
    from factored_attention_babyai.vocab import WORDS

    if cfg.interaction is None:
        return build_interaction(cfg.interaction_model, len(WORDS)), {"source": "untrained"}
    model, state = load_interaction(
        cfg.interaction, expect_model=cfg.interaction_model, words=WORDS, flag="--interaction",
        match={"per_goal": cfg.per_goal, "seed": cfg.seed},
    )  # fmt: skip
    return model, {"source": state["extra"]["loaded_from"], "step": state["step"]}


def batch_index(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Demos of ``step``: epoch e = step // ⌈n / B⌉ is a permutation seeded with (seed, e).

    The same order as ``train-bc``, so a planner and a BC run of one seed see the same batches.
    """
    per_epoch = -(-n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[i * batch_size : (i + 1) * batch_size]


def planner_batch(data: Any, index: np.ndarray, gamma: float, device: torch.device) -> dict:
    """``train_bc.make_batch`` frames plus their Monte-Carlo returns (padding rows: 0)."""
    from factored_attention_babyai.train_bc import make_batch

    batch = make_batch(data, index, device)
    valid_returns = frame_returns(data.lengths[index], gamma)
    returns = np.zeros(len(batch["valid"]), dtype=np.float32)
    returns[: len(valid_returns)] = valid_returns
    batch["returns"] = torch.from_numpy(returns).to(device)
    return batch


def train_planner(cfg: PlannerConfig) -> Path:
    """Run ``train-planner``; returns the run directory."""
    from compkit_utils.checkpoints import (
        CheckpointManager,
        load_checkpoint,
        make_state,
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
    from compkit_utils.seeding import restore_rng_state, seed_everything
    from factored_attention_babyai import __version__
    from factored_attention_babyai.data_views import load_demos
    from factored_attention_babyai.discriminator import TopK
    from factored_attention_babyai.evaluate import evaluate_goal_sets
    from factored_attention_babyai.train_bc import check_precision, mixed_precision
    from factored_attention_babyai.vocab import WORDS

    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    check_precision(cfg.precision, device)
    interaction, source = load_planner_interaction(cfg)  # before the run folder: bad input
    data = load_demos(  # leaves nothing behind
        cfg.data, seed=cfg.seed, per_goal=cfg.per_goal, vlimit=cfg.vlimit, tlimit=cfg.tlimit
    )
    n = len(data.lengths)
    config = to_dict(cfg)
    with open_run(
        PACKAGE, COMMAND, seed=cfg.seed, runs_dir=cfg.runs_dir, run_name=cfg.run_name,
        resume=cfg.resume,
    ) as run:  # fmt: skip
        state: dict[str, Any] | None = None
        if run.resumed:
            state = load_checkpoint(run.last_checkpoint, map_location=device)
            if (state.get("extra") or {}).get("kind") != PLANNER_KIND:
                raise UserError(
                    f"--resume: {run.last_checkpoint} is not a train-planner checkpoint"
                )
            saved_config = {"precision": "32", **state["config"]}  # runs from before the option
            check_resume_config(run.last_checkpoint, saved_config, config, RESUME_FIELDS)
            if cfg.steps < int(state["step"]):
                raise UserError(
                    f"--resume: {run.last_checkpoint} is at step {state['step']}; pass --steps "
                    f"{state['step']} or more (got {cfg.steps})"
                )
        else:
            write_config(run.path, cfg, PACKAGE)
        seed_everything(cfg.seed)
        planner = MVPropPlanner(interaction, k=cfg.k).to(device)
        optimizer = torch.optim.Adam(planner.trainable_parameters(), lr=cfg.lr)
        mixed, amp_dtype, scaler = mixed_precision(cfg.precision, device)
        manager = CheckpointManager(run.path / "checkpoints", keep_last=1)
        top = TopK(
            run.path / "checkpoints" / "best", run.path / "best_k_models.yaml", cfg.top_k,
            (state or {}).get("extra", {}).get("best"),
        )  # fmt: skip
        start = 0
        if state is not None:
            planner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            restore_rng_state(state["rng"])
            start = int(state["step"])
        done = start

        def snapshot(with_optimizer: bool = True, **more: Any) -> dict[str, Any]:
            extra = {
                "kind": PLANNER_KIND, "interaction_model": cfg.interaction_model, "k": cfg.k,
                "words": list(WORDS), "interaction_source": source, "best": dict(top.entries),
                **more,
            }  # fmt: skip
            return make_state(
                step=done, model=planner, optimizer=optimizer if with_optimizer else None,
                config=config, package_version=__version__, extra=extra,
            )  # fmt: skip

        def validate() -> dict[str, float]:
            results = evaluate_goal_sets(
                planner, {"id": data.id_seeds, "ood": data.ood_seeds}, batch_size=cfg.eval_batch
            )
            metrics = {
                "vsucc/dataloader_idx_0": results["id"].success_rate,
                "vsucc/dataloader_idx_1": results["ood"].success_rate,
                "vlength/dataloader_idx_0": float(results["id"].length.mean()),
                "vlength/dataloader_idx_1": float(results["ood"].length.mean()),
            }
            top.offer(
                done, metrics["vsucc/dataloader_idx_0"],
                lambda: snapshot(with_optimizer=False, vsucc=metrics),
            )  # fmt: skip
            return metrics

        print(
            f"{COMMAND}: K={cfg.k}, interaction {cfg.interaction_model} ({source['source']}), "
            f"{n} demos ({data.source}), {cfg.steps} steps of batch {cfg.batch_size}, "
            f"validation on {len(data.id_seeds)} ID + {len(data.ood_seeds)} OOD seeds every "
            f"{cfg.eval_every}, device {device}"
        )
        t0 = time.perf_counter()
        with (
            RunLogger(
                run.path, console_every=0, tensorboard=cfg.tensorboard, resume=run.resumed,
                resume_step=start, package=PACKAGE,
            ) as logger,
            save_on_interrupt(lambda: manager.save(snapshot())),
        ):  # fmt: skip
            planner.train()
            for step in progress(
                range(start, cfg.steps), total=cfg.steps, initial=start, desc="planner"
            ):
                index = batch_index(n, cfg.batch_size, cfg.seed, step)
                batch = planner_batch(data, index, cfg.gamma, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=mixed):
                    out = planner.maps(batch["images"], batch["directions"], batch["missions"])
                loss, parts = planner_loss(
                    out, batch["actions"], batch["returns"], batch["valid"], batch["weights"],
                    cfg.reg_weight,
                )  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                with defer_interrupt():
                    scaler.step(optimizer)
                    scaler.update()
                    done = step + 1
                    metrics = {
                        "loss": float(loss.detach()),
                        **{k: float(v) for k, v in parts.items()},
                    }
                    metrics["lr-Adam"] = cfg.lr
                    evaluate = done % cfg.eval_every == 0 or done == cfg.steps
                    if evaluate:
                        metrics.update(validate())
                        manager.save(snapshot())
                    logger.log(done, metrics, console=evaluate)
        save_checkpoint(run.path / "model.pt", snapshot(with_optimizer=False))
        best = max(top.entries.values()) if top.entries else float("nan")
        print(
            f"{COMMAND}: {cfg.steps - start} steps in {time.perf_counter() - t0:.1f} s; best ID "
            f"success {best:.3f}; {run.path}"
        )
    return run.path
