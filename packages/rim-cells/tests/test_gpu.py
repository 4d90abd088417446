"""CUDA checks (``-m gpu``): the smoke commands on the device, and CPU-versus-device parity.

``COMPKIT_GPU_TESTS_ON_CPU=1`` runs them on the CPU (the parity checks then compare the
CPU with itself); see ``compkit_utils.testing.requires_gpu``.
"""

from __future__ import annotations

import json

import pytest
import torch

from compkit_utils.config import load
from compkit_utils.testing import (
    assert_run_dir,
    gpu_device,
    no_tf32,  # noqa: F401  (a fixture, used by pytestmark)
    only_run_dir,
    requires_gpu,
)
from rim_cells import RIM, RIMCell, _native
from rim_cells.cli import main
from rim_cells.config import SeqMnistTrainConfig
from rim_cells.minigrid.config import MiniGridTrainConfig

# Float32 on both sides with TF32 off: cuBLAS and the CPU (native C kernels for LSTM units)
# sum in other orders, ~1e-7 relative per product, growing through 12 recurrent steps, the
# attention softmaxes and the backward pass to ~1e-6..1e-5. 1e-4 keeps a 10x margin; a wrong
# gate, mask or top-k choice moves outputs by >1e-2.
ATOL = RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("no_tf32")


@requires_gpu
def test_constructed_with_device_and_moved():
    device = gpu_device()
    model = RIM(device, 16, 24, 6, 4, "LSTM", 2, True)
    out, h, c = model(torch.randn(7, 4, 16, device=device))
    assert out.device.type == h.device.type == c.device.type == device
    assert all(p.device.type == device for p in model.parameters())
    cell = RIMCell(torch.device("cpu"), 8, 8, 4, 2).to(device)
    hs, cs = cell(torch.randn(3, 1, 8, device=device))
    assert hs.device.type == device
    assert cs is not None
    assert cs.device.type == device


@requires_gpu
def test_seqmnist_smoke_on_the_device(tmp_path):
    device = gpu_device()
    assert (
        main(["seqmnist", "train", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]) == 0
    )
    run_dir = only_run_dir(tmp_path, "rim-cells")
    records = assert_run_dir(run_dir)
    assert {"train/loss", "eval/acc_8", "eval/acc_10"} <= set(records[0])
    assert load(run_dir / "config.json", SeqMnistTrainConfig).device == device


@requires_gpu
def test_minigrid_smoke_on_the_device(tmp_path):
    device = gpu_device()
    argv = ["minigrid", "train", "--smoke", "--device", device, "--runs-dir", str(tmp_path)]
    assert main(argv) == 0
    run_dir = only_run_dir(tmp_path, "rim-cells")
    records = assert_run_dir(run_dir, min_records=2)
    assert "eval/return_mean" in records[-1]
    assert load(run_dir / "config.json", MiniGridTrainConfig).device == device


@requires_gpu
def test_bench_quick_on_the_device(tmp_path, capsys):
    device = gpu_device()
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--device", device, "--sweep-units", "2", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith(device)  # the run records the device it used
    # The native kernels are CPU-only: on CUDA the PyTorch path runs.
    if device == "cuda":
        assert result["kernels"] == "torch"
    for timing in result["times"].values():
        assert timing["min_ms"] > 0
    assert f"device {device}" in capsys.readouterr().out


@requires_gpu
@pytest.mark.parametrize("rnn_cell", ["LSTM", "GRU"])
def test_rim_outputs_and_gradients_match_the_cpu(rnn_cell):
    """Same weights and inputs: CPU (native kernels for LSTM) and device agree, fwd + bwd."""
    device = torch.device(gpu_device())
    torch.manual_seed(0)
    # Train mode without dropout: no random masks, so both sides compute the same function.
    cpu_model = RIM(None, 16, 32, 6, 4, rnn_cell, 2, True, input_dropout=0.0, comm_dropout=0.0)
    dev_model = RIM(None, 16, 32, 6, 4, rnn_cell, 2, True, input_dropout=0.0, comm_dropout=0.0)
    dev_model.load_state_dict(cpu_model.state_dict())
    dev_model.to(device)
    x = torch.randn(12, 5, 16)
    target = torch.randn(12, 5, 2 * 6 * 32)

    results = []
    for model, inputs, goal in (
        (cpu_model, x, target),
        (dev_model, x.to(device), target.to(device)),
    ):
        model.train()
        out, h, *_ = model(inputs)
        loss = torch.nn.functional.mse_loss(out, goal)
        loss.backward()
        grads = {
            n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None
        }
        results.append((out.detach().cpu(), h.detach().cpu(), loss.detach().cpu(), grads))
    if rnn_cell == "LSTM":
        cell = dev_model.cells[0]
        assert isinstance(cell, RIMCell)
        expected = "torch" if device.type == "cuda" else "native"
        if device.type == "cuda" or _native.SWITCH.native_allowed():
            assert _native.active_backend(cell, x.to(device)) == expected

    (cpu_out, cpu_h, cpu_loss, cpu_grads), (dev_out, dev_h, dev_loss, dev_grads) = results
    torch.testing.assert_close(dev_out, cpu_out, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(dev_h, cpu_h, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(dev_loss, cpu_loss, atol=ATOL, rtol=RTOL)
    assert cpu_grads.keys() == dev_grads.keys()
    assert len(cpu_grads) > 10
    for name in cpu_grads:
        torch.testing.assert_close(dev_grads[name], cpu_grads[name], atol=ATOL, rtol=RTOL, msg=name)
