from __future__ import annotations

import atexit
import ctypes
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from compkit_utils import native

SOURCE = """
#include <stdint.h>
int64_t add_scaled(int64_t a, int64_t b) { return a + SCALE * b; }
"""

# Under COMPKIT_NATIVE=require (CI) a missing compiler fails these tests instead.
needs_compiler = pytest.mark.skipif(
    native.find_compiler() is None and not native.required(), reason="no C compiler"
)


def _clear_caches() -> None:
    """Forget what this process loaded and probed (as a new process would)."""
    native._load_cached.cache_clear()
    native.openmp_supported.cache_clear()
    native._host_signature.cache_clear()


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPKIT_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("COMPKIT_NATIVE", "CFLAGS", "LDFLAGS"):
        monkeypatch.delenv(name, raising=False)
    _clear_caches()
    yield
    _clear_caches()


def _fake_compiler(folder: Path, body: str) -> Path:
    """A ``CC`` shell script that logs each call to ``calls.log`` and then runs ``body``."""
    script = folder / "fake-cc"
    log = folder / "calls.log"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _calls(folder: Path) -> list[str]:
    log = folder / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return [c for c in calls if c != "--version"]  # builds and probes only


def _call(lib: ctypes.CDLL, a: int, b: int) -> int:
    fn = lib.add_scaled
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int64
    return int(fn(a, b))


@needs_compiler
def test_compiles_once_and_loads_from_the_cache(tmp_path):
    flags = (*native.DEFAULT_FLAGS, "-DSCALE=3")
    lib = native.load_library("probe", SOURCE, flags)
    assert lib is not None
    assert _call(lib, 1, 2) == 7
    built = list((tmp_path / "cache" / "native").glob("probe-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native._load_cached.cache_clear()
    again = native.load_library("probe", SOURCE, flags)
    assert again is not None
    assert _call(again, 2, 2) == 8
    assert built[0].stat().st_mtime_ns == stamp  # not rebuilt
    # Other flags are another library.
    other = native.load_library("probe", SOURCE, (*native.DEFAULT_FLAGS, "-DSCALE=10"))
    assert other is not None
    assert _call(other, 1, 2) == 21
    assert len(list((tmp_path / "cache" / "native").glob("probe-*.so"))) == 2
    # No temporary build folders are left behind.
    assert not list((tmp_path / "cache" / "native").glob(".build-*"))


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("COMPKIT_NATIVE", "0")
    assert not native.enabled()
    assert native.load_library("probe", SOURCE) is None


@pytest.mark.parametrize(
    ("value", "mode"),
    [("", "auto"), ("1", "auto"), ("off", "off"), ("No", "off"), (" require ", "require")],
)
def test_mode_from_environment(monkeypatch, value, mode):
    monkeypatch.setenv("COMPKIT_NATIVE", value)
    assert native.mode() == mode
    assert native.required() == (mode == "require")
    assert native.enabled() == (mode != "off")


@needs_compiler
def test_a_failed_build_warns_once_and_returns_none(caplog):
    with caplog.at_level(logging.WARNING, logger="compkit_utils.native"):
        assert native.load_library("broken", "this is not C;") is None
        assert native.load_library("broken", "this is not C;") is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "compiling native kernels 'broken' failed" in messages[0]
    assert "working C compiler" in messages[0]
    assert "COMPKIT_NATIVE=0" in messages[0]


def test_a_failed_build_is_remembered_across_processes(monkeypatch, tmp_path, caplog):
    """A compiler that always fails runs once: later processes read the marker file."""
    cc = _fake_compiler(tmp_path, 'echo "kernel.c:1: error: this compiler is broken" >&2; exit 1')
    monkeypatch.setenv("CC", str(cc))
    with caplog.at_level(logging.WARNING, logger="compkit_utils.native"):
        assert native.load_library("probe", SOURCE) is None
        first = len(_calls(tmp_path))
        assert first == 1  # no OpenMP requested: no probe, one build
        _clear_caches()  # a new process
        assert native.load_library("probe", SOURCE) is None
    assert len(_calls(tmp_path)) == first  # not recompiled
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # only the process that ran the compiler warns
    assert "this compiler is broken" in warnings[0]
    markers = list((tmp_path / "cache" / "native").glob("probe-*.failed"))
    assert len(markers) == 1
    assert "this compiler is broken" in markers[0].read_text()
    # Deleting the marker retries the build.
    markers[0].unlink()
    _clear_caches()
    assert native.load_library("probe", SOURCE) is None
    assert len(_calls(tmp_path)) == first + 1


def test_require_mode_turns_a_failure_into_an_error(monkeypatch, tmp_path):
    cc = _fake_compiler(tmp_path, 'echo "error: broken" >&2; exit 1')
    monkeypatch.setenv("CC", str(cc))
    assert native.load_library("probe", SOURCE) is None  # auto: remembered failure
    _clear_caches()
    monkeypatch.setenv("COMPKIT_NATIVE", "require")
    # require mode retries despite the marker, then fails loudly
    with pytest.raises(native.NativeUnavailableError, match=r"'probe' are required.*error: broken"):
        native.load_library("probe", SOURCE)
    assert len(_calls(tmp_path)) == 2
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    with pytest.raises(native.NativeUnavailableError, match="no C compiler"):
        native.load_library("probe", SOURCE)
    switch = native.KernelSwitch("probe", lambda: native.load_library("probe", SOURCE))
    with pytest.raises(native.NativeUnavailableError):
        switch.native_allowed()  # a package's "auto" switch cannot fall back either


@needs_compiler
def test_a_compiler_without_openmp_builds_serial_kernels(monkeypatch, tmp_path, caplog):
    """Like Apple clang: -fopenmp is rejected, the kernels build without it and agree."""
    real = native.find_compiler()
    cc = _fake_compiler(
        tmp_path,
        'for a in "$@"; do if [ "$a" = "-fopenmp" ]; then\n'
        "  echo \"clang: error: unsupported option '-fopenmp'\" >&2; exit 1\nfi; done\n"
        f'exec "{real}" "$@"',
    )
    monkeypatch.setenv("CC", str(cc))
    source = native.common_source() + RUN_JOBS_SOURCE
    with caplog.at_level(logging.WARNING, logger="compkit_utils.native"):
        lib = native.load_library("omp_probe", source, openmp=True)
    assert lib is not None
    (warning,) = [r.getMessage() for r in caplog.records]  # one warning, with the fix
    assert "no usable OpenMP" in warning
    assert "libomp" in warning
    assert _sum_of_squares(lib, 8) == [i * i for i in range(8)]
    assert not native.openmp_supported(str(cc))
    calls = _calls(tmp_path)
    assert sum("-fopenmp" in c.split() for c in calls) == 1  # the probe only
    assert not any("-fopenmp" in c.split() for c in calls[1:])
    assert list((tmp_path / "cache" / "native").glob("openmp-*.no"))
    # A new process neither probes nor builds again, nor warns.
    _clear_caches()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="compkit_utils.native"):
        assert native.load_library("omp_probe", source, openmp=True) is not None
    assert len(_calls(tmp_path)) == len(calls)
    assert not caplog.records


@needs_compiler
def test_openmp_is_used_where_the_compiler_has_it(tmp_path):
    compiler = native.find_compiler()
    assert compiler is not None
    if not native.openmp_supported(compiler):
        pytest.skip(f"{compiler} has no OpenMP")  # e.g. Apple clang: covered by the test above
    lib = native.load_library("omp_probe", native.common_source() + RUN_JOBS_SOURCE, openmp=True)
    assert lib is not None
    assert _sum_of_squares(lib, 8) == [i * i for i in range(8)]
    assert list((tmp_path / "cache" / "native").glob("openmp-*.yes"))


RUN_JOBS_SOURCE = """
typedef struct { int64_t i, out; } square_job;
static void *square(void *arg) { square_job *j = arg; j->out = j->i * j->i; return NULL; }
void squares(int64_t n, int64_t *out) {
    square_job jobs[64];
    for (int64_t i = 0; i < n; ++i) jobs[i] = (square_job){i, -1};
    run_jobs(jobs, sizeof(square_job), n, square);
    for (int64_t i = 0; i < n; ++i) out[i] = jobs[i].out;
}
"""


def _sum_of_squares(lib: ctypes.CDLL, n: int) -> list[int]:
    out = (ctypes.c_int64 * n)()
    lib.squares.argtypes = [ctypes.c_int64, ctypes.c_void_p]
    lib.squares(n, out)
    return list(out)


LAYOUT_SOURCE = """
#include <stddef.h>
#include <stdint.h>
typedef struct { int64_t n; int32_t flag; } inner;
typedef struct { inner d; const float *x; double scale; } args;
int64_t probe_layout(int64_t i) {
    const int64_t t[] = {sizeof(args), offsetof(args, d.n), offsetof(args, d.flag),
                         offsetof(args, x), offsetof(args, scale)};
    return i >= 0 && i < 5 ? t[i] : -1;
}
"""


class _Inner(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int64), ("flag", ctypes.c_int32)]


class _Args(ctypes.Structure):
    _fields_ = [("d", _Inner), ("x", ctypes.c_void_p), ("scale", ctypes.c_double)]


class _WrongArgs(ctypes.Structure):  # a field missing on the Python side
    _fields_ = [("d", _Inner), ("x", ctypes.c_void_p)]


@needs_compiler
def test_struct_layouts_are_checked_against_the_c_side():
    lib = native.load_library("layout_probe", LAYOUT_SOURCE)
    assert lib is not None
    assert native.struct_layout(_Args) == [32, 0, 8, 16, 24]
    native.check_layout(lib, "probe_layout", [_Args])
    with pytest.raises(RuntimeError, match="differ from the ctypes ones"):
        native.check_layout(lib, "probe_layout", [_WrongArgs])
    with pytest.raises(RuntimeError, match="differ from the ctypes ones"):
        native.check_layout(lib, "probe_layout", [_Args, _Inner])  # C reports fewer entries


def test_no_compiler_means_the_pytorch_path(monkeypatch):
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    assert native.load_library("probe", SOURCE) is None


@needs_compiler
def test_unwritable_cache_falls_back_to_a_private_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COMPKIT_CACHE_DIR", str(blocker))
    at_exit: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(atexit, "register", lambda f, *a, **k: at_exit.append((f, a, k)))
    lib = native.load_library("probe", SOURCE, (*native.DEFAULT_FLAGS, "-DSCALE=1"))
    assert lib is not None
    assert _call(lib, 1, 1) == 2
    # the private folders are removed at exit (nothing left in the temp dir), and a loaded
    # library keeps working once its file is gone
    folders = [Path(a[0]) for _, a, _ in at_exit]
    assert folders
    assert all(f.name.startswith("compkit-native-") and f.is_dir() for f in folders)
    for f, a, k in at_exit:
        f(*a, **k)
    assert not any(f.exists() for f in folders)
    assert _call(lib, 2, 3) == 5


def test_kernel_switch_validates_and_falls_back():
    loaded: list[object | None] = [None]
    switch = native.KernelSwitch("probe", lambda: loaded[0])  # type: ignore[arg-type, return-value]
    assert switch.backend == "auto"
    assert not switch.native_allowed()  # nothing loads: the PyTorch path
    with pytest.raises(ValueError, match="backend must be one of"):
        switch.set("fast")
    with pytest.raises(RuntimeError, match="native probe kernels are not available"):
        switch.set("native")
    assert switch.backend == "auto"
    loaded[0] = object()
    assert switch.native_allowed()
    switch.set("torch")
    assert not switch.native_allowed()
    switch.set("native")
    assert switch.native_allowed()


@needs_compiler
def test_common_source_compiles_with_a_kernel():
    source = native.common_source() + (
        "void mm(const float *a, const float *b, float *c) {"
        " gemm(3, 57, 5, a, 5, 1, b, 57, NULL, c, 57); }"
        "void sig(const float *x, float *y) { sigmoid_n(x, y, 21, 1.0f); }"
    )
    lib = native.load_library("common_probe", source)
    assert lib is not None
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5), dtype=np.float32)
    b = rng.standard_normal((5, 57), dtype=np.float32)
    c = np.zeros((3, 57), dtype=np.float32)
    ptr = ctypes.c_void_p
    lib.mm.argtypes = [ptr, ptr, ptr]
    lib.mm(a.ctypes.data, b.ctypes.data, c.ctypes.data)
    # 57 columns: full blocks, one-vector blocks and single columns on AVX-512 and AVX2
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)
    x = np.linspace(-6, 6, 21, dtype=np.float32)
    y = np.zeros_like(x)
    lib.sig.argtypes = [ptr, ptr]
    lib.sig(x.ctypes.data, y.ctypes.data)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)
