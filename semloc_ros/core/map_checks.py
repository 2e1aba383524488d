"""What a map file (``core/database.py``) must hold, checked before and after its arrays are inflated
(ROS-free). Each check raises ``ArchiveError`` with the reason; ``GeoDatabase.load`` reports it as
``DatabaseFormatError``.

1. :func:`declared_arrays`: what each member declares (``npz_checks``: compression ratio, ``.npy`` header, declared
   size), the header member small;
2. :func:`check_arrays`: dtypes and shapes against each other and the header (entry count, dimension, a stored
   index no larger than any index of that many entries), first on what is declared, then on what was loaded;
3. :func:`check_normalised`: the descriptors are unit vectors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.core.npz_checks import ArchiveError, ArrayInfo, inspect_npz

ARRAY_NAMES = ("descriptors", "lat", "lon", "alt", "heading", "stamp_ns", "image_id")
# Refused before anything is inflated: saved files store their arrays uncompressed (ratio 1), so a member that
# inflates more is not ours (a decompression bomb); the JSON header is small.
MAX_COMPRESSION_RATIO = 10.0
MAX_HEADER_BYTES = 16 << 20
# A stored FAISS index is at most a copy of the descriptors plus this much per entry (HNSW links, IVF-PQ codes
# and ids) plus fixed tables (centroids, PQ codebooks).
_STORED_INDEX_BYTES_PER_ENTRY = 1024
_STORED_INDEX_BYTES = 256 << 20

_CHUNK_ROWS = 65_536  # rows per norm check (bounded temporary memory at a million entries)
_NORM_TOLERANCE_ON_LOAD = 1e-3


def declared_arrays(source: Path) -> dict[str, ArrayInfo]:
    """Step 1: dtype and shape of every array of the file, read without inflating any (``npz_checks``); the
    header member must be small."""
    try:
        declared = inspect_npz(source, MAX_COMPRESSION_RATIO)
    except ArchiveError as error:
        raise ArchiveError(f"refused before loading: {error}") from error
    header = declared.get("header")
    if header is not None and header.inflated_bytes > MAX_HEADER_BYTES:
        raise ArchiveError(f"refused before loading: the header has {header.inflated_bytes} bytes, more than "
                           f"{MAX_HEADER_BYTES}")
    return declared


def check_arrays(arrays: dict[str, np.ndarray] | dict[str, ArrayInfo], header: dict[str, Any]) -> None:
    """Step 2: dtypes, shapes and lengths of the stored arrays against each other and the header, on what the
    file declares (``ArrayInfo``, before loading) and again on the loaded arrays."""
    missing = [name for name in ARRAY_NAMES if name not in arrays]
    if missing:
        raise ArchiveError(f"missing arrays {', '.join(missing)}")
    descriptors = arrays["descriptors"]
    if descriptors.dtype != np.float32 or len(descriptors.shape) != 2:
        raise ArchiveError(f"descriptors must be a 2-D float32 array, got {descriptors.dtype} {descriptors.shape}"
        )
    if descriptors.shape[1] != header["dimension"]:
        raise ArchiveError(f"descriptor dimension {descriptors.shape[1]} does not match the header dimension "
            f"{header['dimension']}"
        )
    expected_kinds = {"lat": "f", "lon": "f", "alt": "f", "heading": "f", "stamp_ns": "i", "image_id": "U"}
    for name, kind in expected_kinds.items():
        if arrays[name].dtype.kind != kind or len(arrays[name].shape) != 1:
            raise ArchiveError(f"{name} has dtype {arrays[name].dtype} and {len(arrays[name].shape)} dimensions, "
                f"expected a 1-D array of kind {kind!r}"
            )
    lengths = {name: arrays[name].shape[0] for name in ARRAY_NAMES}
    optional = {name: arrays[name].shape[0] for name in ("thumbnails",) if name in arrays and arrays[name].shape}
    if set(lengths.values()) != {header["count"]} or any(n != header["count"] for n in optional.values()):
        raise ArchiveError(f"inconsistent array lengths {lengths | optional} (header count {header['count']})"
        )
    stored_index = arrays.get("faiss_index")
    largest = header["count"] * (4 * header["dimension"] + _STORED_INDEX_BYTES_PER_ENTRY) + _STORED_INDEX_BYTES
    if stored_index is not None and math.prod(stored_index.shape) * stored_index.dtype.itemsize > largest:
        raise ArchiveError(f"the stored index ({stored_index.shape} {stored_index.dtype}) is larger "
                                  f"than any index of {header['count']} entries ({largest} bytes)")


def check_normalised(descriptors: np.ndarray) -> None:
    """Step 3: the loaded descriptors are unit vectors."""
    for start in range(0, len(descriptors), _CHUNK_ROWS):
        norms = np.linalg.norm(descriptors[start : start + _CHUNK_ROWS], axis=1)
        if not np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE_ON_LOAD):
            raise ArchiveError("stored descriptors are not L2-normalised")
