"""compkit sweep --backend ray: same metrics as the local pool; a clear error for a bad address.

Ray talks TCP on localhost (no external network), hence ``enable_socket``.
"""

from __future__ import annotations

import json
import socket

import pytest

from compkit_utils.sweep.cli import main
from compkit_utils.testing import one_error_line, tree

TOY = "compkit_utils.sweep.toy:COMMANDS"


@pytest.mark.enable_socket
def test_ray_backend_gives_the_local_backends_metrics(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["sweep", TOY, "train", "--seeds", "0-1", "--grid", "learning-rate=0.1,0.4"]
    common += ["--workers", "2", "--threads-per-run", "1", "--runs-dir", str(runs)]
    extra = ["--", "--steps", "5", "--noise", "0.1"]
    assert main([*common, "--name", "local", *extra]) == 0
    assert main([*common, "--name", "ray", "--backend", "ray", *extra]) == 0
    assert "4 run(s) finished, 0 failed" in capsys.readouterr().out
    sweeps = runs / "compkit-toy" / "sweeps"
    ray_manifest = json.loads((sweeps / "ray" / "sweep.json").read_text())
    assert {e["backend"] for e in ray_manifest["runs"].values()} == {"ray"}
    assert not list((sweeps / "ray").glob(".sweep-*"))  # the visibility marker is gone
    names = sorted(p.name for p in (sweeps / "local").iterdir() if p.is_dir())
    assert len(names) == 4
    for name in names:
        local = (sweeps / "local" / name / "metrics.jsonl").read_text()
        assert local  # a real run wrote metrics
        assert (sweeps / "ray" / name / "metrics.jsonl").read_text() == local


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.enable_socket
def test_unreachable_ray_address_is_one_line_and_leaves_nothing(tmp_path, capsys):
    address = f"127.0.0.1:{_closed_port()}"
    argv = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--backend", "ray", "--address", address]) == 2
    err = one_error_line(capsys.readouterr().err, "compkit")
    assert f"--address {address}: no Ray cluster answers there" in err
    assert tree(tmp_path) == set()


def test_malformed_ray_address(tmp_path, capsys):
    argv = ["sweep", TOY, "train", "--seeds", "0", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--backend", "ray", "--address", "nowhere"]) == 2
    assert "expected auto, host:port" in one_error_line(capsys.readouterr().err, "compkit")
    assert tree(tmp_path) == set()
