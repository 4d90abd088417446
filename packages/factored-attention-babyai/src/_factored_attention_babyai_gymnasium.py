"""Register ``compkit/BabyAI-GoToLocal-v0`` with gymnasium when gymnasium is first imported.

gymnasium >= 1.0 has no plugin entry points, so an installed ``factored-attention-babyai``
ships a start-up file (``zz_factored_attention_babyai_gymnasium.pth``) that imports this
module. It only installs an import hook (no gymnasium, numpy or package import at interpreter
start): when a program imports ``gymnasium``, the hook registers the id (by importing
``factored_attention_babyai.env`` right after gymnasium), so
``gymnasium.make("compkit/BabyAI-GoToLocal-v0")`` works without importing the package first.
``COMPKIT_NO_GYM_HOOK=1`` turns it off.

Other packages install hooks of the same kind (leaps-karel does). This one finds gymnasium's
spec through the *remaining* finders of ``sys.meta_path`` rather than the path finder
directly, so a hook inserted after it is chained, not bypassed; the ``zz_`` prefix makes
``site`` process this start-up file after those of the other packages (``site`` reads ``.pth``
files in sorted order), so this hook sits first and chains theirs.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself is not imported at interpreter start
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class _RegisterBabyAIAfterGymnasium:
    """A ``sys.meta_path`` finder that wraps gymnasium's loader to register the id after it."""

    def find_spec(
        self, fullname: str, path: list[str] | None, target: object = None
    ) -> ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)  # type: ignore[arg-type]  # once
        spec = None
        for finder in list(sys.meta_path):  # the other finders, hooks of other packages included
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            # Never break gymnasium's import; make() would then say the id is unknown.
            try:  # noqa: SIM105 - contextlib is not loaded at interpreter start
                import factored_attention_babyai.env  # noqa: F401  (registers the id)
            except Exception:
                pass

        loader.exec_module = exec_and_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Install the hook unless gymnasium is already imported or the user turned it off."""
    if os.environ.get("COMPKIT_NO_GYM_HOOK") or "gymnasium" in sys.modules:
        return
    if not any(isinstance(finder, _RegisterBabyAIAfterGymnasium) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterBabyAIAfterGymnasium())  # type: ignore[arg-type]


install()
