"""compkit-utils without PyTorch: modules import; torch features fail with the install line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from compkit_utils.testing import hidden_modules_env

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.util, pkgutil, sys
    assert importlib.util.find_spec("torch") is None
    try:
        import torch
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("torch imported although hidden")

    import compkit_utils
    for info in pkgutil.walk_packages(compkit_utils.__path__, "compkit_utils."):
        importlib.import_module(info.name)
    assert "torch" not in sys.modules

    from compkit_utils.devices import pick_device, set_threads
    from compkit_utils.checkpoints import load_checkpoint, save_checkpoint
    from compkit_utils.errors import UserError
    from compkit_utils.seeding import capture_rng_state, restore_rng_state, seed_everything

    rng = seed_everything(3)
    first = rng.random()
    state = capture_rng_state(rng)
    assert state["torch"] is None
    expected = rng.random()
    restore_rng_state(state, rng)
    assert rng.random() == expected != first
    assert set_threads(1) == 1
    for call in (lambda: pick_device("cpu"), lambda: load_checkpoint("x.pt"),
                 lambda: save_checkpoint("x.pt", {})):
        try:
            call()
        except UserError as exc:
            message = str(exc)
            assert "\\n" not in message and "needs PyTorch" in message, message
            assert "--extra torch --package compkit-utils" in message, message
        else:
            raise SystemExit("no UserError without torch")
    print("OK")
    """
)


def test_utils_work_without_torch(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=hidden_modules_env(tmp_path / "site"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    assert not (tmp_path / "x.pt").exists()
