"""CUDA checks (``-m gpu``): the smoke commands on the device, and CPU-versus-device parity.

``COMPKIT_GPU_TESTS_ON_CPU=1`` runs them on the CPU (the parity checks then compare the
CPU with itself); see ``compkit_utils.testing.requires_gpu``. Of the smoke commands only
``expert`` and ``lpn`` take ``--device``; ``collect``, ``arn``, ``bc`` and ``bco`` run on the
CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from compkit_utils.testing import (
    assert_run_dir,
    gpu_device,
    no_tf32,  # noqa: F401  (a fixture, used by pytestmark)
    requires_gpu,
)
from ilpo.cli import main
from ilpo.commands import LPN_FILE, load_lpn
from ilpo.lpn import IMAGE_SIZE, ImageLPN, VectorLPN, lpn_losses, make_optimizer

# Float32 with TF32 off on both sides. The vector LPN is 5 small products deep: cuBLAS and
# MKL sum in other orders, ~1e-7 relative each, so losses and gradients agree to ~1e-6;
# 1e-4 keeps a wide margin yet fails on any wrong term (those move values by >1e-2).
ATOL = RTOL = 1e-4
# The image LPN runs 14 convolution layers over 128x128 frames; cuDNN may pick Winograd or
# FFT algorithms whose float32 error is ~1e-5..1e-4 relative per layer, so allow 1e-3.
IMAGE_ATOL = IMAGE_RTOL = 1e-3


pytestmark = pytest.mark.usefixtures("no_tf32")


@requires_gpu
def test_expert_smoke_on_the_device(tmp_path):
    device = gpu_device()
    argv = ["expert", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]
    argv += ["--run-name", "e"]
    assert main(argv) == 0
    run_dir = tmp_path / "ilpo" / "e"
    records = assert_run_dir(run_dir, checkpoint=False)
    assert records[-1]["expert/return_mean"] > 0
    assert (run_dir / "expert.zip").stat().st_size > 0
    assert json.loads((run_dir / "config.json").read_text())["device"] == device


@requires_gpu
def test_lpn_smoke_on_the_device(tmp_path, capsys):
    device = gpu_device()
    argv = ["lpn", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]
    assert main([*argv, "--run-name", "lpn"]) == 0
    run_dir = tmp_path / "ilpo" / "lpn"
    records = assert_run_dir(run_dir, checkpoint=True, min_records=2)
    assert records[-1]["train/min_loss"] >= 0
    assert f"device {device}" in capsys.readouterr().out  # the device the run used
    model, extra = load_lpn(run_dir)  # saved from device tensors, loads on the CPU
    assert isinstance(model, VectorLPN)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert (run_dir / LPN_FILE).is_file()
    assert extra["env"] == "CartPole-v1"


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


@requires_gpu
def test_vector_lpn_loss_and_grads_match_the_cpu():
    device = torch.device(gpu_device())
    torch.manual_seed(0)
    cpu_model = VectorLPN(state_dim=6, n_latent=4, ngf=32)
    dev_model = VectorLPN(state_dim=6, n_latent=4, ngf=32)
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    make_optimizer(cpu_model)  # attaches the gradient buffers loss_and_grads writes into
    make_optimizer(dev_model)
    s = torch.randn(64, 6)
    s_next = s + 0.1 * torch.randn(64, 6)
    cpu_out = cpu_model.loss_and_grads(s, s_next)
    dev_out = dev_model.loss_and_grads(s.to(device), s_next.to(device))
    assert dev_out.loss.device.type == device.type
    for field in ("loss", "min_loss", "exp_loss", "probs"):
        got, want = getattr(dev_out, field).cpu(), getattr(cpu_out, field)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=field)
    assert torch.equal(dev_out.best.cpu(), cpu_out.best)
    cpu_grads, dev_grads = _grads(cpu_model), _grads(dev_model)
    assert cpu_grads.keys() == {n for n, _ in cpu_model.named_parameters()} == dev_grads.keys()
    for name in cpu_grads:
        torch.testing.assert_close(dev_grads[name], cpu_grads[name], atol=ATOL, rtol=RTOL, msg=name)


def _image_close(on_device: torch.Tensor, on_cpu: torch.Tensor) -> None:
    got, want = on_device.detach().cpu(), on_cpu.detach()
    torch.testing.assert_close(got, want, atol=IMAGE_ATOL, rtol=IMAGE_RTOL)


@requires_gpu
def test_image_lpn_forward_and_loss_match_the_cpu():
    device = torch.device(gpu_device())
    torch.manual_seed(0)
    cpu_model = ImageLPN(n_latent=3, ngf=4).eval()
    dev_model = ImageLPN(n_latent=3, ngf=4).eval()
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    x_next = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    cpu_logits, cpu_deltas = cpu_model(x)
    dev_logits, dev_deltas = dev_model(x.to(device))
    assert dev_deltas.device.type == device.type
    assert dev_deltas.shape == (2, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(
        dev_logits.detach().cpu(), cpu_logits.detach(), atol=IMAGE_ATOL, rtol=IMAGE_RTOL
    )
    torch.testing.assert_close(
        dev_deltas.detach().cpu(), cpu_deltas.detach(), atol=IMAGE_ATOL, rtol=IMAGE_RTOL
    )
    cpu_loss = lpn_losses(cpu_logits, cpu_deltas, x_next - x).loss
    dev_loss = lpn_losses(dev_logits, dev_deltas, (x_next - x).to(device)).loss
    torch.testing.assert_close(
        dev_loss.detach().cpu(), cpu_loss.detach(), atol=IMAGE_ATOL, rtol=IMAGE_RTOL
    )
