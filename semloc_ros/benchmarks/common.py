"""What every benchmark shares: process figures from /proc, duration statistics, a busy core, the machine line
printed above every table, benchmark frames and cached descriptors/maps of the semloc-sim drives, and the JSON
results file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.core.files import write_json_atomic

FRAME_SHAPE = (240, 320)


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM (peak) and VmSize of a process in MiB, from /proc/PID/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (s)."""
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95, mean and count of durations given in seconds, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    if values.size == 0:
        return {"median": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "mean": float(values.mean()), "n": int(values.size)}


def fmt_ms(stats: dict[str, float]) -> str:
    return f"median {stats['median']:8.2f} ms  p95 {stats['p95']:8.2f} ms  (n={stats['n']})"


@contextlib.contextmanager
def busy_core(enabled: bool = True) -> Iterator[subprocess.Popen | None]:
    """A busy-loop child process occupying one core while the block runs (stopped by its own pid)."""
    if not enabled:
        yield None
        return
    process = subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])
    try:
        time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def machine_line() -> str:
    """CPU model, core count and load average: printed above every table."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as stream:
        model = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), model)
    load = os.getloadavg()
    return f"{model}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def load_frames(dataset: Path, drive: str, count: int, stride: int = 1) -> list[np.ndarray]:
    """``count`` RGB frames (HxWx3 uint8, 240x320) of a semloc-sim drive, every ``stride``-th frame, cycling."""
    import cv2

    from semloc_ros.io.datasets import load_semloc_sim_drive, read_rgb

    frames = load_semloc_sim_drive(dataset, drive).frames
    images = []
    for i in range(count):
        rgb = read_rgb(frames[(i * stride) % len(frames)].rgb_path)
        if rgb.shape[:2] != FRAME_SHAPE:
            rgb = cv2.resize(rgb, FRAME_SHAPE[::-1], interpolation=cv2.INTER_AREA)
        images.append(rgb)
    return images


def splits(dataset: Path) -> dict[str, Any]:
    return json.loads((dataset / "splits.json").read_text())


def semantic_pipeline(device: str = "auto"):
    from semloc_ros.models.pipeline import Pipeline

    return Pipeline.from_method("semantic", device=device)


def drive_descriptors(dataset: Path, drive: str, pipeline, cache: Path, batch_size: int = 16) -> np.ndarray:
    """Semantic descriptors of every frame of ``drive`` (segmenter on RGB), cached in ``cache`` per model pair."""
    from semloc_ros.evaluation.loop import cache_key
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import describe_drive_frames

    digest = hashlib.sha1(cache_key(pipeline).encode("utf-8")).hexdigest()[:12]
    path = cache / f"descriptors_{drive}_{digest}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    loaded = load_semloc_sim_drive(dataset, drive)
    start = time.perf_counter()
    descriptors = describe_drive_frames(pipeline, loaded.frames, batch_size=batch_size)
    print(f"  described {drive}: {len(descriptors)} frames in {time.perf_counter() - start:.1f} s -> {path}")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, descriptors, allow_pickle=False)
    return descriptors


def drive_database(dataset: Path, drive: str, pipeline, cache: Path, index_type: str = "flat"):
    """GeoDatabase of one drive with the shipped semantic pipeline (descriptors cached)."""
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import place_records

    descriptors = drive_descriptors(dataset, drive, pipeline, cache)
    database = GeoDatabase(pipeline.dimension, pipeline.model_id, index_type)
    database.add(descriptors, place_records(load_semloc_sim_drive(dataset, drive).frames))
    return database


def thumbnail_database(dataset: Path, drive: str, pipeline, cache: Path, views: tuple[float, ...] = (0.0,)) -> Path:
    """The map of ``drive`` as ``semloc build-db --views`` makes it with ``pipeline`` (descriptors and label
    thumbnails, so a localizer re-ranks as configured), cached per segmenter, descriptor and views."""
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import build_database

    models = f"{pipeline.segmenter.model_id}|{pipeline.model_id}" + ("" if views == (0.0,) else f"|{views}")
    digest = hashlib.sha1(models.encode("utf-8")).hexdigest()[:12]
    path = cache / f"e2e_{drive}_{digest}_thumbnails.semdb"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        build_database(pipeline, load_semloc_sim_drive(dataset, drive), views=views).save(path)
    return path


def per_query_times(database, queries: np.ndarray, k: int = 5) -> list[float]:
    """Duration of each single-query search (one call per query, after a short warm-up)."""
    for query in queries[:10]:
        database.search(query, k)
    durations = []
    for query in queries:
        start = time.perf_counter()
        database.search(query, k)
        durations.append(time.perf_counter() - start)
    return durations


def write_json(path: Path | None, mode: str, results: dict[str, Any]) -> None:
    """Write ``results`` of ``mode`` (with the machine line) to ``path``, when one is given."""
    if path is not None:
        write_json_atomic({"mode": mode, "machine": machine_line(), "results": results}, path)
        print(f"results: {path}")
