"""The LEAPS pre-training dataset: random programs with demonstrations, in the original layout.

What a program's demonstrations are is defined in :mod:`leaps_karel.demos` (spec §8); this
module writes them. Files (spec §8.3) in the output folder:

* ``data.hdf5`` — one group per program (``program`` int8 ``[L]``, ``s_h`` bool
  ``[D, M, H, W, 16]``, ``a_h`` int8 ``[D, A]``, ``s_h_len`` / ``a_h_len`` int16 ``[D]``) and
  a ``data_info`` group of scalars;
* ``id.txt`` — the group names ``no_{i}_prog_len_{L}_max_s_h_len_{M}`` in order;
* ``dataset_info.json`` — seed, counts, parameters and the SHA-256 of every file (the shards
  too, with ``keep_shards``).

Determinism and parallelism: the candidate programs form one stream drawn from the seed in the
main process (duplicates skipped as they are drawn), and candidate k samples its worlds from its
own generator. The dataset is the first N accepted candidates of that stream, so the output is
byte-for-byte identical for any ``n_procs`` and any shard size. Candidates are processed in
shards by a process pool; each shard is written atomically to ``.shards/`` with its SHA-256
recorded in ``.shards/checksums.json``, and reused on ``--resume`` only if its checksum still
matches, so an interrupted generation resumes where it stopped and a damaged shard is reported,
never merged. The shards are finally merged (atomically) into ``data.hdf5``.

Failures leave nothing half-written: every file is written under a temporary name and renamed
when complete, and temporary files are removed on every failure path (worker processes
included). A full disk raises a `UserError` naming the file (HDF5 is kept out of its error
path, where it can crash the interpreter; see `compkit_utils.datasets.hdf5_write.atomic_hdf5`).

Deviation from the original: a program is tried once — the original re-tries a program that
failed to collect its demonstrations if the sampler draws it again.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from compkit_utils.datasets.hdf5_write import atomic_hdf5
from compkit_utils.datasets.info import INFO_FILE, DatasetInfo, read_info, write_info
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json, atomic_write_text
from leaps_karel import dsl
from leaps_karel.config import DatasetConfig, GenerateDatasetConfig
from leaps_karel.dataset_shards import (
    CHECKSUMS,
    DISK_FULL,
    SHARD_DIR,
    _finished_dataset,
    _iter_jobs,
    _manifest,
    _prepare_out_dir,
    _read_checksums,
    _remove_temporaries,
    _reuse_shard,
    _run_shard,
    _shard_path,
)
from leaps_karel.demos import (
    ProgramDemos,
    candidate_rng,
    candidate_stream,
    demos_for_program,
    demos_for_program_reference,
    sample_worlds,
)
from leaps_karel.reader import DATA_FILE, FORMAT_VERSION, ID_FILE, INFO_GROUP

__all__ = [
    "GenerationReport",
    "ProgramDemos",
    "bench_generation",
    "candidate_rng",
    "candidate_stream",
    "default_data_dir",
    "demos_for_program",
    "demos_for_program_reference",
    "generate_dataset",
    "generate_dataset_command",
    "sample_worlds",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GenerationReport:
    """What `generate_dataset` did.

    Attributes:
        out_dir: the dataset folder.
        num_programs: programs written.
        candidates: candidate programs examined (in the shards used).
        shards_generated: shards generated in this call.
        shards_reused: shards found complete on disk (resumed).
        seconds: wall-clock time of this call.
        stats: trial statistics summed over the shards used.
    """

    out_dir: Path
    num_programs: int
    candidates: int
    shards_generated: int
    shards_reused: int
    seconds: float
    stats: dict[str, int]

    @property
    def programs_per_second(self) -> float:
        """Throughput of this call (meaningful when nothing was resumed)."""
        return self.num_programs / max(self.seconds, 1e-9)


def generate_dataset(
    out_dir: str | os.PathLike[str],
    params: DatasetConfig | None = None,
    *,
    n_procs: int = 1,
    shard_size: int = 200,
    compression: str | None = "gzip",
    overwrite: bool = False,
    resume: bool = False,
    keep_shards: bool = False,
    progress: bool = False,
) -> GenerationReport:
    """Generate the dataset into ``out_dir`` (``data.hdf5``, ``id.txt``, ``dataset_info.json``).

    Args:
        out_dir: output folder (created).
        params: what to generate.
        n_procs: worker processes (1 = generate in this process).
        shard_size: candidate programs per shard (the unit of work and of resumption; it does
            not change the output); at most ``max(4, num_programs)`` are used.
        compression: HDF5 filter for the large datasets (``"gzip"``, ``"lzf"`` or ``None``).
            Readers decompress transparently; ``None`` reproduces the original's plain layout.
        overwrite: replace an existing dataset or interrupted generation in ``out_dir``.
        resume: continue an interrupted generation in ``out_dir`` (its finished shards are
            reused after checking their SHA-256; the settings must be the same, except
            ``num_programs``), or regenerate the deleted files of a finished one.
        keep_shards: keep ``.shards/`` after merging (their checksums go into
            ``dataset_info.json``).
        progress: show a progress bar (tqdm; hidden when stderr is not a terminal).

    Returns:
        A `GenerationReport`.

    Raises:
        UserError: bad parameters; ``out_dir`` holds a finished dataset (without
            ``overwrite`` or ``resume``), an interrupted generation (without ``resume`` or
            ``overwrite``), one with different settings, or a corrupt file; a file cannot be
            written (full disk, no permission), naming it. No temporary file is left.
    """
    params = params or DatasetConfig()
    params.validate()
    if n_procs < 1:
        raise UserError(f"generate-dataset: --n-procs must be >= 1, got {n_procs}")
    if shard_size < 1:
        raise UserError(f"generate-dataset: --shard-size must be >= 1, got {shard_size}")
    if compression not in (None, "gzip", "lzf"):
        raise UserError(
            f"generate-dataset: compression must be gzip, lzf or none, not {compression!r}"
        )
    # A small dataset needs few candidates: smaller shards waste less work past the target.
    shard_size = min(shard_size, max(4, params.num_programs))
    out = Path(out_dir)
    try:
        finished = resume and (out / INFO_FILE).is_file()
        if finished and _finished_dataset(out, params, shard_size, compression):
            info = read_info(out)
            log.debug("%s: the dataset is complete and its checksums match", out)
            return GenerationReport(
                out, params.num_programs, int(info.counts.get("candidates", 0)), 0, 0, 0.0,
                dict(info.extra.get("trial_stats", {})),
            )  # fmt: skip
        _prepare_out_dir(out, _manifest(params, shard_size, compression), overwrite, resume)
        _remove_temporaries(out)  # of a process that was killed
        return _generate(out, params, n_procs, shard_size, compression, keep_shards, progress)
    except OSError as exc:
        raise _write_error(exc, out) from exc
    finally:
        _remove_temporaries(out)


def _write_error(exc: OSError, out: Path) -> UserError:
    """One line for a failed write: the path, the reason and the fix."""
    path = exc.filename or out
    if exc.errno in DISK_FULL:
        return UserError(
            f"cannot write {path}: disk full; free some space (or choose another --out-dir) "
            "and rerun with --resume"
        )
    reason = exc.strerror or " ".join(str(exc).split())
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a writable --out-dir"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file is in the way; choose another --out-dir"
    else:
        fix = "check the --out-dir folder and rerun with --resume"
    return UserError(f"cannot write {path}: {reason}; {fix}")


def _worker_died(out: Path, shard: int) -> UserError:
    """The one-line error of a dead worker process (the pool is unusable after it)."""
    return UserError(
        f"generate-dataset: a worker process died (killed, or out of memory?) "
        f"while writing {_shard_path(out, shard)}; rerun with --resume, or with "
        "fewer --n-procs"
    )


def _generate(
    out: Path,
    params: DatasetConfig,
    n_procs: int,
    shard_size: int,
    compression: str | None,
    keep_shards: bool,
    progress: bool,
) -> GenerationReport:
    from tqdm import tqdm

    start = time.perf_counter()
    checksums = _read_checksums(out)
    summaries: dict[int, dict[str, Any]] = {}
    reused = generated = 0
    jobs = _iter_jobs(params, out, shard_size, compression)
    target = params.num_programs

    def prefix() -> tuple[int, int]:
        """(accepted programs, shards) over the finished prefix of shards needed so far."""
        count = shard = 0
        while shard in summaries and count < target:
            count += summaries[shard]["accepted"]
            shard += 1
        return count, shard

    def record(shard: int, summary: dict[str, Any]) -> None:
        summaries[shard] = summary
        checksums[_shard_path(out, shard).name] = summary["sha256"]
        atomic_write_json(out / SHARD_DIR / CHECKSUMS, dict(sorted(checksums.items())))
        bar.update(min(prefix()[0], target) - bar.n)

    # fork starts workers without re-importing anything; the parent holds no open HDF5 file
    # and runs no threads here. Elsewhere (macOS, Windows) fall back to spawn.
    # A worker that dies (killed, out of memory) breaks the executor, which then stops the
    # others and raises BrokenProcessPool: no waiting forever for a lost shard.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = (
        ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context(method))
        if n_procs > 1
        else None
    )
    if pool is not None:
        # Start the workers now: forking after tqdm's monitor thread exists is unsafe.
        pool.submit(os.getpid).result()
    window = 2 * n_procs if pool is not None else 1
    pending: collections.deque[tuple[int, Any]] = collections.deque()
    bar = tqdm(
        total=target, unit="prog", desc="generate-dataset", disable=None if progress else True
    )
    try:
        while prefix()[0] < target:
            while len(pending) < window and prefix()[0] < target:
                job = next(jobs)
                path = Path(job["path"])
                summary = None
                if path.exists():
                    summary = _reuse_shard(path, checksums.get(path.name), out)
                if summary is not None:
                    record(job["shard"], summary)
                    reused += 1
                elif pool is None:
                    pending.append((job["shard"], _run_shard(job)))
                else:
                    try:
                        future = pool.submit(_run_shard, job)
                    except BrokenProcessPool as exc:  # a worker died before this submission
                        raise _worker_died(out, pending[0][0] if pending else job["shard"]) from exc
                    pending.append((job["shard"], future))
            if prefix()[0] >= target or not pending:
                continue
            shard, result = pending.popleft()
            try:
                record(shard, result if pool is None else result.result())
            except BrokenProcessPool as exc:
                raise _worker_died(out, shard) from exc
            generated += 1
            examined = (shard + 1) * shard_size
            if examined > 10_000 + 100 * target and prefix()[0] < examined // 1000:
                raise UserError(
                    f"generate-dataset: only {prefix()[0]} of {examined} candidate programs got "
                    f"{params.num_demo_per_program} demonstrations; the demonstration length "
                    "and trial settings accept (almost) no program"
                )
    finally:
        bar.close()
        if pool is not None:
            # Running shards finish (or fail) first, so their temporary files are gone or
            # renamed before the caller removes what is left.
            pool.shutdown(wait=True, cancel_futures=True)
    _, used_shards = prefix()
    stats: collections.Counter[str] = collections.Counter()
    for shard in range(used_shards):
        stats.update(summaries[shard]["stats"])
    last_candidate = _merge(out, params, used_shards)
    kept = [f"{SHARD_DIR}/{_shard_path(out, s).name}" for s in range(used_shards)]
    _write_dataset_info(
        out, params, dict(stats), last_candidate + 1, shard_size, compression,
        kept if keep_shards else [],
    )  # fmt: skip
    if not keep_shards:
        shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    return GenerationReport(
        out_dir=out,
        num_programs=target,
        candidates=last_candidate + 1,
        shards_generated=generated,
        shards_reused=reused,
        seconds=time.perf_counter() - start,
        stats=dict(stats),
    )


def _merge(out: Path, params: DatasetConfig, used_shards: int) -> int:
    """Copy the first ``num_programs`` accepted programs of the shards into ``data.hdf5``.

    Returns:
        The candidate index of the last program written.
    """
    import h5py

    ids: list[str] = []
    last_candidate = -1
    lengths = {"max_demo": -1, "min_demo": 1 << 30, "max_prog": -1, "min_prog": 1 << 30}
    with atomic_hdf5(out / DATA_FILE) as target:
        dest = target.file
        for shard in range(used_shards):
            with h5py.File(_shard_path(out, shard), "r") as source_file:
                source: Any = source_file
                for index in source.attrs["accepted"]:
                    if len(ids) >= params.num_programs:
                        break
                    group = source[f"c{int(index)}"]
                    prog_len = int(group["program"].shape[0])
                    s_h_len = group["s_h_len"][()]
                    name = f"no_{len(ids)}_prog_len_{prog_len}_max_s_h_len_{int(s_h_len.max())}"
                    source.copy(group, dest, name=name)
                    target.check()
                    ids.append(name)
                    last_candidate = int(index)
                    lengths["max_demo"] = max(lengths["max_demo"], int(s_h_len.max()))
                    lengths["min_demo"] = min(lengths["min_demo"], int(s_h_len.min()))
                    lengths["max_prog"] = max(lengths["max_prog"], prog_len)
                    lengths["min_prog"] = min(lengths["min_prog"], prog_len)
        info = dest.create_group(INFO_GROUP)
        info["max_demo_length"] = np.int16(lengths["max_demo"])
        info["min_demo_length"] = np.int16(lengths["min_demo"])
        info["dsl_type"] = "prob"
        info["max_program_length"] = np.int64(lengths["max_prog"])
        info["min_program_length"] = np.int64(lengths["min_prog"])
        info["num_program_tokens"] = np.int64(dsl.NUM_TOKENS)
        info["num_demo_per_program"] = np.int64(params.num_demo_per_program)
        info["num_action_tokens"] = np.int64(5)
        held_out = int(0.15 * params.num_programs)
        info["num_train"] = np.int64(params.num_programs - 2 * held_out)
        info["num_test"] = np.int64(held_out)
        info["num_val"] = np.int64(held_out)
    atomic_write_text(out / ID_FILE, "".join(f"{name}\n" for name in ids))
    return last_candidate


def _write_dataset_info(
    out: Path,
    params: DatasetConfig,
    stats: dict[str, int],
    candidates: int,
    shard_size: int,
    compression: str | None,
    shards: list[str],
) -> None:
    from leaps_karel import __version__

    info = DatasetInfo(
        name="karel-programs",
        generator="leaps_karel.dataset",
        version=__version__,
        seed=params.seed,
        counts={
            "programs": params.num_programs,
            "demos_per_program": params.num_demo_per_program,
            "candidates": candidates,
        },
        extra={
            "params": dataclasses.asdict(params),
            "format_version": FORMAT_VERSION,
            "compression": compression,
            "shard_size": shard_size,
            "trial_stats": stats,
        },
    )
    write_info(out, info, files=[DATA_FILE, ID_FILE, *shards])


def default_data_dir() -> Path:
    """``$COMPKIT_DATA_DIR/karel-programs``, else ``~/.cache/compkit/karel-programs``."""
    root = os.environ.get("COMPKIT_DATA_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "compkit"
    return base / "karel-programs"


def generate_dataset_command(cfg: GenerateDatasetConfig) -> int:
    """``leaps-karel generate-dataset``: generate, then print a summary with the throughput."""
    from compkit_utils.logging import configure_logging
    from compkit_utils.runs import make_run_dir, write_config

    configure_logging()
    data = cfg.data  # --smoke defaults (20 programs) come from GenerateDatasetConfig.smoke_defaults
    if cfg.out_dir is not None:
        out_dir = cfg.out_dir
    elif cfg.smoke:
        run_dir = make_run_dir("leaps-karel", "generate-dataset", data.seed, runs_dir=cfg.runs_dir)
        write_config(run_dir, cfg, "leaps-karel")
        out_dir = run_dir / "dataset"
    else:
        out_dir = default_data_dir()
    action = "resuming the generation of" if cfg.resume else "generating"
    print(f"{action} {data.num_programs} programs into {out_dir}", flush=True)
    report = generate_dataset(
        out_dir,
        data,
        n_procs=cfg.n_procs,
        shard_size=cfg.shard_size,
        compression=None if cfg.compression == "none" else cfg.compression,
        overwrite=cfg.overwrite,
        resume=cfg.resume,
        keep_shards=cfg.keep_shards,
        progress=True,
    )
    stats = report.stats
    print(f"wrote {report.num_programs} programs to {report.out_dir}")
    print(
        f"{report.candidates} candidate programs examined; "
        f"{report.shards_generated} shards generated, {report.shards_reused} resumed"
    )
    print(
        f"trials {stats.get('trials', 0)}: crash {stats.get('crash', 0)}, "
        f"timeout {stats.get('timeout', 0)}, too short {stats.get('too_short', 0)}, "
        f"too long {stats.get('too_long', 0)}; programs pruned statically "
        f"{stats.get('pruned', 0)}, dropped after trials {stats.get('dropped', 0)}"
    )
    print(
        f"{report.seconds:.1f} s, {report.programs_per_second:.1f} programs/s "
        f"with {cfg.n_procs} process(es)"
    )
    return 0


def bench_generation(seconds: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Dataset generation throughput rows for ``leaps-karel bench`` (see `dataset_bench`)."""
    from leaps_karel.dataset_bench import bench_generation as run

    return run(seconds, seed)
