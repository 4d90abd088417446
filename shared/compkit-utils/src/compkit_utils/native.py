"""Optional native kernels: small C sources compiled on first use, loaded with ctypes.

Some hot loops (a recurrent cell's elementwise gate arithmetic, run once per time step)
cost more in per-op dispatch than in arithmetic when written as PyTorch ops. A package can
ship such a loop as a few dozen lines of plain C (no Python or torch headers) and call it
through :func:`load_library`; the matrix products stay in torch.

The first call compiles the source with the system C compiler (``$CC``, else ``cc``, else
``gcc``, else ``clang``) into a cache directory and every later process loads the cached
library (well under a second to compile; no build step at install time). The binary is
tuned to the host CPU (``-march=native``), so the cache key includes the CPU's feature
flags, the compiler's version and the flags, besides the source.

OpenMP (``openmp=True``) is used only where the compiler accepts ``-fopenmp``: a tiny probe
program is compiled once per compiler and flags (the answer is cached on disk next to the
libraries); without OpenMP the kernels are built serial and compute the same results.
Apple clang has no OpenMP; see the compkit-utils docs for the Homebrew libomp recipe.

A failed build is remembered: a ``<name>-<key>.failed`` file in the cache holds the
compiler's message, so later processes neither recompile nor warn again (only the process
that ran the failing compiler logs one warning, with the reason and the fix). Deleting the
file, or a change of compiler, flags or source, retries.

Everything here is optional by design: without a compiler, on a platform other than
Linux/macOS, when compilation fails, or with ``COMPKIT_NATIVE=0`` in the environment,
:func:`load_library` returns ``None`` and the caller keeps its pure-PyTorch path. With
``COMPKIT_NATIVE=require`` (what CI sets on its Linux runner) any of these is an error
instead (:class:`NativeUnavailableError`), so the native path cannot silently drop out of a
test run.

Argument passing: a kernel entry point takes a pointer to a C struct of named fields, and
the package declares the same struct as a :class:`ctypes.Structure`; :func:`check_layout`
compares the two layouts (sizes and field offsets reported by the C side) when the library
is loaded.

Environment:
    ``COMPKIT_NATIVE``: ``0`` (``false``/``no``/``off``) disables native kernels;
    ``require`` makes a missing kernel an error; anything else (default) is "use when
    available".
    ``COMPKIT_CACHE_DIR``: cache root (default ``$XDG_CACHE_HOME/compkit``, else
    ``~/.cache/compkit``); libraries go to its ``native/`` folder.
    ``CC``: the C compiler. ``CFLAGS`` / ``LDFLAGS``: extra compile / link flags, appended
    (e.g. the include and library folders of a separately installed OpenMP runtime).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

_log = logging.getLogger(__name__)

DEFAULT_FLAGS: tuple[str, ...] = (
    "-O3",
    "-march=native",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-ffp-contract=off",
    "-fopenmp-simd",
    "-std=c11",
)
"""Compiler flags. The float rule of every kernel: IEEE arithmetic, no ``-ffast-math``
(results do not depend on how the compiler reassociates) and no implicit contraction of
``a * b + c`` into a fused multiply-add (``-ffp-contract=off``); fused multiply-adds happen
only where a kernel writes them (``native_common.h``'s ``FMA``/``FMAF``).
``-fopenmp-simd`` only honours ``#pragma omp simd`` (no runtime)."""

_OFF = ("0", "false", "no", "off")

OPENMP_PROBE = """
#include <omp.h>
int compkit_openmp_probe(int n) {
    int total = 0;
#pragma omp parallel for reduction(+ : total)
    for (int i = 0; i < n; ++i) total += i + omp_get_num_threads() * 0;
    return total;
}
"""
"""The program whose successful build with ``-fopenmp`` means the compiler has OpenMP."""


class NativeUnavailableError(RuntimeError):
    """``COMPKIT_NATIVE=require`` and a native library cannot be built or loaded."""


def mode() -> str:
    """``"off"``, ``"auto"`` or ``"require"``, from ``COMPKIT_NATIVE``."""
    value = os.environ.get("COMPKIT_NATIVE", "").strip().lower()
    if value in _OFF:
        return "off"
    return "require" if value == "require" else "auto"


def enabled() -> bool:
    """Whether native kernels may be used (``COMPKIT_NATIVE`` is not ``0``/``false``/``no``)."""
    return mode() != "off"


def required() -> bool:
    """Whether ``COMPKIT_NATIVE=require``: a kernel that does not load is an error."""
    return mode() == "require"


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


def _env_flags() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``CFLAGS`` and ``LDFLAGS`` split like a shell would."""
    return (
        tuple(shlex.split(os.environ.get("CFLAGS", ""))),
        tuple(shlex.split(os.environ.get("LDFLAGS", ""))),
    )


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
    return compiler + "\n" + version + "\n" + cpu


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _compile(compiler: str, source: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Compile ``source`` to ``target`` atomically; the compiler's message on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cflags, ldflags = _env_flags()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "kernel.c"
        src.write_text(source)
        out = Path(tmp) / target.name
        try:
            result = subprocess.run(
                [compiler, *flags, *cflags, str(src), "-o", str(out), *ldflags, "-lm"],
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


def _compile_somewhere(
    compiler: str, source: str, flags: tuple[str, ...], target: Path
) -> tuple[str | None, Path]:
    """:func:`_compile` into the cache, else (read-only cache) into a private temp folder."""
    try:
        return _compile(compiler, source, flags, target), target
    except OSError as exc:
        folder = Path(tempfile.mkdtemp(prefix="compkit-native-"))
        # a private build is not reused by other processes: remove it when this one exits
        # (a loaded library stays mapped after its file is unlinked)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        fallback = folder / target.name
        error = _compile(compiler, source, flags, fallback)
        if error is None:
            _log.info("cache folder %s not writable (%s); built in %s", cache_dir(), exc, fallback)
        return error, fallback


def _first_error_line(message: str) -> str:
    lines = message.splitlines() or [message]
    return next((ln for ln in lines if "error" in ln.lower()), lines[0]).strip()


@functools.cache
def openmp_supported(compiler: str, flags: tuple[str, ...] = DEFAULT_FLAGS) -> bool:
    """Whether ``compiler`` builds and links a shared library with ``-fopenmp`` (cached).

    Compiles :data:`OPENMP_PROBE` once per compiler, flags and ``CFLAGS``/``LDFLAGS``; the
    answer is kept in the cache folder (``openmp-<key>.yes`` or ``.no``), so later processes
    do not probe again. Apple clang answers no (it rejects ``-fopenmp``); a no is logged
    as one warning, by the process that ran the probe.
    """
    base = tuple(f for f in flags if f not in ("-fopenmp-simd", "-fopenmp"))
    cflags, ldflags = _env_flags()
    key = _key(OPENMP_PROBE, " ".join(base), " ".join(cflags + ldflags), _host_signature(compiler))
    folder = cache_dir()
    for answer in ("yes", "no"):
        if (folder / f"openmp-{key}.{answer}").exists():
            return answer == "yes"
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    error, built = _compile_somewhere(
        compiler, OPENMP_PROBE, (*base, "-fopenmp"), folder / f"openmp-probe-{key}{suffix}"
    )
    if error is None:
        built.unlink(missing_ok=True)
    else:
        _log.warning(
            "%s has no usable OpenMP (-fopenmp: %s): native kernels are built serial (still "
            "faster than the PyTorch path). For parallel kernels install an OpenMP runtime "
            "(Linux: libgomp; macOS: Homebrew libomp with the CC/CFLAGS/LDFLAGS recipe in the "
            "compkit-utils docs). This answer is remembered in %s.",
            compiler,
            _first_error_line(error),
            folder,
        )
    answer = "yes" if error is None else "no"
    with contextlib.suppress(OSError):
        (folder / f"openmp-{key}.{answer}").write_text((error or "") + "\n")
    return error is None


def _unavailable(name: str, reason: str) -> None:
    """In require mode raise :class:`NativeUnavailableError`; otherwise do nothing."""
    if required():
        raise NativeUnavailableError(
            f"native kernels {name!r} are required (COMPKIT_NATIVE=require) but {reason}"
        )


_FIX = (
    "to fix: point CC at a working C compiler (install gcc or clang; on macOS the Xcode "
    "command line tools), or set COMPKIT_NATIVE=0 to use the PyTorch path without trying"
)


@functools.cache
def _load_cached(name: str, source: str, flags: tuple[str, ...]) -> ctypes.CDLL | None:
    if sys.platform not in ("linux", "darwin"):
        _unavailable(name, f"the platform {sys.platform!r} is not Linux or macOS")
        return None
    compiler = find_compiler()
    if compiler is None:
        _log.info("no C compiler found; %s uses its PyTorch path", name)
        _unavailable(name, "no C compiler was found (set CC or install gcc/clang)")
        return None
    if "-fopenmp" in flags and not openmp_supported(compiler, flags):
        flags = (*tuple(f for f in flags if f != "-fopenmp"), "-fopenmp-simd")
        _log.info("%s: %s has no OpenMP; building %s serial", name, compiler, name)
    cflags, ldflags = _env_flags()
    key = _key(source, " ".join(flags), " ".join(cflags + ldflags), _host_signature(compiler))
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    target = cache_dir() / f"{name}-{key}{suffix}"
    marker = target.with_suffix(".failed")
    if not target.exists():
        if marker.exists() and not required():
            _log.info(
                "native kernels %r: an earlier build failed (%s); using the PyTorch path. "
                "Delete that file to retry.",
                name,
                marker,
            )
            return None
        error, target = _compile_somewhere(compiler, source, flags, target)
        if error is not None:
            with contextlib.suppress(OSError):
                marker.write_text(f"{compiler} {' '.join(flags)}\n{error}\n")
            _unavailable(name, f"compiling them failed: {_first_error_line(error)}")
            _log.warning(
                "compiling native kernels %r failed, using the PyTorch path (%s); the "
                "failure is remembered in %s: %s",
                name,
                _FIX,
                marker,
                _first_error_line(error),
            )
            return None
        with contextlib.suppress(OSError):  # a stale marker (e.g. after a failed retry)
            marker.unlink(missing_ok=True)
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        _unavailable(name, f"loading {target} failed: {exc}")
        _log.warning("loading native kernels %s failed, using the PyTorch path: %s", target, exc)
        return None


def struct_layout(struct: type[ctypes.Structure], base: int = 0) -> list[int]:
    """``[sizeof, offsetof(field)...]`` of a ctypes struct, in field order.

    A field that is itself a struct contributes the offsets of its own fields (flattened,
    relative to the outer struct) instead of its own offset.
    """
    fields: Sequence[tuple[str, object]] = struct._fields_  # pyright: ignore[reportAssignmentType]
    offsets: list[int] = []
    for field in fields:
        name, kind = field[0], field[1]
        offset = base + getattr(struct, name).offset
        if isinstance(kind, type) and issubclass(kind, ctypes.Structure):
            offsets += struct_layout(kind, offset)[1:]
        else:
            offsets.append(offset)
    return [ctypes.sizeof(struct), *offsets]


def check_layout(lib: ctypes.CDLL, symbol: str, structs: Sequence[type[ctypes.Structure]]) -> None:
    """Check that a library's C structs have the layout of ``structs``.

    The library exports ``int64_t symbol(int64_t i)``: entry ``i`` of the concatenated
    ``[sizeof(S), offsetof(S, field)...]`` lists of its argument structs, in the order of
    ``structs``, and ``-1`` past the end.

    Raises:
        RuntimeError: the layouts differ (the C source and its Python glue disagree).
    """
    fn = getattr(lib, symbol)
    fn.argtypes = [ctypes.c_int64]
    fn.restype = ctypes.c_int64
    expected = [n for struct in structs for n in struct_layout(struct)]
    actual: list[int] = []
    while len(actual) <= len(expected):
        value = int(fn(len(actual)))
        if value < 0:
            break
        actual.append(value)
    if actual != expected:
        names = ", ".join(s.__name__ for s in structs)
        raise RuntimeError(
            f"{symbol}: the C argument structs differ from the ctypes ones ({names}): "
            f"C {actual}, Python {expected}"
        )


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
        openmp: compile with ``-fopenmp`` where the compiler accepts it (see
            :func:`openmp_supported`; serial otherwise). Import torch first: its wheel
            ships GNU OpenMP under the same soname (``libgomp.so.1``), so the library then
            binds to the runtime torch already loaded and its parallel regions run on
            torch's intra-op threads instead of a second pool that would compete for the cores.

    Returns:
        The loaded library, or ``None`` when native kernels are disabled or unavailable
        (callers then use their pure-PyTorch path). The result is cached per process.

    Raises:
        NativeUnavailableError: ``COMPKIT_NATIVE=require`` and the library cannot be built
            or loaded.
    """
    if not enabled():
        return None
    if openmp:
        flags = (*tuple(f for f in flags if f != "-fopenmp-simd"), "-fopenmp")
    return _load_cached(name, source, tuple(flags))
