from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from factored_attention_babyai import blocks, generate
from factored_attention_babyai.cli import main
from factored_attention_babyai.env import agent_position, make_env
from factored_attention_babyai.storage import KEYS
from factored_attention_babyai.vocab import (
    GOALS,
    HELD_OUT,
    ID_GOALS,
    OOD_GOALS,
    parse_goal,
    tokenize,
)

from .conftest import SMALL_PER_GOAL, generate_args

COLOR_IDX = {"red": 0, "green": 1, "blue": 2, "purple": 3, "yellow": 4, "grey": 5}
TYPE_IDX = {"key": 5, "ball": 6, "box": 7}
FRONT = {0: (0, 1), 1: (1, 0), 2: (0, -1), 3: (-1, 0)}  # direction → (drow, dcol)


def read_all(path: Path) -> dict[str, dict[str, np.ndarray]]:
    handle: Any
    with h5py.File(path / "data.hdf5", "r") as handle:
        return {
            split: {k: np.asarray(handle[split][k]) for k in KEYS} for split in ("train", "valid")
        }


def test_last_stored_frame_faces_a_target(small_dataset: Path) -> None:
    data = read_all(small_dataset)
    for split in data.values():
        for i in range(len(split["envs"])):
            t = int(split["trajectory_lengths"][i])
            _, color, kind = parse_goal(GOALS[int(split["goals"][i])])
            frame = split["image_trajectories"][i, t - 1]
            row, col = agent_position(frame)
            drow, dcol = FRONT[int(split["direction_trajectories"][i, t - 1])]
            front = frame[row + drow, col + dcol]
            assert (front[0], front[1]) == (TYPE_IDX[kind], COLOR_IDX[color])
            assert split["targets"][i][row + drow, col + dcol]
            assert split["action_trajectories"][i, t - 1] == 6  # done
            # No earlier frame faces a target with `done` (the bot goes straight there).
            assert (split["action_trajectories"][i, : t - 1] != 6).all()


def test_rewards_returns_masks_and_padding(small_dataset: Path) -> None:
    data = read_all(small_dataset)
    for split in data.values():
        tmax = split["image_trajectories"].shape[1]
        for i in range(len(split["envs"])):
            t = int(split["trajectory_lengths"][i])
            assert t >= 7
            assert split["rewarding_idxs"][i] == t - 1
            expected = np.zeros(tmax)
            expected[:t] = 0.9 ** (t - 1 - np.arange(t))
            np.testing.assert_allclose(split["returns"][i], expected, rtol=1e-6)
            assert split["rewards"][i].tolist() == [float(s == t - 1) for s in range(tmax)]
            assert split["trajectory_masks"][i].tolist() == [s < t for s in range(tmax)]
            assert (split["action_trajectories"][i, t:] == -1).all()
            assert (split["image_trajectories"][i, t:] == 0).all()
            assert (split["mission_masks"][i] == 1).all()
    tmax = max(int(s["trajectory_lengths"].max()) for s in data.values())
    assert data["train"]["image_trajectories"].shape[1] == tmax  # both padded to the longest
    assert data["valid"]["image_trajectories"].shape[1] == tmax


def test_split_membership_and_quotas(small_dataset: Path) -> None:
    data = read_all(small_dataset)
    train_goals = [GOALS[g] for g in data["train"]["goals"].tolist()]
    valid_goals = [GOALS[g] for g in data["valid"]["goals"].tolist()]
    assert sorted(set(train_goals)) == sorted(ID_GOALS)
    assert sorted(set(valid_goals)) == sorted(OOD_GOALS)
    assert {parse_goal(g)[1:] for g in valid_goals} == set(HELD_OUT)
    for det in ("a", "the"):  # both determiners of every held-out pair are held out
        for color, kind in HELD_OUT:
            assert valid_goals.count(f"go to {det} {color} {kind}") == SMALL_PER_GOAL
    assert all(train_goals.count(g) == SMALL_PER_GOAL for g in ID_GOALS)
    for split, goals in (("train", train_goals), ("valid", valid_goals)):
        missions = data[split]["missions"]
        assert [tokenize(g).tolist() for g in goals] == missions.astype(int).tolist()
        assert (np.diff(data[split]["envs"]) > 0).all()  # seed order
    with h5py.File(small_dataset / "data.hdf5", "r") as handle:
        words = str(handle.attrs["words"])
    assert words.split() == sorted(words.split())


def test_demos_replay_from_their_seed(small_dataset: Path) -> None:
    data = read_all(small_dataset)["valid"]
    env = make_env()
    for i in range(0, len(data["envs"]), 5):
        obs, _ = env.reset(seed=int(data["envs"][i]))
        assert obs["mission"] == GOALS[int(data["goals"][i])]
        assert np.array_equal(obs["target_mask"], data["targets"][i])
        t = int(data["trajectory_lengths"][i])
        terminated, reward = False, 0.0
        for s in range(t):
            assert np.array_equal(obs["image"], data["image_trajectories"][i, s])
            assert obs["direction"] == data["direction_trajectories"][i, s]
            obs, reward, terminated, _, _ = env.step(int(data["action_trajectories"][i, s]))
        assert terminated
        assert reward > 0


def test_same_output_for_any_n_procs_and_block_size(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    assert main(generate_args(out, "--per-goal", "1", "--n-procs", "2", "--block-size", "100")) == 0
    a, b = read_all(tiny_dataset), read_all(out)
    for split in a:
        for key in KEYS:
            assert np.array_equal(a[split][key], b[split][key]), (split, key)
    assert not (out / ".shards").exists()


def test_first_kept_seeds_per_goal(tiny_dataset: Path) -> None:
    """Per goal, the stored seed is the first seed whose bot solution has >= 7 actions."""
    data = read_all(tiny_dataset)
    stored = {
        GOALS[g]: int(s)
        for split in data.values()
        for g, s in zip(split["goals"], split["envs"], strict=True)
    }
    env = make_env()
    for goal in ("go to the red key", "go to a grey box"):
        seed = 1
        while True:
            demo = blocks.solve_seed(env, seed)
            assert demo is not None
            if GOALS[demo["goal"]] == goal and demo["success"] and len(demo["actions"]) >= 7:
                break
            seed += 1
        assert stored[goal] == seed


def test_resume_after_a_killed_block(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "resumed"
    args = generate_args(out, "--per-goal", "1", "--block-size", "256")
    real = generate.solve_block  # pyright: ignore[reportPrivateImportUsage]
    calls = {"n": 0}

    def killed_on_third(job: dict) -> dict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the process dies while solving the third block
        return real(job)

    monkeypatch.setattr(generate, "solve_block", killed_on_third)
    assert main(args) == 130
    shards = out / ".shards"
    assert sorted(p.name for p in shards.glob("block_*.npz")) == [
        "block_000000.npz",
        "block_000001.npz",
    ]
    assert not (out / "data.hdf5").exists()
    assert not (out / "dataset_info.json").exists()
    # Also: block 1 renamed into place but its checksum never recorded (killed in between),
    # and a temporary file of a write in progress.
    (shards / "block_000001.sha256").unlink()
    (shards / ".block_000002.npz.abc.tmp").write_bytes(b"partial")
    monkeypatch.setattr(generate, "solve_block", real)
    capsys.readouterr()
    assert main(args) == 2  # without --resume: refuses, names the flag
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "blocks: " in capsys.readouterr().out
    a, b = read_all(tiny_dataset), read_all(out)
    for split in a:
        for key in KEYS:
            assert np.array_equal(a[split][key], b[split][key]), (split, key)
    assert not list(out.rglob("*.tmp"))
    # --resume on the finished dataset verifies it and changes nothing.
    before = (out / "data.hdf5").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0
    assert (out / "data.hdf5").stat().st_mtime_ns == before


def test_corrupt_block_is_solved_again(tmp_path: Path) -> None:
    out = tmp_path / "blocks"
    path = blocks.block_path(out, 0)
    job = {
        "block": 0,
        "first_seed": 1,
        "block_size": 40,
        "min_length": 7,
        "skip": [],
        "path": str(path),
    }
    summary = blocks.solve_block(job)
    blocks.record_checksum(path)
    reloaded = blocks.load_block_summary(path)
    assert reloaded is not None
    assert reloaded["goals"] == summary["goals"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert blocks.load_block_summary(path) is None  # mismatch: removed, to be solved again
    assert not path.exists()


def test_bench_generation_reports_throughput() -> None:
    result = generate.bench_generation(0.3)
    assert result["seeds"] >= 50
    assert result["demos_per_s"] > 0
    assert result["layout_ms"] > 0
    assert result["solve_ms"] > 0
    assert 0 < result["kept_fraction"]["a"] < result["kept_fraction"]["the"] < 1
    assert result["full_seeds"] > 1_000_000
    assert result["full_minutes_2procs"] == pytest.approx(result["full_minutes_1proc"] / 2, abs=0.1)


def test_smoke_writes_a_run_folder(tmp_path: Path) -> None:
    assert main(["generate", "--smoke", "--runs-dir", str(tmp_path)]) == 0
    infos = list(tmp_path.rglob("dataset/dataset_info.json"))
    assert len(infos) == 1
    assert (infos[0].parent / "tfds" / "babyai_gotolocal").is_dir()


def test_overwrite_replaces_a_finished_dataset(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny_dataset, out)
    assert main(generate_args(out, "--per-goal", "1", "--block-size", "256", "--overwrite")) == 0
    assert (
        read_all(out)["train"]["envs"].tolist() == read_all(tiny_dataset)["train"]["envs"].tolist()
    )


def _dying_block(job: dict) -> dict:
    """A worker process killed while solving block 2 (module level: picklable for the pool)."""
    import os

    if job["block"] == 2:
        os._exit(1)
    return blocks.solve_block(job)


def test_dead_worker_exits_2_without_hanging_and_resume_finishes(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "dead"
    args = generate_args(out, "--per-goal", "1", "--block-size", "256", "--n-procs", "2")
    monkeypatch.setattr(generate, "solve_block", _dying_block)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "worker process died" in err[0]
    assert "--resume" in err[0]
    assert not (out / "data.hdf5").exists()
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    a, b = read_all(tiny_dataset), read_all(out)
    for split in a:
        for key in KEYS:
            assert np.array_equal(a[split][key], b[split][key]), (split, key)
