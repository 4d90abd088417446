"""Dataset helpers: ``dataset_info.json``, HDF5 files, MNIST IDX files, TFDS export."""

from __future__ import annotations
