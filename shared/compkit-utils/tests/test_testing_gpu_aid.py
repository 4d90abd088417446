"""The GPU-test dev aid: ``requires_gpu`` and ``gpu_device`` under ``COMPKIT_GPU_TESTS_ON_CPU``."""

from __future__ import annotations

import pytest

from compkit_utils import testing
from compkit_utils.testing import GPU_TESTS_ON_CPU, gpu_device, requires_gpu


@requires_gpu
def _probe(value: int, *, extra: int = 0) -> int:
    return value + extra


def test_gpu_device_follows_env_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GPU_TESTS_ON_CPU, raising=False)
    assert gpu_device() == "cuda"
    monkeypatch.setenv(GPU_TESTS_ON_CPU, "1")
    assert gpu_device() == "cpu"
    monkeypatch.setenv(GPU_TESTS_ON_CPU, "0")  # only "1" switches it on
    assert gpu_device() == "cuda"


def test_requires_gpu_skips_without_cuda_unless_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "_cuda_available", lambda: False)
    monkeypatch.delenv(GPU_TESTS_ON_CPU, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs CUDA"):
        _probe(1)
    # The same, already decorated function runs once the variable is set (decided per call).
    monkeypatch.setenv(GPU_TESTS_ON_CPU, "1")
    assert _probe(1, extra=2) == 3


def test_requires_gpu_runs_with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "_cuda_available", lambda: True)
    monkeypatch.delenv(GPU_TESTS_ON_CPU, raising=False)
    assert _probe(4) == 4


def test_requires_gpu_marks_and_keeps_signature() -> None:
    import inspect

    assert [m.name for m in getattr(_probe, "pytestmark", [])] == ["gpu"]
    assert list(inspect.signature(_probe).parameters) == ["value", "extra"]
    assert _probe.__name__ == "_probe"


def test_no_tf32_turns_tf32_off_and_restores_it() -> None:
    import torch

    original = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        fixture = testing.no_tf32.__wrapped__()  # type: ignore[attr-defined]
        next(fixture)
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
        with pytest.raises(StopIteration):
            next(fixture)
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = original
