from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.config import from_dict, load, to_dict
from compkit_utils.errors import UserError
from compkit_utils.logging import read_metrics
from compkit_utils.testing import assert_run_dir, only_run_dir
from compkit_utils.validate import validate_config
from rim_cells.cli import main
from rim_cells.config import RIMConfig
from rim_cells.minigrid.config import (
    MiniGridTrainConfig,
    ModelConfig,
    PPOConfig,
    zero_shot_envs,
)
from rim_cells.minigrid.envs import (
    make_env,
    make_vector_env,
    preprocess_obs,
    reset_vector_env,
)
from rim_cells.minigrid.model import ActorCritic
from rim_cells.minigrid.ppo import RecurrentPPO, gae, log_prob_entropy

MEMORIES = ["lstm", "rim"]


def tiny_model_cfg(memory: str, **kw: object) -> ModelConfig:
    return ModelConfig(memory=memory, **kw)  # type: ignore[arg-type]


def test_rim_settings_are_the_shared_rim_config_with_flat_flags():
    from rim_cells.config import SeqModelConfig

    assert isinstance(ModelConfig().rim, RIMConfig)
    assert isinstance(SeqModelConfig().rim, RIMConfig)
    assert (ModelConfig().rim.num_units, ModelConfig().rim.hidden_size) == (4, 16)
    assert ModelConfig().hidden_size == ModelConfig(memory="lstm").hidden_size == 64


def test_old_flat_model_config_is_upgraded():
    from rim_cells.config import upgrade_saved_config

    old = to_dict(MiniGridTrainConfig())
    old["model"] = {"memory": "rim", "hidden_size": 64, "num_units": 4, "k_active": 2}
    cfg = from_dict(MiniGridTrainConfig, upgrade_saved_config(old, total_hidden=True))
    assert (cfg.model.rim.num_units, cfg.model.rim.hidden_size, cfg.model.rim.k_active) == (
        4,
        16,
        2,
    )
    assert cfg.model.lstm_hidden == 64
    assert upgrade_saved_config(to_dict(cfg)) == to_dict(cfg)


# --- environments -------------------------------------------------------------------------


def test_env_wrapper_shapes():
    envs = make_vector_env("MiniGrid-Empty-5x5-v0", 3)
    try:
        obs = reset_vector_env(envs, 0)
        assert obs.shape == (3, 7, 7, 3)
        assert obs.dtype == np.uint8
        obs2, reward, terminated, truncated, _ = envs.step(np.zeros(3, dtype=np.int64))
        assert obs2.shape == (3, 7, 7, 3)
        assert reward.shape == terminated.shape == truncated.shape == (3,)
        x = preprocess_obs(obs)
        assert x.shape == (3, 3, 7, 7)
        assert x.dtype == torch.float32
        # channels-first, grid (x, y) order kept, no normalisation
        assert torch.equal(x[1, 0], torch.as_tensor(obs[1, :, :, 0], dtype=torch.float32))
        assert x.max() > 1
    finally:
        envs.close()


def test_env_seeding_is_per_copy_and_reproducible():
    a, b = (
        make_vector_env("MiniGrid-DoorKey-5x5-v0", 4),
        make_vector_env("MiniGrid-DoorKey-5x5-v0", 4),
    )
    try:
        oa, ob = reset_vector_env(a, 3), reset_vector_env(b, 3)
        assert np.array_equal(oa, ob)
        assert not all(np.array_equal(oa[0], oa[i]) for i in range(1, 4))
    finally:
        a.close()
        b.close()


def test_same_step_autoreset_returns_fresh_episode():
    envs = make_vector_env("MiniGrid-Empty-5x5-v0", 1)
    try:
        reset_vector_env(envs, 0)
        # "done" never succeeds in Empty; run until the 100-step timeout
        ends = []
        for _ in range(100):
            _, _, terminated, truncated, _ = envs.step(np.array([6]))
            ends.append((bool(terminated[0]), bool(truncated[0])))
        assert ends[:99] == [(False, False)] * 99
        assert ends[99] == (False, True)
        assert envs.envs[0].unwrapped.step_count == 0  # type: ignore[attr-defined]
    finally:
        envs.close()


def test_async_vector_env_matches_sync():
    sync, subprocs = (
        make_vector_env("MiniGrid-DoorKey-5x5-v0", 2, "sync"),
        make_vector_env("MiniGrid-DoorKey-5x5-v0", 2, "async"),
    )
    try:
        assert np.array_equal(reset_vector_env(sync, 5), reset_vector_env(subprocs, 5))
        actions = np.array([2, 1])
        assert np.array_equal(sync.step(actions)[0], subprocs.step(actions)[0])
    finally:
        sync.close()
        subprocs.close()


def test_unknown_env_is_a_user_error():
    with pytest.raises(UserError, match="MiniGrid-Nope-v0"):
        make_env("MiniGrid-Nope-v0")


def test_zero_shot_variants():
    assert zero_shot_envs("MiniGrid-Empty-5x5-v0") == (
        "MiniGrid-Empty-5x5-v0",
        "MiniGrid-Empty-16x16-v0",
    )
    assert zero_shot_envs("MiniGrid-DoorKey-6x6-v0")[1:] == (
        "MiniGrid-DoorKey-8x8-v0",
        "MiniGrid-DoorKey-16x16-v0",
    )
    assert zero_shot_envs("MiniGrid-Unlock-v0") == ("MiniGrid-Unlock-v0",)
    for env_id in zero_shot_envs("MiniGrid-MultiRoom-N2-S4-v0"):
        make_env(env_id).close()


# --- model --------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", MEMORIES)
def test_model_forward_shapes(memory):
    torch.manual_seed(0)
    model = ActorCritic(tiny_model_cfg(memory))
    obs = torch.randint(0, 6, (5, 3, 7, 7)).float()
    memory_in = torch.randn(5, model.memory_size)
    logits, value, memory_out = model(obs, memory_in)
    assert logits.shape == (5, 7)
    assert value.shape == (5,)
    assert memory_out.shape == (5, 128)
    assert model.embedding_size == 64
    loss = logits.sum() + value.sum() + memory_out.sum()
    loss.backward()
    assert model.image_conv[0].weight.grad is not None
    with pytest.raises(ValueError, match="memory must be"):
        model(obs, memory_in[:, :10])


def test_parameter_counts_match_spec():
    lstm = ActorCritic(tiny_model_cfg("lstm"))
    assert sum(p.numel() for p in lstm.memory_cell.parameters()) == 33_280


def test_linear_init_is_row_normalised():
    model = ActorCritic(tiny_model_cfg("lstm"))
    layer = model.actor[0]
    assert isinstance(layer, torch.nn.Linear)
    w = layer.weight
    assert torch.allclose(w.pow(2).sum(1), torch.ones(w.shape[0]), atol=1e-5)
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("memory", MEMORIES)
def test_cell_state_bug_flag_changes_behaviour(memory):
    torch.manual_seed(0)
    fixed = ActorCritic(tiny_model_cfg(memory)).eval()
    buggy = ActorCritic(tiny_model_cfg(memory, cell_state_bug=True)).eval()
    buggy.load_state_dict(fixed.state_dict())
    obs = torch.randint(0, 6, (4, 3, 7, 7)).float()
    memory_in = torch.randn(4, fixed.memory_size)
    with torch.no_grad():
        lf, _, mf = fixed(obs, memory_in)
        lb, _, mb = buggy(obs, memory_in)
        # with c == h the two agree: the bug only discards the stored c
        same = memory_in.clone()
        same[:, 64:] = same[:, :64]
        assert torch.allclose(fixed(obs, same)[2], buggy(obs, same)[2])
    assert not torch.allclose(mf, mb)
    assert not torch.allclose(lf, lb)


def test_inactive_rim_units_keep_their_memory():
    torch.manual_seed(0)
    rim = dataclasses.replace(ModelConfig().rim, k_active=1)
    model = ActorCritic(tiny_model_cfg("rim", rim=rim)).eval()
    obs = torch.randint(0, 6, (3, 3, 7, 7)).float()
    memory_in = torch.randn(3, model.memory_size)
    with torch.no_grad():
        _, _, memory_out = model(obs, memory_in)
    h_in, h_out = memory_in[:, :64].reshape(3, 4, 16), memory_out[:, :64].reshape(3, 4, 16)
    unchanged = (h_in == h_out).all(dim=2)
    assert (unchanged.sum(dim=1) == 3).all()  # N - k = 3 units untouched per row


# --- PPO ----------------------------------------------------------------------------------


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0], [1.0], [0.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    masks = torch.tensor([[1.0], [1.0], [0.0]])  # step 2 starts a new episode
    adv = gae(rewards, values, masks, torch.tensor([0.2]), torch.tensor([1.0]), 0.9, 0.5)
    a2 = 0.0 + 0.9 * 0.2 - 0.3
    a1 = 1.0 + 0.9 * 0.3 * 0.0 - 0.4
    a0 = (0.0 + 0.9 * 0.4 - 0.5) + 0.9 * 0.5 * a1
    assert torch.allclose(adv[:, 0], torch.tensor([a0, a1, a2]))


def test_log_prob_entropy_matches_categorical():
    logits = torch.randn(6, 7)
    actions = torch.randint(0, 7, (6,))
    log_prob, entropy = log_prob_entropy(logits, actions)
    dist = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(log_prob, dist.log_prob(actions))
    assert torch.allclose(entropy, dist.entropy())


def _algo(memory: str, seed: int = 0) -> tuple[RecurrentPPO, ActorCritic]:
    torch.manual_seed(seed)
    cfg = PPOConfig(frames_per_proc=16, recurrence=4, batch_size=16, epochs=2)
    model = ActorCritic(tiny_model_cfg(memory))
    envs = make_vector_env("MiniGrid-Empty-5x5-v0", 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return RecurrentPPO(model, envs, cfg, opt, np.random.default_rng(seed), env_seed=seed), model


def test_chunk_starts_alternate_offsets():
    algo, _ = _algo("lstm")
    try:
        even = np.concatenate(algo.chunk_starts())
        odd = np.concatenate(algo.chunk_starts())
        assert sorted(even) == list(range(0, 32, 4))
        # shifted by half a chunk; chunks crossing an env's 16-step boundary dropped
        assert sorted(odd) == [2, 6, 10, 18, 22, 26]
    finally:
        algo.envs.close()


@pytest.mark.parametrize("memory", MEMORIES)
def test_ppo_update_runs_and_changes_parameters(memory):
    algo, model = _algo(memory)
    try:
        before = [p.detach().clone() for p in model.parameters()]
        exps, _ = algo.collect()
        assert exps.obs.shape == (32, 3, 7, 7)
        assert exps.memory.shape == (32, 128)
        stored_memory = exps.memory.clone()
        logs = algo.update(exps)
        assert all(np.isfinite(v) for v in logs.values())
        # the RIM's input-key bias adds the same term to both slot scores, which the two-slot
        # softmax cancels: it never gets a gradient (see rim_cells.cell.RIMCell)
        frozen = {"memory_cell.cell.input_key.bias"}
        for (name, p), b in zip(model.named_parameters(), before, strict=True):
            assert torch.equal(b, p) == (name in frozen), name
        # recomputed memories were written back into the rollout
        assert not torch.equal(stored_memory, exps.memory)
    finally:
        algo.envs.close()


# --- CLI runs -----------------------------------------------------------------------------


def _smoke(tmp_path: Path, *extra: str) -> Path:
    runs = tmp_path / "runs"
    assert main(["minigrid", "train", "--smoke", "--runs-dir", str(runs), *extra]) == 0
    return only_run_dir(runs, "rim-cells")


def test_smoke_run_writes_complete_run_dir(tmp_path):
    run_dir = _smoke(tmp_path, "--model.memory", "lstm")
    records = assert_run_dir(run_dir, min_records=2)
    assert [r["step"] for r in records[:2]] == [1, 2]
    assert [r["env_steps"] for r in records[:2]] == [32, 64]
    assert "eval/return_mean" in records[-1]
    cfg = load(run_dir / "config.json", MiniGridTrainConfig)
    assert cfg.env.num_envs == 2
    assert from_dict(MiniGridTrainConfig, to_dict(cfg)) == cfg


def _comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def test_seeded_run_is_deterministic(tmp_path):
    a = _smoke(tmp_path / "a", "--model.memory", "rim", "--seed", "3")
    b = _smoke(tmp_path / "b", "--model.memory", "rim", "--seed", "3")
    assert _comparable(read_metrics(a)) == _comparable(read_metrics(b))
    c = _smoke(tmp_path / "c", "--model.memory", "rim", "--seed", "4")
    assert _comparable(read_metrics(a)) != _comparable(read_metrics(c))


def test_resume_continues_from_last_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    base = ["minigrid", "train", "--smoke", "--model.memory", "lstm", "--runs-dir", str(runs)]
    assert main([*base, "--run-name", "r", "--eval-episodes", "0"]) == 0
    run_dir = runs / "rim-cells" / "r"
    assert main([*base, "--run-name", "r", "--resume", "--frames", "128"]) == 0
    records = read_metrics(run_dir)
    assert [r["step"] for r in records if "train/entropy" in r] == [1, 2, 3, 4]
    assert records[-1]["env_steps"] == 128
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    base = ["minigrid", "train", "--smoke", "--model.memory", "lstm", "--runs-dir", str(runs)]
    base += ["--run-name", "r", "--eval-episodes", "0", "--frames", "96"]
    real_update, calls = RecurrentPPO.update, []

    def interrupted_update(self, exps):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_update(self, exps)

    monkeypatch.setattr(RecurrentPPO, "update", interrupted_update)
    assert main(base) == 130
    assert "interrupted; rerun with --resume" in capsys.readouterr().err
    run_dir = runs / "rim-cells" / "r"
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 1
    monkeypatch.setattr(RecurrentPPO, "update", real_update)
    assert main([*base, "--resume"]) == 0
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 3


def test_evaluate_and_visualize(tmp_path, capsys):
    run_dir = _smoke(tmp_path, "--model.memory", "lstm", "--eval-episodes", "0")
    ckpt = run_dir / "checkpoints" / "last.pt"
    out_json = tmp_path / "eval.json"
    argv = ["minigrid", "evaluate", "--checkpoint", str(ckpt), "--episodes", "3"]
    assert main([*argv, "--env", "MiniGrid-Empty-6x6-v0", "--output", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| MiniGrid-Empty-6x6-v0 | 3 |" in printed
    results = json.loads(out_json.read_text())["results"]["MiniGrid-Empty-6x6-v0"]
    assert results["episodes"] == 3
    assert 0.0 <= results["return_mean"] <= 1.0
    gif = tmp_path / "ep.gif"
    argv = ["minigrid", "visualize", "--checkpoint", str(ckpt), "--out", str(gif)]
    assert main([*argv, "--max-steps", "5", "--tile-size", "8"]) == 0
    from PIL import Image

    with Image.open(gif) as image:
        assert image.size == (40, 40)
        # Pillow merges identical consecutive frames, adding up their durations (GIF stores
        # centiseconds, so each frame's 167 ms may be rounded by up to 10 ms)
        total = 0
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            total += image.info["duration"]
        assert abs(total - 6 * 167) <= 60


def test_bad_inputs_are_user_errors(tmp_path, capsys):
    assert main(["minigrid", "evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt: file not found" in capsys.readouterr().err
    argv = ["minigrid", "train", "--runs-dir", str(tmp_path), "--ppo.recurrence", "5"]
    assert main(argv) == 2
    assert "--ppo.frames-per-proc (128) must be a multiple" in capsys.readouterr().err
    assert main(["minigrid", "train", "--smoke", "--runs-dir", str(tmp_path), "--resume"]) == 2
    assert "--resume: no minigrid-train run" in capsys.readouterr().err
    rim = RIMConfig(num_units=4, k_active=5)
    with pytest.raises(UserError, match="k-active"):
        validate_config(MiniGridTrainConfig(model=ModelConfig(rim=rim)))
