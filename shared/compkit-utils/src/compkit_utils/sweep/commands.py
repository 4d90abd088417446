"""Find a compkit command: its package, its ``main`` and its config dataclass.

Packages register their command tree in the ``compkit.commands`` entry-point group::

    [project.entry-points."compkit.commands"]
    compile-seg = "compile_seg.cli:COMMANDS"

The module holding ``COMMANDS`` also defines ``main(argv) -> int``. A ``module:attr`` spec
(``compkit_utils.sweep.toy:COMMANDS``) names a command tree directly.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import threading
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from compkit_utils.errors import UserError

ENTRY_POINT_GROUP = "compkit.commands"


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    """A resolved command.

    Attributes:
        package: distribution name (the runs go to ``<runs-dir>/<package>/``).
        module: the module holding ``COMMANDS`` and ``main``.
        command: the subcommand path, e.g. ``("minigrid", "train")``.
        config_class: the command's config dataclass.
        flags: every flag the command accepts, without ``--`` (``learning-rate``,
            ``loss.beta-b``, ``model.memory``), in tyro's spelling.
    """

    package: str
    module: str
    command: tuple[str, ...]
    config_class: type
    flags: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The command path joined with ``-`` (``minigrid-train``)."""
        return "-".join(self.command)


def available_packages() -> dict[str, str]:
    """Registered packages: name → ``module:attr`` of their command tree."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_tree(spec: str) -> tuple[str, str, Mapping[str, Any]]:
    packages = available_packages()
    if spec in packages:
        package, target = spec, packages[spec]
    elif ":" in spec:
        package, target = "", spec
    else:
        known = ", ".join(sorted(packages)) or "none installed"
        raise UserError(
            f"unknown package {spec!r}; installed compkit packages: {known} "
            "(or give module:attr of a command tree)"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{spec}: cannot import {module_name} ({exc})") from exc
    tree = getattr(module, attr, None)
    if not isinstance(tree, Mapping) or not callable(getattr(module, "main", None)):
        raise UserError(
            f"{spec}: {target} is not a command tree (a dict of commands in a module with main)"
        )
    if not package:
        package = str(getattr(module, "PACKAGE", None) or module_name.split(".")[0])
    return package, module_name, tree


# tyro's internal caches (and ``warnings.catch_warnings``) are not thread-safe; a package may
# prepare sweeps from several threads (ilpo's experiment overlaps its baseline sweeps).
_TYRO_LOCK = threading.Lock()


def command_flags(config_class: type) -> tuple[str, ...]:
    """The flags (without ``--``) of a tyro command over ``config_class``."""
    import tyro.extras

    with _TYRO_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser = tyro.extras.get_parser(config_class)
    flags = []
    for action in parser._actions:  # argparse exposes no public list of its actions
        # The first spelling is the positive one (``--resume``, not ``--no-resume``).
        options = [o for o in action.option_strings if o.startswith("--")]
        if options and options[0] != "--help":
            flags.append(options[0][2:])
    return tuple(flags)


def resolve_command(spec: str, command: list[str] | tuple[str, ...]) -> CommandSpec:
    """Resolve ``compkit sweep <spec> <command...>``.

    Args:
        spec: a registered package name (``compile-seg``) or ``module:attr``.
        command: the subcommand path (``["train"]``, ``["minigrid", "train"]``).

    Raises:
        UserError: unknown package or command, naming the valid ones.
    """
    package, module_name, tree = _load_tree(spec)
    node: Any = tree
    path: list[str] = []
    for name in command:
        if not isinstance(node, Mapping):
            break
        if name not in node:
            where = " ".join([package, *path])
            raise UserError(
                f"unknown command {name!r} of {where}; commands: {', '.join(sorted(node))}"
            )
        node = node[name]
        path.append(name)
    if isinstance(node, Mapping):
        where = " ".join([package, *path])
        raise UserError(f"{where} needs a subcommand: one of {', '.join(sorted(node))}")
    if len(path) != len(command):
        raise UserError(f"{package} {' '.join(path)} takes no subcommand {command[len(path)]!r}")
    return CommandSpec(package, module_name, tuple(path), node, command_flags(node))


def preload_modules(package: str) -> tuple[str, ...]:
    """Heavy modules a package's runs import: ``("torch",)`` if it depends on torch."""
    try:
        requires = metadata.requires(package) or []
    except metadata.PackageNotFoundError:
        return ()
    names = {re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0].lower() for req in requires}
    return ("torch",) if "torch" in names else ()
