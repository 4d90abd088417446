"""``factored-attention-babyai generate``: the 36-goal GoToLocal demonstration dataset.

Single pass over seeds (spec §2.2): for seeds ``seed_start, seed_start + 1, ...`` build the
level, skip it when its goal (mission string) already has ``per_goal`` demonstrations, else
solve it with the full-visibility bot and keep it when it succeeds (``done`` facing a target)
with at least ``min_length`` actions. The dataset holds, for every goal, the first
``per_goal`` kept seeds in seed order; because whether a seed is kept depends on the seed
alone, **the output is identical for any ``--n-procs`` and ``--block-size``**.

Work is split into blocks of consecutive seeds (:mod:`.blocks`), solved by ``n_procs``
worker processes a few blocks ahead of an in-order merge; a block is dispatched with the set
of goals already full (from the merged prefix), so workers do not solve seeds that cannot be
used. Finished blocks are files with a recorded SHA-256, so ``--resume`` continues an
interrupted run. The output (:mod:`.storage`): ``data.hdf5`` (groups ``train``/``valid``,
spec §2.5), optionally an ArrayRecord TFDS dataset, and ``dataset_info.json``.
"""

from __future__ import annotations

import collections
import errno
import logging
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from compkit_utils.datasets.generation import prepare_generation_dir
from compkit_utils.datasets.info import INFO_FILE
from compkit_utils.errors import UserError
from factored_attention_babyai.blocks import (
    N_GOALS,
    SHARD_DIR,
    block_path,
    load_block_summary,
    record_checksum,
    solve_block,
)
from factored_attention_babyai.config import GenerateConfig

__all__ = ["bench_generation", "default_data_dir", "generate", "generate_dataset"]

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def default_data_dir() -> Path:
    """``$COMPKIT_DATA_DIR/babyai-gotolocal``, else ``~/.cache/compkit/babyai-gotolocal``."""
    root = os.environ.get("COMPKIT_DATA_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "compkit") / "babyai-gotolocal"


def _settings(cfg: GenerateConfig) -> dict[str, Any]:
    """What the block files depend on (a resumed run must use the same)."""
    import minigrid

    return {
        "format_version": FORMAT_VERSION,
        "per_goal": cfg.per_goal,
        "min_length": cfg.min_length,
        "seed_start": cfg.seed_start,
        "block_size": cfg.block_size,
        "minigrid": minigrid.__version__,
    }


def _worker_died(out: Path, block: int) -> UserError:
    """The one-line error of a dead worker process (the pool is unusable after it)."""
    return UserError(
        f"generate: a worker process died (killed, or out of memory?) while "
        f"solving {block_path(out, block)}; {_fix(out)}"
    )


def _fix(out_dir: Path) -> str:
    return f"rerun `factored-attention-babyai generate --out-dir {out_dir} --resume`"


def _prepare_out_dir(out: Path, settings: dict[str, Any], overwrite: bool, resume: bool) -> None:
    from factored_attention_babyai.storage import DATA_FILE, TFDS_DIR

    outputs = (DATA_FILE, TFDS_DIR)
    prepare_generation_dir(
        out, settings, outputs=outputs, overwrite=overwrite, resume=resume, shard_dir=SHARD_DIR
    )


def _remove_temporaries(out: Path) -> None:
    """Temporary files of interrupted atomic writes (``.<name>.<random>.tmp``)."""
    for folder in (out, out / SHARD_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


class _Bars:
    """One tqdm bar per goal quota (on stderr), or nothing."""

    def __init__(self, per_goal: int, enabled: bool) -> None:
        from factored_attention_babyai.vocab import GOALS

        self.bars: list[Any] = []
        if enabled:
            from tqdm import tqdm

            width = max(len(goal) for goal in GOALS)
            self.bars = [
                tqdm(total=per_goal, desc=goal.ljust(width), position=i, unit="demo",
                     file=sys.stderr, mininterval=0.5, leave=True)
                for i, goal in enumerate(GOALS)
            ]  # fmt: skip

    def set(self, counts: list[int]) -> None:
        for bar, count in zip(self.bars, counts, strict=False):
            if count != bar.n:
                bar.update(count - bar.n)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def _make_pool(n_procs: int) -> ProcessPoolExecutor | None:
    """Worker processes (fork where available: nothing to re-import), started now.

    Start them before any tqdm bar exists: forking after tqdm's monitor thread is unsafe.
    """
    if n_procs <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context(method))
    for future in [pool.submit(os.getpid) for _ in range(n_procs)]:
        future.result()
    return pool


def _scan(
    out: Path, cfg: GenerateConfig, bars: _Bars, pool: ProcessPoolExecutor | None
) -> tuple[list[dict[str, Any]], int, int]:
    """Solve blocks until every goal is full; returns (used block summaries, solved, reused)."""
    counts = [0] * N_GOALS
    merged: list[dict[str, Any]] = []
    solved = reused = 0
    next_block = 0

    def full() -> list[int]:
        return [g for g in range(N_GOALS) if counts[g] >= cfg.per_goal]

    def job(block: int) -> dict[str, Any]:
        return {
            "block": block,
            "first_seed": cfg.seed_start + block * cfg.block_size,
            "block_size": cfg.block_size,
            "min_length": cfg.min_length,
            "skip": full(),
            "path": str(block_path(out, block)),
        }

    window = 2 * cfg.n_procs if pool is not None else 1
    pending: collections.deque[tuple[int, Any]] = collections.deque()
    while len(full()) < N_GOALS:
        while len(pending) < window:
            block = next_block
            next_block += 1
            summary = load_block_summary(block_path(out, block))
            if summary is not None:
                reused += 1
                pending.append((block, summary))
            elif pool is None:
                pending.append((block, None))  # solved when merged, with the newest skip set
            else:
                try:
                    future = pool.submit(solve_block, job(block))
                except BrokenProcessPool as exc:  # a worker died before this submission
                    raise _worker_died(out, pending[0][0] if pending else block) from exc
                pending.append((block, future))
        block, result = pending.popleft()
        if result is None:
            result = solve_block(job(block))
        elif not isinstance(result, dict):
            try:
                result = result.result()
            except BrokenProcessPool as exc:
                raise _worker_died(out, block) from exc
        if "sha256" not in result:
            result["sha256"] = record_checksum(block_path(out, block))
            solved += 1
        merged.append(result)
        for goal in result["goals"]:
            counts[goal] = min(cfg.per_goal, counts[goal] + 1)
        bars.set(counts)
        scanned = (block + 1) * cfg.block_size
        if scanned >= 200_000 + 2000 * cfg.per_goal and min(counts) == 0:
            raise UserError(
                f"generate: {scanned} seeds scanned and some goal has no demonstration; "
                f"--min-length {cfg.min_length} accepts (almost) no episode"
            )
    return merged, solved, reused


def generate_dataset(cfg: GenerateConfig, out: Path) -> dict[str, Any]:
    """Generate the dataset of ``cfg`` into ``out``; returns a summary (counts, seconds).

    With ``--resume`` on a finished dataset, its checksums are verified and nothing is done.

    Raises:
        UserError: ``out`` holds a finished dataset (without ``--overwrite``), an interrupted
            one (without ``--resume``/``--overwrite``) or one with other settings; a file
            cannot be written (naming it). No temporary file is left behind.
    """
    from factored_attention_babyai import storage

    start = time.perf_counter()
    settings = _settings(cfg)
    if cfg.resume and not cfg.overwrite and (out / INFO_FILE).is_file():
        return storage.verify_finished(out, settings)
    pool = bars = None
    try:
        _prepare_out_dir(out, settings, cfg.overwrite, cfg.resume)
        _remove_temporaries(out)
        pool = _make_pool(cfg.n_procs)
        bars = _Bars(cfg.per_goal, cfg.progress)
        blocks, solved, reused = _scan(out, cfg, bars, pool)
        bars.close()
        scan_seconds = time.perf_counter() - start
        summary = storage.write_dataset(
            out, blocks, cfg.per_goal, formats=cfg.formats, settings=settings,
            extra={"n_procs": cfg.n_procs, "scan_seconds": round(scan_seconds, 1)},
            keep_shards=cfg.keep_shards,
        )  # fmt: skip
        if not cfg.keep_shards:
            shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    except OSError as exc:
        raise _write_error(exc, out) from exc
    finally:
        if bars is not None:
            bars.close()
        if pool is not None:
            # Running blocks finish first, so no temporary file is written after the cleanup.
            pool.shutdown(wait=True, cancel_futures=True)
        _remove_temporaries(out)
    summary.update(
        blocks_solved=solved,
        blocks_reused=reused,
        seconds=time.perf_counter() - start,
        scan_seconds=scan_seconds,
    )
    return summary


def _write_error(exc: OSError, out: Path) -> UserError:
    path = exc.filename or out
    if exc.errno in DISK_FULL:
        return UserError(f"cannot write {path}: disk full; free some space and {_fix(out)}")
    reason = exc.strerror or " ".join(str(exc).split())
    return UserError(f"cannot write {path}: {reason}; check the --out-dir folder and retry")


def generate(cfg: GenerateConfig) -> int:
    """``factored-attention-babyai generate``: generate, then print a summary."""
    if cfg.out_dir is not None:
        out = cfg.out_dir
    elif cfg.smoke:
        from compkit_utils.runs import make_run_dir, write_config

        run_dir = make_run_dir(
            "factored-attention-babyai", "generate", cfg.seed_start, runs_dir=cfg.runs_dir
        )
        write_config(run_dir, cfg, "factored-attention-babyai")
        out = run_dir / "dataset"
    else:
        out = default_data_dir()
    action = "resuming" if cfg.resume else "generating"
    print(f"{action} {cfg.per_goal} demonstrations per goal (36 goals) into {out}", flush=True)
    summary = generate_dataset(cfg, out)
    print(
        f"wrote {summary['train']} train (ID) + {summary['valid']} valid (OOD) demonstrations, "
        f"Tmax {summary['tmax']}, to {out} ({', '.join(cfg.formats)})"
    )
    print(
        f"{summary['seeds_scanned']} seeds scanned, {summary['solves']} bot solves "
        f"({summary['too_short']} shorter than {cfg.min_length} actions); blocks: "
        f"{summary['blocks_solved']} solved, {summary['blocks_reused']} resumed"
    )
    print(
        f"{summary['seconds']:.1f} s ({summary['scan_seconds']:.1f} s scanning) with "
        f"{cfg.n_procs} process(es)"
    )
    return 0


def bench_generation(seconds: float = 5.0, seed: int = 1) -> dict[str, Any]:
    """Generation throughput (one process) and the projected time of the full dataset.

    Scans seeds ``seed, seed + 1, ...`` for about ``seconds``, timing the two costs separately
    in CPU time of this process (what an idle core delivers; the wall-clock rate on a loaded
    machine is reported too): building a layout (every scanned seed) and solving + recording
    a demonstration (seeds whose goal still needs demonstrations). The full 36 × 10,000 run
    scans until the rarest goal is full: with ``p_d`` = probability of a seed's goal being
    one given goal with determiner ``d`` and ``q_d`` = fraction of its bot solutions with
    ≥ 7 actions (both measured, pooled over the 18 goals of each determiner, which are
    symmetric), it scans ``S = 10,000 / min_d(p_d q_d)`` seeds and solves
    ``B = 18 · 10,000 · Σ_d 1/q_d`` of them.

    Returns:
        ``demos_per_s`` (kept demonstrations per wall-clock second, all goals open),
        ``demos_per_cpu_s``, ``layout_ms`` and ``solve_ms`` (CPU), the estimates
        ``full_seeds``, ``full_solves`` and ``full_minutes_1proc``/``full_minutes_2procs``
        (CPU time of the scan, ideal scaling over processes), ``load_avg`` (1-minute load
        average at the end) and the raw counts.
    """
    from factored_attention_babyai.blocks import _env, solve_seed
    from factored_attention_babyai.vocab import GOALS, parse_goal

    env = _env()
    everything = frozenset(range(N_GOALS))
    seeds = kept = 0
    layout_s = solve_s = 0.0
    by_det = {det: {"seen": 0, "kept": 0} for det in ("a", "the")}
    wall_start = time.perf_counter()
    deadline = wall_start + seconds
    while time.perf_counter() < deadline or seeds < 50:
        t0 = time.process_time()
        solve_seed(env, seed, everything)  # layout only
        t1 = time.process_time()
        demo = solve_seed(env, seed)
        t2 = time.process_time()
        assert demo is not None
        layout_s += t1 - t0
        solve_s += (t2 - t1) - (t1 - t0)  # the solve re-builds the layout: subtract it
        det = parse_goal(GOALS[demo["goal"]])[0]
        by_det[det]["seen"] += 1
        if demo["success"] and len(demo["actions"]) >= 7:
            by_det[det]["kept"] += 1
            kept += 1
        seeds += 1
        seed += 1
    wall = time.perf_counter() - wall_start
    cpu = layout_s + solve_s + layout_s  # each seed built twice above
    layout_ms = 1000 * layout_s / seeds
    solve_ms = 1000 * max(solve_s, 0.0) / seeds
    per_goal = 10_000
    rates = {d: (v["seen"] / seeds / 18, v["kept"] / max(v["seen"], 1)) for d, v in by_det.items()}
    full_seeds = per_goal / max(min(p * q for p, q in rates.values()), 1e-12)
    full_solves = 18 * per_goal * sum(1 / max(q, 1e-12) for _, q in rates.values())
    one_proc_s = full_seeds * layout_ms / 1000 + full_solves * solve_ms / 1000
    return {
        "seconds": round(wall, 2),
        "seeds": seeds,
        "kept": kept,
        "demos_per_s": round(kept * (cpu - layout_s) / max(cpu, 1e-9) / max(wall, 1e-9), 1),
        "demos_per_cpu_s": round(kept / max(layout_s + solve_s, 1e-9), 1),
        "layout_ms": round(layout_ms, 4),
        "solve_ms": round(solve_ms, 4),
        "kept_fraction": {d: round(q, 4) for d, (_, q) in rates.items()},
        "full_seeds": int(full_seeds),
        "full_solves": int(full_solves),
        "full_minutes_1proc": round(one_proc_s / 60, 1),
        "full_minutes_2procs": round(one_proc_s / 120, 1),
        "load_avg": round(os.getloadavg()[0], 2),
    }
