"""The program VAE (learning spec §1): parameter counts, shapes, the tensor simulator step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leaps_karel.demos import sample_worlds
from leaps_karel.learn.model import ProgramVAE, step_states
from leaps_karel.learn.pretrain_config import ModelConfig
from leaps_karel.world import World


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_original() -> None:
    model = ProgramVAE()
    assert count(model.encoder) == 239_913
    assert count(model.decoder) == 594_012
    assert count(model.mu) == 65_792
    assert count(model.log_sigma) == 65_792
    assert count(model.executor) == 874_346
    assert count(model) == 1_839_855


def test_shapes() -> None:
    torch.manual_seed(0)
    model = ProgramVAE(ModelConfig(hidden=8))
    ids = torch.tensor([[0, 1, 2, 4, 3] + [50] * 41, [0, 1, 2, 5, 6, 3] + [50] * 40])
    mu, log_sigma = model.encode(ids, torch.tensor([5, 6]))
    assert mu.shape == log_sigma.shape == (2, 8)
    logits = model.decode_teacher(model.sample_z(mu, log_sigma), ids)
    assert logits.shape == (2, 45, 51)
    # the mask forces run, then m( after DEF
    assert logits[:, 0].argmax(-1).tolist() == [1, 1]
    assert logits[:, 1].argmax(-1).tolist() == [2, 2]
    z = torch.randn(6, 8)
    states = torch.zeros(6, 4, 16, 8, 8)
    out = model.executor(z, states, torch.full((6, 4), 5))
    assert out.shape == (6, 4, 6)
    rl, ra = model.executor.rollout(z, states[:, 0], 3, environment=False)
    assert rl.shape == (6, 3, 6)
    assert ra.shape == (6, 3)


def test_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    model = ProgramVAE(ModelConfig(hidden=8))
    a = torch.tensor([[0, 1, 2, 4, 3, 50, 50]])
    b = torch.tensor([[0, 1, 2, 4, 3, 7, 9]])
    assert torch.equal(model.encode(a, torch.tensor([5]))[0], model.encode(b, torch.tensor([5]))[0])


def test_step_states_matches_the_engine() -> None:
    rng = np.random.default_rng(0)
    walls, markers, agents = sample_worlds(rng, 100, wall_prob=0.3, marker_prob=0.3)
    worlds = []
    for i in range(100):
        agent = (int(agents[i, 0]), int(agents[i, 1]), int(agents[i, 2]))
        wall_list = walls[i].reshape(-1).astype(int).tolist()
        worlds.append(World(8, 8, wall_list, markers[i].reshape(-1).astype(int).tolist(), agent))

    def tensors() -> torch.Tensor:
        return torch.tensor(np.stack([w.to_tensor() for w in worlds])).permute(0, 3, 1, 2).float()

    states = tensors()
    for _ in range(40):
        actions = rng.integers(0, 6, 100)
        for w, a in zip(worlds, actions, strict=True):
            w.step(int(a))
        states = step_states(states, torch.tensor(actions))
        assert torch.equal(states, tensors())


def test_weights_round_trip_and_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from compkit_utils.errors import UserError
    from leaps_karel.learn.weights import export_weights, load_model, read_metadata

    torch.manual_seed(0)
    model = ProgramVAE(ModelConfig(hidden=8)).eval()
    path = export_weights(model, tmp_path / "w.safetensors", variant="LEAPSP")
    assert read_metadata(path)["variant"] == "LEAPSP"
    loaded = load_model(path)
    z = torch.randn(5, 8)
    assert torch.equal(loaded.decode_greedy(z), model.decode_greedy(z))
    lean = export_weights(model, tmp_path / "lean.safetensors", variant="LEAPSP",
                          include_executor=False)  # fmt: skip
    assert lean.stat().st_size < path.stat().st_size
    assert torch.equal(load_model(lean).decode_greedy(z), model.decode_greedy(z))

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    meta = read_metadata(path)
    other_vocab = tmp_path / "vocab.safetensors"
    save_file(dict(model.state_dict()), str(other_vocab),
              metadata={**meta, "vocabulary": "a b c"})  # fmt: skip
    other_shape = tmp_path / "shape.safetensors"
    state = dict(model.state_dict())
    state["mu.weight"] = torch.zeros(8, 9)
    save_file(state, str(other_shape), metadata=meta)
    for bad, word in [
        (truncated, "truncated"),
        (garbage, "truncated"),
        (other_vocab, "vocabulary"),
        (other_shape, "shape"),
        (tmp_path / "missing.safetensors", "no such"),
    ]:
        with pytest.raises(UserError, match=word) as info:
            load_model(bad)
        assert str(bad) in str(info.value)
        assert "\n" not in str(info.value)
