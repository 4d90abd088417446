"""Automated checks. Run `uvx nox -l` to list sessions."""

# /// script
# dependencies = ["nox>=2025.5.1"]
# ///

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2025.5.1"
nox.options.default_venv_backend = "uv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests", "engine-without-torch", "smoke", "typecheck", "docs"]

ROOT = Path(__file__).parent
PYPROJECTS = {
    tomllib.loads(p.read_text())["project"]["name"]: p
    for p in sorted(
        [*ROOT.glob("shared/*/pyproject.toml"), *ROOT.glob("packages/*/pyproject.toml")]
    )
}
PACKAGES = list(PYPROJECTS)
# Only the first-party code is pinned to few threads; CI machines have 2 cores.
THREAD_ENV = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def sync(session: nox.Session, *args: str) -> None:
    """Install exactly the requested part of uv.lock into the session venv."""
    session.run_install("uv", "sync", "--locked", "--no-default-groups", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and format check; no project install needed."""
    sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package, in an environment holding only what it declares."""
    pyproject = PYPROJECTS[package]
    sync(session, "--package", package, "--group", "test", *test_extra_args(pyproject))
    tests_dir = pyproject.parent / "tests"
    # On CI the native kernels must build: a failure fails the tests instead of skipping them.
    env = {**THREAD_ENV, "COMPKIT_NATIVE": "require"} if os.environ.get("CI") else THREAD_ENV
    session.run("pytest", str(tests_dir), "-m", "not slow and not gpu", *session.posargs, env=env)
    # The package's smoke invocations, in this environment that holds only this package:
    # proves that `uv sync --package X` is enough to run X.
    run_smoke(session, pyproject)


def test_extra_args(pyproject: Path) -> list[str]:
    """`--extra E` for each extra a package's tests need.

    Declared in the package's own pyproject:
      [tool.compkit]
      test-extras = ["learn"]
    """
    return [
        arg
        for extra in _compkit_table(pyproject).get("test-extras", [])
        for arg in ("--extra", extra)
    ]


def run_smoke(session: nox.Session, pyproject: Path, key: str = "smoke") -> None:
    """Every console script of one package answers --help, then its smoke invocations run.

    ``key`` names the list in ``[tool.compkit]``: ``smoke`` (all extras installed) or
    ``smoke-without-extras`` (the commands that must work in a bare install).
    """
    scripts = tomllib.loads(pyproject.read_text())["project"].get("scripts", {})
    for script in scripts:
        session.run(script, "--help", silent=True)
    # Each package names its smoke invocations in its own pyproject:
    #   [tool.compkit]
    #   smoke = [["train", "--smoke"], ["evaluate", "--smoke"]]
    for args in _compkit_table(pyproject).get(key, []):
        script = next(iter(scripts))
        session.run(script, *args, env={"RUNS_DIR": session.create_tmp(), **THREAD_ENV})


def _compkit_table(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text()).get("tool", {}).get("compkit", {})


@nox.session
def smoke(session: nox.Session) -> None:
    """All packages installed together: every console script and smoke run still works."""
    sync(session, "--all-packages", "--group", "test")
    for pyproject in PYPROJECTS.values():
        run_smoke(session, pyproject)


@nox.session(name="engine-without-torch")
def engine_without_torch(session: nox.Session) -> None:
    """leaps-karel without its `learn` extra: no PyTorch, the engine and search still work."""
    pyproject = PYPROJECTS["leaps-karel"]
    sync(session, "--package", "leaps-karel")
    session.run("python", "-c", NO_TORCH_CHECK, silent=True)
    run_smoke(session, pyproject, "smoke-without-extras")
    # A learning command stops with the install line (exit 2) instead of a traceback.
    out = session.run("leaps-karel", "cem", "--smoke", success_codes=[2], silent=True)
    if "needs PyTorch" not in str(out) or "--extra learn" not in str(out):
        session.error(f"`leaps-karel cem` without torch did not print the install line: {out}")


NO_TORCH_CHECK = (
    "import importlib.util, sys; "
    "sys.exit('torch is installed' if importlib.util.find_spec('torch') else 0)"
)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Static types across all packages and their tests."""
    sync(session, "--all-packages", "--group", "typecheck", "--group", "test")
    # Point the checker at this session's interpreter; otherwise it may pick up ./.venv.
    session.run("basedpyright", "--pythonpath", f"{session.bin}/python", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    """Learning tests (minutes)."""
    sync(session, "--all-packages", "--group", "test")
    # Exit code 5 = nothing selected, acceptable while a package has no slow tests yet.
    session.run(
        "pytest",
        "packages",
        "shared",
        "-m",
        "slow and not long",
        *session.posargs,
        success_codes=[0, 5],
        env=THREAD_ENV,
    )


@nox.session
def long(session: nox.Session) -> None:
    """Paper targets within a stated CPU budget (hours each; see each test's docstring)."""
    sync(session, "--all-packages", "--group", "test")
    session.run("pytest", "packages", "-m", "long", "-s", *session.posargs, env=THREAD_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Every package's `bench` command (timings; never part of pass/fail)."""
    sync(session, "--all-packages", "--group", "test")
    for pyproject in PYPROJECTS.values():
        scripts = tomllib.loads(pyproject.read_text())["project"].get("scripts", {})
        for args in _compkit_table(pyproject).get("bench", []):
            session.run(next(iter(scripts)), *args, *session.posargs, env=THREAD_ENV)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; warnings are errors."""
    sync(session, "--only-group", "docs")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


if __name__ == "__main__":
    nox.main()
