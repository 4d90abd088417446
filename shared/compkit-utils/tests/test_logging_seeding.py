from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from compkit_utils.devices import pick_device, set_threads
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write, atomic_write_text
from compkit_utils.logging import RunLogger, format_metrics, progress, read_metrics
from compkit_utils.seeding import capture_rng_state, restore_rng_state, seed_everything


def test_metrics_jsonl_and_console(tmp_path: Path) -> None:
    lines: list[str] = []
    with RunLogger(tmp_path, console_every=2, console=lines.append) as logger:
        for step in range(5):
            logger.log(step, {"train/loss": torch.tensor(1.0 / (step + 1)), "data/n": step})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert records[1]["train/loss"] == pytest.approx(0.5)
    assert isinstance(records[3]["data/n"], int)
    assert len(lines) == 3
    assert lines[0].startswith("step 0 | train/loss 1.0000")


def test_resume_truncates_future_records(tmp_path: Path) -> None:
    with RunLogger(tmp_path, console_every=0) as logger:
        for step in range(6):
            logger.log(step, {"x": step})
    with RunLogger(tmp_path, console_every=0, resume=True, resume_step=3) as logger:
        logger.log(4, {"x": 40})
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 40),
    ]


def test_tensorboard_writes_real_event_files(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path, console_every=0, tensorboard=True) as logger:
        for step in range(3):
            logger.log(step, {"train/loss": 2.0 * step})
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [0.0, 2.0, 4.0]


def test_format_metrics_small_and_large() -> None:
    assert (
        format_metrics(3, {"a": 1e-5, "b": 2.5, "c": 7}) == "step 3 | a 1.000e-05 | b 2.5000 | c 7"
    )


def test_progress_is_transparent() -> None:
    assert list(progress(range(4), total=4)) == [0, 1, 2, 3]


def test_seeding_and_rng_round_trip() -> None:
    rng = seed_everything(11)
    state = capture_rng_state(rng)
    json.dumps({k: v for k, v in state.items() if k not in {"torch", "cuda"}})  # plain data
    first = (random.random(), np.random.rand(), torch.rand(2), rng.normal())  # noqa: NPY002
    restore_rng_state(state, rng)
    second = (random.random(), np.random.rand(), torch.rand(2), rng.normal())  # noqa: NPY002
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert torch.equal(first[2], second[2])
    assert first[3] == second[3]
    again = seed_everything(11)
    assert again.normal() == np.random.default_rng(11).normal()


def test_devices() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            pick_device("cuda")
    with pytest.raises(UserError, match="not a device name"):
        pick_device("tpu0")
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        with pytest.raises(UserError):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path) -> None:
    from compkit_utils.io import atomic_write

    atomic_write_text(tmp_path / "a.txt", "old")

    def failing(handle) -> None:
        handle.write("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", failing)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_uses_umask_permissions(tmp_path: Path) -> None:
    import os

    path = atomic_write_text(tmp_path / "b.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_full_disk_errors_name_the_file(tmp_path: Path) -> None:
    """Writes that fail without a file name (ENOSPC from write()) get the target's name."""
    import errno

    def full(handle) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "m.json"
    with pytest.raises(OSError, match="No space left") as info:
        atomic_write(target, full)
    assert info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []

    class FullFile:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    logger = RunLogger(tmp_path / "run", console_every=0)
    logger._file = FullFile()  # type: ignore[assignment]  # the disk fills up mid-run
    with pytest.raises(OSError, match="No space left") as info:
        logger.log(1, {"train/loss": 1.0})
    assert info.value.filename == str(tmp_path / "run" / "metrics.jsonl")
