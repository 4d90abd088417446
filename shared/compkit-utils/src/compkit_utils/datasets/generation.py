"""The output folder of a resumable, sharded dataset generator.

A generator writes its shards into ``<out>/<shard_dir>/`` next to a manifest of the settings
that made them, merges them into the final files, and writes ``dataset_info.json`` last. This
module decides, before anything is generated, what an existing folder means: a finished
dataset (refused unless ``--overwrite``), an interrupted generation (continued with
``--resume`` when the settings match, refused otherwise), or stray final files without a
manifest (refused). leaps-karel's and factored-attention-babyai's generators share it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compkit_utils.datasets.info import INFO_FILE
from compkit_utils.errors import UserError
from compkit_utils.io import atomic_write_json

MANIFEST = "manifest.json"


def prepare_generation_dir(
    out_dir: Path,
    settings: dict[str, Any],
    *,
    outputs: Sequence[str],
    overwrite: bool,
    resume: bool,
    shard_dir: str = ".shards",
) -> bool:
    """Check (and with ``overwrite`` clear) a generator's output folder; write the manifest.

    Args:
        out_dir: the ``--out-dir`` folder (created later by the caller if missing).
        settings: JSON-able settings that determine the shards; stored as the manifest and
            compared on ``--resume``.
        outputs: names of the final files or folders inside ``out_dir`` (the first one is the
            main data file); removed with ``overwrite``.
        overwrite: start over, removing a finished dataset or an interrupted generation.
        resume: continue an interrupted generation with the same settings.
        shard_dir: the shard folder's name inside ``out_dir``.

    Returns:
        Whether an interrupted generation is being resumed.

    Raises:
        UserError: one line naming the folder or file and the flag that fixes it.
    """
    shards = out_dir / shard_dir
    manifest = shards / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir}: is a file, not a folder; choose another --out-dir")
    if overwrite:
        for name in (*outputs, INFO_FILE):
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        shutil.rmtree(shards, ignore_errors=True)
    elif (out_dir / INFO_FILE).exists():
        raise UserError(
            f"{out_dir}: already holds a generated dataset; pass --overwrite to replace it or "
            "choose another --out-dir"
        )
    elif outputs and (out_dir / outputs[0]).exists() and not manifest.exists():
        raise UserError(
            f"{out_dir / outputs[0]}: exists but was not written by a finished generation; "
            "pass --overwrite to replace it"
        )
    if manifest.exists():
        if not resume:
            raise UserError(
                f"{out_dir}: holds an interrupted generation; pass --resume to continue it "
                "(same settings) or --overwrite to start over"
            )
        try:
            previous = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None
        if previous != settings:
            raise UserError(
                f"{manifest}: an interrupted generation with different settings is in {out_dir}; "
                "rerun with the same settings to resume it, or pass --overwrite"
            )
        return True
    shards.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, settings)
    return False
