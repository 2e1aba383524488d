#!/usr/bin/env python3
"""Experiment (issue #4): choose the database views (sideways-shifted copies of each place, `build-db --views`).

    python scripts/experiment_shifted_views.py --shifts 0 -0.05 0.05 -0.1 0.1 [--dataset ROOT] [--query-stride 3]

Prints semantic Recall@1 / Recall@5 (25 m) per query drive of semloc-sim with a database built with these views
(`build_database(views=...)`: a frame and its shifted copies count once in the top 5). Shifts are fractions of
the image width (positive = content moves right). Choose the set on the day query drive (the calibration drive of
`semloc evaluate`), never on the other conditions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semloc_ros.datasets import load_semloc_sim_split
from semloc_ros.evaluation import build_database, describe_drive_frames, evaluate_query_descriptors
from semloc_ros.models import set_torch_threads
from semloc_ros.pipeline import Pipeline

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "semloc-sim-v1"


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
    database = build_database(pipeline, database_drive, views=args.shifts)  # Recall@N counts distinct places
    print(f"database: {len(database_drive)} places x {len(args.shifts)} views (shifts {args.shifts})")
    for drive in query_drives:
        drive = drive.subset(slice(None, None, args.query_stride))
        result = evaluate_query_descriptors(database, drive, describe_drive_frames(pipeline, drive.frames))
        recall = result["recall_at_n_all_queries"]
        print(f"{drive.name}: R@1 {recall['1']:.1f} R@5 {recall['5']:.1f} ({len(drive)} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
