"""Dataset generation throughput, the rows ``leaps-karel bench`` adds (via `dataset`)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from leaps_karel.config import DatasetConfig
from leaps_karel.dataset import generate_dataset
from leaps_karel.dataset_shards import _write_group
from leaps_karel.demos import (
    candidate_rng,
    candidate_stream,
    demos_for_program,
    demos_for_program_reference,
)


def _generation_rate(
    make: Any, params: DatasetConfig, compression: str | None, seconds: float, candidates: int
) -> tuple[float, int]:
    """Programs per CPU-second of ``make(tokens, rng, params)``, HDF5 writes included.

    Runs over the candidate stream until ``seconds`` of CPU time have passed, or over exactly
    ``candidates`` candidates when that is positive. Returns the rate and the candidates used.
    """
    import h5py

    stream = candidate_stream(params)
    done = index = 0
    start = time.process_time()
    with h5py.File(f"bench-{os.getpid()}.hdf5", "w", driver="core", backing_store=False) as f:
        while (index < candidates) if candidates > 0 else (time.process_time() - start < seconds):
            demos = make(next(stream), candidate_rng(params.seed, index), params)
            if demos is not None:
                _write_group(f.create_group(f"c{index}"), demos.arrays(), compression)
                done += 1
            index += 1
    return done / max(time.process_time() - start, 1e-9), index


def bench_generation(seconds: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Dataset generation throughput, for ``leaps-karel bench``.

    Rows: programs per CPU-second of the generator in this process (the full path: sampling,
    trials, state tensors, gzip HDF5 writes) beside `demos_for_program_reference` on the same
    candidates, and the wall-clock rate of `generate_dataset` with 2 worker processes beside 1
    (meaningful on an idle machine only). The original generator made 6.7 programs/s on one
    core (spec §8.2).

    Returns:
        Dicts with ``name``, ``ours``, ``baseline``, ``unit`` and ``note`` (see
        ``leaps_karel.bench.extra_rows``).
    """
    import tempfile

    params = DatasetConfig(seed=seed)
    # Programs differ a lot in cost: both sides run over the same candidates.
    # At least a few candidates, else the rate is noise; short --seconds keep the test quick.
    ours, used = _generation_rate(demos_for_program, params, "gzip", max(seconds, 0.2), 0)
    reference, _ = _generation_rate(demos_for_program_reference, params, "gzip", 0.0, used)
    rows: list[dict[str, Any]] = [
        {
            "name": "dataset programs/s (1 process)",
            "ours": ours,
            "baseline": reference,
            "unit": "/s",
            "note": f"per CPU-second, {used} candidates, gzip HDF5; original 6.7/s",
        }
    ]
    if (os.cpu_count() or 1) >= 2:
        count = max(20, int(3 * ours * min(seconds, 1.0)))
        wall: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            for procs in (1, 2):
                report = generate_dataset(
                    Path(tmp) / str(procs),
                    dataclasses.replace(params, num_programs=count),
                    n_procs=procs,
                    shard_size=50,
                )
                wall.append(report.programs_per_second)
        rows.append(
            {
                "name": "dataset programs/s (generate, 2 processes)",
                "ours": wall[1],
                "baseline": wall[0],
                "unit": "/s",
                "note": f"wall clock, {count} programs, vs 1 process; target 83/s",
            }
        )
    return rows
