"""One checkpoint format for interaction models (spec §7 post-processing, §9 item 4).

Every file is a compkit checkpoint (a plain dict loaded with ``weights_only=True``) whose
``extra["kind"]`` says what it holds:

* ``"discriminator"`` — written by ``train-discriminator`` (``last.pt``, ``step_*.pt``,
  ``best/*.pt``): ``model`` is the state dict of a :class:`~.disc_core.Discriminator`, keys
  ``model.*`` (interaction model) and ``mask.*`` (masking module), plus the optimizer.
* ``"interaction"`` — the post-processed form (:func:`to_interaction_state`): ``model`` holds
  only the interaction model's weights (no prefix), no optimizer; ``extra`` names the model
  and the vocabulary. ``train-discriminator`` writes ``interaction.pt`` (final weights) and
  ``interaction_best.pt`` (best ID soft F1); ``export-interaction`` converts any other one.

:func:`load_interaction` accepts both kinds (a discriminator checkpoint is post-processed in
memory), so the original's load-order bug — the planner indexing ``["state_dict"]`` of a file
that post-processing had already flattened — cannot happen; anything else (a planner or BC
checkpoint, another model type or vocabulary) is refused with one line naming the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compkit_utils.errors import UserError

KIND_DISCRIMINATOR = "discriminator"
KIND_INTERACTION = "interaction"
INTERACTION_FILE = "interaction.pt"
BEST_INTERACTION_FILE = "interaction_best.pt"
MODEL_PREFIX = "model."


def to_interaction_state(state: dict[str, Any], source: str) -> dict[str, Any]:
    """Post-process a discriminator checkpoint dict into an interaction checkpoint dict.

    Keeps the ``model.`` weights with the prefix removed (a true prefix removal, not the
    original's character-set strip, §9 item 3), drops the masking module and optimizer.

    Args:
        state: a checkpoint dict of kind ``"discriminator"`` or ``"interaction"``.
        source: where it came from (for messages and ``extra["source"]``).
    """
    extra = dict(state.get("extra") or {})
    kind = extra.get("kind")
    if kind == KIND_INTERACTION:
        return state
    if kind != KIND_DISCRIMINATOR:
        what = f"a {kind!r} checkpoint" if kind else "not a factored-attention-babyai checkpoint"
        raise UserError(
            f"{source}: {what}, not a train-discriminator or interaction checkpoint; pass the "
            "interaction.pt of a train-discriminator run (or one of its checkpoints)"
        )
    weights = {
        key[len(MODEL_PREFIX) :]: value
        for key, value in state["model"].items()
        if key.startswith(MODEL_PREFIX)
    }
    extra.update(kind=KIND_INTERACTION, source=source)
    return {
        "format_version": state["format_version"],
        "step": state["step"],
        "model": weights,
        "optimizer": None,
        "config": state.get("config") or {},
        "rng": {},
        "package_version": state.get("package_version"),
        "extra": extra,
    }


def _sweep_run(path: Path, match: dict[str, Any]) -> Path:
    """The run of a ``compkit sweep`` of train-discriminator whose config matches ``match``."""
    import json

    wanted = ", ".join(f"{key}={value}" for key, value in match.items())
    for run in sorted(p for p in path.iterdir() if (p / "config.json").is_file()):
        config = json.loads((run / "config.json").read_text())
        if all(config.get(key) == value for key, value in match.items()):
            if (run / INTERACTION_FILE).is_file():
                return run / INTERACTION_FILE
            raise UserError(
                f"{run}: the discriminator run for {wanted} has no {INTERACTION_FILE} yet; "
                "let the discriminator sweep finish first"
            )
    raise UserError(
        f"{path}: no train-discriminator run with {wanted} in this sweep; sweep the "
        "discriminator over the same --per-goal values and seeds"
    )


def resolve_checkpoint(path: Path, match: dict[str, Any] | None = None) -> Path:
    """Find the checkpoint file ``path`` stands for.

    A file is itself; a run folder means its ``interaction.pt`` (else ``checkpoints/last.pt``);
    a ``compkit sweep`` folder of train-discriminator (it holds ``sweep.json``) means the
    ``interaction.pt`` of the run whose config has the values of ``match`` (the planner passes
    its own ``per_goal`` and ``seed``, so one planner sweep can use one discriminator sweep).
    """
    if path.is_dir() and (path / "sweep.json").is_file():
        if not match:
            raise UserError(f"{path} is a sweep folder; pass one of its runs or a checkpoint")
        return _sweep_run(path, match)
    if path.is_dir():
        for candidate in (path / INTERACTION_FILE, path / "checkpoints" / "last.pt"):
            if candidate.is_file():
                return candidate
        raise UserError(
            f"{path}: no {INTERACTION_FILE} or checkpoints/last.pt in this folder; pass a "
            "train-discriminator run folder or checkpoint file"
        )
    return path


def load_interaction(
    path: Path,
    *,
    expect_model: str | None = None,
    words: tuple[str, ...] | None = None,
    flag: str = "--interaction",
    match: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Load an interaction model from either checkpoint kind.

    Args:
        path: a checkpoint file, a train-discriminator run folder, or a sweep folder of them
            (see :func:`resolve_checkpoint`).
        expect_model: refuse a checkpoint holding another model type.
        words: refuse a checkpoint trained with another vocabulary.
        flag: the flag named in messages.
        match: config values that pick the run of a sweep folder.

    Returns:
        (the model in eval mode on the CPU, the interaction checkpoint dict).
    """
    from compkit_utils.checkpoints import load_checkpoint
    from factored_attention_babyai.models.interaction import build_interaction

    file = resolve_checkpoint(path, match)
    state = to_interaction_state(load_checkpoint(file), str(file))
    extra = state["extra"] = {**state["extra"], "loaded_from": str(file)}
    name = extra.get("interaction_model")
    if expect_model is not None and name != expect_model:
        raise UserError(
            f"{flag} {file}: holds a {name!r} interaction model, but {expect_model!r} was asked "
            f"for; pass --interaction-model {name} or a checkpoint of a {expect_model!r} "
            "discriminator"
        )
    saved_words = tuple(extra.get("words") or ())
    if words is not None and saved_words != tuple(words):
        raise UserError(
            f"{flag} {file}: trained with another vocabulary ({len(saved_words)} words: "
            f"{' '.join(saved_words)[:60]}…) than the dataset's; train the discriminator on "
            "this dataset"
        )
    model = build_interaction(str(name), len(saved_words))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(
            f"{flag} {file}: its weights do not fit a {name!r} model ({str(exc).splitlines()[0]})"
        ) from exc
    return model.eval(), state
