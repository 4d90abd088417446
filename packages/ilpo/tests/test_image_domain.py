"""The image domain: MiniGrid frames, the BFS expert, image collect/LPN/ARN and their CLI chain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.testing import one_error_line, tree
from ilpo.cli import main
from ilpo.config import IMAGE_ENVS
from ilpo.data.frames import FRAMES_FILE, frames_to_model, load_frames
from ilpo.data.images import write_image_pair
from ilpo.gridworld import bfs_action, make_image_env

ENV = IMAGE_ENVS[0]


@pytest.fixture(scope="module")
def image_collect(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny `ilpo collect --env <image env>` run (about 40 frame pairs)."""
    runs = tmp_path_factory.mktemp("image_runs")
    argv = ["collect", "--env", ENV, "--transitions", "40", "--runs-dir", str(runs)]
    assert main([*argv, "--run-name", "c"]) == 0
    return runs / "ilpo" / "c"


def test_frames_and_actions() -> None:
    env = make_image_env(ENV)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (128, 128, 3)
    assert obs.dtype == np.uint8
    assert env.action_space.n == 3
    turned, *_ = env.step(0)  # turning left changes the frame (the agent's triangle)
    assert not np.array_equal(obs, turned)
    env.close()


@pytest.mark.parametrize("env_id", IMAGE_ENVS)
def test_bfs_expert_reaches_the_goal_on_a_shortest_path(env_id: str) -> None:
    env = make_image_env(env_id)
    for seed in range(5):
        env.reset(seed=seed)
        inner = env.unwrapped
        start = tuple(int(v) for v in inner.agent_pos)
        steps, terminated, reward = 0, False, 0.0
        while not terminated and steps < 100:
            _, reward, terminated, _, _ = env.step(bfs_action(env))
            steps += 1
        assert terminated
        assert reward > 0
        goal = (inner.grid.width - 2, inner.grid.height - 2)
        manhattan = abs(goal[0] - start[0]) + abs(goal[1] - start[1])
        assert steps <= manhattan + 3  # at most 3 turns in an empty room
    env.close()


def test_collect_writes_png_pairs_and_hdf5(image_collect: Path) -> None:
    from PIL import Image

    pngs = sorted((image_collect / ENV).glob("*.png"))
    frames = load_frames(image_collect)
    assert len(pngs) == len(frames) >= 40
    with Image.open(pngs[0]) as image:
        assert image.size == (256, 128)
    from_pngs = load_frames(image_collect / ENV)
    np.testing.assert_array_equal(from_pngs.states, frames.states)
    np.testing.assert_array_equal(from_pngs.next_states, frames.next_states)
    assert frames.env == ENV
    assert frames.actions is not None
    labels = [int((image_collect / f"{ENV}_actions" / f"{i}.txt").read_text()) for i in range(3)]
    assert labels == frames.actions[:3].tolist()
    record = json.loads((image_collect / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < record["demonstrator/return_mean"] <= record["expert/return_mean"] <= 1
    assert (image_collect / FRAMES_FILE).is_file()


def test_short_image_lpn_run_lowers_the_min_loss(image_collect: Path) -> None:
    from ilpo.lpn import ImageLPN, lpn_losses, make_optimizer, train_step

    frames = load_frames(image_collect)
    s = frames_to_model(torch.from_numpy(frames.states[:16]))
    s_next = frames_to_model(torch.from_numpy(frames.next_states[:16]))
    torch.manual_seed(0)
    model = ImageLPN(3, ngf=4)
    opt = make_optimizer(model, lr=2e-3)
    with torch.no_grad():
        logits, deltas = model(s)
        before = float(lpn_losses(logits, deltas, s_next - s).min_loss)
    for _ in range(25):
        train_step(model, opt, s, s_next)
    with torch.no_grad():
        logits, deltas = model(s)
        after = float(lpn_losses(logits, deltas, s_next - s).min_loss)
    assert after < 0.8 * before  # measured: 616 → 443 (seeded, one thread)


def test_cli_chain_on_a_tiny_dataset(image_collect: Path, tmp_path: Path) -> None:
    runs = ["--runs-dir", str(tmp_path), "--env", ENV]
    lpn = ["lpn", "--data", str(image_collect), "--ngf", "2", "--epochs", "1", "--batch-size", "16"]
    assert main([*lpn, *runs, "--run-name", "l"]) == 0
    lpn_dir = tmp_path / "ilpo" / "l"
    assert (lpn_dir / "lpn.pt").is_file()
    arn = ["arn", "--lpn", str(lpn_dir), "--steps", "30", "--eval-every", "20"]
    arn += ["--heldout-episodes", "1", "--random-episodes", "1", "--batch-size", "8"]
    assert main([*arn, *runs, "--run-name", "a"]) == 0
    csv = (tmp_path / "ilpo" / "a" / "0.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv] == ["0", "20"]
    result = json.loads((tmp_path / "ilpo" / "a" / "result.json").read_text())
    assert result["arn_updates"] == 30 - 8 + 1
    assert 0.0 <= result["final_heldout_mean"] <= 1.0


def _fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]) -> str:
    before = tree(tmp_path)
    assert main(args) == 2
    message = one_error_line(capsys.readouterr().err, "ilpo")
    assert tree(tmp_path) == before, "a failed command left files behind"
    return message


def test_png_of_the_wrong_size_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    data = tmp_path / "frames"
    frame = np.zeros((128, 128, 3), dtype=np.uint8)
    write_image_pair(data / "0.png", frame, frame)
    from PIL import Image

    Image.fromarray(np.zeros((64, 100, 3), dtype=np.uint8)).save(data / "1.png")
    runs = tmp_path / "runs"
    message = _fails(
        capsys,
        tmp_path,
        ["lpn", "--env", ENV, "--data", str(data), "--runs-dir", str(runs), "--epochs", "1"],
    )
    assert str(data / "1.png") in message
    assert "256×128" in message


def test_vector_lpn_for_the_image_env_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    assert main(["lpn", "--smoke", "--runs-dir", str(runs), "--run-name", "v"]) == 0
    capsys.readouterr()
    message = _fails(
        capsys, tmp_path, ["arn", "--env", ENV, "--lpn", str(runs / "ilpo" / "v"), "--smoke"]
    )
    assert "trained on CartPole-v1" in message


def test_image_experiment_has_only_the_quick_preset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    message = _fails(capsys, tmp_path, ["experiment", "--env", ENV, "--preset", "faithful"])
    assert "--preset faithful" in message
