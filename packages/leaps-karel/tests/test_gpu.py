"""CUDA checks (``-m gpu``): the smoke commands on the device, and CPU-versus-device parity.

``COMPKIT_GPU_TESTS_ON_CPU=1`` runs them on the CPU (the parity checks then compare the
CPU with itself); see ``compkit_utils.testing.requires_gpu``. Of the smoke commands only
``pretrain`` takes ``--device``: ``cem`` decodes with torch on the CPU, the others are the
NumPy engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.testing import (
    assert_run_dir,
    gpu_device,
    no_tf32,  # noqa: F401  (a fixture, used by pytestmark)
    requires_gpu,
)
from leaps_karel.cli import main
from leaps_karel.learn import pretrain as pretrain_module
from leaps_karel.learn.data import smoke_program_data
from leaps_karel.learn.model import ProgramVAE
from leaps_karel.learn.pretrain_config import VARIANTS, ModelConfig

# Float32 with TF32 off on both sides. The GRUs run 45 steps (cuDNN versus the CPU kernel,
# other summation orders, ~1e-7 relative per product); through the recurrences, the
# executor's CNN and the losses' reductions the difference grows to ~1e-6..1e-5. 1e-4 keeps
# a wide margin; a wrong mask or state moves the losses by >1e-2.
ATOL = RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("no_tf32")


@requires_gpu
def test_pretrain_smoke_on_the_device(tmp_path: Path) -> None:
    device = gpu_device()
    argv = ["pretrain", "--smoke", "--no-progress", "--device", device]
    assert main([*argv, "--runs-dir", str(tmp_path), "--run-name", "p"]) == 0
    run_dir = tmp_path / "leaps-karel" / "p"
    records = assert_run_dir(run_dir, checkpoint=True, min_records=2)
    for key in ("eval/greedy_program_acc", "train/token_acc", "rl/reward"):
        assert key in records[-1]
    assert json.loads((run_dir / "config.json").read_text())["device"] == device
    from leaps_karel.learn.weights import load_model

    model = load_model(run_dir / "weights" / "LEAPS.safetensors")  # device weights, on CPU
    assert model.decode_greedy(torch.zeros(2, 16)).shape == (2, 45)


def _cpu_noise(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """``sample_z`` with ε drawn on the CPU and moved: the same draws on every device."""
    generator = torch.Generator().manual_seed(seed)

    def sample_z(mu, log_sigma, _generator=None):
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(log_sigma) * eps

    monkeypatch.setattr(ProgramVAE, "sample_z", staticmethod(sample_z))


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


@requires_gpu
def test_program_vae_losses_gradients_and_greedy_decode_match_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = torch.device(gpu_device())
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=32, executor_steps=20)
    cpu_model = ProgramVAE(cfg)
    dev_model = ProgramVAE(cfg)
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    data = smoke_program_data(16, seed=0)
    rows = np.arange(12)
    variant = VARIANTS["LEAPS"]  # program + KL + executor losses

    results = []
    for model, where in ((cpu_model, torch.device("cpu")), (dev_model, device)):
        _cpu_noise(monkeypatch, seed=3)
        batch = pretrain_module._batch(data, rows, where)
        out = pretrain_module.supervised_losses(model, batch, variant, kl_coef=0.1)
        out["total"].backward()
        losses = {k: out[k].detach().cpu() for k in ("total", "program", "kl", "executor")}
        assert out["total"].device.type == where.type
        results.append((losses, _grads(model)))
    (cpu_losses, cpu_grads), (dev_losses, dev_grads) = results
    assert float(cpu_losses["executor"]) > 0  # the executor term is really in the comparison
    for key, value in cpu_losses.items():
        torch.testing.assert_close(dev_losses[key], value, atol=ATOL, rtol=RTOL, msg=key)
    assert cpu_grads.keys() == dev_grads.keys()
    assert len(cpu_grads) > 10
    for name in cpu_grads:
        torch.testing.assert_close(dev_grads[name], cpu_grads[name], atol=ATOL, rtol=RTOL, msg=name)

    # Grammar-masked greedy decoding: the same programs, and every one allowed by the grammar.
    z = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
    cpu_tokens = cpu_model.decode_greedy(z)
    dev_tokens = dev_model.decode_greedy(z.to(device))
    assert dev_tokens.device.type == device.type
    assert dev_tokens.shape == (8, cfg.decode_steps)
    assert torch.equal(dev_tokens.cpu(), cpu_tokens)
