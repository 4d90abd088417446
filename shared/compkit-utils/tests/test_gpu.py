"""CUDA checks of the common services (``-m gpu``; ``COMPKIT_GPU_TESTS_ON_CPU=1``: on CPU)."""

from __future__ import annotations

import torch

from compkit_utils.checkpoints import load_checkpoint, make_state, save_checkpoint
from compkit_utils.devices import pick_device, set_threads
from compkit_utils.testing import gpu_device, requires_gpu


@requires_gpu
def test_pick_device_names_the_gpu() -> None:
    device = pick_device(gpu_device())
    assert device.type == gpu_device()
    x = torch.ones(3, device=device)
    assert x.device.type == gpu_device()
    if device.type == "cuda":
        assert pick_device("auto").type == "cuda"
        assert pick_device("cuda:0").index == 0


@requires_gpu
def test_checkpoint_from_device_tensors_loads_on_cpu(tmp_path) -> None:
    device = pick_device(gpu_device())
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 5, device=device)).sum().backward()
    optimizer.step()  # optimizer state (exp_avg…) now lives on the device too
    assert next(model.parameters()).device.type == device.type
    state = make_state(step=1, model=model, optimizer=optimizer)
    path = save_checkpoint(tmp_path / "last.pt", state)

    state = load_checkpoint(path)  # map_location="cpu" by default, weights_only=True
    for name, tensor in state["model"].items():
        assert tensor.device.type == "cpu", name
        assert torch.equal(tensor, model.state_dict()[name].cpu()), name
    for per_param in state["optimizer"]["state"].values():
        for value in per_param.values():
            assert value.device.type == "cpu"
    restored = torch.nn.Linear(5, 3)
    restored.load_state_dict(state["model"])
    assert torch.equal(restored.weight, model.weight.detach().cpu())


@requires_gpu
def test_set_threads_unaffected_by_the_device() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        x = torch.randn(64, 64, device=pick_device(gpu_device()))
        (x @ x).sum().item()  # initialise the device's context
        assert torch.get_num_threads() == 1
        assert set_threads(2) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
