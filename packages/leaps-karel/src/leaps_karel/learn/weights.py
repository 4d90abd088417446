"""Stage-1 weights files: export a `ProgramVAE` to safetensors and load it back.

A weights file holds the encoder, μ / log σ, decoder and (optionally) executor tensors, and in
its metadata the format name, the model sizes, the variant and the vocabulary (the 50 DSL tokens
in id order), so that weights of another vocabulary or shape are refused with a clear message.
The shipped weights live in ``leaps_karel/learn/weights/<VARIANT>.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compkit_utils.errors import UserError
from leaps_karel import dsl
from leaps_karel.learn.pretrain_config import VARIANTS, ModelConfig

if TYPE_CHECKING:
    from leaps_karel.learn.model import ProgramVAE

__all__ = [
    "FORMAT",
    "WEIGHTS_DIR",
    "default_weights",
    "export_weights",
    "load_model",
    "read_metadata",
    "shipped_weights",
]

FORMAT = "leaps-karel-program-vae"
WEIGHTS_DIR = Path(__file__).parent / "weights"
_FIX = "use a file written by `leaps-karel pretrain` (weights/<VARIANT>.safetensors)"


def shipped_weights(variant: str = "LEAPS") -> Path:
    """Path of the weights shipped in the package for ``variant``.

    Raises:
        UserError: the variant is unknown or not shipped (lists the shipped ones).
    """
    path = WEIGHTS_DIR / f"{variant}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
        known = ", ".join(shipped) or "none"
        hint = "" if variant in VARIANTS else f" (variants: {', '.join(VARIANTS)})"
        raise UserError(
            f"no shipped weights for variant {variant!r}{hint}; shipped: {known}; train them with "
            "`leaps-karel pretrain --variant VARIANT` and pass the exported file instead"
        )
    return path


def default_weights() -> Path:
    """The shipped weights stage 2 uses by default.

    LEAPS when shipped, else the closest shipped variant (LEAPS-P+L, LEAPS-P+R, LEAPS-P, in
    that order); the file's metadata names the variant (`read_metadata`).

    Raises:
        UserError: no weights are shipped.
    """
    for variant in ("LEAPS", "LEAPSPL", "LEAPSPR", "LEAPSP"):
        path = WEIGHTS_DIR / f"{variant}.safetensors"
        if path.is_file():
            return path
    return shipped_weights("LEAPS")  # raises with the list of shipped files


def export_weights(
    model: ProgramVAE,
    path: str | os.PathLike[str],
    *,
    variant: str,
    include_executor: bool = True,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` to a safetensors file (atomically).

    Args:
        model: the model.
        path: output file.
        variant: the stage-1 variant it was trained as (recorded in the metadata).
        include_executor: also store the executor (stage 2 needs only the decoder).
        extra: more metadata strings (e.g. the training command).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if include_executor or not k.startswith("executor.")
    }
    cfg = model.cfg
    meta = {
        "format": FORMAT,
        "variant": variant,
        "vocabulary": " ".join(dsl.TOKENS),
        "model": json.dumps(
            {
                "hidden": cfg.hidden,
                "decode_steps": cfg.decode_steps,
                "executor_steps": cfg.executor_steps,
                "executor_hw": list(cfg.executor_hw),
            }
        ),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # a shipped file: readable by everyone, like the package
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a weights file (checked: format and vocabulary).

    Raises:
        UserError: missing, corrupt or truncated file; another format or vocabulary.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file; {_FIX}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta: dict[str, str] = dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise UserError(
            f"{path}: corrupt or truncated weights file ({type(exc).__name__}); {_FIX}"
        ) from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a leaps-karel program-VAE weights file; {_FIX}")
    if meta.get("vocabulary") != " ".join(dsl.TOKENS):
        raise UserError(
            f"{path}: weights of another token vocabulary than this DSL's 50 tokens; retrain "
            "them with `leaps-karel pretrain`"
        )
    return meta


def load_model(
    path: str | os.PathLike[str] | None = None, *, map_location: Any = "cpu"
) -> ProgramVAE:
    """Load a `ProgramVAE` from a weights file (``None`` = `default_weights`).

    The executor is left randomly initialised when the file does not hold it. The model is
    returned in eval mode.

    Raises:
        UserError: missing, corrupt or truncated file, another vocabulary, or tensors of
            another shape — naming the file and the fix.
    """
    from safetensors.torch import load_file

    from leaps_karel.learn.model import ProgramVAE

    path = Path(path) if path is not None else default_weights()
    meta = read_metadata(path)
    try:
        sizes = json.loads(meta["model"])
        cfg = ModelConfig(
            hidden=int(sizes["hidden"]),
            decode_steps=int(sizes["decode_steps"]),
            executor_steps=int(sizes["executor_steps"]),
            executor_hw=(int(sizes["executor_hw"][0]), int(sizes["executor_hw"][1])),
        )
    except (KeyError, ValueError, TypeError, IndexError):
        raise UserError(f"{path}: unreadable model sizes in the metadata; {_FIX}") from None
    try:
        tensors = load_file(str(path), device=str(map_location))
    except Exception as exc:
        raise UserError(
            f"{path}: corrupt or truncated weights file ({type(exc).__name__}); {_FIX}"
        ) from None
    model = ProgramVAE(cfg)
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in tensors:
            if key.startswith("executor."):
                continue
            raise UserError(f"{path}: tensor {key!r} is missing; {_FIX}")
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise UserError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected "
                f"{tuple(value.shape)}; the file does not match its recorded model sizes"
            )
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise UserError(f"{path}: unexpected tensor {unknown[0]!r}; {_FIX}")
    model.load_state_dict(tensors, strict=False)
    return model.to(map_location).eval()
