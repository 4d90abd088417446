"""Common utilities shared by the compkit method packages."""

# No imports here: the packages' gymnasium start-up hook (compkit_utils.gym_hook) imports this
# package at every interpreter start, so ``__version__`` is looked up on first access.


def __getattr__(name: str) -> str:
    """Compute ``__version__`` lazily (``importlib.metadata`` is slow to import)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("compkit-utils")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        found = "0+unknown"
    globals()["__version__"] = found
    return found
