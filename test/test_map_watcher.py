"""The ROS-free map hot-reload watcher: background loads, pipeline checks, one read per file version."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from semloc_ros.io.map_watcher import MapWatcher


class FakeMaps:
    """Maps are text files ``model_id dimension``; counts reads and the threads they ran on."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.notified = threading.Event()

    def load(self, path: Path) -> tuple[str, int]:
        self.gate.wait(10.0)
        self.reads.append(path.name)
        self.threads.append(threading.current_thread().name)
        text = path.read_text()
        if text == "memory":
            raise MemoryError()
        if text == "deep":
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        model_id, dimension = text.split()
        return model_id, int(dimension)

    def watcher(self, path: Path) -> MapWatcher:
        watcher = MapWatcher(self.load, lambda loaded: loaded, notify=self.notified.set)
        watcher.set_path(str(path))
        return watcher


def finish(watcher: MapWatcher):
    assert watcher.wait(10.0)
    return watcher.take()


def write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_loads_in_the_background_and_hands_over_once(tmp_path):
    maps = FakeMaps()
    path = tmp_path / "map"
    write(path, "model-a 8")
    watcher = maps.watcher(path)
    maps.gate.clear()
    assert watcher.poll() and watcher.busy()
    assert watcher.take() is None  # still loading: the caller keeps its old map meanwhile
    maps.gate.set()
    outcome = finish(watcher)
    assert outcome.map == ("model-a", 8) and not outcome.error and maps.notified.is_set()
    assert maps.threads == ["map-load"] and watcher.current == outcome.version
    assert watcher.take() is None and not watcher.poll()  # unchanged file: not read again
    path.unlink()
    assert not watcher.poll()  # a removed file does not unload the map
    write(path, "model-a 8 ")
    assert watcher.poll() and finish(watcher).map == ("model-a", 8)


def test_a_map_of_another_pipeline_is_refused_and_the_current_one_stays(tmp_path):
    maps = FakeMaps()
    path = tmp_path / "map"
    write(path, "model-a 8")
    watcher = maps.watcher(path)
    watcher.poll()
    current = finish(watcher).version
    watcher.expect("model-a", 8)
    write(path, "model-b 8")
    assert watcher.poll()
    outcome = finish(watcher)
    assert outcome.map is None and "model model-b, dimension 8" in outcome.error
    assert "model model-a, dimension 8" in outcome.error and watcher.current == current
    assert not watcher.poll() and len(maps.reads) == 2  # the refused version is not read again
    watcher.expect("model-b", 8)  # the descriptors changed: the same file is worth another read
    assert watcher.poll() and finish(watcher).map == ("model-b", 8)


@pytest.mark.parametrize(("content", "reason"), [("memory", "MemoryError"), ("deep", "recursion depth"),
                                                 ("garbage", "not enough values")])
def test_a_bad_file_is_refused_once_per_version_without_a_loaded_map(tmp_path, content, reason):
    maps = FakeMaps()
    path = tmp_path / "map"
    write(path, content)
    watcher = maps.watcher(path)
    assert watcher.poll()
    outcome = finish(watcher)
    assert outcome.map is None and reason in outcome.error and watcher.current is None
    for _ in range(3):  # the retry timer
        assert not watcher.poll()
    assert len(maps.reads) == 1
    write(path, "model-a 8")
    assert watcher.poll() and finish(watcher).map == ("model-a", 8)


def test_a_missing_file_is_tried_once_then_when_it_appears(tmp_path):
    maps = FakeMaps()
    path = tmp_path / "late"
    watcher = maps.watcher(path)
    assert watcher.poll() and "No such file" in finish(watcher).error
    assert not watcher.poll()
    write(path, "model-a 8")
    assert watcher.poll() and finish(watcher).map == ("model-a", 8)
    watcher.set_path(str(tmp_path / "other"))  # a new path is read even though its file is missing
    assert watcher.poll() and finish(watcher).map is None and watcher.current.path == str(path)


def test_no_notify_after_close(tmp_path):
    maps = FakeMaps()
    path = tmp_path / "map"
    write(path, "model-a 8")
    watcher = maps.watcher(path)
    maps.gate.clear()
    assert watcher.poll()
    watcher.close()  # the node is being destroyed while its map loads
    maps.gate.set()
    assert watcher.wait(10.0) and not maps.notified.is_set()
