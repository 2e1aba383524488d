"""An exclusive advisory lock for the read-modify-write of a file that is replaced atomically (ROS-free).

Files such as maps are written to a temporary file and ``os.replace``d, so a lock on the file itself would
lock an inode that the next writer no longer opens. The lock is therefore taken on a companion file
``.<name>.lock`` in the same directory (created once, never removed: removing it would let two writers lock
two different lock files). Locks are ``fcntl.flock`` locks: released by the kernel when the holder exits or
is killed, never stale. Readers need no lock: they see either the old or the new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

POLL_S = 0.05


class LockTimeoutError(TimeoutError):
    """Another writer held the lock for longer than the caller would wait."""


def lock_path(path: Path) -> Path:
    """The companion lock file of ``path``."""
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], timeout_s: float,
                   on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` for the ``with`` block; wait at most ``timeout_s`` for it.

    ``on_wait`` is called once if the lock is busy (e.g. to tell the user). Raises ``LockTimeoutError`` when
    the lock is still held by another writer after ``timeout_s``.
    """
    target = Path(path)
    handle = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"{target} is being written by another process (lock {lock_path(target).name} held "
                        f"for more than {timeout_s:g} s); try again when it has finished") from None
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(POLL_S)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the lock
