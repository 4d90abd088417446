"""``rim-cells`` command line (no torch import at module level)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rim-cells``; ``argv`` lets tests call it in-process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["minigrid"]:
        from rim_cells.minigrid.cli import main as minigrid_main

        return minigrid_main(argv[1:])
    print("usage: rim-cells minigrid {train,evaluate,visualize} ...", file=sys.stderr)
    return 2


def entry() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
