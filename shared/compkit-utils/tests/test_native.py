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
