"""Run logging: ``metrics.jsonl`` always, a console line, TensorBoard and W&B optionally."""

from __future__ import annotations

import json
import logging as _pylogging
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from compkit_utils.errors import UserError, install_hint

T = TypeVar("T")
_log = _pylogging.getLogger(__name__)


def _scalar(value: Any) -> float | int:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return float(value)


def format_metrics(step: int, metrics: Mapping[str, float | int]) -> str:
    """The compact console line: ``step 100 | train/loss 0.4100 | eval/acc 0.9800``."""
    parts = [f"step {step}"]
    for key, value in metrics.items():
        if isinstance(value, int):
            parts.append(f"{key} {value}")
        elif math.isfinite(value) and value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            parts.append(f"{key} {value:.3e}")
        else:
            parts.append(f"{key} {value:.4f}")
    return " | ".join(parts)


class RunLogger:
    """Scalar metrics for one run.

    Every call to :meth:`log` appends one JSON object (``{"step": ..., key: value}``) to
    ``<run_dir>/metrics.jsonl`` and flushes it, so a crashed run keeps its history. When
    ``tensorboard=True`` the same scalars go to real TensorBoard event files in the run
    directory (needs the ``tensorboard`` extra); ``wandb=True`` mirrors them to Weights &
    Biases (``wandb`` extra).

    Args:
        run_dir: the run directory.
        console_every: echo a compact line every N logged calls (0 = never).
        tensorboard: also write TensorBoard event files.
        wandb: also log to Weights & Biases (project ``compkit``).
        console: where console lines go (default: standard output).
        resume: append to an existing ``metrics.jsonl`` instead of starting it anew, dropping
            records with ``step`` beyond ``resume_step`` (those steps will be logged again).
        resume_step: the step the run resumes after (see ``resume``).
        wandb_config: the run's config, recorded by W&B.
        package: the distribution whose ``tensorboard``/``wandb`` extras the error message
            of a missing integration names (default ``compkit-utils``).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        console_every: int = 1,
        tensorboard: bool = False,
        wandb: bool = False,
        console: Callable[[str], None] | None = None,
        resume: bool = False,
        resume_step: int | None = None,
        wandb_config: Mapping[str, Any] | None = None,
        package: str = "compkit-utils",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume and self.path.exists() and resume_step is not None:
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", -1) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a" if resume else "w")  # noqa: SIM115
        self.console_every = console_every
        self._console = console or (lambda line: print(line, flush=True))
        self._count = 0
        self._tb = _make_tensorboard_writer(self.run_dir, package) if tensorboard else None
        self._wandb = _make_wandb_run(self.run_dir, wandb_config, package) if wandb else None

    def log(self, step: int, metrics: Mapping[str, Any], *, console: bool | None = None) -> None:
        """Record scalars at ``step``.

        Args:
            step: the x-axis value (optimizer steps unless the package says otherwise).
            metrics: namespaced keys (``train/loss``) to numbers or 0-d tensors.
            console: force (True) or suppress (False) the console line for this call.
        """
        values = {key: _scalar(value) for key, value in metrics.items()}
        record = {"step": int(step), **values}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk: name the file, so the CLI prints one line
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=int(step))
        if self._wandb is not None:
            self._wandb.log(values, step=int(step))
        show = (
            console
            if console is not None
            else (self.console_every > 0 and self._count % self.console_every == 0)
        )
        self._count += 1
        if show:
            self._console(format_metrics(step, values))

    def close(self) -> None:
        """Flush and close every sink."""
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (or the run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _make_tensorboard_writer(run_dir: Path, package: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UserError(
            "TensorBoard logging needs the tensorboard extra: "
            f"{install_hint(package, 'tensorboard')}"
        ) from exc
    return SummaryWriter(log_dir=str(run_dir))


def _make_wandb_run(run_dir: Path, config: Mapping[str, Any] | None, package: str) -> Any:
    try:
        import wandb  # pyright: ignore[reportMissingImports]
    except ImportError as exc:
        raise UserError(
            f"W&B logging needs the wandb extra: {install_hint(package, 'wandb')}"
        ) from exc
    return wandb.init(project="compkit", dir=str(run_dir), name=run_dir.name, config=config)


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    initial: int = 0,
) -> Iterator[T]:
    """A tqdm progress bar on stderr that switches itself off when stderr is not a terminal.

    Each step also lets :func:`compkit_utils.devices.govern_threads` re-apply the automatic
    thread count (a look at the CPU counters every few seconds at most).

    Args:
        iterable: what to iterate over (e.g. ``range(start_step, iterations)``).
        total: the bar's full length (e.g. ``iterations``).
        desc: a label.
        initial: where the bar starts (the step a resumed run continues from).
    """
    from tqdm.auto import tqdm

    from compkit_utils.devices import govern_threads

    for item in tqdm(
        iterable, total=total, desc=desc, initial=initial, disable=None, file=sys.stderr
    ):
        govern_threads()  # follow other processes' load when the thread count is automatic
        yield item


def configure_logging(level: int = _pylogging.INFO) -> None:
    """Plain ``LEVEL name: message`` logging to stderr for CLI entry points."""
    _pylogging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
