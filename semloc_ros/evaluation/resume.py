"""Per-drive results of ``semloc evaluate`` kept as they finish, so that a stopped run resumes where it stopped.

1. Key: everything one drive's result depends on, built by :mod:`semloc_ros.evaluation.run`: the dataset, the
   drive and the database drive (:func:`drive_fingerprint`: names, frame count, a digest of the frames and their
   image files, so a changed stride or a re-rendered drive differs), the pipeline id (descriptor and segmenter
   weights), the database views, the localizer configuration, the threshold, the method label and
   :data:`RESULT_FORMAT`.
2. Look-up: ``ROOT/<variant>-<digest of its key>/<drive>.json`` holds ``{"key": ..., "result": ...}`` and is
   reused only when its stored key equals the key; anything else (another request, an unreadable file) is
   computed again. ``resume=False`` computes every result again.
3. Compute: the result, normalised to its JSON form (:func:`semloc_ros.core.files.jsonable`), so that a result
   read back and one just computed are the same data and results.json does not depend on whether the run was
   resumed; written atomically before the next drive starts, so a killed run loses at most the drive in progress.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.core.files import jsonable, write_json_atomic
from semloc_ros.io.datasets import Drive

RESULT_FORMAT = 2  # raise when a drive's result changes content for the same request (metrics added, ...)

Log = Callable[[str], None]


def _file_stamp(path: Path | None) -> str:
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return "-"
    return f"{stat.st_size}:{stat.st_mtime_ns}" if stat is not None else "-"


def drive_fingerprint(drive: Drive) -> dict[str, Any]:
    """A drive as a result depends on it: name, condition, frame count and a digest of frame ids, stamps,
    positions and the size and modification time of each image file (step 1)."""
    digest = hashlib.sha1()
    for frame in drive.frames:
        digest.update(f"{frame.image_id}|{_file_stamp(frame.rgb_path)}|{_file_stamp(frame.label_path)}\n".encode())
    for values in (drive.stamps_ns, drive.lat, drive.lon):
        digest.update(np.ascontiguousarray(values).tobytes())
    return {"name": drive.name, "condition": drive.condition, "frames": len(drive), "digest": digest.hexdigest()}


def _normalised(value: Any) -> Any:
    """``value`` as it reads back from a JSON file."""
    return json.loads(json.dumps(jsonable(value), allow_nan=False))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@+._-]", "_", name) or "_"


class PartialResults:
    """The finished drive results of one output folder (``ROOT``, e.g. ``OUT/partial``)."""

    def __init__(self, root: Path, resume: bool = True, log: Log = print):
        self.root, self.resume, self.log = root, resume, log
        self.resumed = 0  # results read back instead of computed

    def path(self, folder: str, variant_key: dict[str, Any], drive: str) -> Path:
        """Where a drive's result under ``variant_key`` is kept (step 2)."""
        digest = hashlib.sha1(json.dumps(_normalised(variant_key), sort_keys=True).encode("utf-8")).hexdigest()
        return self.root / f"{_safe(folder)}-{digest[:12]}" / f"{_safe(drive)}.json"

    def stored(self, path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
        """The result kept at ``path`` if it was computed for ``key`` (step 2), else None."""
        if not self.resume or not path.is_file():
            return None
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            self.log(f"recomputing {path}: unreadable ({error})")
            return None
        if not isinstance(kept, dict) or kept.get("key") != _normalised(key) or not isinstance(kept.get("result"),
                                                                                            dict):
            return None
        return kept["result"]

    def result(self, folder: str, variant_key: dict[str, Any], drive: str, drive_key: dict[str, Any],
               compute: Callable[[], dict[str, Any]], prepare: Callable[[], object] | None = None,
               ) -> tuple[dict[str, Any], float | None]:
        """The result of ``drive`` (``drive_key``: what it depends on beyond ``variant_key``): kept, else computed
        and kept (steps 2-3); with the seconds ``compute`` took (None when it was read back). ``prepare`` (e.g.
        loading the database) runs before ``compute`` only when the result is computed, and is not timed."""
        path = self.path(folder, variant_key, drive)
        key = {"variant": variant_key, "drive": drive_key}
        kept = self.stored(path, key)
        if kept is not None:
            self.resumed += 1
            return kept, None
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        result = _normalised(compute())
        seconds = time.perf_counter() - start
        write_json_atomic({"key": key, "result": result}, path)
        return result, seconds
