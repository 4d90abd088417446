from __future__ import annotations

from pathlib import Path

import pytest

from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="session")
def smoke_expert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An `ilpo expert --smoke` run directory (CartPole-v1), trained once per session."""
    from ilpo.cli import main

    runs = tmp_path_factory.mktemp("expert_runs")
    assert main(["expert", "--smoke", "--runs-dir", str(runs), "--run-name", "e"]) == 0
    return runs / "ilpo" / "e"
