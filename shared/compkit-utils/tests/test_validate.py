from __future__ import annotations

import dataclasses
import errno
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import tyro

from compkit_utils import config, errors
from compkit_utils.errors import UserError, install_hint
from compkit_utils.validate import (
    Choice,
    InputDir,
    InputFile,
    InputPath,
    OutputDir,
    Range,
    validate_config,
)

# --- markers one by one ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "value", "message"),
    [
        (Range(1), 0, "--x must be at least 1, got 0"),
        (Range(0, None, lo_open=True), 0.0, "--x must be > 0, got 0.0"),
        (Range(None, 10), 11, "--x must be at most 10, got 11"),
        (Range(None, 10, hi_open=True), 10, "--x must be < 10, got 10"),
        (Range(0, 1, hi_open=True), 1.0, "--x must be in [0, 1), got 1.0"),
        (Range(0, 1, lo_open=True), 0, "--x must be in (0, 1], got 0"),
        (Range(0, 1), 2.0, "--x must be in [0, 1], got 2.0"),
        (Range(0, 1), math.nan, "--x must be in [0, 1], got nan"),
        (Range(0), "3", "--x must be a number at least 0, got '3'"),
        (Range(0), True, "--x must be a number at least 0, got True"),
    ],
)
def test_range_rejects_with_the_flag_and_the_interval(marker, value, message) -> None:
    with pytest.raises(UserError) as info:
        marker.validate(value, "--x")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("marker", "value"),
    [
        (Range(1), 1),
        (Range(0, None, lo_open=True), 1e-9),
        (Range(0, 1, hi_open=True), 0.0),
        (Range(0, 1), 1),
        (Range(None, 10, hi_open=True), -5),
        (Range(), 12.5),
    ],
)
def test_range_accepts_values_inside(marker, value) -> None:
    marker.validate(value, "--x")


def test_choice_static_and_computed() -> None:
    Choice("a", "b").validate("a", "--cell")
    with pytest.raises(UserError, match=r"^--cell must be one of a, b; got 'c'$"):
        Choice("a", "b").validate("c", "--cell")
    registry = ["lstm"]
    lazy = Choice(lambda: registry)
    with pytest.raises(UserError, match="must be one of lstm; got 'gru'"):
        lazy.validate("gru", "--cell")
    registry.append("gru")  # computed when validated, not when declared
    lazy.validate("gru", "--cell")
    assert Choice("a") == Choice("a") != Choice("b")


def test_output_dir(tmp_path: Path, monkeypatch) -> None:
    OutputDir().validate(tmp_path, "--runs-dir")  # existing directory
    OutputDir().validate(tmp_path / "new" / "deeper", "--runs-dir")  # created later
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UserError, match=r"^--runs-dir .*file is a file, not a directory"):
        OutputDir().validate(file, "--runs-dir")
    with pytest.raises(UserError, match=r"^--runs-dir .*file/sub: .*file is a file"):
        OutputDir().validate(file / "sub", "--runs-dir")
    # Permission bits do not bind root, so simulate an unwritable directory.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match=r"^--runs-dir .* is not writable"):
        OutputDir().validate(tmp_path, "--runs-dir")
    with pytest.raises(UserError, match=r"cannot be created: .* is not writable"):
        OutputDir().validate(tmp_path / "new", "--runs-dir")
    assert not (tmp_path / "new").exists()  # validation creates nothing


def test_input_markers(tmp_path: Path) -> None:
    file = tmp_path / "f.pt"
    file.write_text("x")
    InputFile().validate(file, "--checkpoint")
    InputDir().validate(tmp_path, "--data-dir")
    InputPath().validate(file, "--checkpoint")
    InputPath().validate(tmp_path, "--checkpoint")
    with pytest.raises(UserError, match=r"^--checkpoint .*missing.pt: file not found"):
        InputFile().validate(tmp_path / "missing.pt", "--checkpoint")
    with pytest.raises(UserError, match=r"is a directory; pass a file"):
        InputFile().validate(tmp_path, "--checkpoint")
    with pytest.raises(UserError, match=r"^--data-dir .*nope: directory not found"):
        InputDir().validate(tmp_path / "nope", "--data-dir")
    with pytest.raises(UserError, match=r"f.pt is a file; pass a directory"):
        InputDir().validate(file, "--data-dir")
    with pytest.raises(UserError, match=r"^--checkpoint .*nope: not found"):
        InputPath().validate(tmp_path / "nope", "--checkpoint")


# --- validate_config on nested configs --------------------------------------------------

CALLS: list[str] = []


@dataclasses.dataclass(frozen=True)
class Model:
    hidden: Annotated[int, Range(1)] = 8
    input_dropout: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    heads: Annotated[int, Range(1)] = 2
    cell: Annotated[str, Choice("lstm", "gru")] = "lstm"
    sizes: Annotated[tuple[int, ...], Range(1)] = (4, 4)

    def check(self) -> None:
        CALLS.append("model")
        if self.hidden % self.heads:
            raise UserError("--model.hidden must be a multiple of --model.heads")


@dataclasses.dataclass(frozen=True)
class Data:
    batch_size: Annotated[int, Range(1)] = 4
    data_dir: Annotated[Path | None, InputDir()] = None


@dataclasses.dataclass(frozen=True)
class Train:
    """Train."""

    model: Model = Model()
    data: Annotated[Data, tyro.conf.OmitArgPrefixes] = Data()
    lr: Annotated[float, Range(0, None, lo_open=True)] = 1e-3
    threads: Annotated[int | None, Range(1)] = None
    runs_dir: Annotated[Path | None, OutputDir()] = None
    run_name: str | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    iterations: Annotated[int, Range(1)] = 100
    smoke: bool = False

    def check(self) -> None:
        CALLS.append("train")

    @classmethod
    def smoke_defaults(cls) -> Train:
        return cls(smoke=True, iterations=2, model=Model(hidden=4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": Model(input_dropout=2.0)}, "--model.input-dropout must be in [0, 1), got 2.0"),
        ({"model": Model(cell="rnn")}, "--model.cell must be one of lstm, gru; got 'rnn'"),
        ({"model": Model(sizes=(4, 0))}, "--model.sizes must be at least 1, got 0"),
        ({"model": Model(hidden=6, heads=4)}, "--model.hidden must be a multiple of"),
        ({"data": Data(batch_size=0)}, "--batch-size must be at least 1, got 0"),  # flattened
        ({"lr": 0.0}, "--lr must be > 0, got 0.0"),
        ({"threads": 0}, "--threads must be at least 1, got 0"),
        ({"run_name": "../escape"}, "--run-name '../escape' must be a plain name"),
        ({"data": Data(data_dir=Path("/no/such/dir"))}, "--data-dir /no/such/dir: directory"),
    ],
)
def test_validate_config_names_the_flag(change, message) -> None:
    with pytest.raises(UserError) as info:
        validate_config(dataclasses.replace(Train(), **change))
    assert str(info.value).startswith(message), str(info.value)


def test_validate_config_skips_none_and_runs_checks_innermost_first() -> None:
    CALLS.clear()
    validate_config(Train())  # None threads, runs_dir, data_dir: skipped
    assert CALLS == ["model", "train"]
    with pytest.raises(TypeError):
        validate_config(Train)


def test_validate_config_checks_the_device(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^--device cuda: CUDA is not available here"):
        validate_config(Train(device="cuda"))
    validate_config(Train(device="cpu"))

    @dataclasses.dataclass(frozen=True)
    class Outer:
        train: Train = Train(device="cuda")

    with pytest.raises(UserError, match=r"^--train.device cuda: CUDA is not available"):
        validate_config(Outer())


def test_tyro_arg_rename_is_followed() -> None:
    @dataclasses.dataclass(frozen=True)
    class Renamed:
        inner: Annotated[Data, tyro.conf.arg(name="d")] = Data(batch_size=0)

    with pytest.raises(UserError, match=r"^--batch-size must"):  # Data is flat inside Train
        validate_config(Train(data=Data(batch_size=0)))
    with pytest.raises(UserError, match=r"^--d.batch-size must"):
        validate_config(Renamed())


# --- run_cli: validation, --smoke, OSError, interrupts ---------------------------------

SEEN: list[Train] = []


def _record(cfg: Train) -> int:
    SEEN.append(cfg)
    return 0


def _cli(argv: list[str], commands=None) -> int:
    SEEN.clear()
    return config.run_cli(commands or {"train": Train}, _record, argv, prog="demo")


def test_run_cli_validates_before_dispatch(capsys) -> None:
    assert _cli(["train", "--model.input-dropout", "2.0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["demo: error: --model.input-dropout must be in [0, 1), got 2.0"]
    assert SEEN == []
    assert _cli(["train", "--batch-size", "3"]) == 0
    assert SEEN[0].data.batch_size == 3


def test_smoke_changes_defaults_and_explicit_flags_win() -> None:
    assert _cli(["train", "--smoke"]) == 0
    assert SEEN[0] == Train.smoke_defaults()
    assert _cli(["train", "--smoke", "--iterations", "7", "--model.hidden", "6"]) == 0
    assert (SEEN[0].smoke, SEEN[0].iterations, SEEN[0].model.hidden) == (True, 7, 6)
    assert SEEN[0].model.heads == 2  # other smoke/default values unchanged
    # Flags before --smoke win too.
    assert _cli(["train", "--iterations", "9", "--smoke"]) == 0
    assert SEEN[0].iterations == 9
    assert _cli(["train"]) == 0
    assert SEEN[0] == Train()


def test_smoke_values_are_validated_after_the_reparse(capsys) -> None:
    # An explicit flag over the smoke defaults still meets the cross-field check.
    assert _cli(["train", "--smoke", "--model.hidden", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "demo: error: --model.hidden must be a multiple of --model.heads"
    )


def test_smoke_in_nested_command_groups() -> None:
    commands = {"group": {"train": Train, "other": Data}, "top": Data}
    assert _cli(["group", "train", "--smoke", "--model.hidden", "6"], commands) == 0
    assert (SEEN[0].iterations, SEEN[0].model.hidden, SEEN[0].smoke) == (2, 6, True)
    assert _cli(["group", "train", "--smoke"], commands) == 0
    assert SEEN[0] == Train.smoke_defaults()


def _raise(exc: BaseException):
    def dispatch(cfg: object) -> int:
        raise exc

    return dispatch


def test_os_error_with_a_filename_is_one_line(capsys) -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", "/ro/runs/x")
    assert config.run_cli({"train": Train}, _raise(exc), ["train"], prog="demo") == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "demo: error: cannot write /ro/runs/x: Permission denied; check its permissions or "
        "pass a writable --runs-dir"
    ]
    exc = OSError(errno.ENOSPC, "No space left on device", "/full/x")
    assert config.run_cli({"train": Train}, _raise(exc), ["train"], prog="demo") == 2
    assert "cannot write /full/x: No space left on device; free some disk" in (
        capsys.readouterr().err
    )
    with pytest.raises(OSError, match="no file"):  # not about a file: a bug, not bad input
        config.run_cli({"train": Train}, _raise(OSError("no file")), ["train"], prog="demo")


def test_keyboard_interrupt_exits_130(capsys) -> None:
    assert config.run_cli({"train": Train}, _raise(KeyboardInterrupt()), ["train"], prog="d") == 130
    assert capsys.readouterr().err.strip() == "d: interrupted; rerun with --resume to continue"


# --- install_hint ----------------------------------------------------------------------


def test_install_hint(monkeypatch) -> None:
    # The tests run from the workspace checkout.
    assert install_hint("compile-seg", "tensorboard") == (
        "uv sync --extra tensorboard --package compile-seg"
    )
    monkeypatch.setattr(errors, "_in_workspace_checkout", lambda: False)
    assert install_hint("compile-seg", "tensorboard") == "pip install 'compile-seg[tensorboard]'"


def test_missing_integration_names_the_install_command(tmp_path: Path, monkeypatch) -> None:
    from compkit_utils.logging import RunLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match=r"uv sync --extra tensorboard --package compile-seg$"):
        RunLogger(tmp_path, tensorboard=True, package="compile-seg")


def test_validate_module_does_not_import_torch() -> None:
    code = "import compkit_utils.validate, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unresolvable_annotations_do_not_crash_validation() -> None:
    @dataclasses.dataclass(frozen=True)
    class LocalInner:
        n: int = 0

    @dataclasses.dataclass(frozen=True)
    class LocalOuter:
        inner: LocalInner = dataclasses.field(default_factory=LocalInner)  # a local name
        device: str = "auto"

        def check(self) -> None:
            CALLS.append("local")

    CALLS.clear()
    validate_config(LocalOuter())
    assert CALLS == ["local"]
