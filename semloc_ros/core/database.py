"""Geo-tagged descriptor database: a FAISS inner-product index plus per-entry place metadata.

Descriptors are ``float32`` and L2-normalised on insertion, so the inner product is the cosine similarity.
Entries only ever get appended; the metadata lives in arrays that grow geometrically, so ``add`` is O(N)
amortised and never rebuilds the index.

On disk a database is one ``.npz`` file (suffix :data:`SUFFIX`): :mod:`semloc_ros.core.map_file`.

Index types (``INDEX_TYPES``): ``flat`` (exact), ``hnsw`` (graph; holds a second copy of the descriptors),
``ivfpq`` (inverted lists of 8-bit product-quantised codes, candidates re-ranked by their exact inner product
on the stored descriptors, so similarities stay exact cosines) and ``auto``: exact search up to
:data:`AUTO_IVFPQ_MIN_ENTRIES` entries, IVF-PQ above (see docs/benchmarks.md for the measurements).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semloc_ros.core.columns import (
    CHUNK_ROWS,
    GrowableColumn,
    as_float_matrix,
    checked_thumbnails,
    l2_normalised,
    positive_int,
)
from semloc_ros.core.files import atomic_write
from semloc_ros.core.geodesy import GeoError, LocalENU, validate_lat_lon
from semloc_ros.core.ivfpq import (
    IVFPQ_NPROBE,
    ivfpq_parameters,  # noqa: F401  (part of this module's interface)
    ivfpq_training_rows,
    untrained_ivfpq,
    without_precomputed_table,
)
from semloc_ros.core.map_file import (  # noqa: F401  (the errors are part of this module's interface)
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_TYPES,
    DatabaseError,
    DatabaseFormatError,
    DatabaseNotFoundError,
    DescriptorMismatchError,
    checked_camera_yaw,
    current_search_params,
    file_header,
    is_number,
    read_checked,
    serialized_index,
    stored_camera_yaw,
    stored_faiss_index,
    stored_gps_frame_id,
    stored_views,
)
from semloc_ros.core.pipeline_id import accepts, mismatch_hint
from semloc_ros.core.views import SINGLE_VIEW, check_views

SUFFIX = ".semdb"
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
    (saved; "" for maps written before it was stored); ``camera_yaw_deg`` the yaw of the map's camera relative to the
    vehicle heading the places store (saved; 180 for a rear camera, 0 for maps written before it was stored).
    ``legacy_segmenter_id`` (not saved): the segmenter a map with a descriptor-only model id is taken to have been
    built with (:func:`semloc_ros.core.pipeline_id.accepts`).
    """

    def __init__(self, dimension: int, model_id: str, index_type: str = "flat", *, nprobe: int = IVFPQ_NPROBE,
                 exact_candidates: int = _IVFPQ_EXACT_CANDIDATES, ef_search: int = _HNSW_EF_SEARCH,
                 views: Sequence[float] = SINGLE_VIEW, gps_frame_id: str = "", camera_yaw_deg: float = 0.0) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int | np.integer) or dimension <= 0:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index_type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")
        self._dimension = int(dimension)
        self._model_id = model_id
        self._index_type = index_type
        self._nprobe = positive_int(nprobe, "nprobe")
        self._exact_candidates = positive_int(exact_candidates, "exact_candidates")
        self._ef_search = positive_int(ef_search, "ef_search")
        self._views = check_views(views)
        self.gps_frame_id = gps_frame_id
        self.camera_yaw_deg = checked_camera_yaw(camera_yaw_deg)
        self.legacy_segmenter_id: str | None = None
        # IVF-PQ ("ivfpq", "auto") starts without an index (exact search) and is trained once large enough.
        self._index: faiss.Index | None = (
            _make_index(index_type, self._dimension) if index_type in ("flat", "hnsw") else None
        )
        self._trained_count = 0  # rows the IVF-PQ index was trained on
        self._descriptors = GrowableColumn(np.float32, (self._dimension,))
        self._lat = GrowableColumn(np.float64)
        self._lon = GrowableColumn(np.float64)
        self._alt = GrowableColumn(np.float64)
        self._heading = GrowableColumn(np.float64)
        self._stamp_ns = GrowableColumn(np.int64)
        self._image_id_list: list[str] = []
        self._thumbnails: GrowableColumn | None = None  # label thumbnails for re-ranking (semloc_ros.core.reranking)
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
        self._nprobe = positive_int(value, "nprobe")

    @property
    def exact_candidates(self) -> int:
        """IVF-PQ candidates re-scored by their exact similarity per query (at least 4 k; more: higher recall)."""
        return self._exact_candidates

    @exact_candidates.setter
    def exact_candidates(self, value: int) -> None:
        self._exact_candidates = positive_int(value, "exact_candidates")

    @property
    def ef_search(self) -> int:
        """HNSW search candidate list length (at least k is used; more: higher recall, slower)."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = positive_int(value, "ef_search")

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
        matrix = as_float_matrix(descriptors, "descriptors")
        if matrix.ndim != 2:
            raise ValueError(f"descriptors must be a 2-D (N, D) array, got shape {matrix.shape}")
        self.check_query(matrix.shape[1])
        count = len(matrix)
        for name, column in (("lat", lat), ("lon", lon), ("alt", alt), ("heading", heading)):
            if column.shape != (count,):
                raise ValueError(f"{name} has shape {column.shape}, expected ({count},)")
        if stamp_ns.shape != (count,) or len(image_ids) != count:
            raise ValueError(f"stamp_ns and image_ids must hold {count} entries")
        thumbnails = checked_thumbnails(thumbnails, count, self.thumbnails, len(self))
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
            matrix = l2_normalised(matrix, "descriptors")
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
                    self._thumbnails = GrowableColumn(np.uint8, thumbnails.shape[1:])
                self._thumbnails.append(thumbnails, adopt=owned)
            self._frame_cache = None

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
        for start in range(0, len(existing), 8 * CHUNK_ROWS):
            index.add(existing[start : start + 8 * CHUNK_ROWS])
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
            for start in range(0, len(rows), 8 * CHUNK_ROWS):
                index.add(rows[start : start + 8 * CHUNK_ROWS])
            self._index, self._trained_count = index, positive_int(trained_count, "trained_count")

    # ------------------------------------------------------------------ searching
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar entries for each query.

        ``queries`` is (Q, D) or (D,); they are L2-normalised here. ``k`` is clipped to the database size.
        Returns similarities (Q, k) float32 (descending) and indices (Q, k) int64. An approximate index
        ("hnsw", "ivfpq") may return index -1 (similarity -inf) where it found fewer than k entries; the
        similarities it returns are exact inner products (IVF-PQ re-ranks its candidates exactly).
        """
        matrix = as_float_matrix(queries, "queries")
        if matrix.ndim == 1:
            matrix = matrix[np.newaxis, :]
        if matrix.ndim != 2:
            raise ValueError(f"queries must be (Q, D) or (D,), got shape {np.shape(queries)}")
        self.check_query(matrix.shape[1])
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        matrix = l2_normalised(matrix, "queries")
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
        return file_header(self._model_id, self._dimension, self._index_type, len(self), self._views,
                           self.gps_frame_id, self.camera_yaw_deg,
                           {"nprobe": self._nprobe, "exact_candidates": self._exact_candidates,
                            "ef_search": self._ef_search})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the database to ``path`` atomically (temporary file, fsync, ``os.replace``) and return it.

        If anything fails the previous file at ``path`` (if any) is left untouched.
        """
        target = Path(path)
        with self._lock:
            header = self.header()
            stored_index = None
            if self.active_index in ("hnsw", "ivfpq") and len(self):
                stored_index, header["faiss_index"] = serialized_index(self._index, self.active_index,
                                                                       self._trained_count)
            header_bytes = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
            columns = ("descriptors", "lat", "lon", "alt", "heading", "stamp_ns")
            arrays = {"header": header_bytes, **{name: np.array(getattr(self, name)) for name in columns},
                      "image_id": np.array(self.image_ids)}
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
        header, arrays, thumbnails, stored_blob = read_checked(source, expected_model_id)
        search_params = current_search_params(header.get("search_params", {}))
        try:
            database = cls(header["dimension"], header["model_id"], header["index_type"], **search_params)
        except (TypeError, ValueError) as error:
            raise DatabaseFormatError(f"{source}: invalid search_params {search_params!r}: {error}") from error
        stored_index = stored_faiss_index(header, stored_blob, source)
        database._views = stored_views(header, arrays["image_id"], source)
        database.gps_frame_id = stored_gps_frame_id(header, source)
        database.camera_yaw_deg = stored_camera_yaw(header, source)
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


