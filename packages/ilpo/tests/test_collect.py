"""`ilpo expert` and `ilpo collect` end to end at smoke size (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compkit_utils.datasets.info import verify_info
from compkit_utils.testing import assert_run_dir
from ilpo.cli import main
from ilpo.collect import noisy_rollouts, text_paths
from ilpo.data import load_transitions
from ilpo.data.hdf5 import HDF5_FILE
from ilpo.experts import expert_settings, load_expert


@pytest.fixture
def expert_run(smoke_expert: Path) -> Path:
    return smoke_expert


def test_expert_run_directory(expert_run: Path) -> None:
    records = assert_run_dir(expert_run, checkpoint=False)
    assert records[-1]["expert/episodes"] == 2
    assert records[-1]["expert/return_mean"] > 0
    assert json.loads((expert_run / "expert.json").read_text())["env"] == "CartPole-v1"
    # SB3's progress table is written into the run, not into a new folder of the temp dir
    progress = (expert_run / "sb3" / "progress.csv").read_text().splitlines()
    assert "time/" in progress[0]
    assert len(progress) >= 2
    policy, env = load_expert(expert_run)
    assert env == "CartPole-v1"
    assert policy(np.zeros(4, dtype=np.float32)) in (0, 1)


def test_expert_settings_follow_the_spec() -> None:
    ppo = expert_settings("CartPole-v1", "ppo")
    assert ppo["n_envs"] == 8
    assert ppo["kwargs"]["n_steps"] == 32
    assert ppo["kwargs"]["gamma"] == 0.98
    assert ppo["stop_eval_return"] == 500.0
    dqn = expert_settings("CartPole-v1", "dqn")
    assert dqn["kwargs"]["gamma"] == 1.0
    assert dqn["kwargs"]["policy_kwargs"] == {"net_arch": [64]}
    assert dqn["stop_mean_reward"] == 199.0
    assert expert_settings("Acrobot-v1", "dqn")["stop_mean_reward"] is None
    zoo = expert_settings("MountainCar-v0", "dqn-zoo")
    assert zoo["timesteps"] == 120_000
    assert zoo["kwargs"]["policy_kwargs"] == {"net_arch": [256, 256]}


def test_collect_writes_every_format(expert_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["collect", "--expert", str(expert_run), "--transitions", "300"]
    assert main([*args, "--runs-dir", str(runs), "--run-name", "c"]) == 0
    run = runs / "ilpo" / "c"
    records = assert_run_dir(run, checkpoint=False)
    assert records[-1]["demonstrator/transitions"] >= 300
    verify_info(run)
    info = json.loads((run / "dataset_info.json").read_text())
    assert set(info["files"]) == {
        HDF5_FILE,
        "CartPole-v1/CartPole-v1.txt",
        "CartPole-v1_bc/CartPole-v1_bc.txt",
    }
    h5 = load_transitions(run, env="CartPole-v1")
    states_dir, bc_dir = (p.parent for p in text_paths(run, "CartPole-v1"))
    text = load_transitions(states_dir, kind="states", env="CartPole-v1")
    bc = load_transitions(bc_dir, kind="bc", env="CartPole-v1")
    assert len(h5) == len(text) == len(bc) == records[-1]["demonstrator/transitions"]
    np.testing.assert_array_equal(text.states, h5.states)
    np.testing.assert_array_equal(bc.next_states, h5.next_states)
    assert h5.actions is not None
    np.testing.assert_array_equal(bc.actions, h5.actions)
    # whole episodes: each episode ends with terminated or truncated, and only there
    assert h5.terminated is not None
    assert h5.truncated is not None
    ends = h5.terminated | h5.truncated
    last_of_episode = np.r_[h5.episode_ids[1:] != h5.episode_ids[:-1], True]
    np.testing.assert_array_equal(ends, last_of_episode)
    # the text format has no separators; continuity recovers the same episodes
    np.testing.assert_array_equal(text.episode_ids, h5.episode_ids)


def test_noisy_demonstrator_mixes_expert_and_random_actions() -> None:
    def always_one(_obs: np.ndarray) -> int:
        return 1

    data, returns = noisy_rollouts(always_one, "CartPole-v1", 2000, greedy_prob=0.75, seed=3)
    assert data.actions is not None
    share = float(np.mean(data.actions == 1))
    assert 0.80 < share < 0.95  # 0.75 + 0.25 / 2 = 0.875
    assert len(returns) == data.num_episodes
    assert sum(returns) == pytest.approx(len(data))  # CartPole: +1 per step
    again, _ = noisy_rollouts(always_one, "CartPole-v1", 2000, greedy_prob=0.75, seed=3)
    np.testing.assert_array_equal(again.states, data.states)


def test_collect_smoke_trains_or_reuses_an_expert(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert main(["collect", "--smoke", "--runs-dir", str(runs), "--transitions", "50"]) == 0
    assert main(["collect", "--smoke", "--runs-dir", str(runs), "--transitions", "50"]) == 0
    names = sorted(p.name.split("__")[0] for p in (runs / "ilpo").iterdir())
    assert names == ["collect", "collect", "expert"]


def test_inspect_prints_a_summary(expert_run: Path, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    args = ["collect", "--expert", str(expert_run), "--transitions", "100"]
    assert main([*args, "--runs-dir", str(runs), "--run-name", "c"]) == 0
    capsys.readouterr()
    bc_dir = text_paths(runs / "ilpo" / "c", "CartPole-v1")[1].parent
    assert main(["inspect", "--data", str(bc_dir), "--env", "CartPole-v1"]) == 0
    out = capsys.readouterr().out
    assert "(with actions), state dim 4" in out
    assert "fits CartPole-v1" in out


def test_dqn_expert_with_the_original_settings(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["expert", "--algo", "dqn", "--timesteps", "1100", "--eval-episodes", "1"]
    assert main([*args, "--runs-dir", str(runs), "--run-name", "d"]) == 0
    meta = json.loads((runs / "ilpo" / "d" / "expert.json").read_text())
    assert meta["algo"] == "dqn"
    assert meta["timesteps"] == 1100
    policy, env = load_expert(runs / "ilpo" / "d" / "expert.zip")
    assert env == "CartPole-v1"
    assert policy(np.zeros(4, dtype=np.float32)) in (0, 1)
