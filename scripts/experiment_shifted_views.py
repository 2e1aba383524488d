#!/usr/bin/env python3
"""Experiment: database views (sideways-shifted copies of each place) and label-image re-ranking.

    python scripts/experiment_shifted_views.py --shifts recommended \
        --rerank-top-k 0 20 50 100 --rerank-weight 1 2 100 [--dataset ROOT] [--query-stride 3]

Prints semantic Recall@1 / Recall@5 (25 m) per query drive of semloc-sim with a database built with these views
(`build_database(views=...)`: a frame and its shifted copies count once in the top 5), for every combination of
re-ranking depth and weight (`semloc evaluate --rerank-top-k K --rerank-weight W`; K = 0: no re-ranking). Shifts
are fractions of the image width (positive = content moves right). The database and the query descriptors are
computed once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from semloc_ros.commands.common import add_views_argument
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.core.reranking import THUMBNAIL_SHAPE
from semloc_ros.evaluation.loop import evaluate_query_descriptors
from semloc_ros.io.datasets import load_semloc_sim_split
from semloc_ros.mapping import build_database, describe_drive_frames
from semloc_ros.models import set_torch_threads
from semloc_ros.models.pipeline import Pipeline

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "semloc-sim-v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--method", default="semantic", choices=("semantic", "label-histogram", "hybrid"))
    add_views_argument(parser, "--shifts", "database views (fractions of the width)")
    parser.add_argument("--rerank-top-k", type=int, nargs="+", default=[0])
    parser.add_argument("--rerank-weight", type=float, nargs="+", default=[2.0])
    parser.add_argument("--query-stride", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    database_drive, query_drives = load_semloc_sim_split(args.dataset)
    pipeline = Pipeline.from_method(args.method)
    database = build_database(pipeline, database_drive, views=args.shifts, thumbnails=True)
    print(f"{args.method} database: {len(database_drive)} places x {len(args.shifts)} views (shifts {args.shifts})")
    queries = []
    for drive in query_drives:
        drive = drive.subset(slice(None, None, args.query_stride))
        thumbnails = np.zeros((len(drive), *THUMBNAIL_SHAPE), np.uint8)
        queries.append((drive, describe_drive_frames(pipeline, drive.frames, thumbnails_out=thumbnails), thumbnails))
    weights = {0: [0.0]}  # without re-ranking the weight does not matter
    for top_k in args.rerank_top_k:
        for weight in weights.get(top_k, args.rerank_weight):
            config = LocalizerConfig.from_parameters({"rerank_top_k": top_k, "rerank_weight": weight})
            cells = []
            for drive, descriptors, thumbnails in queries:
                result = evaluate_query_descriptors(database, drive, descriptors, localizer_config=config,
                                                    query_thumbnails=thumbnails)
                recall = result["recall_at_n_all_queries"]
                cells.append(f"{drive.condition} {recall['1']:5.1f} / {recall['5']:5.1f}")
            label = "no re-ranking" if top_k == 0 else f"top {top_k}, weight {weight:g}"
            print(f"{label:24s} R@1 / R@5: " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
