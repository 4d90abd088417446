"""Stage 1: losses and masks, gradient checks, data reading, and `leaps-karel pretrain` itself."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.testing import one_error_line, tree
from leaps_karel import dsl
from leaps_karel.cli import main
from leaps_karel.learn import pretrain as pretrain_module
from leaps_karel.learn.data import load_program_data
from leaps_karel.learn.losses import (
    behaviour_rewards,
    kl_loss,
    prefix_match,
    reinforce_loss,
    sequence_accuracy,
    sequence_loss,
    union_mask,
    upto_first_end,
)
from leaps_karel.learn.model import ProgramVAE, step_states
from leaps_karel.learn.pretrain_config import ModelConfig
from leaps_karel.world import World

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The original generator's 20-program dataset (tests/data/dataset_sample)."""
    folder = tmp_path_factory.mktemp("original")
    sample = DATA / "dataset_sample"
    with gzip.open(sample / "data.hdf5.gz", "rb") as src, open(folder / "data.hdf5", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(sample / "id.txt", folder / "id.txt")
    return folder


# ---------------------------------------------------------------------------- masks and losses
def test_masks_by_hand() -> None:
    pred = torch.tensor([[1, 50, 3, 50], [1, 2, 3, 4]])
    target = torch.tensor([[1, 2, 50, 50], [1, 50, 50, 50]])
    assert upto_first_end(pred, 50).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert union_mask(pred, target, 50).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    tokens, programs = sequence_accuracy(pred, target, 50)
    assert tokens == pytest.approx(2 / 6)  # right: (0,0) and (1,0) of 6 masked positions
    assert programs == 0.0
    assert sequence_accuracy(target, target, 50) == (1.0, 1.0)


def test_sequence_loss_is_the_masked_token_mean() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 6)
    target = torch.tensor([[0, 1, 5, 5, 5], [2, 5, 5, 5, 5], [0, 1, 2, 3, 4]])
    loss, mask = sequence_loss(logits, target, 5)
    assert mask.shape == (3, 5)
    assert (mask | ~(target < 5)).all()  # real targets always count
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 6), target.reshape(-1), reduction="none"
    )
    assert loss.item() == pytest.approx((nll[mask.reshape(-1)]).mean().item(), rel=1e-6)


def test_kl_closed_form() -> None:
    mu = torch.tensor([[0.0, 1.0]])
    log_sigma = torch.tensor([[0.0, np.log(2.0)]], dtype=torch.float32)
    expected = 0.5 * np.mean([0.0, 1 + 4 - np.log(4) - 1])
    assert kl_loss(mu, log_sigma).item() == pytest.approx(expected, rel=1e-6)
    assert kl_loss(torch.zeros(4, 3), torch.zeros(4, 3)).item() == 0.0


def test_reinforce_loss_counts_tokens_up_to_the_first_pad() -> None:
    logits = torch.zeros(1, 4, 51)  # uniform: log p = -log 51 per token
    tokens = torch.tensor([[4, 3, 50, 50]])
    loss, ent = reinforce_loss(logits, tokens, torch.tensor([2.0]), entropy_coef=0.0)
    assert loss.item() == pytest.approx(2.0 * 3 * np.log(51), rel=1e-6)  # 3 masked tokens
    assert ent.item() == pytest.approx(np.log(51), rel=1e-6)


def test_prefix_match_and_rewards() -> None:
    world = World.from_text(["#####", "#...#", "#...#", "#####"], (1, 1, 1))
    assert prefix_match(world, [], []) == 1.0
    assert prefix_match(world, [0, 0], [0, 0]) == 1.0
    assert prefix_match(world, [0, 0], [0, 1]) == pytest.approx(1 / 2)
    assert prefix_match(world, [0], [1, 1, 1]) == 0.0
    prog = "DEF run m( move turnLeft m)"
    other = "DEF run m( turnLeft move m)"
    gts, preds = [prog] * 4, [prog, "DEF run m( m)", "DEF run", other]
    rewards = behaviour_rewards(gts, preds, [0, 1, 2, 3])
    assert rewards[0] == pytest.approx(1.1)
    assert rewards[1] == rewards[2] == 0.01  # invalid programs
    assert 0.1 <= rewards[3] < 1.1
    gts, preds = gts * 2, preds * 2
    together = behaviour_rewards(gts, preds, list(range(8)), workers=2)
    assert together.tolist() == behaviour_rewards(gts, preds, list(range(8))).tolist()


# ---------------------------------------------------------------------------- gradient checks
@pytest.fixture(scope="module")
def tiny() -> ProgramVAE:
    torch.manual_seed(0)
    return ProgramVAE(ModelConfig(hidden=4, executor_steps=6)).double()


def test_gradcheck_program_loss(tiny: ProgramVAE) -> None:
    ids = torch.tensor([[*dsl.to_ids("DEF run m( move turnLeft m)"), 50]])
    z = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: sequence_loss(tiny.decode_teacher(z, ids), ids[:, 1:], 50)[0], (z,)
    )


def test_gradcheck_kl() -> None:
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kl_loss, (mu, log_sigma))


def test_gradcheck_executor_loss(tiny: ProgramVAE) -> None:
    world = World.from_text(["########", *["#......#"] * 6, "########"], (3, 3, 1))
    s0 = torch.tensor(world.to_tensor().transpose(2, 0, 1)[None], dtype=torch.float64)
    actions = torch.tensor([[0, 2, 0, 5]])
    z = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)

    def loss(z: torch.Tensor) -> torch.Tensor:
        logits, targets = tiny.executor.teacher_forced(z, s0, actions, True, 6)
        return sequence_loss(logits, targets, 5)[0]

    assert torch.autograd.gradcheck(loss, (z,))


def test_gradcheck_reinforce_loss(tiny: ProgramVAE) -> None:
    sampled = torch.tensor(
        [dsl.to_ids("run m( move m)") + [50] * 2, [*dsl.to_ids("run m( turnLeft move m)"), 50]]
    )
    inputs = torch.cat([torch.zeros(2, 1, dtype=torch.long), sampled], 1)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    z = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z: reinforce_loss(tiny.decode_teacher(z, inputs), sampled, adv, 0.1)[0], (z,)
    )


# ---------------------------------------------------------------------------- data
def test_reads_the_original_dataset_and_replays_its_states(original: Path) -> None:
    from leaps_karel.reader import KarelProgramDataset

    data = load_program_data(original)
    ds = KarelProgramDataset(original)
    assert len(data) == sum(len(ds[i]["program"]) <= 44 for i in range(len(ds)))
    assert data.hw == (8, 8)
    assert data.ids.shape == (len(data), 46)
    assert data.texts()[0] == ds.program_text(0) or len(ds[0]["program"]) > 44
    item = ds[0]
    states = torch.as_tensor(data.states(np.array([0])))[0]  # [D, 16, 8, 8]
    ref = torch.as_tensor(item["s_h"]).permute(0, 1, 4, 2, 3).float()  # [D, M, 16, 8, 8]
    actions = torch.as_tensor(data.actions[0])
    for t in range(int(item["a_h_len"].max())):
        alive = torch.as_tensor(item["s_h_len"] > t + 1)
        states = step_states(states, actions[:, t])
        assert torch.equal(states[alive], ref[alive, t + 1])


# ---------------------------------------------------------------------------- the command
def run_metrics(folder: Path) -> list[dict[str, float]]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith("time/")} for x in lines]


SMOKE = ["pretrain", "--smoke", "--epochs", "2", "--batch-size", "8", "--no-progress"]


def test_smoke_end_to_end_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert main([*SMOKE, "--runs-dir", str(runs), "--run-name", "full"]) == 0
    full = runs / "leaps-karel" / "full"
    metrics = run_metrics(full)
    assert [m["step"] for m in metrics] == [1, 2]
    for key in ("eval/greedy_program_acc", "train/token_acc", "eval/greedy_demo_acc", "rl/reward"):
        assert key in metrics[-1]
    from leaps_karel.learn.weights import load_model

    model = load_model(full / "weights" / "LEAPS.safetensors")
    assert model.decode_greedy(torch.zeros(2, 16)).shape == (2, 45)

    # Interrupted in the middle of epoch 2 (Ctrl-C), then resumed: identical metrics.
    calls = {"n": 0}
    original_step = pretrain_module.Trainer.supervised_step

    def flaky(self: pretrain_module.Trainer, rows: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, second batch
            raise KeyboardInterrupt
        original_step(self, rows)

    monkeypatch.setattr(pretrain_module.Trainer, "supervised_step", flaky)
    assert main([*SMOKE, "--runs-dir", str(runs), "--run-name", "cut"]) == 130
    assert "--resume" in capsys.readouterr().err
    cut = runs / "leaps-karel" / "cut"
    assert (cut / "checkpoints" / "last.pt").is_file()
    assert main([*SMOKE, "--runs-dir", str(runs), "--run-name", "cut", "--resume"]) == 0
    assert run_metrics(cut) == metrics


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--variant", "LEAPSX"], "variant"),
        (["--data", "{tmp}/missing"], "missing"),
        (["--data", "{tmp}/foreign"], "foreign"),
        (["--data", "{tmp}/empty"], "data.hdf5"),
    ],
)
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], word: str
) -> None:
    import h5py

    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    with h5py.File(tmp_path / "foreign" / "data.hdf5", "w") as f:
        f.create_dataset("images", data=np.zeros((3, 4)))
    (tmp_path / "foreign" / "id.txt").write_text("images\n")
    before = tree(tmp_path)
    argv = [
        "pretrain",
        "--runs-dir",
        str(tmp_path / "runs"),
        *[a.format(tmp=tmp_path) for a in args],
    ]
    assert main(argv) == 2
    message = one_error_line(capsys.readouterr().err, "leaps-karel")
    assert word in message
    assert tree(tmp_path) == before
