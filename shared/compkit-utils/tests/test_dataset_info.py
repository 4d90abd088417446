from __future__ import annotations

from pathlib import Path

import pytest

from compkit_utils.datasets.info import DatasetInfo, read_info, verify_info, write_info
from compkit_utils.errors import UserError


def test_info_round_trip_and_checksum_mismatch(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"abc")
    info = DatasetInfo("toy", "tests", "0.1.0", seed=4, counts={"n": 3})
    write_info(tmp_path, info, files=["data.bin"])
    got = verify_info(tmp_path)
    assert got.counts == {"n": 3}
    assert got.files["data.bin"].startswith("ba7816bf")
    (tmp_path / "data.bin").write_bytes(b"abd")
    with pytest.raises(UserError, match="does not match") as err:
        verify_info(tmp_path)
    assert "data.bin" in str(err.value)
    (tmp_path / "data.bin").unlink()
    with pytest.raises(UserError, match="missing"):
        verify_info(tmp_path)


def test_missing_info(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dataset_info\.json: not found"):
        read_info(tmp_path)
