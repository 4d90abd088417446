from __future__ import annotations

import ctypes
import logging

import pytest

from compkit_utils import native

SOURCE = """
#include <stdint.h>
int64_t add_scaled(int64_t a, int64_t b) { return a + SCALE * b; }
"""

needs_compiler = pytest.mark.skipif(native.find_compiler() is None, reason="no C compiler")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPKIT_NATIVE", raising=False)
    native._load_cached.cache_clear()
    yield
    native._load_cached.cache_clear()


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


@needs_compiler
def test_a_failed_build_warns_once_and_returns_none(caplog):
    with caplog.at_level(logging.WARNING, logger="compkit_utils.native"):
        assert native.load_library("broken", "this is not C;") is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "compiling native kernels 'broken' failed" in messages[0]
    assert "COMPKIT_NATIVE=0" in messages[0]


def test_no_compiler_means_the_pytorch_path(monkeypatch):
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    assert native.load_library("probe", SOURCE) is None


@needs_compiler
def test_unwritable_cache_falls_back_to_a_private_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COMPKIT_CACHE_DIR", str(blocker))
    lib = native.load_library("probe", SOURCE, (*native.DEFAULT_FLAGS, "-DSCALE=1"))
    assert lib is not None
    assert _call(lib, 1, 1) == 2


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
