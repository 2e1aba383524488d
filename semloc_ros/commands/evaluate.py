"""``semloc evaluate --dataset ROOT --methods ... --out DIR``: retrieval and localization scores of queries.

For each method the database drive of ``ROOT/splits.json`` is described once (cached in ``DIR/cache`` by
method, drive and model id) and every query drive is retrieved against it and localized. Writes
``DIR/results.json``, prints one table row per method x condition and saves the plots (Top-1 Recall@D,
Recall@N, route maps).
``--oracle`` adds, for every label-based method, a run with the ground-truth labels in place of the segmenter
(perfect segmentation, database and queries); those rows, keys and legends are named ``<method>-oracle``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from semloc_ros.commands.build_db import DEFAULT_THREADS
from semloc_ros.datasets import DatasetError, load_semloc_sim_split
from semloc_ros.evaluation import DEFAULT_NS, DEFAULT_THRESHOLD_M, cache_name, method_label
from semloc_ros.pipeline import METHODS

DEMO_DATASET = Path(__file__).resolve().parent.parent / "data" / "demo"
LABEL_METHODS = ("semantic", "hybrid", "label-histogram")  # methods whose input includes a label image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc evaluate",
        description="Score retrieval (Recall@N, Top-1 Recall@D) and localization of the query drives of a "
        "semloc-sim dataset against its database drive.",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=DEMO_DATASET,
        help="semloc-sim root with splits.json (default: the embedded demo data)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to score")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score each label-based method with ground-truth labels (rows '<method>-oracle')",
    )
    parser.add_argument(
        "--threshold-m",
        type=float,
        default=DEFAULT_THRESHOLD_M,
        help="a retrieved place is correct within this distance (Recall@N)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.json, plots, cache)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="database cache (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true", help="always rebuild the databases")
    parser.add_argument("--queries", nargs="+", default=None, help="only these query drives (names)")
    parser.add_argument("--query-stride", type=int, default=1, help="use every k-th query frame")
    parser.add_argument("--top-k", type=int, default=10, help="localizer top-k")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch")
    parser.add_argument(
        "--untrained-ok",
        action="store_true",
        help="use randomly initialised networks when trained weights are missing (smoke tests)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None, recursively, so the file is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(data: Any, path: Path) -> None:
    """Write strict JSON to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as stream:
            json.dump(_jsonable(data), stream, indent=1, allow_nan=False)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per method x condition: recall (all queries), top-1 within D, localizer error, #no positive."""
    ns = [str(n) for n in DEFAULT_NS]
    header = [
        "method",
        "condition",
        *(f"R@{n}" for n in ns),
        "top1<=2m",
        "top1<=5m",
        "top1<=10m",
        "loc_med_m",
        "loc_p95_m",
        "no_pos",
    ]
    rows = [header]
    for r in results:
        recall = r["recall_at_n_all_queries"]
        top1, loc = r["top1_error_m"], r["localization_error_m"]
        rows.append(
            [
                r["method"],
                r["condition"],
                *(_fmt(recall.get(n)) for n in ns),
                _fmt(top1["within_2m"]),
                _fmt(top1["within_5m"]),
                _fmt(top1["within_10m"]),
                _fmt(loc["median"], 2),
                _fmt(loc["p95"], 2),
                f"{r['n_queries_without_positive']}/{r['n_queries']}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.database import DatabaseError, GeoDatabase
    from semloc_ros.evaluation import build_database, evaluate_method
    from semloc_ros.localizer import LocalizerConfig
    from semloc_ros.models import set_torch_threads
    from semloc_ros.pipeline import Pipeline

    if args.query_stride < 1 or args.threads < 1 or args.batch_size < 1 or args.threshold_m <= 0:
        print(
            "semloc evaluate: --query-stride, --threads, --batch-size and --threshold-m must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        database_drive, query_drives = load_semloc_sim_split(args.dataset)
    except (DatasetError, OSError, KeyError) as error:
        print(f"semloc evaluate: cannot read dataset {args.dataset}: {error}", file=sys.stderr)
        return 2
    if args.queries:
        unknown = sorted(set(args.queries) - {d.name for d in query_drives})
        if unknown:
            print(f"semloc evaluate: unknown query drive(s) {unknown}", file=sys.stderr)
            return 2
        query_drives = [d for d in query_drives if d.name in args.queries]
    query_drives = [d.subset(slice(None, None, args.query_stride)) for d in query_drives]
    database_drive = database_drive.drop_invalid_gps()
    if args.oracle and not (database_drive.has_labels and all(d.has_labels for d in query_drives)):
        print("semloc evaluate: --oracle needs ground-truth labels for every frame", file=sys.stderr)
        return 2

    set_torch_threads(args.threads)
    cache_dir = args.cache_dir or args.out / "cache"
    localizer_config = LocalizerConfig(top_k=args.top_k)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    for method in args.methods:
        pipeline = Pipeline.from_method(method, device=args.device, untrained_ok=args.untrained_ok)
        uses_labels = getattr(pipeline, "needs_labels", method in LABEL_METHODS)
        for oracle in (False, True) if args.oracle and uses_labels else (False,):
            label = method_label(method, oracle)
            cache_path = cache_dir / cache_name(method, oracle, database_drive, pipeline)
            database = None
            if not args.no_cache and cache_path.is_file():
                try:
                    database = GeoDatabase.load(cache_path, expected_model_id=pipeline.model_id)
                except DatabaseError as error:
                    print(f"{label}: ignoring cache {cache_path}: {error}")
                if database is not None and len(database) != len(database_drive):
                    database = None
            if database is None:
                database = build_database(
                    pipeline,
                    database_drive,
                    oracle=oracle,
                    batch_size=args.batch_size,
                    progress=not args.quiet,
                )
                if not args.no_cache:
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    database.save(cache_path)
            else:
                print(f"{label}: database from cache {cache_path}")
            per_drive = evaluate_method(
                pipeline,
                database_drive,
                query_drives,
                method=method,
                oracle=oracle,
                threshold_m=args.threshold_m,
                database=database,
                localizer_config=localizer_config,
                batch_size=args.batch_size,
                progress=not args.quiet,
            )
            results.extend(per_drive.values())

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "dataset": str(args.dataset),
        "database_drive": database_drive.name,
        "n_database": len(database_drive),
        "threshold_m": args.threshold_m,
        "query_stride": args.query_stride,
        "localizer": vars(localizer_config),
        "oracle_note": "methods named '<method>-oracle' use ground-truth labels instead of the segmenter",
        "recall_note": "percent; 'all_queries' counts queries without a positive as failures, "
        "'queries_with_positive' leaves them out",
        "results": results,
    }
    write_json_atomic(summary, args.out / "results.json")
    print(format_table(results))
    print(
        f"\nR@N over all queries (queries without a database entry within {args.threshold_m:g} m count as "
        f"failures; 'no_pos' = how many). {time.perf_counter() - start:.0f} s. "
        f"Results: {args.out / 'results.json'}"
    )

    if not args.no_plots:
        from semloc_ros.plots import plot_recall_at_n, plot_route_map, plot_top1_recall_at_distances

        plot_top1_recall_at_distances(results, args.out / "top1_recall_at_distance.png")
        plot_recall_at_n(results, args.out / "recall_at_n.png")
        plot_recall_at_n(
            results,
            args.out / "recall_at_n_queries_with_positive.png",
            key="recall_at_n_queries_with_positive",
            title="Recall@N (queries with a positive)",
        )
        for r in results:
            plot_route_map(
                r,
                database_drive.lat,
                database_drive.lon,
                args.out / "routes" / f"route_{r['method']}_{r['query_drive']}.png",
            )
        print(f"plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
