"""Hot reload of a map file, ROS-free: watch a path, load new versions off the caller's thread, validate them
against the pipeline in use and hand them over whole.

A node adapter (``ros/localizer_node.py``) owns one :class:`MapWatcher` and drives it:

1. ``set_path(path)`` names the file (at start and when the parameter changes); ``expect(model_id, dimension)``
   records the pipeline of the descriptors in flight (the first ones received: anything is accepted before).
2. ``poll()`` (a timer) stats the path and starts one background load when the *version* differs from the map
   in use and from the last refused one. A version is ``(path, inode, size, mtime_ns, expected pipeline)``: an
   unchanged bad file is not read again, a replaced file or a new expectation is. A removed file never
   unloads a map. At most one load runs at a time.
3. The background thread loads the file (``load(path)``: any exception is a refusal with its message, as are
   ``MemoryError`` and ``RecursionError``), then refuses a map that does not ``accept`` the expected pipeline
   (default: its ``identify(map)``, model id and dimension, equals it), and calls ``notify()`` (e.g. trigger a
   guard condition).
4. ``take()`` (on the adapter's own thread, after ``notify``) returns the finished :class:`LoadOutcome` once: the
   adapter swaps in ``outcome.map`` in one assignment, or keeps the old map and reports ``outcome.error``.

Derived watchers (e.g. maps split in tiles) can override ``_load`` to load several files per version.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

M = TypeVar("M")
Pipeline = tuple[str, int]  # (model id, descriptor dimension)
Signature = tuple[int, int, int]  # (inode, size, mtime_ns)


@dataclass(frozen=True)
class MapVersion:
    """One version of the watched file, with the pipeline it must match (None: not known yet)."""

    path: str
    signature: Signature | None
    expected: Pipeline | None


@dataclass(frozen=True)
class LoadOutcome(Generic[M]):
    """A finished load: ``map`` when accepted, else None and the reason in ``error``."""

    version: MapVersion
    map: M | None
    error: str = ""


def file_signature(path: str) -> Signature | None:
    """(inode, size, mtime_ns) of ``path``; None when it cannot be read. Changes when the file is replaced."""
    try:
        info = os.stat(Path(path).expanduser())
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class MapWatcher(Generic[M]):
    """Loads the map at a path in the background whenever a new version of it appears (module docstring)."""

    def __init__(self, load: Callable[[Path], M], identify: Callable[[M], Pipeline],
                 notify: Callable[[], None] = lambda: None,
                 accept: Callable[[M, Pipeline], bool] | None = None) -> None:
        self._load_file, self._identify, self._notify = load, identify, notify
        self._accept = accept or (lambda loaded, expected: identify(loaded) == expected)
        self._lock = threading.Lock()
        self._path = ""
        self._expected: Pipeline | None = None
        self._current: MapVersion | None = None  # version of the map in use
        self._refused: MapVersion | None = None
        self._running: threading.Thread | None = None
        self._finished: LoadOutcome[M] | None = None
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def current(self) -> MapVersion | None:
        """The version of the map handed over last (None before the first)."""
        return self._current

    def set_path(self, path: str) -> None:
        self._path = path

    def expect(self, model_id: str, dimension: int) -> None:
        """Accept from now on only maps of this pipeline (step 1)."""
        self._expected = (model_id, int(dimension))

    def busy(self) -> bool:
        return self._running is not None and self._running.is_alive()

    def poll(self) -> bool:
        """Start a background load if a new version is at the path (step 2); True when one started."""
        if not self._path or self.busy() or self._finished is not None:
            return False
        version = MapVersion(self._path, file_signature(self._path), self._expected)
        current = self._current
        if current is not None and current.path == version.path \
                and version.signature in (current.signature, None):
            return False  # unchanged, or removed: keep serving what is loaded
        if version == self._refused:
            return False  # this version was refused already
        self._running = threading.Thread(target=self._run, args=(version,), name="map-load", daemon=True)
        self._running.start()
        return True

    def _run(self, version: MapVersion) -> None:
        """Step 3, on the background thread."""
        try:
            loaded = self._load(Path(version.path).expanduser())
            pipeline = self._identify(loaded)
            if version.expected is not None and not self._accept(loaded, version.expected):
                raise ValueError(f"its pipeline (model {pipeline[0]}, dimension {pipeline[1]}) does not match the "
                                 f"descriptors in use (model {version.expected[0]}, dimension "
                                 f"{version.expected[1]})")
            outcome = LoadOutcome(version, loaded)
        except Exception as error:  # anything a bad file raises (MemoryError, RecursionError too) is a refusal
            outcome = LoadOutcome(version, None, _reason(error))
        with self._lock:  # notify under the lock: close() returns only once no notify can follow
            self._finished = outcome
            if not self._closed:
                self._notify()

    def close(self) -> None:
        """No ``notify`` after this returns (the adapter is going away; a running load is abandoned)."""
        with self._lock:
            self._closed = True

    def _load(self, path: Path) -> M:
        return self._load_file(path)

    def take(self) -> LoadOutcome[M] | None:
        """The finished load, once (step 4); records it as the map in use or as refused."""
        with self._lock:
            outcome, self._finished = self._finished, None
        if outcome is not None:
            if outcome.map is not None:
                self._current, self._refused = outcome.version, None
            else:
                self._refused = outcome.version
        return outcome

    def wait(self, timeout_s: float) -> bool:
        """Block until no load is running (tests, start-up); True when none is."""
        thread = self._running
        if thread is not None:
            thread.join(timeout_s)
        return not self.busy()


def _reason(error: Exception) -> str:
    """The message of a load failure; the exception type where the message alone would not say it."""
    text = str(error)
    if isinstance(error, OSError | RuntimeError | ValueError) and text and not isinstance(error, RecursionError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
