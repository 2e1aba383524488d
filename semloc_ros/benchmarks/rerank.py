"""``rerank``: label re-ranking of one query's shortlist on one thread, the bit-packed alignment against the per-shift
reference, on the same thumbnails in the same run.

1. Thumbnails (60x80) of the ground-truth label images of the database drive and of a query drive.
2. Each query's shortlist: the ``top_k`` database places nearest to it (the similar places a retrieval returns).
3. Per round, each implementation over all queries in turn (the order alternating between rounds, so neither
   always runs in the caches and time slice the other left): time :func:`alignment_scores` and
   :func:`alignment_scores_reference` on each query and its shortlist (the candidates' gather included), wall
   clock and the thread's CPU time (what a loaded machine inflates less), and check that both give the same
   scores and shifts.
4. Print medians, p95, minima and the ratios of the medians reference / bit-packed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from semloc_ros.benchmarks.common import fmt_ms, machine_line, splits, stats_ms, write_json


def drive_thumbnails(dataset, drive: str, frame, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: ``(thumbnails, east/north in frame)`` of ``count`` evenly spaced frames of a drive (all: None)."""
    from semloc_ros.core.reranking import label_thumbnail
    from semloc_ros.io.datasets import load_label_images, load_semloc_sim_drive

    loaded = load_semloc_sim_drive(dataset, drive)
    if count is not None:
        loaded = loaded.subset(np.linspace(0, len(loaded) - 1, count).astype(int).tolist())
    positions = loaded.positions_enu(frame)[:, :2]
    return label_thumbnail(np.stack(load_label_images(loaded.frames))), positions


def run_rerank(args: argparse.Namespace) -> int:
    from semloc_ros.core.geodesy import LocalENU
    from semloc_ros.core.reranking import RerankConfig, alignment_scores, alignment_scores_reference
    from semloc_ros.io.datasets import load_semloc_sim_drive

    config = RerankConfig(top_k=args.top_k)
    database_drive = splits(args.dataset)["database"]
    origin = load_semloc_sim_drive(args.dataset, database_drive)[0]
    frame = LocalENU(origin.lat, origin.lon)
    database, db_positions = drive_thumbnails(args.dataset, database_drive, frame)
    queries, q_positions = drive_thumbnails(args.dataset, args.drive, frame, args.queries)
    print(f"semloc benchmark rerank: {machine_line()}")
    print(f"{len(queries)} queries of {args.drive} x {args.repeats} rounds, top {config.top_k} of "
          f"{len(database)} database thumbnails {database.shape[1]}x{database.shape[2]}, "
          f"{len(config.shifts_px(database.shape[2]))} shifts; numpy on one thread")
    implementations = {"bit-packed": alignment_scores, "reference": alignment_scores_reference}
    times: dict[str, list[float]] = {name: [] for name in implementations}
    cpu_times: dict[str, list[float]] = {name: [] for name in implementations}
    for align in implementations.values():  # warm-up (first-call allocations)
        align(queries[0], database[: config.top_k], config)
    shortlists = [np.argsort(np.linalg.norm(db_positions - position, axis=1))[: config.top_k]  # step 2
                  for position in q_positions]
    outputs: dict[str, list] = {}
    for round_index in range(args.repeats):
        names = list(implementations)[:: 1 if round_index % 2 == 0 else -1]
        for name in names:  # step 3
            outputs[name] = []
            for query, shortlist in zip(queries, shortlists, strict=True):
                start, start_cpu = time.perf_counter(), time.thread_time()
                outputs[name].append(implementations[name](query, database[shortlist], config))
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.thread_time() - start_cpu)
    identical = all(np.array_equal(a, b) for pair in zip(*outputs.values(), strict=True)
                    for a, b in zip(*pair, strict=True))
    results: dict[str, Any] = {}
    for name in implementations:  # step 4
        results[name] = stats_ms(times[name])
        results[name]["min"] = 1e3 * min(times[name])  # the least disturbed call: the cost on a free core
        results[name]["cpu"] = stats_ms(cpu_times[name])
        print(f"  {name:<12} {fmt_ms(results[name])}  min {results[name]['min']:8.2f} ms  "
              f"CPU median {results[name]['cpu']['median']:8.2f} ms")
    results["ratio"] = results["reference"]["median"] / results["bit-packed"]["median"]
    results["cpu_ratio"] = results["reference"]["cpu"]["median"] / results["bit-packed"]["cpu"]["median"]
    results["identical"] = bool(identical)
    print(f"  ratio reference / bit-packed: {results['ratio']:.1f}x (CPU time {results['cpu_ratio']:.1f}x); "
          f"scores and shifts identical: {identical}")
    write_json(args.json, "rerank", results)
    return 0 if identical else 1
