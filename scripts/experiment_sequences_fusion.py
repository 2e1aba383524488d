#!/usr/bin/env python3
"""Experiment: what sequences and a label-histogram fusion add to the semantic descriptor, on a tuning map.

    python scripts/experiment_sequences_fusion.py [--dataset ../semloc-sim-v2/sets/tuning] [--json OUT.json]

Run on the held-out tuning map of semloc-sim-v2 (never on the evaluation map), descriptor alone (one database
view, no re-ranking, predicted labels), Recall@1 at ``--threshold-m``:

1. Describe the database drive and every query drive with the semantic descriptor and the label histogram
   (cached in ``--cache-dir`` like ``semloc evaluate``).
2. Single frame: the best database frame by cosine similarity.
3. Fusion: ``w * cos_semantic + (1 - w) * cos_histogram`` for each ``--fusion-weights`` w (the dot product of
   the two L2-normalised descriptors concatenated with weights ``sqrt(w)``, ``sqrt(1 - w)``: one index).
4. Sequences (SeqSLAM-style, an upper reference for a sequence filter without odometry): each similarity row is
   standardised (mean 0, std 1 over the database), then the score of database frame d for query q is the best
   mean over the last L queries along a straight line ``(q - k, d - round(k * v))`` for the speed ratios v of
   ``--speed-ratios``; L from ``--sequence-lengths`` (the first L - 1 queries use the frames they have).
The figures are printed and, with ``--json``, written for scripts/results_tables.py (``<!-- experiment: -->``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semloc_ros.core.geodesy import geodesic_distance_m  # noqa: E402
from semloc_ros.evaluation.described import describe_cached  # noqa: E402
from semloc_ros.io.datasets import Drive, load_semloc_sim_split  # noqa: E402
from semloc_ros.models import set_torch_threads  # noqa: E402
from semloc_ros.models.pipeline import Pipeline  # noqa: E402

METHODS = ("semantic", "label-histogram")
DEFAULT_DATASET = ROOT.parent / "semloc-sim-v2" / "sets" / "tuning"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="semloc-sim root (splits.json)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/semloc_eval_cache"))
    parser.add_argument("--fusion-weights", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--sequence-lengths", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--speed-ratios", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.25])
    parser.add_argument("--threshold-m", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser


def distances_m(queries: Drive, database: Drive) -> np.ndarray:
    """(queries, database) geodesic distances in metres."""
    return geodesic_distance_m(queries.lat[:, None], queries.lon[:, None], database.lat[None], database.lon[None])


def sequence_scores(similarity: np.ndarray, length: int, speed_ratios: list[float]) -> np.ndarray:
    """Step 4: the sequence score of every (query, database frame) pair."""
    standard = (similarity - similarity.mean(1, keepdims=True)) / (similarity.std(1, keepdims=True) + 1e-9)
    queries, places = standard.shape
    best = np.full(standard.shape, -np.inf)
    for ratio in speed_ratios:
        total, count = np.zeros(standard.shape), np.zeros(standard.shape)
        for k in range(length):
            shift = round(k * ratio)
            if k >= queries or shift >= places:
                break
            total[k:, shift:] += standard[: queries - k, : places - shift]
            count[k:, shift:] += 1
        best = np.maximum(best, total / np.maximum(count, 1))
    return best


def recall_at_1(scores: np.ndarray, distances: np.ndarray, threshold_m: float) -> float:
    """Share (%) of queries whose best-scored database frame lies within ``threshold_m``."""
    best = scores.argmax(axis=1)
    return float(np.mean(distances[np.arange(len(best)), best] <= threshold_m) * 100)


def drive_rows(similarity: dict[str, np.ndarray], distances: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Steps 2-4 for one query drive: a row per method (and per fusion weight)."""
    candidates = dict(similarity)
    for weight in args.fusion_weights:  # step 3
        candidates[f"fusion w={weight:g}"] = weight * similarity["semantic"] + (1 - weight) * similarity[
            "label-histogram"]
    rows = []
    for name, scores in candidates.items():
        row = {"method": name, "single": recall_at_1(scores, distances, args.threshold_m)}
        for length in args.sequence_lengths:  # step 4
            row[f"sequence {length}"] = recall_at_1(sequence_scores(scores, length, args.speed_ratios), distances,
                                                    args.threshold_m)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict:
    set_torch_threads(args.threads)
    database_drive, query_drives = load_semloc_sim_split(args.dataset)
    pipelines = {method: Pipeline.from_method(method, device="cpu") for method in METHODS}
    database = {m: describe_cached(p, database_drive, args.cache_dir, m) for m, p in pipelines.items()}  # step 1
    results = []
    for drive in query_drives:
        queries = {m: describe_cached(p, drive, args.cache_dir, m) for m, p in pipelines.items()}
        similarity = {m: queries[m].descriptors @ database[m].descriptors.T for m in METHODS}
        distances = distances_m(queries["semantic"].drive, database["semantic"].drive)
        for row in drive_rows(similarity, distances, args):
            results.append({"drive": drive.name, **row})
            print(" | ".join([drive.name] + [f"{k} {v:.1f}" if isinstance(v, float) else v for k, v in row.items()]),
                  flush=True)
    columns = ["single"] + [f"sequence {length}" for length in args.sequence_lengths]
    dataset = args.dataset.resolve()
    shown = dataset.relative_to(ROOT.parent) if dataset.is_relative_to(ROOT.parent) else dataset
    return {"experiment": "sequences-fusion", "dataset": str(shown), "database": database_drive.name,
            "threshold_m": args.threshold_m, "columns": columns, "rows": results}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.dataset / "splits.json").is_file():
        print(f"error: no splits.json in {args.dataset} (scripts/render_sim_v2.sh renders semloc-sim-v2)",
              file=sys.stderr)
        return 2
    summary = run(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
