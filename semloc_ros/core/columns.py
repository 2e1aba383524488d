"""Array columns of the geo-database: geometric growth on append, and the value checks of whole columns (in row
chunks, so checking a million entries needs no full-size temporary)."""

from __future__ import annotations

from typing import Any

import numpy as np

INITIAL_CAPACITY = 64
CHUNK_ROWS = 65_536  # row chunk of the whole-array checks (bounded temporary memory at a million entries)


class GrowableColumn:
    """A 1-D or 2-D array that is appended to along axis 0 with geometric capacity growth."""

    def __init__(self, dtype: np.dtype | type, row_shape: tuple[int, ...] = ()) -> None:
        self._data = np.empty((INITIAL_CAPACITY, *row_shape), dtype=dtype)
        self._size = 0

    def append(self, rows: np.ndarray, adopt: bool = False) -> None:
        """Append ``rows``; ``adopt=True`` lets an empty column keep ``rows`` itself as its storage (no copy).

        Adopt only arrays nobody else holds (e.g. freshly loaded or normalised): the column never writes into
        adopted storage (it is full, so the next append copies it into a larger array first).
        """
        if adopt and self._size == 0 and len(rows) > len(self._data) and rows.dtype == self._data.dtype \
                and rows.shape[1:] == self._data.shape[1:] and rows.flags.c_contiguous:
            self._data, self._size = rows, len(rows)
            return
        needed = self._size + len(rows)
        if needed > len(self._data):
            capacity = max(needed, 2 * len(self._data))
            grown = np.empty((capacity, *self._data.shape[1:]), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = rows
        self._size = needed

    def view(self) -> np.ndarray:
        """Read-only view of the filled part."""
        filled = self._data[: self._size]
        filled.flags.writeable = False
        return filled


def all_finite(array: np.ndarray) -> bool:
    """``np.all(np.isfinite(array))`` in row chunks (no full-size temporary)."""
    return all(bool(np.all(np.isfinite(array[i : i + CHUNK_ROWS]))) for i in range(0, len(array), CHUNK_ROWS))


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def as_float_matrix(values: Any, what: str) -> np.ndarray:
    """``values`` as a C-contiguous float32 array, refusing non-floating dtypes and non-finite values."""
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what} must have a floating-point dtype, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not (all_finite(array) if array.ndim else bool(np.isfinite(array))):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def l2_normalised(rows: np.ndarray, what: str) -> np.ndarray:
    # float64: the squared norm of float32 rows near the float32 limits (1e38, 1e-45) neither overflows
    # nor underflows, so such rows keep their direction instead of collapsing to zero.
    rows = rows.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError(f"{what} contain an all-zero vector, which cannot be L2-normalised")
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


def checked_thumbnails(thumbnails: np.ndarray | None, count: int, stored: np.ndarray | None,
                   entries: int) -> np.ndarray | None:
    """``count`` new thumbnails as ``uint8`` (count, h, w), consistent with the ``stored`` ones of a database of
    ``entries`` entries (stored for all entries or for none)."""
    if thumbnails is None:
        if stored is not None and entries and count:
            raise ValueError("this database stores label thumbnails for every entry: pass them for new ones too")
        return None
    thumbnails = np.asarray(thumbnails)
    if thumbnails.ndim != 3 or len(thumbnails) != count or thumbnails.dtype.kind not in "iu":
        raise ValueError(f"thumbnails must be {count} integer label images (N, h, w), got "
                         f"{thumbnails.dtype} {thumbnails.shape}")
    if min(thumbnails.shape[1:], default=0) < 1:
        raise ValueError(f"empty thumbnails {thumbnails.shape}")
    if thumbnails.size and (thumbnails.min() < 0 or thumbnails.max() > 255):
        raise ValueError("thumbnail class ids must be in 0..255")
    if entries and stored is None:
        raise ValueError("this database stores no label thumbnails: add entries without them")
    if stored is not None and entries and thumbnails.shape[1:] != stored.shape[1:]:
        raise ValueError(f"thumbnails of shape {thumbnails.shape[1:]} do not match the stored "
                         f"{stored.shape[1:]}")
    return thumbnails.astype(np.uint8, copy=False)
