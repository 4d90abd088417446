"""CUDA checks (``-m gpu``): the smoke commands on the device, and CPU-versus-device parity.

``COMPKIT_GPU_TESTS_ON_CPU=1`` runs them on the CPU (the parity checks then compare the
CPU with itself); see ``compkit_utils.testing.requires_gpu``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compile_seg import lstm
from compile_seg import model as model_module
from compile_seg.cli import main
from compile_seg.data import generate_batch
from compile_seg.losses import compute_losses
from compile_seg.model import CompILE
from compkit_utils.testing import (
    assert_run_dir,
    gpu_device,
    no_tf32,  # noqa: F401  (a fixture, used by pytestmark)
    requires_gpu,
)

# Float32 on both sides with TF32 off: the device's LSTM (cuBLAS) and the CPU's native kernels
# sum in other orders, ~1e-7 relative per product; through the 3 segments' recurrences of
# ~20 steps and the loss's reductions that grows to ~1e-6..1e-5. 1e-4 leaves 10x margin and
# still fails on any real error (a wrong gate or mask moves the loss by >1e-2).
ATOL = RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("no_tf32")


@requires_gpu
def test_smoke_commands_on_the_device(tmp_path):
    device = gpu_device()
    assert main(["train", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]) == 0
    train_runs = sorted((tmp_path / "compile-seg").iterdir())
    assert len(train_runs) == 1
    records = assert_run_dir(train_runs[0], checkpoint=True, min_records=3)
    assert "heldout/rec_acc" in records[-1]
    assert json.loads((train_runs[0] / "config.json").read_text())["device"] == device
    # evaluate --smoke finds that smoke run's checkpoint and evaluates it on the device.
    assert main(["evaluate", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]) == 0
    eval_runs = [p for p in (tmp_path / "compile-seg").iterdir() if p not in train_runs]
    assert len(eval_runs) == 1
    records = assert_run_dir(eval_runs[0], checkpoint=False, min_records=1)
    assert 0.0 <= records[0]["eval/rec_acc"] <= 1.0
    assert (eval_runs[0] / "segmentation.png").stat().st_size > 0
    assert json.loads((eval_runs[0] / "config.json").read_text())["device"] == device


def _noise_from_cpu(monkeypatch, seed: int) -> None:
    """Draw the Gumbel noise on the CPU and move it: the same draws on every device."""
    generator = torch.Generator().manual_seed(seed)

    def gumbel_noise(shape, device):
        u = torch.rand(shape, generator=generator)
        return (-torch.log(-torch.log(u + model_module.EPS) + model_module.EPS)).to(device)

    monkeypatch.setattr(model_module, "gumbel_noise", gumbel_noise)


@requires_gpu
@pytest.mark.parametrize("training", [True, False])
def test_model_loss_and_gradients_match_the_cpu(monkeypatch, training):
    """CPU (native LSTM kernels where built) and device (PyTorch path): one training step."""
    device = torch.device(gpu_device())
    torch.manual_seed(0)
    # Concrete latents: every random draw goes through gumbel_noise (no randn_like).
    cpu_model = CompILE(hidden_dim=64, latent_dim=8, latent_dist="concrete")
    dev_model = CompILE(hidden_dim=64, latent_dim=8, latent_dist="concrete")
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    cpu_model.train(training)
    dev_model.train(training)
    x, lengths, _ = generate_batch(np.random.default_rng(3), 48).to_torch()
    xs = torch.zeros(1, 1, 4 * 64)
    assert lstm.active_backend(xs.to(device)) == ("torch" if device.type == "cuda" else "native")

    results = []
    for model, inputs, lens in (
        (cpu_model, x, lengths),
        (dev_model, x.to(device), lengths.to(device)),
    ):
        _noise_from_cpu(monkeypatch, seed=5)
        out = model(inputs, lens)
        losses = compute_losses(out, inputs, latent_dist="concrete")
        losses.total.backward()
        grads = {
            n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None
        }
        boundaries = [b.detach().cpu() for b in out.boundaries]
        results.append((losses, grads, boundaries))

    (cpu_losses, cpu_grads, cpu_b), (dev_losses, dev_grads, dev_b) = results
    for field in ("total", "nll", "kl_z", "kl_b"):
        cpu_value = getattr(cpu_losses, field).detach()
        dev_value = getattr(dev_losses, field).detach()
        assert dev_value.device.type == device.type
        torch.testing.assert_close(dev_value.cpu(), cpu_value, atol=ATOL, rtol=RTOL)
    assert cpu_grads.keys() == dev_grads.keys()
    assert len(cpu_grads) >= len(list(cpu_model.parameters())) - 2  # eval: argmax cuts a few
    for name in cpu_grads:
        torch.testing.assert_close(dev_grads[name], cpu_grads[name], atol=ATOL, rtol=RTOL, msg=name)
    for cpu_bm, dev_bm in zip(cpu_b, dev_b, strict=True):
        torch.testing.assert_close(dev_bm, cpu_bm, atol=ATOL, rtol=RTOL)
