"""The original's vector text format: a folder of ``*.txt`` files, one transition a line.

State-only lines are ``[s] [s']``; the BC variant is ``[s] [a] [s']`` with the action as a
one-element list, e.g. ``[0.01,-0.2,0.03,0.4] [1] [0.0096,-0.39,0.038,0.71]``. No spaces
inside the brackets, one ASCII space between groups. Files are read in numeric order of
their stems when all stems are integers, else in name order; other files are ignored.
The reader follows the original (``,,`` is read as ``,``; at most 50,000 transitions), and
reports a malformed line with its file and line number. The writer uses the shortest
float32 text that reads back to the same value.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from compkit_utils.errors import UserError
from ilpo.data.transitions import MAX_TRANSITIONS, Transitions, episode_ids_from_continuity

__all__ = [
    "TextKind",
    "format_line",
    "list_text_files",
    "parse_line",
    "read_text_folder",
    "write_text_file",
]

TextKind = Literal["auto", "states", "bc"]


def _number(x: float) -> str:
    return str(np.float32(x))


def format_line(
    state: Iterable[float], next_state: Iterable[float], action: int | None = None
) -> str:
    """One transition as a line (with its newline): ``[s] [s']`` or ``[s] [a] [s']``."""
    s = ",".join(_number(x) for x in state)
    s2 = ",".join(_number(x) for x in next_state)
    if action is None:
        return f"[{s}] [{s2}]\n"
    return f"[{s}] [{int(action)}] [{s2}]\n"


def _parse_group(text: str) -> list[float]:
    if len(text) < 2 or text[0] != "[" or text[-1] != "]":
        raise ValueError(f"expected a bracketed list like [0.1,0.2], got {text[:40]!r}")
    body = text[1:-1]
    if not body:
        raise ValueError("empty list []")
    values = [float(part) for part in body.split(",")]
    if not all(np.isfinite(values)):
        raise ValueError(f"non-finite value in {text[:40]!r}")
    return values


def parse_line(line: str) -> tuple[list[float], int | None, list[float]]:
    """Parse one line into ``(s, a or None, s')``.

    Raises:
        ValueError: the line does not follow the grammar (the message says why).
    """
    groups = line.rstrip("\r\n").replace(",,", ",").split(" ")
    if len(groups) == 2:
        return _parse_group(groups[0]), None, _parse_group(groups[1])
    if len(groups) == 3:
        action = _parse_group(groups[1])
        if len(action) != 1 or action[0] != int(action[0]):
            raise ValueError(f"the action {groups[1]!r} must be one integer in brackets, like [1]")
        return _parse_group(groups[0]), int(action[0]), _parse_group(groups[2])
    raise ValueError(
        f"expected 2 bracketed groups '[s] [s']' (or 3 for BC, '[s] [a] [s']') separated by "
        f"single spaces, found {len(groups)}"
    )


def list_text_files(folder: Path) -> list[Path]:
    """The ``*.txt`` files of ``folder`` in the original's order."""
    files = [p for p in folder.glob("*.txt") if p.is_file()]
    if files and all(p.stem.lstrip("-").isdigit() for p in files):
        return sorted(files, key=lambda p: int(p.stem))
    return sorted(files)


def read_text_folder(
    folder: str | os.PathLike[str],
    *,
    kind: TextKind = "auto",
    max_transitions: int | None = MAX_TRANSITIONS,
) -> Transitions:
    """Read a folder of ``*.txt`` demonstration files (or a single ``.txt`` file).

    Args:
        folder: the dataset folder (or one file).
        kind: ``states`` expects ``[s] [s']`` lines, ``bc`` expects ``[s] [a] [s']``,
            ``auto`` takes the form of the first line (every line must share it).
        max_transitions: read at most this many (the original's cap is 50,000; ``None``
            reads everything).

    Raises:
        UserError: a missing or empty folder, a malformed line (file and line number), a
            line of the other form, or states of differing lengths.
    """
    path = Path(folder)
    if not path.exists():
        raise UserError(f"{path}: dataset not found; pass a folder of *.txt demonstration files")
    files = [path] if path.is_file() else list_text_files(path)
    if not files:
        raise UserError(
            f"{path}: no *.txt demonstration files in this folder; run `ilpo collect` or pass "
            "the folder holding the [s] [s'] files"
        )
    states: list[list[float]] = []
    next_states: list[list[float]] = []
    actions: list[int] = []
    want_actions: bool | None = {"auto": None, "states": False, "bc": True}[kind]
    dim: int | None = None
    cap = max_transitions if max_transitions is not None else float("inf")
    for file in files:
        if len(states) >= cap:
            break
        try:
            handle = open(file, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UserError(f"{file}: cannot read ({exc.strerror})") from None
        with handle:
            try:
                for number, line in enumerate(handle, start=1):
                    if len(states) >= cap:
                        break
                    if not line.strip():
                        continue
                    where = f"{file}:{number}"
                    try:
                        s, a, s2 = parse_line(line)
                    except ValueError as exc:
                        raise UserError(f"{where}: malformed transition: {exc}") from None
                    if want_actions is None:
                        want_actions = a is not None
                    if want_actions and a is None:
                        raise UserError(
                            f"{where}: a state-only line [s] [s'] where BC lines [s] [a] [s'] "
                            "are expected; pass the BC dataset (the <env>_bc folder)"
                        )
                    if not want_actions and a is not None:
                        raise UserError(
                            f"{where}: a BC line [s] [a] [s'] where state-only lines [s] [s'] "
                            "are expected; pass the state-only dataset, not the <env>_bc one"
                        )
                    if dim is None:
                        dim = len(s)
                    if len(s) != dim or len(s2) != dim:
                        raise UserError(
                            f"{where}: states have {len(s)} and {len(s2)} entries, but earlier "
                            f"lines have {dim}"
                        )
                    states.append(s)
                    next_states.append(s2)
                    if a is not None:
                        actions.append(a)
            except UnicodeDecodeError:
                raise UserError(f"{file}: not a text file (it is not UTF-8)") from None
    if not states:
        raise UserError(f"{path}: the *.txt files hold no transitions")
    s_arr = np.asarray(states, dtype=np.float32)
    s2_arr = np.asarray(next_states, dtype=np.float32)
    return Transitions(
        states=s_arr,
        next_states=s2_arr,
        actions=np.asarray(actions, dtype=np.int64) if want_actions else None,
        episode_ids=episode_ids_from_continuity(s_arr, s2_arr),
        source=str(path),
    )


def write_text_file(
    path: str | os.PathLike[str],
    states: np.ndarray,
    next_states: np.ndarray,
    actions: np.ndarray | None = None,
) -> Path:
    """Write transitions in the text format (BC lines when ``actions`` is given), atomically."""
    from compkit_utils.io import atomic_write_text

    actions_list: list[int | None] = (
        [None] * len(states) if actions is None else [int(a) for a in actions]
    )
    text = "".join(
        format_line(s, s2, a) for s, s2, a in zip(states, next_states, actions_list, strict=True)
    )
    return atomic_write_text(path, text)
