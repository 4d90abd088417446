"""CUDA checks (``-m gpu``): the smoke commands on the device, and CPU-versus-device parity.

``COMPKIT_GPU_TESTS_ON_CPU=1`` runs them on the CPU (the parity checks then compare the
CPU with itself); see ``compkit_utils.testing.requires_gpu``. ``generate``, the only smoke
command without ``--device``, is the environment engine (no torch model).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.testing import (
    gpu_device,
    no_tf32,  # noqa: F401  (a fixture, used by pytestmark)
    requires_gpu,
)
from factored_attention_babyai.cli import main
from factored_attention_babyai.env import make_env
from factored_attention_babyai.evaluate import rollout
from factored_attention_babyai.models.common import bc_loss
from factored_attention_babyai.models.film import FilmPolicy
from factored_attention_babyai.models.interaction import MODEL_NAMES, build_interaction
from factored_attention_babyai.models.transformer_policy import TransformerPolicy
from factored_attention_babyai.planner import MVPropPlanner

PROG = "factored-attention-babyai"
# Float32 with TF32 off on both sides: cuDNN/cuBLAS and the CPU sum in other orders (~1e-7
# relative per product); through the FiLM CNN's batch norms, the 5 attention layers, the
# MVProp iterations and the backward passes that grows to ~1e-6..1e-5. 1e-4 keeps a 10x
# margin; a wrong mask, normalisation or index moves outputs by >1e-2.
ATOL = RTOL = 1e-4
# A greedy action is only compared across devices where the CPU's best action leads the
# second by far more than the parity tolerance (so a float-level tie cannot flip it).
MIN_MARGIN = 100 * ATOL


pytestmark = pytest.mark.usefixtures("no_tf32")


def _only_run(root: Path) -> Path:
    (run,) = [p for p in (root / PROG).iterdir() if p.is_dir()]
    return run


def _check_run(run: Path, device: str) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records
    for record in records:
        for key, value in record.items():
            if isinstance(value, float):
                assert np.isfinite(value), (key, value)
    assert json.loads((run / "config.json").read_text())["device"] == device
    assert (run / "model.pt").is_file() or (run / "interaction.pt").is_file()
    return records


@requires_gpu
@pytest.mark.parametrize("command", ["train-bc", "train-discriminator", "train-planner"])
def test_smoke_commands_on_the_device(tmp_path: Path, capsys, caplog, command: str) -> None:
    device = gpu_device()
    caplog.set_level(logging.INFO)
    assert main([command, "--smoke", "--device", device, "--runs-dir", str(tmp_path)]) == 0
    _check_run(_only_run(tmp_path), device)
    said = capsys.readouterr().out + caplog.text  # the device the run used (print or log)
    assert f"device {device}" in said


def _frames(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` real first observations: images [N, 8, 8, 3], directions [N], missions [N, 5]."""
    env = make_env()
    images, directions, missions = [], [], []
    for seed in range(count):
        obs, _ = env.reset(seed=1000 + seed)
        images.append(obs["image"])
        directions.append(obs["direction"])
        missions.append(obs["mission_tokens"])
    env.close()
    return (
        torch.from_numpy(np.stack(images)),
        torch.tensor(directions, dtype=torch.int64),
        torch.from_numpy(np.stack(missions).astype(np.int64)),
    )


def _pair(make: type[torch.nn.Module] | object, device: torch.device):
    torch.manual_seed(0)
    cpu_model = make()  # type: ignore[operator]
    dev_model = make()  # type: ignore[operator]
    dev_model.load_state_dict(cpu_model.state_dict())
    return cpu_model, dev_model.to(device)


def _close(on_device: torch.Tensor, on_cpu: torch.Tensor, msg: str = "") -> None:
    got, want = on_device.detach().cpu(), on_cpu.detach()
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=msg or None)


@requires_gpu
@pytest.mark.parametrize("policy_cls", [FilmPolicy, TransformerPolicy])
def test_policy_step_matches_the_cpu(policy_cls: type[torch.nn.Module]) -> None:
    """One behaviour-cloning step (train mode: batch-norm batch statistics) and eval outputs."""
    device = torch.device(gpu_device())
    cpu_model, dev_model = _pair(policy_cls, device)
    frames = _frames(16)
    actions = torch.arange(16) % 7
    valid = torch.ones(16, dtype=torch.bool)
    results = []
    for model, where in ((cpu_model, torch.device("cpu")), (dev_model, device)):
        model.train()
        inputs = [t.to(where) for t in frames]
        loss, ce, entropy = bc_loss(model(*inputs), actions.to(where), valid.to(where))
        loss.backward()
        grads = {
            n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None
        }
        model.eval()
        with torch.no_grad():
            scores = model(*inputs)
        assert scores.device.type == where.type
        results.append(((loss, ce, entropy), grads, scores))
    (cpu_losses, cpu_grads, cpu_scores), (dev_losses, dev_grads, dev_scores) = results
    for got, want in zip(dev_losses, cpu_losses, strict=True):
        _close(got, want)
    assert cpu_grads.keys() == dev_grads.keys()
    assert len(cpu_grads) > 10
    for name in cpu_grads:
        _close(dev_grads[name], cpu_grads[name], name)
    _close(dev_scores, cpu_scores)


@requires_gpu
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_interaction_model_matches_the_cpu(name: str) -> None:
    device = torch.device(gpu_device())
    cpu_model, dev_model = _pair(lambda: build_interaction(name, 16), device)
    images, _, missions = _frames(8)
    cpu_out = cpu_model(images.long(), missions)
    dev_out = dev_model(images.long().to(device), missions.to(device))
    assert dev_out.logits.device.type == device.type
    _close(dev_out.logits, cpu_out.logits, "logits")
    _close(dev_out.factors, cpu_out.factors, "factors")
    if cpu_out.attention is not None:
        _close(dev_out.attention, cpu_out.attention, "attention")
    cpu_out.logits.square().mean().backward()
    dev_out.logits.square().mean().backward()
    for (n, p_cpu), (_, p_dev) in zip(
        cpu_model.named_parameters(), dev_model.named_parameters(), strict=True
    ):
        if p_cpu.grad is not None:
            assert p_dev.grad is not None, n
            _close(p_dev.grad, p_cpu.grad, n)


@requires_gpu
def test_mvprop_planner_matches_the_cpu() -> None:
    device = torch.device(gpu_device())
    cpu_model, dev_model = _pair(
        lambda: MVPropPlanner(build_interaction("independent", 16)), device
    )
    frames = _frames(8)
    cpu_q = cpu_model(*frames)
    dev_q = dev_model(*(t.to(device) for t in frames))
    assert dev_q.device.type == device.type
    _close(dev_q, cpu_q, "q")
    cpu_q.square().mean().backward()
    dev_q.square().mean().backward()
    grads = 0
    for (n, p_cpu), (_, p_dev) in zip(
        cpu_model.named_parameters(), dev_model.named_parameters(), strict=True
    ):
        if p_cpu.grad is not None:
            assert p_dev.grad is not None, n
            _close(p_dev.grad, p_cpu.grad, n)
            grads += 1
    assert grads > 0  # the trainable Q-network (the interaction model is frozen)


class _Recorder(torch.nn.Module):
    """Calls the policy on every frame (no session) and records its scores and choices."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.scores: list[torch.Tensor] = []
        self.actions: list[int] = []
        self.margins: list[float] = []

    def forward(self, images, directions, missions):
        scores = self.policy(images, directions, missions)
        top = scores.float().topk(2, dim=-1).values
        self.scores += list(scores.float().cpu())
        self.margins += (top[:, 0] - top[:, 1]).cpu().tolist()
        self.actions += scores.argmax(-1).cpu().tolist()
        return scores


@requires_gpu
@pytest.mark.parametrize("policy_cls", [FilmPolicy, TransformerPolicy])
def test_vectorised_evaluator_same_episodes_on_the_device(policy_cls) -> None:
    """The evaluator with a device policy plays the CPU policy's episodes.

    Freshly initialised policies pick nearly one action everywhere, so the weights get a
    seeded perturbation first: the greedy actions then vary from frame to frame (several
    actions, clear margins). Untrained policies do not finish these missions within the
    step limit, so success is all False on both sides; the frame-by-frame scores and choices
    are what show the device path equal.
    """
    device = torch.device(gpu_device())
    cpu_model, dev_model = _pair(policy_cls, device)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p_cpu, p_dev in zip(cpu_model.parameters(), dev_model.parameters(), strict=True):
            noise = 0.3 * torch.randn(p_cpu.shape, generator=generator)
            p_cpu.add_(noise)
            p_dev.add_(noise.to(device))
    seeds = [5, 8, 13, 21]
    # The fast path (the policy's rollout session, if any) on each device.
    cpu_eps = rollout(cpu_model, seeds, batch_size=2)
    dev_eps = rollout(dev_model, seeds, batch_size=2)
    assert dev_eps.success.tolist() == cpu_eps.success.tolist()
    assert dev_eps.length.tolist() == cpu_eps.length.tolist()
    assert dev_eps.missions == cpu_eps.missions
    # Every greedy decision, frame by frame (the policy called directly).
    cpu_rec, dev_rec = _Recorder(cpu_model), _Recorder(dev_model)
    rollout(cpu_rec, seeds, batch_size=2, fast=False)
    rollout(dev_rec, seeds, batch_size=2, fast=False)
    assert len(set(cpu_rec.actions)) >= 2  # the comparison is not of one constant action
    # Up to the first float-level tie (if any) the two see the same frames: same choices
    # and the same scores.
    unclear = [i for i, m in enumerate(cpu_rec.margins) if m <= MIN_MARGIN]
    upto = unclear[0] if unclear else len(cpu_rec.actions)
    assert upto >= 0.5 * len(cpu_rec.actions) > 0
    assert dev_rec.actions[:upto] == cpu_rec.actions[:upto]
    for got, want in zip(dev_rec.scores[:upto], cpu_rec.scores[:upto], strict=True):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
