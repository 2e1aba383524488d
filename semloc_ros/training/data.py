"""Training data read straight from the semloc-sim layout: ``drives/<drive>/{rgb,label,poses.csv,drive.json}``.

Only the ``train`` drives of ``splits.json`` are ever loaded here: asking for a database or query drive (the
evaluation map), or a drive of a further held-out set (semloc-sim-v2's ``tuning`` map and ``rear`` pair), raises
``ValueError``, so no evaluation or tuning drive can leak into training. Several dataset roots train one model
together (:func:`load_train_sets`): each drive keeps its map seed, so GPS mining never pairs two maps.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from semloc_ros.core.labels import SEMLOC_SIM


@dataclass
class TrainDrive:
    """One training drive in memory: images (optionally resized), labels and planar positions."""

    name: str
    map_seed: int
    condition: str
    rgb: np.ndarray | None  # N x H x W x 3 uint8
    labels: np.ndarray | None  # N x H x W uint8
    xy: np.ndarray  # N x 2 float64 metres (x east, y north)
    heading: np.ndarray  # N float64 radians (ENU yaw)
    stamp_s: np.ndarray | None = None  # N float64 seconds (None: frame i at i seconds)

    def __len__(self) -> int:
        return len(self.xy)


def read_splits(root: str | Path) -> dict:
    """The dataset's ``splits.json``."""
    path = Path(root) / "splits.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} a semloc-sim dataset root?")
    return json.loads(path.read_text())


def train_drive_names(root: str | Path) -> list[str]:
    """Names of the ``train`` drives."""
    return list(read_splits(root)["train"])


def held_out_drive_names(splits: dict) -> set[str]:
    """Drives that training must never read: the evaluation map's and those of every further set."""
    held_out = {splits.get("database"), *splits.get("queries", [])}
    for further in ("tuning", "rear"):
        if isinstance(splits.get(further), dict):
            held_out |= {splits[further].get("database"), *splits[further].get("queries", [])}
    return held_out - {None}


def _check_train_only(root: str | Path, names: Sequence[str]) -> None:
    splits = read_splits(root)
    held_out = held_out_drive_names(splits)
    bad = sorted(set(names) & held_out) + sorted(set(names) - set(splits["train"]) - held_out)
    if bad:
        raise ValueError(f"refusing to train on drives outside the train split: {bad}")


def _read_poses(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    xy = np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows], dtype=np.float64)
    heading = np.array([float(r["heading_rad"]) for r in rows], dtype=np.float64)
    stamp_s = np.array([int(r["stamp_ns"]) * 1e-9 for r in rows], dtype=np.float64)
    return xy, heading, stamp_s


def _read_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    if size is not None and bgr.shape[:2] != size:
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_label(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None or lab.ndim != 2:
        raise OSError(f"cannot read single-channel label image {path}")
    if size is not None and lab.shape[:2] != size:
        lab = cv2.resize(lab, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    if lab.max() >= SEMLOC_SIM.num_classes:
        raise ValueError(f"{path}: class id {lab.max()} outside {SEMLOC_SIM.name}")
    return lab.astype(np.uint8)


def load_train_drives(
    root: str | Path,
    names: Sequence[str] | None = None,
    rgb_size: tuple[int, int] | None = None,
    label_size: tuple[int, int] | None = None,
    rgb: bool = True,
    labels: bool = True,
    progress: bool = True,
) -> list[TrainDrive]:
    """Load train drives (all of ``splits.json['train']`` by default), images resized to ``(H, W)`` if given."""
    root = Path(root)
    names = list(names) if names is not None else train_drive_names(root)
    _check_train_only(root, names)
    drives = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name in names:
            ddir = root / "drives" / name
            info = json.loads((ddir / "drive.json").read_text())
            xy, heading, stamp_s = _read_poses(ddir / "poses.csv")
            rgb_files = sorted((ddir / "rgb").glob("*.jpg"))
            label_files = sorted((ddir / "label").glob("*.png"))
            if len(rgb_files) != len(xy) or len(label_files) != len(xy):
                raise ValueError(f"{ddir}: {len(rgb_files)} rgb, {len(label_files)} labels, {len(xy)} poses")
            rgbs = labs = None
            if rgb:
                it = pool.map(lambda p: _read_rgb(p, rgb_size), rgb_files)
                rgbs = np.stack(list(tqdm(it, total=len(rgb_files), desc=f"rgb {name}", disable=not progress)))
            if labels:
                labs = np.stack(list(pool.map(lambda p: _read_label(p, label_size), label_files)))
            drives.append(TrainDrive(name, int(info["seed"]), str(info["condition"]), rgbs, labs, xy, heading,
                                     stamp_s))
    return drives


def load_train_sets(roots: Sequence[str | Path], names: Sequence[str] | None = None,
                    **load_options) -> list[TrainDrive]:
    """:func:`load_train_drives` of several dataset roots; ``names`` (default: every train drive) are looked up in
    the train split of each root, and a name no root trains on is refused like a held-out drive."""
    trainable = {root: set(train_drive_names(root)) for root in roots}
    if names is not None and (missing := sorted(set(names) - set().union(*trainable.values()))):
        raise ValueError(f"refusing to train on drives outside the train splits: {missing}")
    drives: list[TrainDrive] = []
    for root in roots:
        wanted = None if names is None else [n for n in names if n in trainable[root]]
        if wanted == []:
            continue
        loaded = load_train_drives(root, wanted, **load_options)
        if clash := {d.map_seed for d in loaded} & {d.map_seed for d in drives}:
            raise ValueError(f"{root}: map seeds {sorted(clash)} also in another dataset (maps must be distinct)")
        drives += loaded
    return drives


@dataclass
class FrameIndex:
    """All frames of several drives as flat arrays (global index = position in the concatenation)."""

    drive: np.ndarray  # drive number per frame
    map_seed: np.ndarray
    xy: np.ndarray
    heading: np.ndarray
    offsets: np.ndarray  # first global index of each drive
    stamp_s: np.ndarray  # seconds (frame number where a drive has no stamps)

    @classmethod
    def of(cls, drives: Sequence[TrainDrive]) -> FrameIndex:
        lengths = [len(d) for d in drives]
        return cls(
            drive=np.repeat(np.arange(len(drives)), lengths),
            map_seed=np.repeat([d.map_seed for d in drives], lengths),
            xy=np.concatenate([d.xy for d in drives]),
            heading=np.concatenate([d.heading for d in drives]),
            offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            stamp_s=np.concatenate([d.stamp_s if d.stamp_s is not None else np.arange(len(d), dtype=np.float64)
                                    for d in drives]),
        )

    def __len__(self) -> int:
        return len(self.xy)


def class_pixel_frequencies(label_arrays: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Share of pixels of each class over all label images."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for labs in label_arrays:
        counts += np.bincount(labs.reshape(-1), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1.0)
