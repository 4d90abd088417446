"""Seeds and grids: parse ``--seeds 0-9`` and ``--grid key=v1,v2``, check keys, expand runs."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Sequence

from compkit_utils.errors import UserError
from compkit_utils.sweep.commands import CommandSpec

RESERVED = ("seed", "run-name", "runs-dir", "resume", "threads")
"""Flags the sweep sets itself for every run (not allowed in ``--grid`` or the extra args)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a grid point and a seed.

    Attributes:
        name: run directory name, unique in the sweep.
        config: grid key (flag spelling) → value (as given on the command line).
        seed: the run's ``--seed``.
    """

    name: str
    config: dict[str, str]
    seed: int


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,7"`` or ``"0-4,10-12"`` → sorted distinct seeds.

    Raises:
        UserError: a malformed or empty range, naming ``--seeds``.
    """
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if match is None:
            raise UserError(
                f"--seeds: cannot read {part!r} in {text!r}; use e.g. 0-9, 0,3,7 or 0-4,10-12"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise UserError(f"--seeds: the range {part!r} is empty; write it low-high, e.g. 0-9")
        seeds.update(range(low, high + 1))
    if not seeds:
        raise UserError(f"--seeds {text!r} names no seed; use e.g. 0-9")
    return sorted(seeds)


def _field_type(cls: type, path: list[str]) -> type | None:
    """The dataclass that holds the last field of ``path`` (``None`` if ``path`` is not a field)."""
    import typing

    for i, name in enumerate(path):
        if not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name.replace("-", "_") not in fields:
            return None
        if i == len(path) - 1:
            return cls
        hint = typing.get_type_hints(cls, include_extras=False)[name.replace("-", "_")]
        cls = hint
    return None


def _flag_for(key: str, spec: CommandSpec) -> str | None:
    """The command flag a grid key names: the flag itself or a dotted config field path."""
    key = key.removeprefix("--").replace("_", "-")
    if key in spec.flags:
        return key
    # A dotted field path (optim.learning_rate) whose group the command may flatten
    # (compile-seg: --learning-rate): the longest flag that is a suffix of the path.
    parts = key.split(".")
    if len(parts) < 2 or _field_type(spec.config_class, parts) is None:
        return None
    for start in range(1, len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in spec.flags:
            return candidate
    return None


def parse_grid(items: Sequence[str], spec: CommandSpec) -> dict[str, list[str]]:
    """``["lr=1e-3,3e-3", "model.memory=rim,lstm"]`` → ``{flag: [values]}``, checked.

    Keys may be written as the command's flag (``learning-rate``, ``model.memory``) or as
    the dotted config field (``optim.learning_rate``); both map to the flag. Every key is
    checked against the command before anything starts.

    Raises:
        UserError: a malformed item, an unknown or reserved key, or an empty value list.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values_text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--grid {item!r}: write key=value1,value2 (e.g. learning-rate=1e-3)")
        flag = _flag_for(key.strip(), spec)
        command = " ".join([spec.package, *spec.command])
        if flag is None:
            valid = ", ".join(f for f in spec.flags if f not in RESERVED)
            raise UserError(
                f"--grid key {key.strip()!r} is not an option of {command}; valid: {valid}"
            )
        if flag in RESERVED:
            raise UserError(
                f"--grid key {key.strip()!r} is set by the sweep itself; use --seeds / "
                "--threads-per-run / --runs-dir instead"
            )
        if flag in grid:
            raise UserError(f"--grid key {flag!r} given twice; list all its values once: a,b,c")
        values = [v.strip() for v in values_text.split(",") if v.strip()]
        if not values:
            raise UserError(f"--grid {item!r} has no values; write {key.strip()}=value1,value2")
        grid[flag] = values
    return grid


def _positive(flag: str) -> str:
    """``log.no-wandb`` → ``log.wandb`` (tyro's negated booleans); other flags unchanged."""
    prefix, dot, name = flag.rpartition(".")
    return f"{prefix}{dot}{name[3:]}" if name.startswith("no-") else flag


def check_extra_args(args: Sequence[str], spec: CommandSpec) -> None:
    """Refuse fixed arguments that are unknown to the command or reserved for the sweep.

    Raises:
        UserError: naming the argument.
    """
    command = " ".join([spec.package, *spec.command])
    for arg in args:
        if not arg.startswith("--"):
            continue
        flag = arg[2:].split("=", 1)[0]
        if flag in RESERVED or _positive(flag) in RESERVED:
            raise UserError(
                f"{arg}: set by the sweep itself; use --seeds / --threads-per-run / --runs-dir"
            )
        if flag not in spec.flags and _positive(flag) not in spec.flags:
            raise UserError(f"{arg} is not an option of {command}; see {command} --help")


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", value)


def run_name(config: dict[str, str], seed: int) -> str:
    """Run directory name of a grid point and seed: ``learning-rate=1e-3__seed=3``.

    Long names are shortened to a stable hash of the grid point.
    """
    parts = [f"{_slug(key)}={_slug(value)}" for key, value in config.items()]
    point = "__".join(parts)
    if len(point) > 120:
        digest = hashlib.sha1(repr(sorted(config.items())).encode()).hexdigest()[:10]
        point = f"config-{digest}"
    return f"{point}__seed={seed}" if point else f"seed={seed}"


def expand(grid: dict[str, list[str]], seeds: Sequence[int]) -> list[RunSpec]:
    """Every (grid point, seed), grid points in order, seeds innermost."""
    keys = list(grid)
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        config = dict(zip(keys, values, strict=True))
        runs.extend(RunSpec(run_name(config, seed), config, seed) for seed in seeds)
    return runs


def run_argv(spec: CommandSpec, run: RunSpec, extra: Sequence[str]) -> list[str]:
    """The command line of a run, without the sweep's own flags (seed, names, threads)."""
    argv = [*spec.command, *extra]
    for key, value in run.config.items():
        argv.extend([f"--{key}", value])
    return argv
