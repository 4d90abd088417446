"""``dataset_info.json``: what generated a persisted dataset, and checksums of its files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json

INFO_FILE = "dataset_info.json"


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Provenance of a generated dataset, stored as ``dataset_info.json`` beside its files.

    Attributes:
        name: dataset name, e.g. ``"karel-programs"``.
        generator: the code that made it, e.g. ``"leaps_karel.dataset"``.
        version: the generating package's version.
        seed: the generator seed.
        counts: sizes, e.g. ``{"programs": 50000, "demos_per_program": 10}``.
        files: file name (relative to the folder) → SHA-256; filled by :func:`write_info`.
        extra: anything else worth recording (generation parameters).
    """

    name: str
    generator: str
    version: str
    seed: int
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def write_info(
    directory: str | os.PathLike[str], info: DatasetInfo, files: list[str] | None = None
) -> Path:
    """Write ``dataset_info.json`` into ``directory`` (atomically).

    Args:
        directory: the dataset folder.
        info: provenance; its ``files`` field is replaced by fresh checksums of ``files``.
        files: names (relative to ``directory``) to checksum.
    """
    directory = Path(directory)
    checksums = {name: sha256_file(directory / name) for name in (files or [])}
    data = dataclasses.asdict(dataclasses.replace(info, files=checksums))
    return atomic_write_json(directory / INFO_FILE, data)


def read_info(directory: str | os.PathLike[str]) -> DatasetInfo:
    """Read ``dataset_info.json`` from ``directory``.

    Raises:
        UserError: missing or malformed file.
    """
    path = Path(directory) / INFO_FILE
    try:
        data = json.loads(path.read_text())
        return DatasetInfo(**data)
    except FileNotFoundError as exc:
        raise UserError(f"{path}: not found; is {directory} a generated dataset folder?") from exc
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"{path}: malformed dataset_info.json ({exc})") from exc


def verify_info(
    directory: str | os.PathLike[str], *, fix: str = "regenerate the dataset"
) -> DatasetInfo:
    """Read ``dataset_info.json`` and check every recorded file's SHA-256.

    Args:
        directory: the dataset folder.
        fix: what the user should do, appended to the error message (e.g. "delete it and
            rerun `... generate-dataset --resume`").

    Raises:
        UserError: a file is missing or its checksum differs, naming the file.
    """
    info = read_info(directory)
    for name, expected in info.files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise UserError(f"{path}: listed in {INFO_FILE} but missing; {fix}")
        actual = sha256_file(path)
        if actual != expected:
            raise UserError(
                f"{path}: corrupt, SHA-256 {actual[:12]}… does not match {INFO_FILE} "
                f"({expected[:12]}…); {fix}"
            )
    return info
