from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


def _load(name: str) -> list[dict[str, Any]]:
    with gzip.open(DATA / name, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def interpreter_cases() -> list[dict[str, Any]]:
    return _load("interpreter_cases.jsonl.gz")


@pytest.fixture(scope="session")
def task_cases() -> list[dict[str, Any]]:
    return _load("task_cases.jsonl.gz")
