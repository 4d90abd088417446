"""Test helpers (imports pytest; only tests import this module)."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

GPU_TESTS_ON_CPU = "COMPKIT_GPU_TESTS_ON_CPU"
"""Environment variable: ``1`` runs the ``gpu`` tests on the CPU (a dev aid, see
:func:`requires_gpu`)."""


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def gpu_tests_on_cpu() -> bool:
    """Whether ``$COMPKIT_GPU_TESTS_ON_CPU`` is ``1`` (read at each call)."""
    return os.environ.get(GPU_TESTS_ON_CPU, "") == "1"


def gpu_device() -> str:
    """The device a ``gpu`` test runs on: ``"cuda"``, or ``"cpu"`` under the dev aid.

    With ``COMPKIT_GPU_TESTS_ON_CPU=1`` the GPU tests run their device code on the CPU, so
    that a machine without CUDA can check them before a GPU session; there the CPU-versus-
    device parity checks compare the CPU with itself and pass trivially.
    """
    return "cpu" if gpu_tests_on_cpu() else "cuda"


def requires_gpu(func: Any) -> Any:
    """Mark a test as ``gpu`` and skip it where CUDA is not available.

    The skip is decided when the test runs (not at import), so the environment at that
    moment counts: with ``COMPKIT_GPU_TESTS_ON_CPU=1`` the test runs without CUDA, on the
    device :func:`gpu_device` names (``"cpu"``). Use it on test functions (fixtures work:
    the wrapper keeps the signature).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not gpu_tests_on_cpu() and not _cuda_available():
            pytest.skip(f"needs CUDA (or {GPU_TESTS_ON_CPU}=1 to run it on the CPU)")
        return func(*args, **kwargs)

    return pytest.mark.gpu(wrapper)


def needs_native(library: Any) -> Any:
    """Skip mark for tests of a package's native kernels (``library()`` builds them).

    Skipped only where the kernels cannot be built; under ``COMPKIT_NATIVE=require`` (what
    CI sets) the tests run, and a build failure fails them (``library()`` raises).
    """
    from compkit_utils import native

    return pytest.mark.skipif(
        not native.required() and library() is None, reason="native kernels unavailable"
    )


@pytest.fixture
def no_tf32() -> Any:
    """Full float32 matrix products on CUDA for the test (TF32 off), restored afterwards.

    CPU-versus-device parity checks need it: with TF32 a device product keeps 10 mantissa
    bits. Import it into a test module and apply it with
    ``pytestmark = pytest.mark.usefixtures("no_tf32")``.
    """
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """One torch CPU thread per test: reproducible, and no over-subscription on small machines.

    Import it into a package's ``conftest.py`` to apply it to every test of that package.
    """
    try:
        import torch
    except ImportError:  # a torch-free install (e.g. the leaps-karel engine): env var only
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    previous_env = os.environ.get("OMP_NUM_THREADS")
    # Commands called in-process choose their threads with set_threads(None), which follows
    # OMP_NUM_THREADS: pin it too, so two runs compared exactly use the same count.
    os.environ["OMP_NUM_THREADS"] = "1"
    if torch is not None:
        torch.set_num_threads(1)
    yield
    if torch is not None and previous is not None:
        torch.set_num_threads(previous)
    if previous_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous_env


@contextlib.contextmanager
def default_sigint() -> Any:
    """Within the block, Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` as in an interactive run.

    A test runner started with SIGINT ignored (``cmd &`` in a non-interactive shell: the
    shell sets SIGINT to ignored for background jobs, and Python keeps an inherited ignore)
    passes the ignore on to its tests, and a test that sends itself Ctrl-C would then see
    nothing happen. Tests of the Ctrl-C handling run inside this block; the previous handler
    is restored after.
    Main thread only (Python sets signal handlers only there).
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def only_run_dir(root: str | os.PathLike[str], package: str) -> Path:
    """The single run directory under ``<root>/<package>/`` (fails if not exactly one)."""
    runs = [p for p in (Path(root) / package).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory under {root}/{package}, found {runs}"
    return runs[0]


def assert_run_dir(
    run_dir: str | os.PathLike[str], *, checkpoint: bool = True, min_records: int = 1
) -> list[dict[str, Any]]:
    """Check a finished run directory and return its metric records.

    Checks: ``config.json`` is valid JSON with ``_meta``; ``metrics.jsonl`` has at least
    ``min_records`` records whose values are all finite; ``checkpoints/last.pt`` loads with
    ``weights_only=True`` (when ``checkpoint``).
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert "_meta" in config, "config.json lacks _meta"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert len(records) >= min_records, f"{len(records)} metric records < {min_records}"
    for record in records:
        for key, value in record.items():
            if isinstance(value, float):
                assert math.isfinite(value), f"metric {key} is not finite: {value}"
    if checkpoint:
        from compkit_utils.checkpoints import load_checkpoint

        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        assert "model" in state
    return records


def one_error_line(stderr: str, prog: str) -> str:
    """Assert ``stderr`` is exactly one ``<prog>: error: ...`` line; return the message part.

    For bad-input tests: ``assert main([...]) == 2`` then
    ``one_error_line(capsys.readouterr().err, "compile-seg")``.
    """
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {lines}"
    prefix = f"{prog}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


def tree(root: str | os.PathLike[str]) -> set[str]:
    """Every path under ``root`` (relative, ``/``-separated); empty if ``root`` is absent.

    For "nothing left behind" checks: compare ``tree(tmp_path)`` before and after a command.
    """
    root = Path(root)
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


_HIDE_MODULES = '''"""Written by compkit_utils.testing.hidden_modules_env: hide modules."""
from importlib.machinery import PathFinder

_HIDDEN = {hidden!r}
_find_spec = PathFinder.find_spec


def _hiding_find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in _HIDDEN:
        return None
    return _find_spec(name, path, target)


PathFinder.find_spec = classmethod(_hiding_find_spec)
'''


def hidden_modules_env(
    directory: str | os.PathLike[str], modules: tuple[str, ...] = ("torch",)
) -> dict[str, str]:
    """Environment for a subprocess in which ``modules`` behave as if they were not installed.

    Writes a ``sitecustomize.py`` into ``directory`` that makes the path finder (which finds
    installed packages) skip them, so ``import torch`` raises ``ModuleNotFoundError`` and
    ``importlib.util.find_spec("torch")`` returns ``None``, exactly as in an install without
    the package (``"torch" not in sys.modules`` stays true, which libraries such as tyro
    test; import hooks that other packages put on ``sys.meta_path`` keep working). Run the
    subprocess with ``env=hidden_modules_env(tmp_path)``.

    Args:
        directory: where the start-up file goes (e.g. a test's ``tmp_path``).
        modules: top-level module names to hide.

    Returns:
        A copy of ``os.environ`` with ``directory`` first on ``PYTHONPATH``.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_HIDE_MODULES.format(hidden=set(modules)))
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}
