"""Configuration: nested frozen dataclasses ↔ JSON, and the tyro CLI helper.

This module imports neither torch nor tyro at import time, so a CLI's ``--help`` stays
instant.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) dataclass instance as a JSON-ready dictionary."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _to_plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Rebuild a (nested, frozen) dataclass from :func:`to_dict` output.

    Keys starting with ``_`` (such as ``_meta``) are ignored; missing keys take the
    field's default (configs written by older versions still load).

    Args:
        cls: the dataclass type.
        data: the dictionary.
        source: name used in error messages (a file name, say).

    Raises:
        UserError: an unknown field or a value of the wrong type, naming the field.
    """
    return _build(cls, data, source, prefix="")


def _build(cls: Any, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise UserError(f"{source}: field {prefix or '<root>'!r} should be an object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
    if unknown:
        raise UserError(
            f"{source}: unknown field {prefix + unknown[0]!r} for {cls.__name__}; "
            f"known fields: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            kwargs[field.name] = _convert(
                hints[field.name], data[field.name], source, f"{prefix}{field.name}"
            )
    return cls(**kwargs)


def _convert(tp: Any, value: Any, source: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _convert(args[0], value, source, name)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, prefix=f"{name}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, name)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if errors else UserError(f"{source}: field {name!r} has a bad value")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise UserError(f"{source}: field {name!r} is {value!r}; expected one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UserError(f"{source}: field {name!r} should be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, name) for v in value)
        if args and len(args) != len(value):
            raise UserError(f"{source}: field {name!r} should have {len(args)} items")
        return tuple(_convert(a, v, source, name) for a, v in zip(args, value, strict=False))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise UserError(f"{source}: field {name!r} should be a list")
        return [_convert(args[0], v, source, name) if args else v for v in value]
    if origin is dict:
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise UserError(
            f"{source}: field {name!r} should be {tp.__name__}, got {type(value).__name__}"
        )
    return value


def save(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write a dataclass config as JSON (atomically)."""
    return atomic_write_json(path, to_dict(cfg))


def load(path: str | os.PathLike[str], cls: type[T]) -> T:
    """Load a config written by :func:`save` or :func:`compkit_utils.runs.write_config`.

    Raises:
        UserError: the file is missing, is not JSON, or does not fit ``cls``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"{path}: config file not found") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return from_dict(cls, data, source=str(path))


def run_cli(
    commands: Mapping[str, Any],
    dispatch: Callable[[Any], int | None],
    argv: list[str] | None = None,
    *,
    prog: str,
    description: str | None = None,
    group_help: Mapping[str, str] | None = None,
) -> int:
    """Parse a tyro subcommand CLI, validate the config, and run the chosen command.

    ``commands`` maps subcommand names to config dataclasses (defined in a module that does
    not import torch), or to nested mappings for command groups
    (``{"seqmnist": {"train": TrainConfig, "evaluate": EvaluateConfig}}`` gives
    ``prog seqmnist train``). ``dispatch(cfg)`` imports what it needs lazily and runs the
    command.

    Between parsing and dispatch:

    * ``--smoke``: if the config has ``smoke=True`` and its class defines a classmethod
      ``smoke_defaults()``, the command's arguments are parsed again with the smoke config
      as the defaults, so explicit flags win (``--smoke --iterations 3`` runs 3 steps).
    * :func:`compkit_utils.validate.validate_config` checks the markers, ``device``,
      ``run_name`` and every ``check()`` method.

    Errors: a :class:`~compkit_utils.errors.UserError` raised anywhere becomes one line on
    stderr (``<prog>: error: ...``) and exit status 2; so does an ``OSError`` naming a file
    (``<prog>: error: cannot write <path>: <reason>; <fix>``); tyro reports bad flags with
    status 2 too; ``KeyboardInterrupt`` prints ``interrupted; rerun with --resume to
    continue`` and exits with 130.

    Args:
        commands: subcommand name → config class, or → a nested mapping (a group).
        dispatch: runs a parsed config; returns an exit status or ``None`` (0).
        argv: arguments (default: ``sys.argv[1:]``); tests pass a list.
        prog: program name for help and error lines.
        description: help text of the program.
        group_help: help line of each command group (by group name).

    Returns:
        The process exit status.
    """
    import tyro

    from compkit_utils.validate import validate_config

    args = list(sys.argv[1:] if argv is None else argv)
    nested = any(isinstance(value, Mapping) for value in commands.values())
    tyro_config = (tyro.conf.OmitSubcommandPrefixes,) if nested else ()
    try:
        if nested:
            cfg = tyro.cli(
                _subcommand_union(commands, group_help or {}),
                args=args,
                prog=prog,
                description=description,
                config=tyro_config,
            )
        else:
            cfg = tyro.extras.subcommand_cli_from_dict(
                dict(commands), args=args, prog=prog, description=description
            )
        cfg = _apply_smoke_defaults(cfg, commands, args, prog, tyro_config)
        validate_config(cfg)
        result = dispatch(cfg)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"{prog}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


_OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions or pass a writable --runs-dir",
    errno.EPERM: "check its permissions or pass a writable --runs-dir",
    errno.EROFS: "the file system is read-only; pass a writable --runs-dir",
    errno.ENOTDIR: "a file is in the way of a directory; remove it or choose another path",
    errno.EISDIR: "a directory is in the way of a file; remove it or choose another path",
    errno.ENOSPC: "free some disk space or pass a --runs-dir on another disk",
    errno.EDQUOT: "free some disk space (quota exceeded) or pass another --runs-dir",
    errno.EEXIST: "something is already there; remove it or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path or --run-name",
}


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError`` naming a file: ``cannot write <path>: <reason>; <fix>``."""
    reason = exc.strerror or exc.__class__.__name__
    fix = _OS_ERROR_FIXES.get(exc.errno or 0, "check the path and try again")
    return f"cannot write {exc.filename}: {reason}; {fix}"


def _apply_smoke_defaults(
    cfg: Any, commands: Mapping[str, Any], args: list[str], prog: str, tyro_config: tuple
) -> Any:
    """Re-parse the command's own arguments over ``smoke_defaults()`` (see :func:`run_cli`)."""
    cls = type(cfg)
    smoke_defaults = getattr(cls, "smoke_defaults", None)
    if getattr(cfg, "smoke", False) is not True or smoke_defaults is None:
        return cfg
    import tyro

    defaults = smoke_defaults()
    if getattr(defaults, "smoke", True) is not True:
        defaults = dataclasses.replace(defaults, smoke=True)
    for path in _command_paths(commands, cls):
        rest = _args_after(path, args)
        if rest is not None:
            return tyro.cli(
                cls,
                args=rest,
                default=defaults,
                prog=" ".join([prog, *path]),
                config=tyro_config,
            )
    raise AssertionError(f"cannot locate the subcommand of {cls.__name__} in {args}")


def _command_paths(tree: Mapping[str, Any], cls: type, prefix: tuple[str, ...] = ()) -> list:
    """Every subcommand path (``("group", "cmd")``) whose config class is ``cls``."""
    paths = []
    for name, value in tree.items():
        if isinstance(value, Mapping):
            paths += _command_paths(value, cls, (*prefix, name))
        elif value is cls:
            paths.append((*prefix, name))
    return paths


def _args_after(path: tuple[str, ...], args: list[str]) -> list[str] | None:
    """The arguments after the subcommand tokens ``path`` (``None`` if they are absent)."""
    index = 0
    for token in path:
        try:
            index = args.index(token, index) + 1
        except ValueError:
            return None
    return args[index:]


def _subcommand_union(tree: Mapping[str, Any], group_help: Mapping[str, str]) -> Any:
    """A runtime ``Union`` of annotated config classes, nested for command groups."""
    import tyro

    members = []
    for name, value in tree.items():
        if isinstance(value, Mapping):
            marker = tyro.conf.subcommand(name=name, description=group_help.get(name, ""))
            members.append(Annotated[_subcommand_union(value, group_help), marker])
        else:
            members.append(Annotated[value, tyro.conf.subcommand(name=name)])
    return Union[tuple(members)]  # noqa: UP007 - a runtime-built union needs the subscript form
