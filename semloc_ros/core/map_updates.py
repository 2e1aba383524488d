"""Read-modify-write of a map file under its exclusive lock (``core/file_lock.py``), ROS-free.

:func:`append_to_file` loads the file, adds entries and replaces it atomically while holding the lock, so
concurrent appends to one file all land; :func:`save_locked` writes a whole map under the same lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.file_lock import exclusive_lock

DEFAULT_LOCK_TIMEOUT_S = 120.0


def save_locked(database: GeoDatabase, path: str | os.PathLike[str], lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                on_wait: Callable[[], None] | None = None) -> Path:
    """``database.save(path)`` holding the file's exclusive lock (``file_lock``), so it never lands between
    another writer's read and write of the same file."""
    with exclusive_lock(path, lock_timeout_s, on_wait):
        return database.save(path)


def append_to_file(path: str | os.PathLike[str], entries: GeoDatabase,
                   lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                   on_wait: Callable[[], None] | None = None) -> GeoDatabase:
    """Add the entries of ``entries`` to the database file at ``path`` and return what was saved.

    The read-modify-write (load, add, atomic replace) holds the file's exclusive lock throughout, so concurrent
    appends to one file all land; a second writer waits up to ``lock_timeout_s`` (``LockTimeoutError``). A
    missing file is created. The file's model id must be ``entries.model_id`` (``DescriptorMismatchError``).
    """
    with exclusive_lock(path, lock_timeout_s, on_wait):
        if not Path(path).exists():
            entries.save(path)
            return entries
        database = GeoDatabase.load(path, expected_model_id=entries.model_id)
        database.check_query(entries.dimension)
        if entries.views != database.views:
            raise ValueError(f"the map holds views {database.views}, the new entries {entries.views}")
        records = [entries.record(i) for i in range(len(entries))]
        database.add(entries.descriptors, records, entries.thumbnails)
        database.save(path)
    return database
