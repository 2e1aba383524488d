"""One way to write a file in place: atomic (the old file survives any failure), ordinary permissions, strict
JSON."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from semloc_ros.core.files import atomic_write, jsonable, write_json_atomic


def test_atomic_write_replaces_the_file_and_leaves_it_on_failure(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    atomic_write(path, lambda stream: stream.write(b"one"))
    assert path.read_bytes() == b"one"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    def fail(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_bytes() == b"one" and sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]
    atomic_write(path, lambda stream: stream.write(b"two"), permissions=0o600)
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_json_is_strict():
    data = {1: [math.nan, np.float32(0.5), (np.int64(3), math.inf)], "a": np.array([1.0, np.nan])}
    assert jsonable(data) == {"1": [None, 0.5, [3, None]], "a": [1.0, None]}


def test_write_json_atomic(tmp_path):
    path = write_json_atomic({"x": math.nan, "y": [1, 2]}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"x": None, "y": [1, 2]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
