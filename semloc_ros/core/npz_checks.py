"""What a ``.npz`` archive declares, read without inflating it (ROS-free; decompression-bomb guard).

A zip member declares its uncompressed size in the zip directory and, in its first bytes, the ``.npy`` header
with dtype and shape. NumPy allocates what the ``.npy`` header says and zip inflates what the member holds, so
a few megabytes of file can ask for gigabytes. :func:`inspect_npz`:

1. opens the zip directory only (no member is inflated) and refuses more than ``max_members`` members;
2. per member, refuses a compression ratio (uncompressed / stored bytes) above ``max_ratio`` once it is larger
   than :data:`RATIO_FREE_BYTES`;
3. inflates only the ``.npy`` header of each member (at most :data:`MAX_NPY_HEADER_BYTES`) and reads its dtype
   and shape; object dtypes (pickles) are refused;
4. checks that the header's ``shape x itemsize`` is exactly the member's declared uncompressed size, so the
   data NumPy will read is what the header declares (zip stops reading a member at its declared size).

The caller then compares the declared shapes with what it expects (e.g. a database header's entry count) before
loading any array.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_NPY_HEADER_BYTES = 10_000  # NumPy's own default limit of a .npy header
RATIO_FREE_BYTES = 1 << 20  # members up to 1 MiB uncompressed are never refused for their ratio


class ArchiveError(ValueError):
    """The archive is not a zip of plain ``.npy`` arrays or declares more than it may."""


@dataclass(frozen=True)
class ArrayInfo:
    """A member of a ``.npz`` archive as declared (nothing inflated beyond its ``.npy`` header)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    stored_bytes: int
    inflated_bytes: int


def inspect_npz(path: Path, max_ratio: float, max_members: int = 64) -> dict[str, ArrayInfo]:
    """The arrays of the ``.npz`` file at ``path`` by name (without ``.npy``); ``ArchiveError`` if refused."""
    with zipfile.ZipFile(path) as archive:  # step 1
        members = archive.infolist()
        if len(members) > max_members:
            raise ArchiveError(f"{len(members)} members, more than {max_members}")
        return {info.filename.removesuffix(".npy"): _inspect_member(archive, info, max_ratio) for info in members}


def _inspect_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_ratio: float) -> ArrayInfo:
    name = info.filename
    if not name.endswith(".npy"):
        raise ArchiveError(f"member {name!r} is not a .npy array")
    ratio = info.file_size / max(1, info.compress_size)
    if info.file_size > RATIO_FREE_BYTES and ratio > max_ratio:  # step 2
        raise ArchiveError(f"member {name!r} inflates {ratio:.0f}x ({info.compress_size} -> {info.file_size} "
                           f"bytes), more than {max_ratio:g}x (a decompression bomb?)")
    with archive.open(info) as stream:  # step 3: only the .npy header is inflated
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream, MAX_NPY_HEADER_BYTES)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream, MAX_NPY_HEADER_BYTES)
            else:
                raise ArchiveError(f"member {name!r} has unsupported .npy version {version}")
        except (ValueError, EOFError, OSError, SyntaxError, zipfile.BadZipFile) as error:
            if isinstance(error, ArchiveError):
                raise
            raise ArchiveError(f"member {name!r} has no readable .npy header: {error}") from error
        header_bytes = stream.tell()
    if dtype.hasobject:
        raise ArchiveError(f"member {name!r} holds pickled objects (dtype {dtype}), which are never loaded")
    data_bytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow for absurd shapes
    if header_bytes + data_bytes != info.file_size:  # step 4
        raise ArchiveError(f"member {name!r} declares shape {shape} of {dtype} ({data_bytes} bytes) but holds "
                           f"{info.file_size - header_bytes} bytes")
    return ArrayInfo(name.removesuffix(".npy"), dtype, tuple(shape), info.compress_size, info.file_size)
