"""Drives and databases described once and kept on disk, so fits and reports re-run in seconds.

A query drive's descriptors (and label thumbnails, for re-ranking) are stored as ``<cache>/<name>.npz`` with the
name of :func:`described_name` (method, oracle flag, drive, size and a digest of the models, as for databases);
a database is stored under :func:`semloc_ros.evaluation.loop.cache_name`, the file ``semloc evaluate`` reads too.
A file that does not load or does not fit the drive is described again and replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semloc_ros.core.database import DatabaseError, GeoDatabase
from semloc_ros.core.files import atomic_write
from semloc_ros.core.map_file import checked_camera_yaw
from semloc_ros.core.reranking import THUMBNAIL_SHAPE
from semloc_ros.evaluation.loop import cache_key, cache_name
from semloc_ros.evaluation.metrics import method_label
from semloc_ros.io.datasets import Drive
from semloc_ros.mapping import build_database, describe_drive_frames


@dataclass
class DescribedDrive:
    """A drive (valid GPS only) with one descriptor and, for label methods, one label thumbnail per frame."""

    drive: Drive
    descriptors: np.ndarray
    thumbnails: np.ndarray | None

    def subset(self, indices: np.ndarray | slice) -> DescribedDrive:
        """The frames ``indices`` (a slice or an index array) of the drive, descriptors and thumbnails."""
        positions = np.arange(len(self.drive))[indices]
        return DescribedDrive(
            self.drive.subset([int(i) for i in positions]),
            self.descriptors[positions],
            None if self.thumbnails is None else self.thumbnails[positions],
        )


def described_name(method: str, oracle: bool, drive: Drive, pipeline) -> str:
    """File name of a described query drive in a cache folder."""
    digest = hashlib.sha1(cache_key(pipeline).encode("utf-8")).hexdigest()[:12]
    return f"{method_label(method, oracle)}_{drive.name}_{len(drive)}_{digest}.queries.npz"


def describe_cached(
    pipeline, drive: Drive, cache_dir: Path, method: str, oracle: bool = False, batch_size: int = 16,
    progress: bool = False,
) -> DescribedDrive:
    """The descriptors (and thumbnails, label methods) of ``drive``'s valid-GPS frames, from the cache if there."""
    valid = drive.drop_invalid_gps()
    path = Path(cache_dir) / described_name(method, oracle, valid, pipeline)
    with_thumbnails = bool(getattr(pipeline, "needs_labels", False))
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                descriptors = stored["descriptors"]
                thumbnails = stored["thumbnails"] if with_thumbnails else None
            if len(descriptors) == len(valid) and (thumbnails is None or len(thumbnails) == len(valid)):
                return DescribedDrive(valid, descriptors, thumbnails)
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: described again below
    thumbnails = np.zeros((len(valid), *THUMBNAIL_SHAPE), np.uint8) if with_thumbnails else None
    descriptors = describe_drive_frames(
        pipeline, valid.frames, oracle=oracle, batch_size=batch_size, progress=progress, desc=valid.name,
        thumbnails_out=thumbnails,
    )
    arrays = {"descriptors": descriptors, **({"thumbnails": thumbnails} if thumbnails is not None else {})}
    _save_npz_atomic(path, arrays)
    return DescribedDrive(valid, descriptors, thumbnails)


def cached_database(path: Path, pipeline, drive: Drive, views: tuple[float, ...],
                    needs_thumbnails: bool, log: Callable[[str], None] = print) -> GeoDatabase | None:
    """The database cached at ``path`` if it is the one ``pipeline`` builds of ``drive`` with ``views`` (and label
    thumbnails when ``needs_thumbnails``), its camera yaw the drive's; else None (an unreadable file is logged)."""
    if not path.is_file():
        return None
    try:
        database = GeoDatabase.load(path, expected_model_id=pipeline.model_id)
    except DatabaseError as error:
        log(f"ignoring cache {path}: {error}")
        return None
    if database.views != views or len(database) != len(drive) * len(views):
        return None
    if needs_thumbnails and database.thumbnails is None:
        return None  # cached before label thumbnails were stored
    database.camera_yaw_deg = checked_camera_yaw(drive.camera_yaw_deg or 0.0)  # cached before maps stored it
    return database


def database_cached(
    pipeline, drive: Drive, cache_dir: Path, method: str, oracle: bool = False, views: Sequence[float] = (0.0,),
    batch_size: int = 16, progress: bool = False,
) -> GeoDatabase:
    """The database of ``drive`` (with ``views``), loaded from the cache file ``semloc evaluate`` uses or built."""
    valid = drive.drop_invalid_gps()
    path = Path(cache_dir) / cache_name(method, oracle, valid, pipeline, views)
    database = cached_database(path, pipeline, valid, tuple(views), bool(getattr(pipeline, "needs_labels", False)),
                               log=lambda line: None)  # an unusable file is built again below
    if database is not None:
        return database
    database = build_database(pipeline, valid, oracle=oracle, batch_size=batch_size, progress=progress, views=views)
    path.parent.mkdir(parents=True, exist_ok=True)
    database.save(path)
    return database


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda stream: np.savez(stream, **arrays))
