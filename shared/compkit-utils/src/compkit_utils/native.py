"""Optional native kernels: small C sources compiled on first use, loaded with ctypes.

Some hot loops (a recurrent cell's elementwise gate arithmetic, run once per time step)
cost more in per-op dispatch than in arithmetic when written as PyTorch ops. A package can
ship such a loop as a few dozen lines of plain C (no Python or torch headers) and call it
through :func:`load_library`; the matrix products stay in torch.

The first call compiles the source with the system C compiler (``$CC``, else ``cc``, else
``gcc``) into a cache directory and every later process loads the cached library (well
under a second to compile; no build step at install time). The binary is tuned to the host
CPU (``-march=native``), so the cache key includes the CPU's feature flags, the compiler's
version and the flags, besides the source.

Everything here is optional by design: without a compiler, on a platform other than
Linux/macOS, when compilation fails, or with ``COMPKIT_NATIVE=0`` in the environment,
:func:`load_library` returns ``None`` (after one logged warning for a failure) and the
caller keeps its pure-PyTorch path.

Environment:
    ``COMPKIT_NATIVE``: ``0`` disables native kernels.
    ``COMPKIT_CACHE_DIR``: cache root (default ``$XDG_CACHE_HOME/compkit``, else
    ``~/.cache/compkit``); libraries go to its ``native/`` folder.
    ``CC``: the C compiler.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)

DEFAULT_FLAGS: tuple[str, ...] = (
    "-O3",
    "-march=native",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-fopenmp-simd",
    "-std=c11",
)
"""Compiler flags: IEEE arithmetic (no ``-ffast-math``), so results do not depend on how
the compiler reassociates; ``-fopenmp-simd`` only honours ``#pragma omp simd`` (no runtime)."""


def enabled() -> bool:
    """Whether native kernels may be used (``COMPKIT_NATIVE`` is not ``0``/``false``/``no``)."""
    return os.environ.get("COMPKIT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The folder compiled libraries are cached in."""
    root = os.environ.get("COMPKIT_CACHE_DIR")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "compkit" / "native"


def find_compiler() -> str | None:
    """Path of the C compiler to use, or ``None`` when there is none."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


@functools.cache
def _host_signature(compiler: str) -> str:
    """Compiler version and CPU feature flags: what ``-march=native`` code depends on."""
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        version = "?"
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                cpu += line
                break
    except OSError:
        pass
    return version + "\n" + cpu


def _compile(compiler: str, source: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile ``source`` to ``target`` atomically; the compiler's message on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "kernel.c"
        src.write_text(source)
        out = Path(tmp) / target.name
        try:
            result = subprocess.run(
                [compiler, *flags, str(src), "-o", str(out), "-lm"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            return message or f"{compiler} exited with status {result.returncode}"
        os.replace(out, target)
    return None


@functools.cache
def _load_cached(name: str, source: str, flags: tuple[str, ...]) -> ctypes.CDLL | None:
    if sys.platform not in ("linux", "darwin"):
        return None
    compiler = find_compiler()
    if compiler is None:
        _log.info("no C compiler found; %s uses its PyTorch path", name)
        return None
    key = hashlib.sha256(
        "\0".join([source, " ".join(flags), _host_signature(compiler)]).encode()
    ).hexdigest()[:20]
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    target = cache_dir() / f"{name}-{key}{suffix}"
    if not target.exists():
        try:
            error = _compile(compiler, source, flags, target)
        except OSError as exc:  # e.g. a read-only cache folder: build in a private temp dir
            fallback = Path(tempfile.mkdtemp(prefix="compkit-native-")) / target.name
            error = _compile(compiler, source, flags, fallback)
            target = fallback
            if error is None:
                _log.info(
                    "cache folder %s not writable (%s); built in %s",
                    cache_dir(),
                    exc,
                    fallback.parent,
                )
        if error is not None:
            _log.warning(
                "compiling native kernels %r failed, using the PyTorch path "
                "(set COMPKIT_NATIVE=0 to skip the attempt): %s",
                name,
                next((ln for ln in error.splitlines() if "error" in ln), error.splitlines()[0]),
            )
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        _log.warning("loading native kernels %s failed, using the PyTorch path: %s", target, exc)
        return None


BACKENDS: tuple[str, ...] = ("auto", "torch", "native")
"""Names a package's kernel switch accepts (see :class:`KernelSwitch`)."""


class KernelSwitch:
    """A package's choice between its native kernels and its PyTorch path.

    ``"auto"`` (the default) uses the native kernels when they load, ``"torch"`` never uses
    them, ``"native"`` requires them.

    Args:
        what: the kernels' name in messages, e.g. ``"masked-LSTM"``.
        library: returns the loaded kernels or ``None`` (typically a cached loader that
            calls :func:`load_library`).
    """

    def __init__(self, what: str, library: Callable[[], ctypes.CDLL | None]) -> None:
        self.what = what
        self.library = library
        self.backend = "auto"

    def set(self, name: str) -> None:
        """Select ``"auto"``, ``"torch"`` or ``"native"``.

        Raises:
            ValueError: an unknown name.
            RuntimeError: ``"native"`` when the kernels cannot be built or are disabled.
        """
        if name not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        if name == "native" and self.library() is None:
            raise RuntimeError(
                f"the native {self.what} kernels are not available (no C compiler, a failed "
                "build, or COMPKIT_NATIVE=0); use backend 'auto' or 'torch'"
            )
        self.backend = name

    def native_allowed(self) -> bool:
        """Whether the native kernels may be used: not switched off and loadable."""
        return self.backend != "torch" and self.library() is not None


def common_source() -> str:
    """The shared C primitives (``native_common.h``) to prepend to a kernel source.

    Register-blocked ``gemm`` (``C = Cin + A B`` with strided ``A``), vectorisable
    ``exp_f``/``sigmoid_f``/``sigmoid_n``, ``FTZ_BEGIN``/``FTZ_END`` (flush subnormals inside
    a pass) and ``run_jobs`` (one job per OpenMP thread); see the file's comments.
    Usage: ``load_library(name, common_source() + my_source, openmp=True)``.
    """
    from importlib.resources import files

    return files("compkit_utils").joinpath("native_common.h").read_text()


def load_library(
    name: str, source: str, flags: tuple[str, ...] = DEFAULT_FLAGS, *, openmp: bool = False
) -> ctypes.CDLL | None:
    """Compile (once, cached) and load a C source as a shared library.

    Args:
        name: short name of the library (used in the file name and in messages).
        source: the C source text.
        flags: compiler flags (default :data:`DEFAULT_FLAGS`).
        openmp: compile with ``-fopenmp``. Import torch first: its wheel ships GNU OpenMP
            under the same soname (``libgomp.so.1``), so the library then binds to the
            runtime torch already loaded and its parallel regions run on torch's intra-op
            threads instead of a second pool that would compete for the cores.

    Returns:
        The loaded library, or ``None`` when native kernels are disabled or unavailable
        (callers then use their pure-PyTorch path). The result is cached per process.
    """
    if not enabled():
        return None
    if openmp:
        flags = (*tuple(f for f in flags if f != "-fopenmp-simd"), "-fopenmp")
    return _load_cached(name, source, tuple(flags))
