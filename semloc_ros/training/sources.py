"""Training drives from any source ``semloc build-db`` reads (bag, CSV folder, ``@utm@`` folder, semloc-sim drive).

1. Each source is loaded with :func:`semloc_ros.io.datasets.load_drive`; frames without valid GPS are dropped
   and, with ``min_distance_m``, frames closer than that to the last kept one (a stopped vehicle).
2. Positions of every source go into one local ENU frame centred on all of them (one map); the heading is the
   source's when it has one, else the direction of travel over the frames ``HEADING_BASE_M`` around each frame
   (NaN while the vehicle stands: such frames get no positives).
3. Images are read a chunk at a time and resized to the training size; label images come from a segmenter
   (the descriptor's input, or pseudo-labels for self-training), computed once per (source, frames, segmenter,
   size) and cached as ``.npz`` files in ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from semloc_ros.core.geodesy import LocalENU
from semloc_ros.io.datasets import Drive, load_drive, load_rgbs, subsample_by_distance
from semloc_ros.training.data import TrainDrive
from semloc_ros.training.mining import NoTrainingDataError

HEADING_BASE_M = 4.0
SOURCE_MAP_SEED = -1  # the map id of every source drive (semloc-sim drives carry their own seeds)
CHUNK = 64


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "semloc" / "train-labels"


def load_sources(specs: Sequence[str], image_topic: str | None = None, gps_topic: str | None = None,
                 max_gap_s: float = 1.0, min_distance_m: float = 0.0) -> list[Drive]:
    """Step 1."""
    drives = []
    for spec in specs:
        drive = subsample_by_distance(load_drive(spec, image_topic, gps_topic, max_gap_s).drop_invalid_gps(),
                                      min_distance_m)
        if not len(drive):
            raise NoTrainingDataError(f"{spec}: no frame with valid GPS")
        drives.append(drive)
    return drives


def travel_heading(xy: np.ndarray, base_m: float = HEADING_BASE_M) -> np.ndarray:
    """Step 2: ENU yaw of the motion from the frame ``base_m / 2`` behind to the one ``base_m / 2`` ahead."""
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    back = np.clip(np.searchsorted(along, along - base_m / 2, side="right") - 1, 0, len(xy) - 1)
    ahead = np.clip(np.searchsorted(along, along + base_m / 2, side="left"), 0, len(xy) - 1)
    delta = xy[ahead] - xy[back]
    heading = np.arctan2(delta[:, 1], delta[:, 0])
    heading[np.linalg.norm(delta, axis=1) < base_m / 4] = np.nan
    return heading


def _cache_key(drive: Drive, what: str) -> str:
    source = Path(drive.source)
    stat = source.stat() if source.exists() else None
    ids = hashlib.sha256("\n".join(f.image_id for f in drive.frames).encode()).hexdigest()
    text = json.dumps([str(source.resolve()), stat and (stat.st_size, stat.st_mtime_ns), ids, what])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def resized(images: Sequence[np.ndarray], size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([im if im.shape[:2] == size else cv2.resize(im, (size[1], size[0]), interpolation=interpolation)
                     for im in images])


def read_images(drive: Drive, size: tuple[int, int], progress: bool,
                labeler: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> np.ndarray:
    """Step 3: every frame's RGB resized to ``size``, or with ``labeler`` its labels (uint8, nearest-resized)."""
    out = []
    with tqdm(total=len(drive), desc=f"{'labels' if labeler else 'rgb'} {drive.name}", unit="img",
              disable=not progress) as bar:
        for start in range(0, len(drive), CHUNK):
            rgbs = load_rgbs(drive.frames[start:start + CHUNK])
            out.append(resized(list(labeler(rgbs)), size, nearest=True) if labeler else resized(rgbs, size))
            bar.update(len(rgbs))
    return np.concatenate(out)


def segmenter_labeler(segmenter, batch_size: int = 16) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Label images of a list of RGB images (run at the segmenter's input size when it has one)."""

    def label(rgbs: list[np.ndarray]) -> np.ndarray:
        size = segmenter.input_size or rgbs[0].shape[:2]
        small = resized(rgbs, tuple(size))
        return np.concatenate([segmenter.predict_batch(small[i:i + batch_size])
                               for i in range(0, len(small), batch_size)])

    return label


def cached_labels(drive: Drive, size: tuple[int, int], what: str, labeler: Callable[[list[np.ndarray]], np.ndarray],
                  cache_dir: Path | None, progress: bool) -> np.ndarray:
    """Step 3's label images of ``drive`` (``what`` names the segmenter and its settings), cached."""
    path = cache_dir / f"{_cache_key(drive, f'{what}@{size}')}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            return stored["labels"]
    labels = read_images(drive, size, progress, labeler)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, labels=labels)
        partial.replace(path)
    return labels


def train_drives_from_sources(drives: Sequence[Drive], rgb_size: tuple[int, int] | None,
                              label_size: tuple[int, int] | None, labeler: Callable | None = None,
                              labeler_id: str = "", cache_dir: Path | None = None,
                              progress: bool = True) -> list[TrainDrive]:
    """Steps 2 and 3: :class:`TrainDrive` objects with RGB at ``rgb_size`` and/or labels at ``label_size``."""
    frame = LocalENU.centred_on(np.concatenate([d.lat for d in drives]), np.concatenate([d.lon for d in drives]))
    out = []
    for drive in drives:
        east, north, _ = frame.to_enu(drive.lat, drive.lon)
        xy = np.column_stack([east, north]).astype(np.float64)
        given = np.array([f.heading for f in drive.frames], dtype=np.float64)
        heading = given if np.isfinite(given).all() else travel_heading(xy)
        rgb = read_images(drive, rgb_size, progress) if rgb_size else None
        labels = None
        if label_size:
            labels = cached_labels(drive, label_size, labeler_id, labeler, cache_dir, progress)
        stamps = drive.stamps_ns.astype(np.float64) * 1e-9
        stamps = stamps if np.all(np.diff(stamps) > 0) else None  # no stamps (image folders): frame numbers
        out.append(TrainDrive(drive.name, SOURCE_MAP_SEED, drive.condition, rgb, labels, xy, heading, stamps))
    return out
