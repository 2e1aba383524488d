"""Geo-tagged descriptor database: a FAISS inner-product index plus per-entry place metadata.

Descriptors are ``float32`` and L2-normalised on insertion, so the inner product is the cosine similarity.
Entries only ever get appended; the metadata lives in arrays that grow geometrically, so ``add`` is O(N)
amortised and never rebuilds the index.

On disk a database is one NumPy ``.npz`` file (suffix :data:`SUFFIX` by convention) holding a JSON ``header``
(stored as ``uint8`` bytes) and plain numeric/unicode arrays, written atomically and read with
``allow_pickle=False``. The FAISS index itself is not stored: it is rebuilt from the descriptors on load,
which keeps the format independent of the FAISS version.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import math
import os
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semloc_ros import __version__ as SEMLOC_VERSION  # noqa: N812
from semloc_ros.geodesy import GeoError, LocalENU, validate_lat_lon

FORMAT_NAME = "semloc-geodatabase"
FORMAT_VERSION = 1
SUFFIX = ".semdb"
INDEX_TYPES = ("flat", "hnsw")

_HNSW_NEIGHBOURS = 32
_HNSW_EF_CONSTRUCTION = 80
_HNSW_EF_SEARCH = 64
_INITIAL_CAPACITY = 64
_NORM_TOLERANCE_ON_LOAD = 1e-3
_ARRAY_NAMES = ("descriptors", "lat", "lon", "alt", "heading", "stamp_ns", "image_id")


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

    def append(self, rows: np.ndarray) -> None:
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


def _make_index(index_type: str, dimension: int) -> faiss.Index:
    """An empty inner-product FAISS index of the given type.

    New types ("ivfpq", ...) go here; types that need training must be trained from the stored descriptors
    before the first ``add``.
    """
    if index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, _HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = _HNSW_EF_SEARCH
        return index
    raise ValueError(f"unknown index_type {index_type!r}; expected one of {', '.join(INDEX_TYPES)}")


def _as_float_matrix(values: Any, what: str) -> np.ndarray:
    """``values`` as a C-contiguous float32 array, refusing non-floating dtypes and non-finite values."""
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what} must have a floating-point dtype, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _l2_normalised(rows: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise ValueError(f"{what} contain an all-zero vector, which cannot be L2-normalised")
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


class GeoDatabase:
    """Geo-tagged descriptors with top-k inner-product search.

    Not safe for concurrent writers; ``add`` and ``search`` are serialised by an internal lock so a reader
    thread may search while another thread appends.
    """

    def __init__(self, dimension: int, model_id: str, index_type: str = "flat") -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int | np.integer) or dimension <= 0:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        self._dimension = int(dimension)
        self._model_id = model_id
        self._index_type = index_type
        self._index = _make_index(index_type, self._dimension)
        self._descriptors = _GrowableColumn(np.float32, (self._dimension,))
        self._lat = _GrowableColumn(np.float64)
        self._lon = _GrowableColumn(np.float64)
        self._alt = _GrowableColumn(np.float64)
        self._heading = _GrowableColumn(np.float64)
        self._stamp_ns = _GrowableColumn(np.int64)
        self._image_id_list: list[str] = []
        self._image_ids_cache: np.ndarray | None = None
        self._frame_cache: tuple[LocalENU, np.ndarray] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._image_id_list)

    def __repr__(self) -> str:
        return (
            f"GeoDatabase(model_id={self._model_id!r}, dimension={self._dimension}, "
            f"index_type={self._index_type!r}, entries={len(self)})"
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def index_type(self) -> str:
        return self._index_type

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
    def check_query(self, dimension: int, model_id: str | None = None) -> None:
        """Raise DescriptorMismatchError unless a query of this dimension (and model) fits the database."""
        if model_id is not None and model_id != self._model_id:
            raise DescriptorMismatchError(
                f"descriptor model_id {model_id!r} does not match the database model_id {self._model_id!r}"
            )
        if dimension != self._dimension:
            raise DescriptorMismatchError(
                f"descriptor dimension {dimension} does not match the database dimension {self._dimension} "
                f"(model_id {self._model_id!r})"
            )

    def add(self, descriptors: np.ndarray, records: Sequence[PlaceRecord]) -> None:
        """Append N descriptors (N, D) with their N place records.

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
    ) -> None:
        """Validate column arrays of equal length and append them (all-or-nothing)."""
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
            self._index.add(matrix)
            self._descriptors.append(matrix)
            self._lat.append(lat)
            self._lon.append(lon)
            self._alt.append(alt)
            self._heading.append(heading)
            self._stamp_ns.append(stamp_ns)
            self._image_id_list.extend(image_ids)
            self._frame_cache = None

    # ------------------------------------------------------------------ searching
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar entries for each query.

        ``queries`` is (Q, D) or (D,); they are L2-normalised here. ``k`` is clipped to the database size.
        Returns similarities (Q, k) float32 (descending) and indices (Q, k) int64. An approximate index
        ("hnsw") may return index -1 (similarity -inf) where it found fewer than k entries.
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
            if self._index_type == "hnsw":
                self._index.hnsw.efSearch = max(_HNSW_EF_SEARCH, k)
            similarities, indices = self._index.search(matrix, k)
        similarities = np.asarray(similarities, dtype=np.float32)
        indices = np.asarray(indices, dtype=np.int64)
        similarities[indices < 0] = -np.inf
        return similarities, indices

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
            "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "semloc_version": SEMLOC_VERSION,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the database to ``path`` atomically (temporary file, fsync, ``os.replace``) and return it.

        If anything fails the previous file at ``path`` (if any) is left untouched.
        """
        target = Path(path)
        with self._lock:
            header_bytes = np.frombuffer(json.dumps(self.header()).encode("utf-8"), dtype=np.uint8)
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
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                np.savez(stream, allow_pickle=False, **arrays)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(target.parent)
        return target

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
            loaded = np.load(source, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise DatabaseFormatError(f"{source}: not a semloc geo-database (a single .npy array)")
            with loaded as archive:
                header = _parse_header(archive, source)
                missing = [name for name in _ARRAY_NAMES if name not in archive.files]
                if missing:
                    raise DatabaseFormatError(f"{source}: missing arrays {', '.join(missing)}")
                arrays = {name: archive[name] for name in _ARRAY_NAMES}
        except DatabaseError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
            raise DatabaseFormatError(
                f"{source}: not a readable semloc geo-database (truncated, corrupt, or holding pickled "
                f"objects, which are never loaded): {error}"
            ) from error

        if expected_model_id is not None and header["model_id"] != expected_model_id:
            raise DescriptorMismatchError(
                f"{source}: database model_id {header['model_id']!r} does not match the expected model_id "
                f"{expected_model_id!r}"
            )
        _check_arrays(arrays, header, source)
        database = cls(header["dimension"], header["model_id"], header["index_type"])
        try:
            database._append(
                arrays["descriptors"],
                lat=arrays["lat"],
                lon=arrays["lon"],
                alt=arrays["alt"],
                heading=arrays["heading"],
                stamp_ns=arrays["stamp_ns"],
                image_ids=arrays["image_id"].tolist(),
                normalise=False,
            )
        except (ValueError, TypeError, DatabaseError) as error:
            raise DatabaseFormatError(f"{source}: invalid entries: {error}") from error
        return database


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open directories)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _parse_header(archive: np.lib.npyio.NpzFile, source: Path) -> dict[str, Any]:
    """Decode and validate the JSON header of an opened database archive."""
    if "header" not in archive.files:
        raise DatabaseFormatError(f"{source}: not a semloc geo-database (no header)")
    raw = archive["header"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise DatabaseFormatError(f"{source}: header must be 1-D uint8 bytes, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatabaseFormatError(f"{source}: header is not valid UTF-8 JSON: {error}") from error
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


def _check_arrays(arrays: dict[str, np.ndarray], header: dict[str, Any], source: Path) -> None:
    """Check dtypes, shapes and lengths of the stored arrays against each other and the header."""
    descriptors = arrays["descriptors"]
    if descriptors.dtype != np.float32 or descriptors.ndim != 2:
        raise DatabaseFormatError(
            f"{source}: descriptors must be a 2-D float32 array, got {descriptors.dtype} {descriptors.shape}"
        )
    if descriptors.shape[1] != header["dimension"]:
        raise DatabaseFormatError(
            f"{source}: descriptor dimension {descriptors.shape[1]} does not match the header dimension "
            f"{header['dimension']}"
        )
    expected_kinds = {"lat": "f", "lon": "f", "alt": "f", "heading": "f", "stamp_ns": "i", "image_id": "U"}
    for name, kind in expected_kinds.items():
        if arrays[name].dtype.kind != kind or arrays[name].ndim != 1:
            raise DatabaseFormatError(
                f"{source}: {name} has dtype {arrays[name].dtype} and {arrays[name].ndim} dimensions, "
                f"expected a 1-D array of kind {kind!r}"
            )
    lengths = {name: len(array) for name, array in arrays.items()}
    if set(lengths.values()) != {header["count"]}:
        raise DatabaseFormatError(
            f"{source}: inconsistent array lengths {lengths} (header count {header['count']})"
        )
    if header["count"]:
        norms = np.linalg.norm(descriptors, axis=1)
        if not np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE_ON_LOAD):
            raise DatabaseFormatError(f"{source}: stored descriptors are not L2-normalised")
