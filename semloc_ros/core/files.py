"""Writing files so that nothing stored is lost: every file semloc writes in place (maps, weights, results) goes
through :func:`atomic_write`, and JSON goes through :func:`jsonable` first.

1. Write into a temporary file beside the target (same file system), flush and fsync it.
2. Give it ordinary permissions (``mkstemp`` creates 0600): ``permissions``, else 0666 less the umask.
3. ``os.replace`` it onto the target, then fsync the directory so the rename survives a crash.
On any failure (an interrupt included) the temporary file is removed and the previous target is untouched.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None],
                 permissions: int | None = None) -> Path:
    """Call ``write`` with a binary stream whose content replaces ``path`` atomically; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:  # step 1
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        if permissions is None:  # step 2
            umask = os.umask(0)
            os.umask(umask)
            permissions = 0o666 & ~umask
        os.chmod(temporary, permissions)
        os.replace(temporary, target)  # step 3
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return target


def fsync_directory(directory: Path) -> None:
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


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data, recursively: NaN/inf -> None, numpy scalars and arrays -> Python numbers
    and lists, tuples -> lists, dict keys -> strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(data: Any, path: str | os.PathLike[str], indent: int = 1) -> Path:
    """Write ``data`` as strict JSON (:func:`jsonable`) to ``path`` atomically."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False)
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")), permissions=0o644)
