from __future__ import annotations

from compkit_utils.testing import _one_torch_thread  # noqa: F401  (autouse fixture)
