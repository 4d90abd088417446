"""Register the Karel environments with gymnasium when gymnasium is first imported.

gymnasium >= 1.0 has no plugin entry points, so an installed ``leaps-karel`` ships a
``leaps_karel_gymnasium.pth`` start-up file that imports this module. It only installs an
import hook (no gymnasium, numpy or leaps_karel import at interpreter start): when a program
imports ``gymnasium``, the hook registers the ``compkit/Karel-<Task>-v0`` ids (entry-point
by importing ``leaps_karel.envs`` right after gymnasium), so
``gymnasium.make("compkit/Karel-Maze-v0")`` works without importing ``leaps_karel.envs``
first. ``COMPKIT_NO_GYM_HOOK=1`` turns it off.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported at interpreter start
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class _RegisterAfterGymnasium:
    """A ``sys.meta_path`` finder that wraps gymnasium's loader to register the ids after it.

    (No ``importlib.abc`` base class and no ``typing``: this module runs at every interpreter
    start, so it imports only what is already loaded.)
    """

    def find_spec(
        self, fullname: str, path: list[str] | None, target: object = None
    ) -> ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        import importlib.machinery

        sys.meta_path.remove(self)  # type: ignore[arg-type]  # once: find the real spec with the other finders
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            # Never break gymnasium's import; make() would then say the id is unknown.
            try:  # noqa: SIM105 - contextlib is not loaded at interpreter start
                import leaps_karel.envs  # noqa: F401  (registers the ids)
            except Exception:
                pass

        loader.exec_module = exec_and_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Install the hook unless gymnasium is already imported or the user turned it off."""
    if os.environ.get("COMPKIT_NO_GYM_HOOK") or "gymnasium" in sys.modules:
        return
    if not any(isinstance(finder, _RegisterAfterGymnasium) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterGymnasium())  # type: ignore[arg-type]


install()
