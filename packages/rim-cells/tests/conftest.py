from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads():
    """Keep the shared 2-core machine responsive and the results reproducible."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
