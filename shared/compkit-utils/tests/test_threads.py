"""The default thread policy (idle cores at start) and the busy process of ``bench --contended``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from compkit_utils import devices
from compkit_utils.devices import (
    auto_threads,
    busy_process,
    free_cores,
    prefer_passive_wait,
    set_threads,
    time_thread_counts,
    usable_cpus,
)
from compkit_utils.errors import UserError


def _stat(*cpus: tuple[int, int, int]) -> str:
    """Fake ``/proc/stat`` text: per CPU ``(user, idle, iowait)`` jiffies."""
    busy = sum(u for u, _, _ in cpus)
    idle = sum(i for _, i, _ in cpus)
    lines = [f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0"]
    for n, (user, idle_n, iowait) in enumerate(cpus):
        lines.append(f"cpu{n} {user} 0 7 {idle_n} {iowait} 0 1 0 3 0")
    lines += ["intr 12345 0 0", "ctxt 999", "btime 1700000000"]
    return "\n".join(lines) + "\n"


def _reader(*texts: str):
    it = iter(texts)
    return lambda: next(it)


def test_free_cores_sums_the_idle_fraction_of_each_cpu():
    before = _stat((1000, 5000, 10), (2000, 4000, 0))
    # cpu0: +100 user, +0 idle (busy); cpu1: +10 user, +80 idle, +10 iowait (90 % idle).
    after = _stat((1100, 5000, 10), (2010, 4080, 10))
    free = free_cores(0.05, cpus=[0, 1], read_stat=_reader(before, after), sleep=lambda _: None)
    assert free == pytest.approx(0.0 + 90 / 100)


def test_free_cores_looks_only_at_the_cpus_asked_for():
    before = _stat((0, 0, 0), (0, 0, 0), (0, 0, 0))
    after = _stat((100, 0, 0), (0, 100, 0), (0, 100, 0))
    free = free_cores(cpus=[1, 2], read_stat=_reader(before, after), sleep=lambda _: None)
    assert free == pytest.approx(2.0)


def test_free_cores_waits_between_the_two_readings():
    calls: list[str] = []

    def read() -> str:
        calls.append("read")
        return _stat((len(calls) * 10, len(calls) * 10, 0))

    free_cores(0.07, cpus=[0], read_stat=read, sleep=lambda s: calls.append(f"sleep {s}"))
    assert calls == ["read", "sleep 0.07", "read"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (_stat((1, 1, 0)), _stat((1, 1, 0))),  # no tick elapsed
        (_stat((1, 1, 0)), "cpu  5 0 0 5 0 0 0 0\n"),  # the CPU vanished
        ("garbage\n", "garbage\n"),
    ],
)
def test_free_cores_is_none_when_it_cannot_tell(before, after):
    assert free_cores(cpus=[0], read_stat=_reader(before, after), sleep=lambda _: None) is None


def test_free_cores_is_none_without_proc_stat():
    def missing() -> str:
        raise FileNotFoundError("/proc/stat")

    assert free_cores(cpus=[0], read_stat=missing, sleep=lambda _: None) is None


def test_free_cores_reads_this_machine():
    free = free_cores(0.02)
    if sys.platform.startswith("linux"):
        assert free is not None
        assert 0.0 <= free <= len(usable_cpus())


@pytest.mark.parametrize(
    ("free", "cpus", "expected"),
    [
        (1.98, 2, (2, "0 of 2 cores busy")),  # idle machine: every core
        (1.02, 2, (1, "1 of 2 cores busy")),  # one busy process on 2 cores
        (1.60, 2, (1, "1 of 2 cores busy")),  # a core 40 % busy does not count as free
        (0.00, 2, (1, "2 of 2 cores busy")),  # never fewer than one thread
        (0.00, 8, (1, "8 of 8 cores busy")),
        (5.80, 8, (6, "2 of 8 cores busy")),
        (7.90, 4, (4, "0 of 4 cores busy")),  # capped by the usable cores
        (None, 2, (1, "idle cores unknown, 2 available")),  # unsure: one thread
    ],
)
def test_auto_threads_counts_the_free_cores(free, cpus, expected):
    seen: list[list[int]] = []

    def measure(cpu_list: list[int]) -> float | None:
        seen.append(cpu_list)
        return free

    assert auto_threads(cpus=range(cpus), measure=measure) == expected
    assert seen == [list(range(cpus))]


def test_auto_threads_with_one_core_does_not_measure():
    def measure(cpu_list: list[int]) -> float | None:
        raise AssertionError("measured")

    assert auto_threads(cpus=[3], measure=measure) == (1, "1 core available")


def test_auto_threads_samples_the_usable_cpus_by_default(monkeypatch):
    monkeypatch.setattr(devices, "usable_cpus", lambda: [0, 5])
    stats = _reader(_stat(*[(0, 0, 0)] * 6), _stat(*[(0, 100, 0)] * 5, (100, 0, 0)))
    monkeypatch.setattr(
        devices,
        "free_cores",
        lambda cpus: free_cores(cpus=cpus, read_stat=stats, sleep=lambda _: None),
    )
    assert auto_threads() == (1, "1 of 2 cores busy")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_set_threads_explicit_count_wins(monkeypatch, restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(devices, "auto_threads", lambda: pytest.fail("policy consulted"))
    assert set_threads(1) == 1
    assert torch.get_num_threads() == 1


def test_set_threads_reads_omp_num_threads(monkeypatch, restore_threads, caplog):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(devices, "auto_threads", lambda: pytest.fail("policy consulted"))
    with caplog.at_level(logging.INFO, logger="compkit_utils.devices"):
        assert set_threads() == 1
    assert "threads: 1 (OMP_NUM_THREADS)" in caplog.text


def test_set_threads_default_is_the_policy_and_is_logged(monkeypatch, restore_threads, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices, "auto_threads", lambda: (1, "1 of 2 cores busy"))
    torch.set_num_threads(2)
    with caplog.at_level(logging.INFO, logger="compkit_utils.devices"):
        assert set_threads(None) == 1
    assert "threads: 1 (1 of 2 cores busy)" in caplog.text


@pytest.mark.parametrize(
    ("env", "arg", "message"),
    [
        (None, 0, "--threads must be at least 1"),
        ("abc", None, "OMP_NUM_THREADS='abc' is not a whole number"),
        ("0", None, "OMP_NUM_THREADS must be at least 1"),
    ],
)
def test_set_threads_bad_counts(monkeypatch, restore_threads, env, arg, message):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    with pytest.raises(UserError, match=message) as info:
        set_threads(arg)
    assert "\n" not in str(info.value)


def test_time_thread_counts_interleaves_and_restores(restore_threads):
    torch.set_num_threads(1)
    seen: list[tuple[str, int]] = []
    jobs = {
        "a": lambda: seen.append(("a", torch.get_num_threads())),
        "b": lambda: seen.append(("b", torch.get_num_threads())),
    }
    times = time_thread_counts(jobs, {"default": 2, "one": 1, "again": 2}, repeats=3, warmup=1)
    assert set(times) == {"a", "b"}
    assert all(set(t) == {"default", "one", "again"} for t in times.values())
    assert all(ms >= 0 for t in times.values() for ms in t.values())
    one_rep = [("a", 2), ("a", 1), ("a", 2), ("b", 2), ("b", 1), ("b", 2)]
    assert seen == one_rep * 4
    assert torch.get_num_threads() == 1


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, finished but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux_only
def test_busy_process_spins_and_is_killed_after_the_block():
    with busy_process(start_delay=0.05) as proc:
        assert proc.poll() is None
        pid = proc.pid
        ticks = os.sysconf("SC_CLK_TCK")
        utime = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # it burns CPU time (utime in clock ticks)
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                utime = int(f.read().rsplit(")", 1)[1].split()[11])
            if utime >= ticks // 20:
                break
            time.sleep(0.02)
        assert utime >= ticks // 20
    assert proc.returncode is not None
    assert not _alive(pid)


@linux_only
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_busy_process_is_killed_on_errors_and_ctrl_c(error):
    with pytest.raises(error), busy_process(start_delay=0.0) as proc:
        raise error("stop")
    assert proc.returncode is not None
    assert not _alive(proc.pid)


@linux_only
def test_busy_process_exits_when_its_parent_dies():
    # A parent that starts the busy process, reports its pid and dies without cleaning up.
    code = (
        "import os, sys\n"
        "from compkit_utils.devices import busy_process\n"
        "cm = busy_process(start_delay=0.0)\n"
        "proc = cm.__enter__()\n"
        "print(proc.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


@pytest.fixture
def no_wait_env(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    return monkeypatch


def test_passive_wait_is_requested_before_torch_loads(no_wait_env):
    no_wait_env.delitem(sys.modules, "torch")
    assert prefer_passive_wait() is True
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_passive_wait_is_not_requested_once_torch_is_loaded(no_wait_env):
    assert "torch" in sys.modules
    assert prefer_passive_wait() is False
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.mark.parametrize(
    ("name", "value", "passive"),
    [("OMP_WAIT_POLICY", "active", False), ("OMP_WAIT_POLICY", "passive", True)],
)
def test_passive_wait_leaves_the_users_setting(no_wait_env, name, value, passive):
    no_wait_env.delitem(sys.modules, "torch")
    no_wait_env.setenv(name, value)
    assert prefer_passive_wait() is passive
    assert os.environ[name] == value


def test_passive_wait_leaves_a_user_spin_count(no_wait_env):
    no_wait_env.delitem(sys.modules, "torch")
    no_wait_env.setenv("GOMP_SPINCOUNT", "10000")
    assert prefer_passive_wait() is False
    assert "OMP_WAIT_POLICY" not in os.environ


def test_thread_invariant_blas_is_requested_unless_the_user_chose(monkeypatch) -> None:
    from compkit_utils.devices import prefer_thread_invariant_blas

    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert prefer_thread_invariant_blas() is True
    assert os.environ["MKL_CBWR"] == "AUTO,STRICT"
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert prefer_thread_invariant_blas() is False
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"


_MMAPPED = """
import ctypes, os, sys
from compkit_utils.devices import keep_freed_memory
on = keep_freed_memory()
class Info(ctypes.Structure):  # struct mallinfo2 (glibc >= 2.33), all ten fields
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
block = bytearray(64 << 20)  # one 64 MiB block through malloc
print(int(on), libc.mallinfo2().hblkhd >= (64 << 20))
"""


def _mmapped(env: dict[str, str]) -> tuple[str, str]:
    """(whether keep_freed_memory applied, whether a 64 MiB block came from mmap) in a child."""
    env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _MMAPPED], env=env, capture_output=True, text=True, check=True
    )
    on, mmapped = out.stdout.split()
    return on, mmapped


@pytest.mark.skipif(
    sys.platform != "linux"
    or __import__("platform").libc_ver()[0] != "glibc"
    or tuple(map(int, __import__("platform").libc_ver()[1].split(".")[:2])) < (2, 33),
    reason="glibc >= 2.33 (mallinfo2); other C libraries are left alone by design",
)
def test_keep_freed_memory_serves_large_blocks_from_the_heap() -> None:
    base = {k: v for k, v in os.environ.items() if k != "COMPKIT_MALLOC"}
    assert _mmapped(base) == ("1", "False")
    # the opt-out and a user's own glibc setting leave the allocator alone: mmap as usual
    assert _mmapped({**base, "COMPKIT_MALLOC": "system"}) == ("0", "True")
    assert _mmapped({**base, "GLIBC_TUNABLES": "glibc.malloc.check=0"}) == ("0", "True")


def _two_cpu_stat(idle: tuple[int, int], total: tuple[int, int]) -> str:
    return "\n".join(f"cpu{i} {total[i] - idle[i]} 0 0 {idle[i]} 0 0 0 0" for i in range(2))


def test_governor_follows_load_that_arrives_later() -> None:
    from compkit_utils.devices import ThreadGovernor

    clock = [0.0]
    own = [0.0]
    stat = [_two_cpu_stat((0, 0), (0, 0))]
    applied: list[int] = []
    gov = ThreadGovernor(
        2,
        cpus=[0, 1],
        interval=2.0,
        read_stat=lambda: stat[0],
        own_seconds=lambda: own[0],
        clock=lambda: clock[0],
        apply=applied.append,
    )
    # 2 s alone: both cores busy, all of it ours -> stays at 2.
    clock[0], own[0], stat[0] = 2.0, 4.0, _two_cpu_stat((0, 0), (200, 200))
    assert gov.tick() == 2
    assert applied == []
    # Looks are rate-limited: a tick within the interval reads nothing.
    stat[0] = "garbage"
    clock[0] = 3.0
    assert gov.tick() == 2
    # Next 2 s: another process holds a core; we got only 1 core-second per second.
    clock[0], own[0], stat[0] = 4.0, 6.0, _two_cpu_stat((0, 0), (400, 400))
    assert gov.tick() == 1
    assert applied == [1]
    # It leaves again: the machine is half idle and all busy time is ours -> back to 2.
    clock[0], own[0], stat[0] = 6.0, 8.0, _two_cpu_stat((100, 100), (600, 600))
    assert gov.tick() == 2
    assert applied == [1, 2]


def test_governor_only_runs_when_the_count_is_automatic(monkeypatch) -> None:
    import compkit_utils.devices as devices

    monkeypatch.setattr(devices, "auto_threads", lambda: (1, "test"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    devices.set_threads(None)
    assert devices._GOVERNOR is not None
    devices.set_threads(1)
    assert devices._GOVERNOR is None
    devices.govern_threads()  # a no-op without a governor
