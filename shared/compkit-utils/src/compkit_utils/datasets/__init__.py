"""Dataset helpers.

Submodules (import the one you need; none imports an optional dependency at import time
except :mod:`~compkit_utils.datasets.tfds`, which needs the ``tfds`` extra):

- :mod:`~compkit_utils.datasets.info`: ``dataset_info.json`` (provenance and SHA-256 checksums).
- :mod:`~compkit_utils.datasets.hdf5`: ``HDF5Dataset``, a map-style reader opened lazily in
  each ``DataLoader`` worker, re-exporting the schema checks (``hdf5_schema``) and the atomic
  writers (``hdf5_write``: ``write_hdf5``, ``HDF5Writer``, and ``atomic_hdf5``, an HDF5 file
  that is safe on a full disk) (``hdf5`` extra).
- :mod:`~compkit_utils.datasets.mnist`: MNIST from the original IDX files, with checksums,
  mirrors, manual placement and ``COMPKIT_DATA_DIR``.
- :mod:`~compkit_utils.datasets.tfds`: export to TFDS ArrayRecord, readable with
  ``tfds.data_source`` without TensorFlow (``tfds`` extra).
"""

from __future__ import annotations
