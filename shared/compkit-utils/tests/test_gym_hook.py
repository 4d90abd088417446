"""The shared gymnasium start-up hook (compkit_utils.gym_hook).

Each case runs in a fresh interpreter without ``site`` (``-S``: no installed start-up files),
with a stand-in ``gymnasium`` package and registration modules in a temporary folder, so it
needs neither gymnasium nor any package that registers with the hook.
"""

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import compkit_utils

SRC = str(Path(compkit_utils.__file__).resolve().parent.parent)


def _run(tmp_path: Path, code: str, **env: str) -> str:
    (tmp_path / "gymnasium").mkdir(exist_ok=True)
    (tmp_path / "gymnasium" / "__init__.py").write_text("ran = []\n")
    (tmp_path / "reg_ok.py").write_text("import gymnasium\ngymnasium.ran.append('ok')\n")
    (tmp_path / "reg_two.py").write_text("import gymnasium\ngymnasium.ran.append('two')\n")
    (tmp_path / "reg_bad.py").write_text("raise RuntimeError('boom')\n")
    environ = {k: v for k, v in os.environ.items() if k != "COMPKIT_NO_GYM_HOOK"}
    environ.update(env, PYTHONPATH=os.pathsep.join([str(tmp_path), SRC]))
    out = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_one_finder_imports_every_registered_module_after_gymnasium(tmp_path: Path) -> None:
    code = """
        import sys
        from compkit_utils import gym_hook
        gym_hook.register_after_gymnasium("reg_bad")
        gym_hook.register_after_gymnasium("reg_ok")
        gym_hook.register_after_gymnasium("reg_two")
        gym_hook.register_after_gymnasium("reg_ok")  # twice: imported once
        hooks = [f for f in sys.meta_path if isinstance(f, gym_hook._AfterGymnasium)]
        assert len(hooks) == 1 and hooks[0].modules == ["reg_bad", "reg_ok", "reg_two"]
        assert "reg_ok" not in sys.modules
        import gymnasium
        print(gymnasium.ran, sorted(gym_hook.import_errors), gym_hook.import_errors["reg_bad"])
        assert not any(isinstance(f, gym_hook._AfterGymnasium) for f in sys.meta_path)
    """
    assert _run(tmp_path, code) == "['ok', 'two'] ['reg_bad'] boom"


def test_turned_off_by_the_environment_variable(tmp_path: Path) -> None:
    code = """
        import sys
        from compkit_utils import gym_hook
        gym_hook.register_after_gymnasium("reg_ok")
        installed = any(isinstance(f, gym_hook._AfterGymnasium) for f in sys.meta_path)
        import gymnasium
        print(gymnasium.ran, installed)
    """
    assert _run(tmp_path, code, COMPKIT_NO_GYM_HOOK="1") == "[] False"


def test_does_nothing_once_gymnasium_is_imported(tmp_path: Path) -> None:
    code = """
        import sys
        import gymnasium
        from compkit_utils import gym_hook
        before = list(sys.meta_path)
        gym_hook.register_after_gymnasium("reg_ok")
        print(sys.meta_path == before, "reg_ok" in sys.modules)
    """
    assert _run(tmp_path, code) == "True False"


def test_chains_another_finder_of_the_same_kind(tmp_path: Path) -> None:
    """A third-party hook that wraps gymnasium's loader after ours still runs."""
    code = """
        import importlib.machinery, sys
        from compkit_utils import gym_hook
        gym_hook.register_after_gymnasium("reg_ok")
        ran = []
        class Other:
            def find_spec(self, name, path, target=None):
                if name != "gymnasium":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.machinery.PathFinder.find_spec(name, path)
                run = spec.loader.exec_module
                def wrapped(module):
                    run(module)
                    ran.append("other")
                spec.loader.exec_module = wrapped
                return spec
        sys.meta_path.insert(1, Other())
        import gymnasium
        print(gymnasium.ran, ran)
    """
    assert _run(tmp_path, code) == "['ok'] ['other']"


def test_importing_the_hook_loads_nothing_else(tmp_path: Path) -> None:
    """It runs at every interpreter start: no typing, importlib.metadata, __future__ ..."""
    code = """
        import os, sys  # site (skipped here with -S) has loaded os at every interpreter start
        before = set(sys.modules)
        import compkit_utils.gym_hook
        print(sorted(set(sys.modules) - before))
    """
    assert _run(tmp_path, code) == "['compkit_utils', 'compkit_utils.gym_hook']"


def test_version_is_computed_lazily() -> None:
    assert compkit_utils.__version__ == metadata.version("compkit-utils")
