"""The native masked-LSTM kernels against the PyTorch path (values, gradients, threads)."""

from __future__ import annotations

import pytest
import torch

from compile_seg import lstm
from compile_seg.lstm import masked_lstm, masked_lstm_tokens, native_library
from compkit_utils import native

# Skipped only where the kernels cannot be built; under COMPKIT_NATIVE=require (CI) they
# run, and a build failure fails them (native_library raises).
needs_native = pytest.mark.skipif(
    not native.required() and native_library() is None, reason="native kernels unavailable"
)


@needs_native
def test_argument_structs_match_the_c_side():
    lib = native_library()
    assert lib is not None
    native.check_layout(lib, "masked_lstm_layout", [lstm._FwdArgs, lstm._BwdArgs])
    assert native.struct_layout(lstm._FwdArgs)[0] == 6 * 8 + 10 * 8
    with pytest.raises(RuntimeError, match="differ from the ctypes ones"):
        native.check_layout(lib, "masked_lstm_layout", [lstm._BwdArgs, lstm._FwdArgs])


@pytest.fixture
def backend():
    yield lstm.set_backend
    lstm.set_backend("auto")


def _problem(seed: int, total: int = 7, batch: int = 19, hidden: int = 32, mask: bool = True):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(total, batch, 4 * hidden, generator=gen).requires_grad_()
    whh = (0.3 * torch.randn(4 * hidden, hidden, generator=gen)).requires_grad_()
    w = torch.rand(total, batch, generator=gen).requires_grad_() if mask else None
    grad = torch.randn(total, batch, hidden, generator=gen)
    return xs, w, whh, grad


def _run(xs, w, whh, grad, steps):
    out = masked_lstm(xs, w, whh, steps)
    inputs = [xs, whh] + ([w] if w is not None else [])
    return (out, *torch.autograd.grad(out, inputs, grad))


@needs_native
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("steps", [7, 4])
def test_native_matches_the_pytorch_path(backend, mask, steps):
    problem = _problem(0, mask=mask)
    backend("torch")
    assert lstm.active_backend(problem[0]) == "torch"
    expected = _run(*problem, steps)
    backend("native")
    assert lstm.active_backend(problem[0]) == "native"
    got = _run(*problem, steps)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
    assert (got[0][steps:] == 0).all()
    assert (got[1][steps:] == 0).all()  # positions that never ran get no gradient


@needs_native
def test_tokens_entry_point_matches_gathered_projections(backend):
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(6, 4 * 64, generator=gen).requires_grad_()
    tokens = torch.randint(0, 6, (29, 9), generator=gen)
    w = torch.rand(9, 29, generator=gen).requires_grad_()
    whh = (0.2 * torch.randn(4 * 64, 64, generator=gen)).requires_grad_()
    grad = torch.randn(9, 29, 64, generator=gen)
    results = {}
    for name in ("torch", "native"):
        backend(name)
        out = masked_lstm_tokens(table, tokens, w, whh, 8)
        results[name] = (out, *torch.autograd.grad(out, [table, w, whh], grad))
    for a, b in zip(results["native"], results["torch"], strict=True):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-5)


def _tokens_problem(seed: int, batch: int, total: int = 9, hidden: int = 32):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(6, 4 * hidden, generator=gen).requires_grad_()
    tokens = torch.randint(0, 6, (batch, total), generator=gen)
    w = torch.rand(total, batch, generator=gen).requires_grad_()
    whh = (0.3 * torch.randn(4 * hidden, hidden, generator=gen)).requires_grad_()
    grad = torch.randn(total, batch, hidden, generator=gen)
    return table, tokens, w, whh, grad


def _run_tokens(table, tokens, w, whh, grad, steps):
    out = masked_lstm_tokens(table, tokens, w, whh, steps)
    return (out, *torch.autograd.grad(out, [table, w, whh], grad))


@needs_native
@pytest.mark.parametrize("entry", ["projections", "tokens"])
def test_outputs_and_gradients_are_bitwise_equal_at_1_2_3_threads(backend, entry):
    """A seeded run reproduces exactly whatever thread count the command picked.

    300 rows: three backward chunks, the last one short (the recurrent weight's and the shared
    table's gradients sum over rows), split among 1, 2 and 3 threads differently.
    """
    backend("native")
    if entry == "projections":
        xs, w, whh, grad = _problem(1, batch=300)
        assert lstm.active_backend(xs) == "native"

        def run():
            return _run(xs, w, whh, grad, 6)
    else:
        problem = _tokens_problem(1, batch=300)

        def run():
            return _run_tokens(*problem, 7)

    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(run())
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    for other in runs[1:]:
        for got, first in zip(other, runs[0], strict=True):
            assert torch.equal(got, first)


@needs_native
def test_seeded_native_runs_are_identical(backend):
    backend("native")
    first = _run(*_problem(2), 7)
    second = _run(*_problem(2), 7)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_other_sizes_and_dtypes_use_the_pytorch_path():
    assert lstm.active_backend(torch.zeros(3, 2, 4 * 8)) == "torch"  # H not a multiple of 32
    assert lstm.active_backend(torch.zeros(3, 2, 128, dtype=torch.float64)) == "torch"


def test_backend_names_are_checked(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        backend("fast")


def test_tokens_out_of_range_are_refused():
    table = torch.zeros(6, 128)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 6\)"):
        masked_lstm_tokens(table, torch.full((2, 3), 6), None, torch.zeros(128, 32))


@needs_native
def test_kernels_built_without_openmp_agree(backend, monkeypatch, tmp_path):
    """A compiler that rejects -fopenmp (like Apple clang) gives serial kernels, same results."""
    real = native.find_compiler()
    assert real is not None
    log = tmp_path / "calls.log"
    fake = tmp_path / "cc-without-openmp"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'for a in "$@"; do if [ "$a" = "-fopenmp" ]; then\n'
        "  echo \"clang: error: unsupported option '-fopenmp'\" >&2; exit 1\n"
        "fi; done\n"
        f'exec "{real}" "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("COMPKIT_CACHE_DIR", str(tmp_path / "cache"))
    problem = _problem(3)
    backend("torch")
    expected = _run(*problem, 7)
    native_library.cache_clear()
    native._load_cached.cache_clear()
    try:
        backend("native")  # builds with the fake compiler
        got = _run(*problem, 7)
        builds = [c for c in log.read_text().splitlines() if "-shared" in c.split()]
        assert len(builds) == 2  # the OpenMP probe, then the serial kernels
        assert "-fopenmp" in builds[0].split()
        assert "-fopenmp" not in builds[1].split()
    finally:
        monkeypatch.undo()
        native_library.cache_clear()
        native._load_cached.cache_clear()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
