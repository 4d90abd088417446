"""Device selection and CPU thread control."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal

from compkit_utils.errors import UserError, missing_torch

if TYPE_CHECKING:
    import torch

_log = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def pick_device(name: str = "auto") -> torch.device:
    """Resolve a device name to a :class:`torch.device`.

    Args:
        name: ``"auto"`` (CUDA if available, else MPS if available, else CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        UserError: the device is unknown or not available on this machine.
    """
    try:
        import torch
    except ImportError as exc:
        raise missing_torch(f"device {name!r}") from exc

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        msg = f"--device {name!r} is not a device name; use auto, cpu, cuda or mps"
        raise UserError(msg) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise UserError(f"--device {name!r} is not supported; use auto, cpu, cuda or mps")
    return device


def set_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op CPU thread count and return the count in force.

    Without an explicit count the thread policy applies: ``$OMP_NUM_THREADS`` when set, else
    :func:`auto_threads` (one thread per core idle at start, at least one). The choice is
    logged at INFO (``threads: 1 (1 of 2 cores busy)``). Over-subscribing a small machine
    (more threads than free cores) makes small models many times slower.

    The thread count can change the last bits of a seeded CPU run (torch's reductions and
    the encoder kernels' weight gradients add per-thread partial sums); pass ``--threads``
    (or set ``OMP_NUM_THREADS``) to reproduce a run exactly on a machine under other load.

    Args:
        num_threads: threads to use; ``None`` applies the policy above.

    Raises:
        UserError: the count, or ``$OMP_NUM_THREADS``, is not a whole number of at least 1.
    """
    if num_threads is None and os.environ.get("OMP_NUM_THREADS"):
        value = os.environ["OMP_NUM_THREADS"]
        try:
            num_threads = int(value)
        except ValueError:
            msg = f"OMP_NUM_THREADS={value!r} is not a whole number; set e.g. 1, or unset it"
            raise UserError(msg) from None
        if num_threads < 1:
            raise UserError(f"OMP_NUM_THREADS must be at least 1, got {num_threads}")
        _log.info("threads: %d (OMP_NUM_THREADS)", num_threads)
    global _GOVERNOR
    _GOVERNOR = None
    if num_threads is None:
        num_threads, reason = auto_threads()
        _log.info("threads: %d (%s)", num_threads, reason)
        _GOVERNOR = ThreadGovernor(num_threads)
    if num_threads < 1:
        raise UserError(f"--threads must be at least 1, got {num_threads}")
    try:
        import torch
    except ImportError:  # a torch-free install (NumPy-only commands): nothing else to set
        return num_threads
    torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def prefer_passive_wait() -> bool:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    By default libgomp's threads spin for a while after each parallel region; when another
    process holds a core, the spinning thread and the descheduled one stall each other and a
    small model's step gets several times slower than at one thread. The OpenMP runtime reads
    the setting once, when torch loads it, so call this before importing torch (the command
    lines do, first thing). It changes no numbers.

    Returns:
        Whether the passive policy is requested for this process: False when torch is
        already imported or the user set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (theirs
        wins).
    """
    user_set = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not user_set and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def prefer_thread_invariant_blas() -> bool:
    """Ask MKL for matrix products that do not depend on the thread count.

    The default thread count follows the idle cores at start (:func:`auto_threads`), so two
    runs of one seeded command may use different counts. The native kernels give the same
    bits at any count; MKL's products do not by default (small products split their work by
    thread, e.g. compile-seg's ``(V, H) @ (H, 4H)`` projection table, ~1e-6 apart). MKL's
    strict conditional-reproducibility mode (``MKL_CBWR=AUTO,STRICT``: the best code path
    for the CPU, results independent of the thread count) closes that gap, so a seeded CPU
    run reproduces its metrics exactly at any thread count on the same machine. MKL reads
    the setting at its first call, so the command lines call this first thing. Other BLAS
    libraries (OpenBLAS on ARM, Accelerate) ignore it: pass ``--threads`` there to reproduce
    a run bit for bit.

    Returns:
        Whether the strict mode is requested: False when the user set ``MKL_CBWR`` to
        something else (theirs wins).
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    return os.environ["MKL_CBWR"].upper() == "AUTO,STRICT"


#: glibc ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: Freed heap memory kept for reuse before glibc returns the top of the heap to the system.
KEEP_FREED_BYTES = 1 << 30
_MALLOC_ENV = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)


def keep_freed_memory() -> bool:
    """Serve large tensors from the heap and keep freed memory for the next step (glibc).

    glibc's ``malloc`` gives every block above its mmap threshold (128 KiB, rising to at most
    32 MiB) fresh pages from the kernel and returns them on ``free``, so a training or
    evaluation step whose activations are tens of MB pays a page fault and the zeroing of
    every 4 KiB page again at every step — on a virtual machine tens of µs a page: a
    ``[30720, 584]`` float tensor (72 MiB, the planner's Q-network rows of 480 frames) took
    0.6 s to fill where its matrix product took 0.15 s. With ``mmap`` switched off
    (``M_MMAP_MAX = 0``) and the heap's top trimmed only above :data:`KEEP_FREED_BYTES`, the
    blocks freed by one step serve the next one (what the jemalloc or tcmalloc that PyTorch's
    CPU tuning guide suggests preloading also give). Numbers do not change, only where
    tensors live; a process keeps up to its peak heap (plus 1 GiB of free top) until it exits.

    Not applied when the user configured glibc's allocator (``MALLOC_*_`` variables or
    ``GLIBC_TUNABLES`` with ``glibc.malloc``), when ``COMPKIT_MALLOC=system`` or on another
    C library (macOS, musl, Windows: their allocators are left as they are).

    Returns:
        Whether the setting is in force for this process.
    """
    import ctypes
    import platform

    if os.environ.get("COMPKIT_MALLOC", "").lower() == "system":
        return False
    if any(k in os.environ for k in _MALLOC_ENV) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def prepare_cpu_runtime() -> None:
    """Set up the CPU runtime; command lines call this first thing, before torch loads.

    Runs :func:`prefer_thread_invariant_blas` (results that do not depend on the thread
    count, so :class:`ThreadGovernor` may change it mid-run) and :func:`keep_freed_memory`
    (a step's freed tensors serve the next step instead of fresh pages from the kernel).
    OpenMP keeps its default (spinning) wait policy: passive waiting cost 30-40% of
    compile-seg's step on an idle 2-core machine, while the governor already drops to one
    thread when other processes take a core; :func:`prefer_passive_wait` remains for callers
    that want it.
    """
    prefer_thread_invariant_blas()
    keep_freed_memory()


def usable_cpus() -> list[int]:
    """The CPU numbers this process may run on (its affinity mask where the OS has one)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return sorted(getaffinity(0))
        except OSError:
            pass
    return list(range(os.cpu_count() or 1))


def _read_proc_stat() -> str:
    with open("/proc/stat", encoding="ascii") as f:
        return f.read()


def _cpu_times(text: str, cpus: Iterable[int]) -> dict[int, tuple[int, int]]:
    """``cpu → (idle, total)`` jiffies of the given CPUs from ``/proc/stat`` text."""
    wanted = set(cpus)
    times: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        try:
            cpu = int(fields[0][3:])
            values = [int(v) for v in fields[1:9]]  # user … steal; guest is inside user
        except ValueError:
            continue
        if cpu in wanted and len(values) >= 4:
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            times[cpu] = (idle, sum(values))
    return times


def free_cores(
    interval: float = 0.08,
    *,
    cpus: Iterable[int] | None = None,
    read_stat: Callable[[], str] = _read_proc_stat,
    sleep: Callable[[float], object] = time.sleep,
) -> float | None:
    """Idle capacity, in cores, of the CPUs this process may use, sampled over ``interval``.

    Reads the per-CPU counters of ``/proc/stat`` twice, ``interval`` seconds apart (the
    calling thread sleeps meanwhile, so its own process counts as idle).

    Args:
        interval: sampling time in seconds (~0.1 s resolves one busy core on 2 cores).
        cpus: CPU numbers to look at (default: :func:`usable_cpus`).
        read_stat: returns the text of ``/proc/stat`` (tests pass a fake).
        sleep: waits ``interval`` seconds (tests pass a no-op).

    Returns:
        The sum over those CPUs of their idle fraction (0 … number of CPUs), or ``None``
        when the counters cannot be read (no ``/proc/stat``, CPUs missing, no ticks).
    """
    cpu_list = list(usable_cpus() if cpus is None else cpus)
    try:
        before = _cpu_times(read_stat(), cpu_list)
        sleep(interval)
        after = _cpu_times(read_stat(), cpu_list)
    except OSError:
        return None
    if not cpu_list or set(before) != set(cpu_list) or set(after) != set(cpu_list):
        return None
    free = 0.0
    ticks = 0
    for cpu in cpu_list:
        d_idle = after[cpu][0] - before[cpu][0]
        d_total = after[cpu][1] - before[cpu][1]
        if d_total <= 0:
            continue
        ticks += d_total
        free += min(max(d_idle / d_total, 0.0), 1.0)
    return free if ticks > 0 else None


FREE_CORE_IDLE = 0.75
"""Idle fraction from which a core counts as free for :func:`auto_threads`."""


def auto_threads(
    *,
    cpus: Iterable[int] | None = None,
    measure: Callable[[list[int]], float | None] | None = None,
) -> tuple[int, str]:
    """The default thread count: one per core idle at start, capped by the usable cores.

    A small model's step is a chain of short parallel regions; one thread on a core that
    another process holds stalls every region (seen: 3.5x slower than one thread with one
    busy process on 2 cores), while a thread short of an idle core costs at most that
    core's share. So a core counts as free only when it is at least
    :data:`FREE_CORE_IDLE` idle, and the answer is 1 whenever it is unclear.

    Args:
        cpus: the CPU numbers the process may use (default: :func:`usable_cpus`).
        measure: ``cpus → idle cores`` or ``None`` (default: :func:`free_cores`).

    Returns:
        ``(threads, reason)``, e.g. ``(1, "1 of 2 cores busy")``.
    """
    cpu_list = list(usable_cpus() if cpus is None else cpus)
    total = len(cpu_list)
    if total <= 1:
        return 1, "1 core available"
    free = (measure or (lambda c: free_cores(cpus=c)))(cpu_list)
    if free is None:
        return 1, f"idle cores unknown, {total} available"
    threads = min(total, max(1, int(free + (1.0 - FREE_CORE_IDLE))))
    busy = total - min(total, int(free + (1.0 - FREE_CORE_IDLE)))
    return threads, f"{busy} of {total} cores busy"


_SPIN = """\
import os
import sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


@contextlib.contextmanager
def busy_process(start_delay: float = 0.3) -> Iterator[subprocess.Popen[bytes]]:
    """Keep one CPU core busy with a spinning child process for the duration of the block.

    The child is a pure-Python loop, pinned nowhere (the scheduler places it like any other
    job); it is killed when the block exits, by an exception or Ctrl-C included, and exits
    by itself if this process dies first (it watches its parent).

    Args:
        start_delay: seconds to wait after starting it, so that it is spinning already.

    Yields:
        The child process.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _SPIN, str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(start_delay)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def time_thread_counts(
    jobs: Mapping[str, Callable[[], object]],
    counts: Mapping[str, int],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
) -> dict[str, dict[str, float]]:
    """Median milliseconds of each job at each of several torch thread counts.

    The settings are interleaved repetition by repetition, so a change of machine load
    affects them alike; each is timed on its own even where two name the same count. The
    thread count in force before is restored.

    Args:
        jobs: name → a callable to time.
        counts: setting name → thread count, e.g. ``{"default": 2, "1 thread": 1}``.
        repeats: timed repetitions (the median is reported).
        warmup: untimed repetitions first.
        sync: called before starting and stopping the clock (e.g. CUDA synchronisation).

    Returns:
        ``{job name: {setting name: median ms}}``.
    """
    try:
        import torch
    except ImportError as exc:
        raise missing_torch("timing torch thread counts") from exc

    before = torch.get_num_threads()
    samples = {name: {key: list[float]() for key in counts} for name in jobs}
    try:
        for rep in range(warmup + repeats):
            for name, job in jobs.items():
                for key, n in counts.items():
                    torch.set_num_threads(n)
                    if sync is not None:
                        sync()
                    start = time.perf_counter()
                    job()
                    if sync is not None:
                        sync()
                    if rep >= warmup:
                        samples[name][key].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {
        name: {key: 1e3 * statistics.median(v) for key, v in per.items()}
        for name, per in samples.items()
    }


class ThreadGovernor:
    """Re-applies the automatic thread count while a run goes on.

    The count chosen at start (:func:`auto_threads`) goes stale when another process starts
    later: a run holding 2 threads on 2 cores then stalls at every parallel region (seen:
    3-13x slower than at one thread). :meth:`tick`, called once per training iteration (the
    shared progress bar does it), looks at the CPU counters at most every ``interval``
    seconds: the cores busy with other processes are the system's busy time minus this
    process's CPU time; the count becomes one thread per core they leave free (at least 1,
    at most the usable cores). Results do not depend on it: the native kernels and MKL in
    strict mode (:func:`prefer_thread_invariant_blas`) give the same bits at any count.

    Args:
        threads: the count in force now.
        cpus: usable CPU numbers (default: :func:`usable_cpus`).
        interval: seconds between looks.
        read_stat: returns ``/proc/stat`` text (tests pass a fake).
        own_seconds: this process's CPU seconds, all threads (tests pass a fake).
        clock: monotonic seconds (tests pass a fake).
        apply: sets the thread count (default ``torch.set_num_threads``).
    """

    def __init__(
        self,
        threads: int,
        *,
        cpus: Iterable[int] | None = None,
        interval: float = 2.0,
        read_stat: Callable[[], str] = _read_proc_stat,
        own_seconds: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
        apply: Callable[[int], object] | None = None,
    ) -> None:
        self.threads = threads
        self._cpus = list(usable_cpus() if cpus is None else cpus)
        self._interval = interval
        self._read_stat = read_stat
        self._own_seconds = own_seconds
        self._clock = clock
        self._apply = apply
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, dict[int, tuple[int, int]]] | None:
        try:
            return self._clock(), self._own_seconds(), _cpu_times(self._read_stat(), self._cpus)
        except OSError:
            return None

    def tick(self) -> int:
        """Look again if ``interval`` has passed; returns the thread count in force."""
        if self._last is None or len(self._cpus) <= 1:
            return self.threads
        if self._clock() - self._last[0] < self._interval:
            return self.threads
        now = self._sample()
        if now is None:
            return self.threads
        before, self._last = self._last, now
        wall = now[0] - before[0]
        busy = 0.0
        for cpu in self._cpus:
            if cpu not in before[2] or cpu not in now[2]:
                return self.threads
            d_idle = now[2][cpu][0] - before[2][cpu][0]
            d_total = now[2][cpu][1] - before[2][cpu][1]
            if d_total <= 0:
                return self.threads
            busy += 1.0 - min(max(d_idle / d_total, 0.0), 1.0)
        others = max(0.0, busy - (now[1] - before[1]) / wall) if wall > 0 else 0.0
        free = len(self._cpus) - others
        threads = min(len(self._cpus), max(1, int(free + (1.0 - FREE_CORE_IDLE))))
        if threads != self.threads:
            _log.info(
                "threads: %d -> %d (other processes use %.1f cores)", self.threads, threads, others
            )
            self.threads = threads
            if self._apply is not None:
                self._apply(threads)
            else:
                try:
                    import torch
                except ImportError:  # a torch-free install: the count is advisory only
                    return self.threads
                torch.set_num_threads(threads)
        return self.threads


_GOVERNOR: ThreadGovernor | None = None


def govern_threads() -> None:
    """Re-apply the automatic thread count if it is in force (cheap; call every step)."""
    if _GOVERNOR is not None:
        _GOVERNOR.tick()
