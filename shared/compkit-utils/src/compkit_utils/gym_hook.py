"""Import modules right after gymnasium is first imported: the shared start-up hook.

gymnasium >= 1.0 has no plugin entry points, so a package whose environments should work with
``gymnasium.make("compkit/...")`` without importing the package first ships a start-up file
(``<name>.pth``, force-included into site-packages by its wheel) holding one line that ``site``
executes at interpreter start (it starts with ``import``)::

    import compkit_utils.gym_hook; compkit_utils.gym_hook.register_after_gymnasium("pkg.envs")

The first call installs ONE ``sys.meta_path`` finder; every call adds its module to the list
that finder imports right after gymnasium's own module has executed (the modules register their
ids with ``gymnasium.register``). A module that fails to import never breaks gymnasium's
import: the error is kept in :data:`import_errors` and ``gymnasium.make`` then says the id is
unknown. ``COMPKIT_NO_GYM_HOOK=1`` turns the hook off (register the ids by importing the module,
or with gymnasium's ``"module:id"`` prefix). If gymnasium is already imported, registering does
nothing.

This module runs at every interpreter start, so it imports only what ``site`` has already
loaded (``os``, ``sys``): no ``typing``, ``importlib.abc``, ``contextlib`` or ``__future__``.
"""

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported at interpreter start
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType

DISABLE_ENV = "COMPKIT_NO_GYM_HOOK"
"""Set this environment variable to ``1`` to turn the hook off."""

import_errors: "dict[str, Exception]" = {}
"""Module name -> the exception its import raised after gymnasium (for diagnosis)."""


class _AfterGymnasium:
    """A ``sys.meta_path`` finder that wraps gymnasium's loader to import modules after it.

    It finds gymnasium's spec through the finders *after* it on ``sys.meta_path`` (other hooks
    of the same kind included, so they are chained, not bypassed) and removes itself: it acts
    once. No ``importlib.abc`` base class: see the module docstring.
    """

    def __init__(self) -> None:
        self.modules: list[str] = []

    def find_spec(
        self, fullname: str, path: "list[str] | None", target: object = None
    ) -> "ModuleSpec | None":
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)  # pyright: ignore[reportArgumentType]  # once
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        modules = self.modules

        def exec_then_import(module: "ModuleType") -> None:
            exec_module(module)
            for name in modules:
                try:
                    __import__(name)
                except Exception as error:  # never break gymnasium's import
                    import_errors[name] = error

        spec.loader.exec_module = exec_then_import  # pyright: ignore[reportAttributeAccessIssue]
        return spec


def register_after_gymnasium(module_name: str) -> None:
    """Import ``module_name`` right after gymnasium's module executes, in this interpreter.

    Installs the shared finder on the first call. Does nothing when ``COMPKIT_NO_GYM_HOOK`` is
    set to a non-empty value or when gymnasium is already imported; registering the same module
    twice imports it once.

    Args:
        module_name: Absolute module name, e.g. ``"leaps_karel.envs"``, whose import registers
            the package's gymnasium ids.
    """
    if os.environ.get(DISABLE_ENV) or "gymnasium" in sys.modules:
        return
    hook = None
    for finder in sys.meta_path:
        if isinstance(finder, _AfterGymnasium):
            hook = finder
            break
    if hook is None:
        hook = _AfterGymnasium()
        sys.meta_path.insert(0, hook)  # pyright: ignore[reportArgumentType]
    if module_name not in hook.modules:
        hook.modules.append(module_name)
