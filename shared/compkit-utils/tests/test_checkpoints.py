from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.checkpoints import (
    CheckpointManager,
    load_checkpoint,
    make_state,
    restore,
    save_checkpoint,
)
from compkit_utils.errors import UserError
from compkit_utils.seeding import seed_everything


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _train(model, optimizer, rng: np.random.Generator, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 3) + torch.from_numpy(rng.normal(size=(8, 3))).float()
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_round_trip_loads_with_weights_only(tmp_path: Path) -> None:
    model = _model()
    state = make_state(step=7, model=model, config={"a": 1}, package_version="0.1.0")
    save_checkpoint(tmp_path / "c.pt", state)
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["step"] == 7
    loaded = load_checkpoint(tmp_path / "c.pt")
    other = _model()
    assert restore(loaded, other, restore_rng=False) == 7
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resume_continues_identically(tmp_path: Path) -> None:
    rng = seed_everything(3)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    straight = _train(model, opt, rng, 10)

    rng = seed_everything(3)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = _train(model, opt, rng, 5)
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(make_state(step=5, model=model, optimizer=opt, generator=rng))
    # Disturb every RNG, as a new process would.
    seed_everything(999)
    rng2 = np.random.default_rng(12345)
    model2 = _model()
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    latest = manager.latest()
    assert latest is not None
    assert restore(load_checkpoint(latest), model2, opt2, rng2) == 5
    second = _train(model2, opt2, rng2, 5)
    assert first + second == straight


class _DyingFile:
    """A file whose first write lands 10 bytes and then fails with ``error``."""

    def __init__(self, path, mode, error: BaseException) -> None:
        self._handle = open(path, mode)  # noqa: SIM115 - closed in __exit__
        self._error = error

    def __enter__(self) -> _DyingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def write(self, data) -> int:
        self._handle.write(bytes(data)[:10])
        raise self._error

    def flush(self) -> None:
        self._handle.flush()


def _dying_open(error: BaseException):
    return lambda path, mode="r", *args, **kwargs: _DyingFile(path, mode, error)


def test_interrupted_save_leaves_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from compkit_utils import checkpoints

    path = tmp_path / "last.pt"
    save_checkpoint(path, make_state(step=1, model=_model()))
    before = path.read_bytes()

    monkeypatch.setattr(checkpoints, "open", _dying_open(KeyboardInterrupt()), raising=False)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_state(step=2, model=_model()))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_full_disk_is_an_os_error_naming_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """torch's own writer would raise a bare RuntimeError ("unexpected pos") here."""
    import errno

    from compkit_utils import checkpoints

    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoints, "open", _dying_open(full), raising=False)
    path = tmp_path / "last.pt"
    with pytest.raises(OSError, match="No space left") as info:
        save_checkpoint(path, make_state(step=2, model=_model()))
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []


def test_keep_last_n(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    model = _model()
    for step in (10, 20, 30, 40):
        manager.save(make_state(step=step, model=model))
    assert [p.name for p in manager.step_files()] == ["step_000030.pt", "step_000040.pt"]
    assert load_checkpoint(manager.last_path)["step"] == 40


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"garbage", "not a readable checkpoint"),
        (b"", "not a readable"),
        (b"truncated", "not a readable checkpoint"),  # IndexError inside torch.load
        (b"\x80\x02}q\x00", "not a readable checkpoint"),
    ],
)
def test_bad_checkpoints_give_clear_errors(tmp_path: Path, content, message) -> None:
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, make_state(step=1, model=_model()))
    data = path.read_bytes()
    for size in (len(data) // 2, 7, 100, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(UserError, match="not a readable checkpoint"):
            load_checkpoint(path)


def test_foreign_dict_is_rejected(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="format_version"):
        load_checkpoint(tmp_path / "x.pt")
