"""Validation of config dataclasses: field markers, cross-field ``check`` methods.

A config field declares its constraint with a marker in ``typing.Annotated``::

    @dataclasses.dataclass(frozen=True)
    class ModelConfig:
        hidden: Annotated[int, Range(1)] = 64
        dropout: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
        lr: Annotated[float, Range(0, None, lo_open=True)] = 1e-3
        cell: Annotated[str, Choice(lambda: sorted(CELLS))] = "lstm"

        def check(self) -> None:  # cross-field rules
            if ...:
                raise UserError("--hidden must be a multiple of --heads")

:func:`validate_config` (called by :func:`compkit_utils.config.run_cli` on every parsed
config) applies the markers, checks a field named ``device`` (availability) and one named
``run_name`` (:func:`compkit_utils.runs.check_run_name`), and calls every ``check`` method,
innermost dataclass first. Messages name the command-line flag
(``--model.dropout must be in [0, 1), got 2.0``). ``None`` values are skipped.

This module imports neither torch nor tyro at import time.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError

__all__ = [
    "Choice",
    "InputDir",
    "InputFile",
    "InputPath",
    "OutputDir",
    "Range",
    "flag_name",
    "validate_config",
]


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric interval for an ``int`` or ``float`` field (bounds ``None`` = unbounded).

    Args:
        lo: lower bound (inclusive unless ``lo_open``).
        hi: upper bound (inclusive unless ``hi_open``).
        lo_open: exclude ``lo`` itself.
        hi_open: exclude ``hi`` itself.
    """

    lo: float | None = None
    hi: float | None = None
    _: dataclasses.KW_ONLY
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (NaN never does)."""
        if value != value:  # NaN
            return False
        if self.lo is not None and not (value > self.lo if self.lo_open else value >= self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self) -> str:
        """The requirement in words: ``at least 1``, ``> 0``, ``in [0, 1)``."""
        if self.lo is not None and self.hi is not None:
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            return f"in {left}{self.lo}, {self.hi}{right}"
        if self.lo is not None:
            return f"> {self.lo}" if self.lo_open else f"at least {self.lo}"
        if self.hi is not None:
            return f"< {self.hi}" if self.hi_open else f"at most {self.hi}"
        return "a number"

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` unless ``value`` is in range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{flag} must be a number {self.describe()}, got {value!r}")
        if not self.contains(value):
            raise UserError(f"{flag} must be {self.describe()}, got {value!r}")


class Choice:
    """Allowed values of a ``str`` field that is not a ``Literal``.

    ``Choice("a", "b")`` lists them; ``Choice(lambda: registry_names())`` computes them when
    the config is validated (a registry filled at import time of another module).
    """

    __slots__ = ("_values",)

    def __init__(self, *values: Any) -> None:
        if not values:
            raise TypeError("Choice needs at least one value (or one callable)")
        self._values = values

    def options(self) -> tuple[Any, ...]:
        """The allowed values."""
        first = self._values[0]
        if len(self._values) == 1 and callable(first):
            return tuple(typing.cast("Iterable[Any]", first()))
        return tuple(self._values)

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` unless ``value`` is one of :meth:`options`."""
        options = self.options()
        if value not in options:
            listed = ", ".join(str(option) for option in options)
            raise UserError(f"{flag} must be one of {listed}; got {value!r}")

    def __repr__(self) -> str:
        return f"Choice({', '.join(repr(v) for v in self._values)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and other._values == self._values

    def __hash__(self) -> int:
        return hash(self._values)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


@dataclasses.dataclass(frozen=True)
class OutputDir:
    """A directory the command creates or writes into.

    It must be an existing writable directory, or not exist yet with a writable existing
    ancestor directory; a regular file in the way is an error.
    """

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` if ``value`` cannot become a writable directory."""
        path = Path(value)
        if path.exists():
            if not path.is_dir():
                raise UserError(
                    f"{flag} {path} is a file, not a directory; pass a directory "
                    "(or a path that does not exist yet)"
                )
            if not _writable(path):
                raise UserError(f"{flag} {path} is not writable; pass a writable directory")
            return
        for ancestor in path.absolute().parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise UserError(
                        f"{flag} {path}: {ancestor} is a file, not a directory; "
                        "pass a path whose parents are directories"
                    )
                if not _writable(ancestor):
                    raise UserError(
                        f"{flag} {path} cannot be created: {ancestor} is not writable; "
                        "pass a writable location"
                    )
                return


@dataclasses.dataclass(frozen=True)
class InputFile:
    """A file that must exist (and be a file)."""

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` unless ``value`` is an existing file."""
        path = Path(value)
        if not path.exists():
            raise UserError(f"{flag} {path}: file not found; pass the path of an existing file")
        if not path.is_file():
            raise UserError(f"{flag} {path} is a directory; pass a file")


@dataclasses.dataclass(frozen=True)
class InputDir:
    """A directory that must exist."""

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` unless ``value`` is an existing directory."""
        path = Path(value)
        if not path.exists():
            raise UserError(
                f"{flag} {path}: directory not found; pass the path of an existing directory"
            )
        if not path.is_dir():
            raise UserError(f"{flag} {path} is a file; pass a directory")


@dataclasses.dataclass(frozen=True)
class InputPath:
    """A file or a directory that must exist (e.g. a checkpoint or the run holding it)."""

    def validate(self, value: Any, flag: str) -> None:
        """Raise :class:`UserError` unless ``value`` exists."""
        path = Path(value)
        if not path.exists():
            raise UserError(f"{flag} {path}: not found; pass an existing file or directory")


_MARKERS = (Range, Choice, OutputDir, InputFile, InputDir, InputPath)


def flag_name(prefix: str, name: str) -> str:
    """The tyro flag of field ``name`` under dotted ``prefix``: ``--model.input-dropout``."""
    return "--" + f"{prefix}{name}".replace("_", "-")


def validate_config(cfg: Any) -> None:
    """Validate a (nested) config dataclass instance.

    Applies the field markers (:class:`Range`, :class:`Choice`, :class:`OutputDir`,
    :class:`InputFile`, :class:`InputDir`, :class:`InputPath`), checks a ``device`` field
    with :func:`compkit_utils.devices.pick_device` and a ``run_name`` field with
    :func:`compkit_utils.runs.check_run_name`, then calls ``check()`` on every dataclass that
    defines one, innermost first.

    Raises:
        UserError: the first violation, naming the command-line flag.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    _walk(cfg, prefix="")


def _walk(cfg: Any, prefix: str) -> None:
    try:
        hints = typing.get_type_hints(type(cfg), include_extras=True)
    except (NameError, TypeError):  # a forward reference to a local name: no markers
        hints = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        metadata = _annotated_metadata(hints.get(field.name))
        name, child_prefix = _names(field.name, prefix, metadata)
        flag = flag_name("", name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _walk(value, child_prefix)
            continue
        if value is None:
            continue
        for marker in metadata:
            if isinstance(marker, _MARKERS):
                items = value if isinstance(value, list | tuple) else (value,)
                for item in items:
                    marker.validate(item, flag)
        if field.name == "device" and isinstance(value, str):
            _check_device(value, flag)
        if field.name == "run_name" and isinstance(value, str):
            from compkit_utils.runs import check_run_name

            check_run_name(value, flag=flag)
    check = getattr(cfg, "check", None)
    if callable(check):
        check()


def _annotated_metadata(hint: Any) -> tuple[Any, ...]:
    """Metadata of ``Annotated[...]``, also inside ``X | None``."""
    if hint is None:
        return ()
    if typing.get_origin(hint) is typing.Annotated:
        return tuple(hint.__metadata__) + _annotated_metadata(typing.get_args(hint)[0])
    found: tuple[Any, ...] = ()
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is typing.Annotated:
            found += _annotated_metadata(arg)
    return found


def _names(field: str, prefix: str, metadata: Iterable[Any]) -> tuple[str, str]:
    """``(dotted name of the field's flag, prefix of its children's flags)``.

    Follows tyro: ``OmitArgPrefixes`` drops the prefix of the children, and
    ``tyro.conf.arg(name=..., prefix_name=False)`` renames a flag.
    """
    name = f"{prefix}{field}"
    child_prefix = f"{name}."
    for marker in metadata:
        kind = type(marker).__name__
        if kind == "_ArgConfig":
            renamed = getattr(marker, "name", None)
            keep_prefix = getattr(marker, "prefix_name", None) is not False
            base = renamed if renamed is not None else field
            name = f"{prefix}{base}" if keep_prefix else base
            child_prefix = f"{name}."
        elif _is_omit_arg_prefixes(marker):
            child_prefix = ""
    return name, child_prefix


def _is_omit_arg_prefixes(marker: Any) -> bool:
    try:
        import tyro
    except ImportError:  # pragma: no cover - tyro is a dependency of every CLI package
        return False
    return marker is tyro.conf.OmitArgPrefixes


def _check_device(name: str, flag: str) -> None:
    if name == "auto":  # always available; no torch import needed
        return
    from compkit_utils.devices import pick_device

    try:
        pick_device(name)
    except UserError as exc:
        if flag == "--device":
            raise
        raise UserError(str(exc).replace("--device", flag, 1)) from exc
