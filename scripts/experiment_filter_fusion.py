#!/usr/bin/env python3
"""Experiment: which descriptor the sequence filter should run on (semantic, label histogram or their fusion),
chosen on TRAINING maps with the shipped configuration.

    python scripts/experiment_filter_fusion.py --dataset ROOT [--dataset ROOT2 ...] [--out DIR]
                                               [--fusion-weights 1 0.75 0.5 0.25 0]

1. Training maps as scripts/fit_sequence_filter.py takes them (every ``--query-stride``-th frame of every training
   query drive, each against its own map); the shipped localizer configuration of ``--config`` (views,
   re-ranking, the filter's values), descriptors of both methods cached in ``--cache-dir``.
2. Fusion weight w: database and queries described by ``[sqrt(w) * semantic, sqrt(1 - w) * histogram]`` (both
   L2-normalised), whose inner product is ``w * cos_semantic + (1 - w) * cos_histogram``; w = 1 is the shipped
   semantic descriptor, w = 0 the label histogram (with the filter values chosen for the semantic one).
3. Recall@1 at ``--threshold-m`` per drive, single frame and filtered; the mean over the drives decides.
``DIR/results.json`` for scripts/results_tables.py (``<!-- experiment: -->``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semloc_ros.core.database import GeoDatabase  # noqa: E402
from semloc_ros.evaluation.calibration import FilterDrive  # noqa: E402
from semloc_ros.evaluation.uncertainty_study import (  # noqa: E402
    Described,
    add_fit_arguments,
    read_localizer_config,
    timed_study,
    training_maps,
)

METHODS = ("semantic", "label-histogram")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fit_arguments(parser, ROOT / "config" / "semloc.yaml")
    parser.add_argument("--fusion-weights", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.0],
                        help="weights w of the semantic cosine (1: semantic alone, 0: label histogram alone)")
    parser.add_argument("--query-stride", type=int, default=3, help="every Nth query frame (as semloc evaluate)")
    return parser


def fused(semantic: np.ndarray, histogram: np.ndarray, weight: float) -> np.ndarray:
    """Step 2: ``[sqrt(w) * semantic, sqrt(1 - w) * histogram]`` of L2-normalised rows."""
    def unit(rows: np.ndarray) -> np.ndarray:
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    return np.hstack([np.sqrt(weight) * unit(semantic), np.sqrt(1.0 - weight) * unit(histogram)]).astype(np.float32)


def fused_database(semantic: GeoDatabase, histogram: GeoDatabase, weight: float) -> GeoDatabase:
    """Step 2 for a map: the semantic database's places and thumbnails with fused descriptors."""
    if len(semantic) != len(histogram) or not np.array_equal(semantic.image_ids, histogram.image_ids):
        raise ValueError("the two methods' databases hold different places")
    descriptors = fused(semantic.descriptors, histogram.descriptors, weight)
    database = GeoDatabase(descriptors.shape[1], f"fusion(w={weight:g})", views=semantic.views,
                           camera_yaw_deg=semantic.camera_yaw_deg)
    database.add(descriptors, [semantic.record(i) for i in range(len(semantic))], semantic.thumbnails)
    return database


def run(args: argparse.Namespace) -> dict:
    """Steps 1-3."""
    from semloc_ros.models.pipeline import Pipeline

    filtered = read_localizer_config(args.config).with_parameters(sequence_filter=True)
    configs = {"single": filtered.with_parameters(sequence_filter=False), "filtered": filtered}
    described = {m: Described(Pipeline.from_method(m, device="cpu"), m, args.cache_dir, args.database_views)
                 for m in METHODS}
    columns = [f"w={weight:g} {mode}" for weight in args.fusion_weights for mode in configs]
    rows = []
    for role in training_maps(args.dataset):
        databases = [described[m].database(role.database) for m in METHODS]
        for query in role.queries:
            frames = [described[m].drive(query).subset(slice(None, None, args.query_stride)) for m in METHODS]
            row = {"drive": query.name, "method": "training map"}
            for weight in args.fusion_weights:
                case = FilterDrive(fused_database(*databases, weight), frames[0].drive,
                                   fused(frames[0].descriptors, frames[1].descriptors, weight), frames[0].thumbnails)
                row.update({f"w={weight:g} {mode}": case.metrics(config, args.threshold_m)["localization_recall_at_1"]
                            for mode, config in configs.items()})
            rows.append(row)
            print(" | ".join([query.name] + [f"{c} {row[c]:.1f}" for c in columns]), flush=True)
    rows.append({"drive": "mean of the training drives", "method": "training maps",  # step 3
                 **{c: float(np.mean([r[c] for r in rows])) for c in columns}})
    return {"experiment": "filter-fusion", "dataset": [str(root) for root in args.dataset],
            "database": "each drive's own map", "threshold_m": args.threshold_m, "query_stride": args.query_stride,
            "columns": columns, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.write_config is not None:
        print("experiment_filter_fusion: an experiment writes no parameters (--write-config)", file=sys.stderr)
        return 2
    if not all(0.0 <= weight <= 1.0 for weight in args.fusion_weights):
        print(f"experiment_filter_fusion: --fusion-weights must lie in [0, 1], got {args.fusion_weights}",
              file=sys.stderr)
        return 2
    from semloc_ros.models import set_torch_threads

    set_torch_threads(args.threads)
    study = timed_study("experiment_filter_fusion", lambda: run(args), args.out)
    if study is None:
        return 2
    print("mean: " + ", ".join(f"{c} {v:.1f}" for c, v in study["rows"][-1].items() if c in study["columns"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
