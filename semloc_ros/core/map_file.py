"""The map file format: errors, the JSON header, and reading a ``.semdb`` file with every member checked against
the header before anything is inflated (:mod:`semloc_ros.core.map_checks`). :class:`GeoDatabase`'s ``save`` and
``load`` (:mod:`semloc_ros.core.database`) use it.

A map file is one NumPy ``.npz`` file holding a JSON ``header`` (stored as ``uint8`` bytes) and plain
numeric/unicode arrays, written atomically and read with ``allow_pickle=False``. A flat index is rebuilt from the
descriptors on load. The approximate indexes ("hnsw", "ivfpq") are slow to rebuild at a million entries, so
``save`` also stores them serialized by FAISS (``faiss.serialize_index``, a ``uint8`` array ``faiss_index`` with
its SHA-256 and entry count in the header); on load the stored index is used when it verifies, else it is rebuilt
from the descriptors. Files without it (all format-version-1 files of earlier releases) load as before.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semloc_ros import __version__ as SEMLOC_VERSION  # noqa: N812
from semloc_ros.core.ivfpq import uses_precomputed_table, without_precomputed_table
from semloc_ros.core.map_checks import ARRAY_NAMES, check_arrays, check_normalised, declared_arrays
from semloc_ros.core.npz_checks import ArchiveError
from semloc_ros.core.views import check_views, views_from_ids

FORMAT_NAME = "semloc-geodatabase"
FORMAT_VERSION = 1
INDEX_TYPES = ("flat", "hnsw", "ivfpq", "auto")


class DatabaseError(RuntimeError):
    """Any failure of the geo-database."""


class DescriptorMismatchError(DatabaseError):
    """A descriptor (or database file) comes from another model or has another dimension."""


class DatabaseFormatError(DatabaseError):
    """A database file is missing, unreadable, corrupt or of an unsupported format."""


class DatabaseNotFoundError(FileNotFoundError, DatabaseFormatError):
    """The database file does not exist (both a ``FileNotFoundError`` and a ``DatabaseFormatError``)."""


def read_checked(source: Path, expected_model_id: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
    """The header, the entry arrays, the thumbnails and the stored FAISS blob of a map file, every member checked
    against the header before it is inflated (raises the errors of :meth:`GeoDatabase.load`)."""
    if not source.is_file():
        raise DatabaseNotFoundError(errno.ENOENT, "no geo-database file", str(source))
    if source.stat().st_size == 0:
        raise DatabaseFormatError(f"{source}: the geo-database file is empty")
    try:
        declared = declared_arrays(source)  # what each member declares: nothing is inflated yet
        with np.load(source, allow_pickle=False) as archive:
            header = parse_header(archive, source)
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
    return header, arrays, thumbnails, stored_blob


def file_header(model_id: str, dimension: int, index_type: str, count: int, views: Sequence[float],
                gps_frame_id: str, camera_yaw_deg: float, search_params: dict[str, int]) -> dict[str, Any]:
    """The JSON header of a map file (checked on load by :func:`parse_header`)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "dimension": dimension,
        "index_type": index_type,
        "count": count,
        "search_params": search_params,
        "views": list(views),
        "gps_frame_id": gps_frame_id,
        "camera_yaw_deg": camera_yaw_deg,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "semloc_version": SEMLOC_VERSION,
    }


def serialized_index(index: faiss.Index, index_type: str, trained_count: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``faiss_index`` array of a map file and its header entry (checked by :func:`stored_faiss_index`)."""
    blob = faiss.serialize_index(index)
    return blob, {
        "type": index_type,
        "count": int(index.ntotal),
        "trained_count": trained_count,
        "sha256": hashlib.sha256(blob.data).hexdigest(),
        "faiss_version": faiss.__version__,
        "precomputed_table": uses_precomputed_table(index),
    }


def stored_faiss_index(header: dict[str, Any], blob: np.ndarray | None, source: Path) -> faiss.Index | None:
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


def stored_gps_frame_id(header: dict[str, Any], source: Path) -> str:
    """The GPS frame_id in the header; "" for files written before maps stored it."""
    frame_id = header.get("gps_frame_id", "")
    if not isinstance(frame_id, str):
        raise DatabaseFormatError(f"{source}: invalid gps_frame_id {frame_id!r} in the header")
    return frame_id


def checked_camera_yaw(value: Any) -> float:
    """A camera yaw in degrees relative to the vehicle's forward axis (counter-clockwise, 180: a rear camera),
    wrapped into (-180, 180]; ValueError unless a finite number."""
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"camera yaw must be a finite number of degrees, got {value!r}")
    wrapped = -((-float(value) + 180.0) % 360.0 - 180.0)
    return wrapped + 0.0  # no -0.0


def camera_yaw_mismatch(map_yaw_deg: float, frames_yaw_deg: float) -> str | None:
    """Why frames of a camera at ``frames_yaw_deg`` cannot join a map of one at ``map_yaw_deg``; None when they
    can (one map holds one camera's views)."""
    if map_yaw_deg == frames_yaw_deg:
        return None
    return (f"the map's camera looks {map_yaw_deg:g} degrees from the vehicle heading, these frames' "
            f"{frames_yaw_deg:g} (another camera: build another map)")


def stored_camera_yaw(header: dict[str, Any], source: Path) -> float:
    """The map camera's yaw in the header; 0 (a forward camera) for files written before maps stored it."""
    try:
        return checked_camera_yaw(header.get("camera_yaw_deg", 0.0))
    except ValueError as error:
        raise DatabaseFormatError(f"{source}: invalid camera_yaw_deg in the header: {error}") from error


def stored_views(header: dict[str, Any], image_ids: np.ndarray, source: Path) -> tuple[float, ...]:
    """The views in the header; for files written before maps stored them, read from the image ids."""
    if "views" not in header:
        return views_from_ids(image_ids.tolist())
    views = header["views"]
    try:
        if not isinstance(views, list) or not all(is_number(v) for v in views):
            raise ValueError("not a list of numbers")
        return check_views(views)
    except ValueError as error:
        raise DatabaseFormatError(f"{source}: invalid views {views!r} in the header: {error}") from error


def parse_header(archive: np.lib.npyio.NpzFile, source: Path) -> dict[str, Any]:
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


def is_number(value: Any) -> bool:
    """An int or float (not a bool, not a string that would convert)."""
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def current_search_params(search_params: object) -> object:
    """The header's search parameters under today's names: files written before the rename store the IVF-PQ
    ``exact_candidates`` as ``rerank``."""
    if isinstance(search_params, dict) and "rerank" in search_params and "exact_candidates" not in search_params:
        search_params = dict(search_params)
        search_params["exact_candidates"] = search_params.pop("rerank")
    return search_params
