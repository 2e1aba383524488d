"""Geo-tagged descriptor database: a FAISS inner-product index plus per-entry place metadata.

Descriptors are ``float32`` and L2-normalised on insertion, so the inner product is the cosine similarity.
Entries only ever get appended; the metadata lives in arrays that grow geometrically, so ``add`` is O(N)
amortised and never rebuilds the index.

On disk a database is one NumPy ``.npz`` file (suffix :data:`SUFFIX` by convention) holding a JSON ``header``
(stored as ``uint8`` bytes) and plain numeric/unicode arrays, written atomically and read with
``allow_pickle=False``. A flat index is rebuilt from the descriptors on load. The approximate indexes
("hnsw", "ivfpq") are slow to rebuild at a million entries, so :meth:`GeoDatabase.save` also stores them
serialized by FAISS (``faiss.serialize_index``, a ``uint8`` array ``faiss_index`` with its SHA-256 and entry count
in the header); on load the stored index is used when it verifies, else it is rebuilt from the descriptors. Files
without it (all format-version-1 files of earlier releases) load as before.

Index types (``INDEX_TYPES``): ``flat`` (exact), ``hnsw`` (graph; holds a second copy of the descriptors),
``ivfpq`` (inverted lists of 8-bit product-quantised codes, candidates re-ranked by their exact inner product
on the stored descriptors, so similarities stay exact cosines) and ``auto``: exact search up to
:data:`AUTO_IVFPQ_MIN_ENTRIES` entries, IVF-PQ above (see docs/benchmarks.md for the measurements).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import threading
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semloc_ros import __version__ as SEMLOC_VERSION  # noqa: N812
from semloc_ros.core.files import atomic_write
from semloc_ros.core.geodesy import GeoError, LocalENU, validate_lat_lon
from semloc_ros.core.ivfpq import (
    IVFPQ_NPROBE,
    ivfpq_parameters,  # noqa: F401  (part of this module's interface)
    ivfpq_training_rows,
    untrained_ivfpq,
    uses_precomputed_table,
    without_precomputed_table,
)
from semloc_ros.core.map_checks import ARRAY_NAMES, check_arrays, check_normalised, declared_arrays
from semloc_ros.core.npz_checks import ArchiveError
from semloc_ros.core.pipeline_id import accepts, mismatch_hint
from semloc_ros.core.views import SINGLE_VIEW, check_views, views_from_ids

FORMAT_NAME = "semloc-geodatabase"
FORMAT_VERSION = 1
SUFFIX = ".semdb"
INDEX_TYPES = ("flat", "hnsw", "ivfpq", "auto")
# "auto" switches from exact search to IVF-PQ at this size: where one exact single-thread query gets slower than
# IVF-PQ at the same recall (`semloc benchmark index`, docs/benchmarks.md).
AUTO_IVFPQ_MIN_ENTRIES = 50_000
# An explicit "ivfpq" database is searched exactly until it holds this many entries (too few to train on).
IVFPQ_MIN_ENTRIES = 1_000

_HNSW_NEIGHBOURS = 32
_HNSW_EF_CONSTRUCTION = 80
_HNSW_EF_SEARCH = 64
_IVFPQ_EXACT_CANDIDATES = 256  # candidates re-scored exactly per query: max(this, _IVFPQ_EXACT_FACTOR x k)
_IVFPQ_EXACT_FACTOR = 4
IVFPQ_RETRAIN_GROWTH = 4  # retrain when the database outgrows its training size by this factor
_INITIAL_CAPACITY = 64
_CHUNK_ROWS = 65_536  # row chunk of the whole-array checks (bounded temporary memory at a million entries)

class DatabaseError(RuntimeError):
    """Any failure of the geo-database."""


class DescriptorMismatchError(DatabaseError):
    """A descriptor (or database file) comes from another model or has another dimension."""


class DatabaseFormatError(DatabaseError):
    """A database file is missing, unreadable, corrupt or of an unsupported format."""


class DatabaseNotFoundError(FileNotFoundError, DatabaseFormatError):
    """The database file does not exist (both a ``FileNotFoundError`` and a ``DatabaseFormatError``)."""


@dataclass(frozen=True)
class PlaceRecord:
    """Where and when one database image was taken.

    ``alt`` is in metres (NaN when unknown), ``heading`` is the ENU yaw in radians (counter-clockwise from
    east, NaN when unknown) and ``stamp_ns`` is the capture time in integer nanoseconds.
    """

    lat: float
    lon: float
    alt: float = math.nan
    heading: float = math.nan
    stamp_ns: int = 0
    image_id: str = ""


class _GrowableColumn:
    """A 1-D or 2-D array that is appended to along axis 0 with geometric capacity growth."""

    def __init__(self, dtype: np.dtype | type, row_shape: tuple[int, ...] = ()) -> None:
        self._data = np.empty((_INITIAL_CAPACITY, *row_shape), dtype=dtype)
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


def _make_index(index_type: str, dimension: int, count: int = 0) -> faiss.Index:
    """An empty FAISS index of the given type ("flat" and "hnsw": inner product; "ivfpq": untrained, sized for
    ``count`` rows, its candidates re-scored by their exact inner product in :meth:`GeoDatabase.search`)."""
    if index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, _HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = _HNSW_EF_SEARCH
        return index
    if index_type == "ivfpq":
        return untrained_ivfpq(dimension, count)
    raise ValueError(f"unknown index_type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")


def _all_finite(array: np.ndarray) -> bool:
    """``np.all(np.isfinite(array))`` in row chunks (no full-size temporary)."""
    return all(bool(np.all(np.isfinite(array[i : i + _CHUNK_ROWS]))) for i in range(0, len(array), _CHUNK_ROWS))


def _is_number(value: Any) -> bool:
    """An int or float (not a bool, not a string that would convert)."""
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _as_float_matrix(values: Any, what: str) -> np.ndarray:
    """``values`` as a C-contiguous float32 array, refusing non-floating dtypes and non-finite values."""
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what} must have a floating-point dtype, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not (_all_finite(array) if array.ndim else bool(np.isfinite(array))):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _l2_normalised(rows: np.ndarray, what: str) -> np.ndarray:
    # float64: the squared norm of float32 rows near the float32 limits (1e38, 1e-45) neither overflows
    # nor underflows, so such rows keep their direction instead of collapsing to zero.
    rows = rows.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError(f"{what} contain an all-zero vector, which cannot be L2-normalised")
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


def _current_search_params(search_params: object) -> object:
    """The header's search parameters under today's names: files written before the rename store the IVF-PQ
    ``exact_candidates`` as ``rerank``."""
    if isinstance(search_params, dict) and "rerank" in search_params and "exact_candidates" not in search_params:
        search_params = dict(search_params)
        search_params["exact_candidates"] = search_params.pop("rerank")
    return search_params


class GeoDatabase:
    """Geo-tagged descriptors with top-k inner-product search.

    Not safe for concurrent writers; ``add`` and ``search`` are serialised by an internal lock so a reader
    thread may search while another thread appends.

    ``index_type`` is one of :data:`INDEX_TYPES` (see the module docstring); ``nprobe`` (IVF-PQ lists visited
    per query), ``exact_candidates`` (IVF-PQ candidates re-scored with their exact similarity per query; not
    the label re-ranking of :mod:`semloc_ros.core.reranking`) and ``ef_search`` (HNSW candidate list) trade speed
    for recall, are settable at any time and are saved with the database. ``views``: the sideways shifts each
    place is stored at (:mod:`semloc_ros.core.views`), saved in the header. ``model_id`` is the pipeline id
    (:mod:`semloc_ros.core.pipeline_id`); ``gps_frame_id`` the frame_id of the GPS fixes the map was built from
    (saved; "" for maps written before it was stored). ``legacy_segmenter_id`` (not saved): the segmenter a map
    with a descriptor-only model id is taken to have been built with (:func:`semloc_ros.core.pipeline_id.accepts`).
    """

    def __init__(self, dimension: int, model_id: str, index_type: str = "flat", *, nprobe: int = IVFPQ_NPROBE,
                 exact_candidates: int = _IVFPQ_EXACT_CANDIDATES, ef_search: int = _HNSW_EF_SEARCH,
                 views: Sequence[float] = SINGLE_VIEW, gps_frame_id: str = "") -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int | np.integer) or dimension <= 0:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index_type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")
        self._dimension = int(dimension)
        self._model_id = model_id
        self._index_type = index_type
        self._nprobe = _positive_int(nprobe, "nprobe")
        self._exact_candidates = _positive_int(exact_candidates, "exact_candidates")
        self._ef_search = _positive_int(ef_search, "ef_search")
        self._views = check_views(views)
        self.gps_frame_id = gps_frame_id
        self.legacy_segmenter_id: str | None = None
        # IVF-PQ ("ivfpq", "auto") starts without an index (exact search) and is trained once large enough.
        self._index: faiss.Index | None = (
            _make_index(index_type, self._dimension) if index_type in ("flat", "hnsw") else None
        )
        self._trained_count = 0  # rows the IVF-PQ index was trained on
        self._descriptors = _GrowableColumn(np.float32, (self._dimension,))
        self._lat = _GrowableColumn(np.float64)
        self._lon = _GrowableColumn(np.float64)
        self._alt = _GrowableColumn(np.float64)
        self._heading = _GrowableColumn(np.float64)
        self._stamp_ns = _GrowableColumn(np.int64)
        self._image_id_list: list[str] = []
        self._thumbnails: _GrowableColumn | None = None  # label thumbnails for re-ranking (semloc_ros.core.reranking)
        self._image_ids_cache: np.ndarray | None = None
        self._frame_cache: tuple[LocalENU, np.ndarray] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._image_id_list)

    def __repr__(self) -> str:
        return (
            f"GeoDatabase(model_id={self._model_id!r}, dimension={self._dimension}, "
            f"index_type={self._index_type!r}, active_index={self.active_index!r}, entries={len(self)})"
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def index_type(self) -> str:
        """The requested index type (one of :data:`INDEX_TYPES`)."""
        return self._index_type

    @property
    def active_index(self) -> str:
        """What searches now: "flat", "hnsw", "ivfpq" or "exact" (IVF-PQ/auto not trained yet)."""
        if self._index_type in ("flat", "hnsw"):
            return self._index_type
        return "exact" if self._index is None else "ivfpq"

    @property
    def nprobe(self) -> int:
        """IVF-PQ inverted lists visited per query (more: higher recall, slower)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _positive_int(value, "nprobe")

    @property
    def exact_candidates(self) -> int:
        """IVF-PQ candidates re-scored by their exact similarity per query (at least 4 k; more: higher recall)."""
        return self._exact_candidates

    @exact_candidates.setter
    def exact_candidates(self, value: int) -> None:
        self._exact_candidates = _positive_int(value, "exact_candidates")

    @property
    def ef_search(self) -> int:
        """HNSW search candidate list length (at least k is used; more: higher recall, slower)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = _positive_int(value, "ef_search")

    @property
    def views(self) -> tuple[float, ...]:
        """The sideways shifts each place is stored at (fractions of the width; (0,): the images only)."""
        return self._views

    @views.setter
    def views(self, value: Sequence[float]) -> None:
        if len(self):
            raise ValueError("the views of a map are set before its first entry")
        self._views = check_views(value)

    @property
    def descriptors(self) -> np.ndarray:
        """(N, D) float32 L2-normalised descriptors (read-only)."""
        return self._descriptors.view()

    @property
    def lat(self) -> np.ndarray:
        return self._lat.view()

    @property
    def lon(self) -> np.ndarray:
        return self._lon.view()

    @property
    def alt(self) -> np.ndarray:
        return self._alt.view()

    @property
    def heading(self) -> np.ndarray:
        return self._heading.view()

    @property
    def stamp_ns(self) -> np.ndarray:
        return self._stamp_ns.view()

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) fixed-width unicode array of image ids (read-only)."""
        with self._lock:
            if self._image_ids_cache is None or len(self._image_ids_cache) != len(self):
                width = max([1, *map(len, self._image_id_list)])
                ids = np.array(self._image_id_list, dtype=f"<U{width}").reshape(len(self))
                ids.flags.writeable = False
                self._image_ids_cache = ids
            return self._image_ids_cache

    @property
    def frame(self) -> LocalENU:
        """Local ENU frame centred on the current entries (recomputed after ``add``)."""
        return self._frame_and_enu()[0]

    @property
    def enu(self) -> np.ndarray:
        """(N, 3) east/north/up metres of the entries in :attr:`frame`; up is NaN where ``alt`` is unknown.

        Read ``frame`` and ``enu`` without an ``add`` in between (or use :meth:`frame_and_enu`).
        """
        return self._frame_and_enu()[1]

    def frame_and_enu(self) -> tuple[LocalENU, np.ndarray]:
        """The ENU frame and the entries' ENU coordinates in it, as one consistent pair."""
        return self._frame_and_enu()

    def _frame_and_enu(self) -> tuple[LocalENU, np.ndarray]:
        with self._lock:
            if len(self) == 0:
                raise DatabaseError("the database is empty: it has no ENU frame")
            if self._frame_cache is None:
                lat, lon, alt = self.lat, self.lon, self.alt
                frame = LocalENU.centred_on(lat, lon, alt)
                # to_enu places unknown (NaN) altitudes at the origin altitude; their up is reported as NaN.
                east, north, up = frame.to_enu(lat, lon, alt)
                enu = np.column_stack([east, north, np.where(np.isnan(alt), np.nan, up)]).astype(np.float64)
                enu.flags.writeable = False
                self._frame_cache = (frame, enu)
            return self._frame_cache

    def record(self, i: int) -> PlaceRecord:
        """The metadata of entry ``i`` (negative indices count from the end)."""
        count = len(self)
        if not -count <= i < count:
            raise IndexError(f"entry {i} out of range for a database of {count} entries")
        i %= count
        return PlaceRecord(
            lat=float(self._lat.view()[i]),
            lon=float(self._lon.view()[i]),
            alt=float(self._alt.view()[i]),
            heading=float(self._heading.view()[i]),
            stamp_ns=int(self._stamp_ns.view()[i]),
            image_id=self._image_id_list[i],
        )

    # ------------------------------------------------------------------ adding
    def accepts(self, model_id: str) -> bool:
        """Whether descriptors of pipeline ``model_id`` can query this map (:mod:`semloc_ros.core.pipeline_id`)."""
        return accepts(self._model_id, model_id, self.legacy_segmenter_id)

    def check_query(self, dimension: int, model_id: str | None = None) -> None:
        """Raise DescriptorMismatchError unless a query of this dimension (and model) fits the database."""
        if model_id is not None and not self.accepts(model_id):
            raise DescriptorMismatchError(
                f"descriptor model_id {model_id!r} does not match the database model_id {self._model_id!r}: "
                f"{mismatch_hint(self._model_id, model_id)}"
            )
        if dimension != self._dimension:
            raise DescriptorMismatchError(
                f"descriptor dimension {dimension} does not match the database dimension {self._dimension} "
                f"(model_id {self._model_id!r})"
            )

    @property
    def thumbnails(self) -> np.ndarray | None:
        """(N, h, w) ``uint8`` label thumbnails of the entries (:mod:`semloc_ros.core.reranking`), or None if the
        database stores none. A database stores them for all entries or for none."""
        return None if self._thumbnails is None else self._thumbnails.view()

    def add(
        self, descriptors: np.ndarray, records: Sequence[PlaceRecord], thumbnails: np.ndarray | None = None
    ) -> None:
        """Append N descriptors (N, D) with their N place records (and N label thumbnails, optional).

        Descriptors are converted to float32 and L2-normalised. Everything is validated before anything is
        stored: on bad input an exception is raised and the database is unchanged.
        """
        descriptors = np.asarray(descriptors)
        if descriptors.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D (N, D) array, got shape {descriptors.shape}")
        if len(records) != len(descriptors):
            raise ValueError(f"got {len(descriptors)} descriptors but {len(records)} records")
        for position, record in enumerate(records):
            if not isinstance(record, PlaceRecord):
                raise TypeError(f"records[{position}] is a {type(record).__name__}, expected PlaceRecord")
        self._append(
            descriptors,
            lat=np.array([r.lat for r in records], dtype=np.float64),
            lon=np.array([r.lon for r in records], dtype=np.float64),
            alt=np.array([r.alt for r in records], dtype=np.float64),
            heading=np.array([r.heading for r in records], dtype=np.float64),
            stamp_ns=np.array([r.stamp_ns for r in records], dtype=np.int64),
            image_ids=[str(r.image_id) for r in records],
            normalise=True,
            thumbnails=thumbnails,
        )

    def _append(
        self,
        descriptors: np.ndarray,
        *,
        lat: np.ndarray,
        lon: np.ndarray,
        alt: np.ndarray,
        heading: np.ndarray,
        stamp_ns: np.ndarray,
        image_ids: list[str],
        normalise: bool,
        owned: bool = False,
        index: faiss.Index | None = None,
        thumbnails: np.ndarray | None = None,
    ) -> None:
        """Validate column arrays of equal length and append them (all-or-nothing).

        ``owned``: the caller hands over the arrays (no copy is kept elsewhere), so an empty database adopts
        them without copying. ``index``: an already built search index holding these rows (a verified stored
        index of a file being loaded) instead of indexing them here.
        """
        matrix = _as_float_matrix(descriptors, "descriptors")
        if matrix.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D (N, D) array, got shape {matrix.shape}")
        self.check_query(matrix.shape[1])
        count = len(matrix)
        for name, column in (("lat", lat), ("lon", lon), ("alt", alt), ("heading", heading)):
            if column.shape != (count,):
                raise ValueError(f"{name} has shape {column.shape}, expected ({count},)")
        if stamp_ns.shape != (count,) or len(image_ids) != count:
            raise ValueError(f"stamp_ns and image_ids must hold {count} entries")
        thumbnails = self._checked_thumbnails(thumbnails, count)
        if count == 0:
            return
        if any("\x00" in image_id for image_id in image_ids):
            raise ValueError("image ids must not contain NUL characters (they do not survive a save)")
        try:
            validate_lat_lon(lat, lon)
        except GeoError as error:
            raise ValueError(f"invalid place coordinates: {error}") from error
        for name, column in (("alt", alt), ("heading", heading)):
            if np.any(np.isinf(column)):
                raise ValueError(f"{name} must be finite or NaN (unknown), got an infinite value")
        if normalise:
            matrix = _l2_normalised(matrix, "descriptors")
        with self._lock:
            if index is not None and len(self) == 0:
                self._index = index
                if self.active_index == "ivfpq":
                    self._trained_count = count
            else:
                self._index_rows(matrix)
            self._descriptors.append(matrix, adopt=normalise or owned)
            self._lat.append(lat, adopt=owned)
            self._lon.append(lon, adopt=owned)
            self._alt.append(alt, adopt=owned)
            self._heading.append(heading, adopt=owned)
            self._stamp_ns.append(stamp_ns, adopt=owned)
            self._image_id_list.extend(image_ids)
            if thumbnails is not None:
                if self._thumbnails is None:
                    self._thumbnails = _GrowableColumn(np.uint8, thumbnails.shape[1:])
                self._thumbnails.append(thumbnails, adopt=owned)
            self._frame_cache = None

    def _checked_thumbnails(self, thumbnails: np.ndarray | None, count: int) -> np.ndarray | None:
        """Thumbnails as ``uint8`` (count, h, w), consistent with those already stored (all entries or none)."""
        stored = self.thumbnails
        if thumbnails is None:
            if stored is not None and len(self) and count:
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
        if len(self) and stored is None:
            raise ValueError("this database stores no label thumbnails: add entries without them")
        if stored is not None and len(self) and thumbnails.shape[1:] != stored.shape[1:]:
            raise ValueError(f"thumbnails of shape {thumbnails.shape[1:]} do not match the stored "
                             f"{stored.shape[1:]}")
        return thumbnails.astype(np.uint8, copy=False)

    def _index_rows(self, matrix: np.ndarray) -> None:
        """Add normalised rows (not yet in the columns) to the search index, (re)training IVF-PQ when due.

        IVF-PQ is trained on all rows when the database reaches its training size (``IVFPQ_MIN_ENTRIES``,
        or ``AUTO_IVFPQ_MIN_ENTRIES`` for "auto") and retrained when it outgrows the size it was trained at by
        ``IVFPQ_RETRAIN_GROWTH``; in between new rows are encoded with the trained quantizers. A new index
        replaces the old one only once complete, so a failure leaves the database unchanged.
        """
        if self._index_type in ("flat", "hnsw"):
            self._index.add(matrix)
            return
        existing = self._descriptors.view()
        total = len(existing) + len(matrix)
        if self._index is not None and total <= IVFPQ_RETRAIN_GROWTH * self._trained_count:
            self._index.add(matrix)
            return
        minimum = AUTO_IVFPQ_MIN_ENTRIES if self._index_type == "auto" else IVFPQ_MIN_ENTRIES
        if total < minimum:
            return
        index = untrained_ivfpq(self._dimension, total)
        sample_size = ivfpq_training_rows(self._dimension, total)
        rows = np.sort(np.random.default_rng(0).choice(total, size=sample_size, replace=False))
        old, new = rows[rows < len(existing)], rows[rows >= len(existing)] - len(existing)
        index.train(np.concatenate([existing[old], matrix[new]]))
        for start in range(0, len(existing), 8 * _CHUNK_ROWS):
            index.add(existing[start : start + 8 * _CHUNK_ROWS])
        index.add(matrix)
        self._index, self._trained_count = index, total

    def use_trained_index(self, template: faiss.Index, trained_count: int) -> None:
        """Index an "ivfpq" database with a copy of ``template``, an empty IVF-PQ index trained on ``trained_count``
        rows elsewhere (a tiled map's tiles share one, :mod:`semloc_ros.core.tiles`); retrained only past 4x that.
        The copy keeps no FAISS precomputed table (32 MB per tile at a 1M training), also once saved and loaded."""
        if self._index_type != "ivfpq":
            raise ValueError(f"a trained IVF-PQ index needs index_type 'ivfpq', not {self._index_type!r}")
        if not isinstance(template, faiss.IndexIVFPQ) or not template.is_trained or template.ntotal \
                or template.d != self._dimension:
            raise ValueError(f"the template must be an empty trained {self._dimension}-d IndexIVFPQ")
        index = without_precomputed_table(faiss.clone_index(template))
        with self._lock:
            rows = self._descriptors.view()
            for start in range(0, len(rows), 8 * _CHUNK_ROWS):
                index.add(rows[start : start + 8 * _CHUNK_ROWS])
            self._index, self._trained_count = index, _positive_int(trained_count, "trained_count")

    # ------------------------------------------------------------------ searching
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar entries for each query.

        ``queries`` is (Q, D) or (D,); they are L2-normalised here. ``k`` is clipped to the database size.
        Returns similarities (Q, k) float32 (descending) and indices (Q, k) int64. An approximate index
        ("hnsw", "ivfpq") may return index -1 (similarity -inf) where it found fewer than k entries; the
        similarities it returns are exact inner products (IVF-PQ re-ranks its candidates exactly).
        """
        matrix = _as_float_matrix(queries, "queries")
        if matrix.ndim == 1:
            matrix = matrix[np.newaxis, :]
        if matrix.ndim != 2:
            raise ValueError(f"queries must be (Q, D) or (D,), got shape {np.shape(queries)}")
        self.check_query(matrix.shape[1])
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        matrix = _l2_normalised(matrix, "queries")
        with self._lock:
            if len(self) == 0:
                raise DatabaseError("cannot search an empty database")
            k = min(int(k), len(self))
            active = self.active_index
            if active == "exact":
                similarities, indices = faiss.knn(matrix, self._descriptors.view(), k,
                                                  metric=faiss.METRIC_INNER_PRODUCT)
            elif active == "ivfpq":
                similarities, indices = self._search_ivfpq(matrix, k)
            else:
                if active == "hnsw":
                    self._index.hnsw.efSearch = max(self._ef_search, k)
                similarities, indices = self._index.search(matrix, k)
        similarities = np.asarray(similarities, dtype=np.float32)
        indices = np.asarray(indices, dtype=np.int64)
        similarities[indices < 0] = -np.inf
        return similarities, indices

    def _search_ivfpq(self, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates re-scored by their exact inner product with the stored descriptors."""
        candidates = min(len(self), max(self._exact_candidates, _IVFPQ_EXACT_FACTOR * k))
        self._index.nprobe = min(self._nprobe, self._index.nlist)
        _, found = self._index.search(matrix, candidates)
        valid = found >= 0
        rows = self._descriptors.view()[np.where(valid, found, 0)]  # (Q, candidates, D)
        exact = np.einsum("qcd,qd->qc", rows, matrix)
        exact[~valid] = -np.inf
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, best, axis=1), np.take_along_axis(np.where(valid, found, -1), best, axis=1)

    # ------------------------------------------------------------------ files
    def header(self) -> dict[str, Any]:
        """The JSON header written by :meth:`save`."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_id": self._model_id,
            "dimension": self._dimension,
            "index_type": self._index_type,
            "count": len(self),
            "search_params": {"nprobe": self._nprobe, "exact_candidates": self._exact_candidates,
                              "ef_search": self._ef_search},
            "views": list(self._views),
            "gps_frame_id": self.gps_frame_id,
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "semloc_version": SEMLOC_VERSION,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the database to ``path`` atomically (temporary file, fsync, ``os.replace``) and return it.

        If anything fails the previous file at ``path`` (if any) is left untouched.
        """
        target = Path(path)
        with self._lock:
            header = self.header()
            stored_index = None
            if self.active_index in ("hnsw", "ivfpq") and len(self):
                stored_index = faiss.serialize_index(self._index)
                header["faiss_index"] = {
                    "type": self.active_index,
                    "count": int(self._index.ntotal),
                    "trained_count": self._trained_count,
                    "sha256": hashlib.sha256(stored_index.data).hexdigest(),
                    "faiss_version": faiss.__version__,
                    "precomputed_table": uses_precomputed_table(self._index),
                }
            header_bytes = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
            arrays = {
                "header": header_bytes,
                "descriptors": np.array(self.descriptors),
                "lat": np.array(self.lat),
                "lon": np.array(self.lon),
                "alt": np.array(self.alt),
                "heading": np.array(self.heading),
                "stamp_ns": np.array(self.stamp_ns),
                "image_id": np.array(self.image_ids),
            }
            if self._thumbnails is not None:
                arrays["thumbnails"] = np.array(self.thumbnails)
            if stored_index is not None:
                arrays["faiss_index"] = stored_index
        return atomic_write(target, lambda stream: np.savez(stream, allow_pickle=False, **arrays), permissions=0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_model_id: str | None = None) -> GeoDatabase:
        """Read a database written by :meth:`save`.

        Raises DatabaseNotFoundError (a FileNotFoundError) for a missing file, DatabaseFormatError for an
        unreadable, corrupt or unsupported file and DescriptorMismatchError if ``expected_model_id`` is given
        and differs from the file's model id.
        """
        source = Path(path)
        if not source.is_file():
            raise DatabaseNotFoundError(errno.ENOENT, "no geo-database file", str(source))
        if source.stat().st_size == 0:
            raise DatabaseFormatError(f"{source}: the geo-database file is empty")
        try:
            declared = declared_arrays(source)  # what each member declares: nothing is inflated yet
            with np.load(source, allow_pickle=False) as archive:
                header = _parse_header(archive, source)
                if expected_model_id is not None and header["model_id"] != expected_model_id:
                    raise DescriptorMismatchError(
                        f"{source}: database model_id {header['model_id']!r} does not match the expected "
                        f"model_id {expected_model_id!r}"
                    )
                check_arrays(declared, header)  # before inflating anything
                arrays = {name: archive[name] for name in ARRAY_NAMES}
                thumbnails = archive["thumbnails"] if "thumbnails" in archive.files else None
                stored_blob = archive["faiss_index"] if "faiss_index" in archive.files else None
            check_arrays(arrays, header)
            check_normalised(arrays["descriptors"])
        except DatabaseError:
            raise
        except ArchiveError as error:
            raise DatabaseFormatError(f"{source}: {error}") from error
        except (MemoryError, RecursionError) as error:  # what the checks did not foresee, still refused
            raise DatabaseFormatError(f"{source}: refused, loading it failed with {type(error).__name__}") from error
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
            raise DatabaseFormatError(
                f"{source}: not a readable semloc geo-database (truncated, corrupt, or holding pickled "
                f"objects, which are never loaded): {error}"
            ) from error
        search_params = _current_search_params(header.get("search_params", {}))
        try:
            database = cls(header["dimension"], header["model_id"], header["index_type"], **search_params)
        except (TypeError, ValueError) as error:
            raise DatabaseFormatError(f"{source}: invalid search_params {search_params!r}: {error}") from error
        stored_index = _stored_index(header, stored_blob, source)
        database._views = _stored_views(header, arrays["image_id"], source)
        database.gps_frame_id = _stored_gps_frame_id(header, source)
        try:
            database._append(
                arrays.pop("descriptors"),
                lat=arrays.pop("lat"),
                lon=arrays.pop("lon"),
                alt=arrays.pop("alt"),
                heading=arrays.pop("heading"),
                stamp_ns=arrays.pop("stamp_ns"),
                image_ids=arrays.pop("image_id").tolist(),
                normalise=False,
                owned=True,
                index=stored_index,
                thumbnails=thumbnails,
            )
        except (ValueError, TypeError, DatabaseError) as error:
            raise DatabaseFormatError(f"{source}: invalid entries: {error}") from error
        if stored_index is not None and database.active_index == "ivfpq":
            database._trained_count = int(header["faiss_index"]["trained_count"])
        return database


def _stored_index(header: dict[str, Any], blob: np.ndarray | None, source: Path) -> faiss.Index | None:
    """The FAISS index stored in a database file, or None when there is none or it does not verify.

    It must match the header's SHA-256, entry count, dimension and index type (a stored index is a cache of
    what the descriptors rebuild: when it does not verify, a warning is issued and the index is rebuilt).
    """
    info = header.get("faiss_index")
    if blob is None and info is None:
        return None
    expected_type = "hnsw" if header["index_type"] == "hnsw" else "ivfpq"
    problem = ""
    if blob is None or not isinstance(info, dict):
        problem = "the stored index or its header entry is missing"
    elif blob.dtype != np.uint8 or blob.ndim != 1:
        problem = f"the stored index is {blob.dtype} {blob.shape}, not 1-D uint8"
    elif info.get("type") != expected_type or header["index_type"] not in ("hnsw", "ivfpq", "auto"):
        problem = f"a stored {info.get('type')!r} index does not fit index_type {header['index_type']!r}"
    elif info.get("count") != header["count"] or not isinstance(info.get("trained_count"), int) \
            or info["trained_count"] < 0:  # may exceed count: a tile's index is trained on the whole map
        problem = "the stored index's entry counts do not match the descriptors"
    elif hashlib.sha256(blob.data).hexdigest() != info.get("sha256"):
        problem = "the stored index does not match its SHA-256"
    if not problem:
        try:
            skip = info.get("precomputed_table") is False
            index = faiss.deserialize_index(blob, faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE if skip else 0)
            if skip:
                without_precomputed_table(index)
        except (RuntimeError, MemoryError, ValueError) as error:
            problem = f"FAISS cannot read the stored index ({error})"
        else:
            wanted = faiss.IndexHNSWFlat if expected_type == "hnsw" else faiss.IndexIVFPQ
            if not isinstance(index, wanted) or index.d != header["dimension"] or index.ntotal != header["count"]:
                problem = f"the stored index is a {type(index).__name__} of {index.ntotal} x {index.d} entries"
            elif expected_type == "hnsw" and index.metric_type != faiss.METRIC_INNER_PRODUCT:
                problem = "the stored HNSW index does not use the inner product"
            else:
                return index
    warnings.warn(f"{source}: {problem}; rebuilding the index from the descriptors", stacklevel=3)
    return None


def _stored_gps_frame_id(header: dict[str, Any], source: Path) -> str:
    """The GPS frame_id in the header; "" for files written before maps stored it."""
    frame_id = header.get("gps_frame_id", "")
    if not isinstance(frame_id, str):
        raise DatabaseFormatError(f"{source}: invalid gps_frame_id {frame_id!r} in the header")
    return frame_id


def _stored_views(header: dict[str, Any], image_ids: np.ndarray, source: Path) -> tuple[float, ...]:
    """The views in the header; for files written before maps stored them, read from the image ids."""
    if "views" not in header:
        return views_from_ids(image_ids.tolist())
    views = header["views"]
    try:
        if not isinstance(views, list) or not all(_is_number(v) for v in views):
            raise ValueError("not a list of numbers")
        return check_views(views)
    except ValueError as error:
        raise DatabaseFormatError(f"{source}: invalid views {views!r} in the header: {error}") from error


def _parse_header(archive: np.lib.npyio.NpzFile, source: Path) -> dict[str, Any]:
    """Decode and validate the JSON header of an opened database archive."""
    if "header" not in archive.files:
        raise DatabaseFormatError(f"{source}: not a semloc geo-database (no header)")
    raw = archive["header"]  # at most MAX_HEADER_BYTES (map_checks.declared_arrays)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise DatabaseFormatError(f"{source}: header must be 1-D uint8 bytes, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatabaseFormatError(f"{source}: header is not valid UTF-8 JSON: {error}") from error
    except RecursionError as error:
        raise DatabaseFormatError(f"{source}: header JSON is nested too deeply") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise DatabaseFormatError(f"{source}: format {found!r} is not {FORMAT_NAME!r}")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DatabaseFormatError(f"{source}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise DatabaseFormatError(
            f"{source}: format_version {version} was written by a newer semloc_ros; this version "
            f"({SEMLOC_VERSION}) reads up to format_version {FORMAT_VERSION}"
        )
    for key, kind in (("model_id", str), ("dimension", int), ("index_type", str), ("count", int)):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DatabaseFormatError(f"{source}: header field {key!r} missing or not a {kind.__name__}")
    if header["dimension"] <= 0 or header["count"] < 0 or not header["model_id"]:
        raise DatabaseFormatError(f"{source}: header has invalid dimension, count or model_id")
    if header["index_type"] not in INDEX_TYPES:
        raise DatabaseFormatError(f"{source}: unsupported index_type {header['index_type']!r}")
    return header


