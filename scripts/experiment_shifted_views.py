#!/usr/bin/env python3
"""Experiment (issue #4, not wired into the nodes yet): a database that also holds horizontally shifted copies of
each place's label image, as seen from a slightly other lane or yaw.

    python scripts/experiment_shifted_views.py --shifts 0 -0.05 0.05 -0.1 0.1 [--dataset ROOT] [--query-stride 3]

Prints semantic Recall@1 / Recall@5 (25 m) per query drive of semloc-sim; a database frame and its shifted copies
count once in the top 5. Shifts are fractions of the image width (positive = content moves right). Choose the
shift set on the day query drive (the calibration drive of `semloc evaluate`), never on the other conditions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from semloc_ros.datasets import load_rgbs, load_semloc_sim_split
from semloc_ros.evaluation import PREDICTED_LABELS
from semloc_ros.geodesy import geodesic_distance_m
from semloc_ros.models import set_torch_threads
from semloc_ros.pipeline import Pipeline

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "semloc-sim-v1"


def shifted(labels: np.ndarray, fraction: float) -> np.ndarray:
    """``NxHxW`` labels moved right by ``fraction`` of the width, the border column repeated."""
    width = labels.shape[-1]
    columns = np.clip(np.arange(width) - round(fraction * width), 0, width - 1)
    return labels[..., columns]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0])
    parser.add_argument("--query-stride", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    database_drive, query_drives = load_semloc_sim_split(args.dataset)
    pipeline = Pipeline.from_method("semantic")
    segmenter, descriptor = pipeline.segmenter, pipeline.descriptor

    def labels_of(frames) -> np.ndarray:
        chunks = [frames[i : i + 64] for i in range(0, len(frames), 64)]
        return np.stack([lab for c in chunks for lab in PREDICTED_LABELS.labels(segmenter, c, load_rgbs(c), 16)])

    def describe(labels: np.ndarray) -> np.ndarray:
        return np.concatenate([descriptor.describe_batch(labels[i : i + 64]) for i in range(0, len(labels), 64)])

    database_labels = labels_of(database_drive.frames)
    views = np.concatenate([describe(shifted(database_labels, s)) for s in args.shifts])
    n = len(database_drive)
    lat, lon = np.tile(database_drive.lat, len(args.shifts)), np.tile(database_drive.lon, len(args.shifts))
    print(f"database: {n} places x {len(args.shifts)} views (shifts {args.shifts})")
    for drive in query_drives:
        drive = drive.subset(slice(None, None, args.query_stride))
        similarities = describe(labels_of(drive.frames)) @ views.T
        top = np.argsort(-similarities, axis=1)[:, : 5 * len(args.shifts)]
        errors = geodesic_distance_m(drive.lat[:, None], drive.lon[:, None], lat[top], lon[top])
        hits1, hits5 = [], []
        for row, row_errors in zip(top, errors, strict=True):
            places: list[int] = []
            correct = []
            for entry, error in zip(row, row_errors, strict=True):
                if entry % n not in places:
                    places.append(entry % n)
                    correct.append(error <= 25.0)
                if len(places) == 5:
                    break
            hits1.append(correct[0])
            hits5.append(any(correct))
        print(f"{drive.name}: R@1 {100 * np.mean(hits1):.1f} R@5 {100 * np.mean(hits5):.1f} ({len(drive)} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
