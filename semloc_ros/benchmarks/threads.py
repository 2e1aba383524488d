"""``threads``: segmentation and descriptor latency with 1 and 2 torch threads, the other core idle or busy (a
busy-loop process), and FAISS search with as many OpenMP threads: how the nodes' default ``threads`` was chosen."""

from __future__ import annotations

import argparse
import time

import numpy as np

from semloc_ros.benchmarks.common import (
    busy_core,
    drive_database,
    fmt_ms,
    load_frames,
    machine_line,
    per_query_times,
    semantic_pipeline,
    splits,
    stats_ms,
    write_json,
)


def run_threads(args: argparse.Namespace) -> int:
    import faiss
    import torch

    from semloc_ros.core.database import GeoDatabase

    pipeline = semantic_pipeline(args.device)
    segmenter, semantic = pipeline.segmenter, pipeline.descriptor
    frames = load_frames(args.dataset, args.drive, args.frames, stride=11)
    labels = [segmenter.predict(rgb) for rgb in frames]
    queries = semantic.describe_batch(np.stack(labels))
    maps = {"search_map": drive_database(args.dataset, splits(args.dataset)["database"], pipeline, args.cache)}
    if args.index_db is not None:
        maps["search_big"] = GeoDatabase.load(args.index_db)
    print(f"semloc benchmark threads: {machine_line()}")
    print(f"{len(frames)} frames of {args.drive}, {args.repeats} rounds (the conditions alternate every round); "
          "torch threads for segmentation/descriptor, FAISS OpenMP threads for search (top-10, one query): "
          + ", ".join(f"{name} = {len(database)} entries, {database.active_index}" for name, database in maps.items()))
    samples: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.repeats):
        for busy in (False, True):
            with busy_core(busy):
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    segmenter.predict(frames[0])
                    semantic.describe(labels[0])
                    other = "busy" if busy else "idle"
                    for rgb, label in zip(frames, labels, strict=True):
                        start = time.perf_counter()
                        segmenter.predict(rgb)
                        middle = time.perf_counter()
                        semantic.describe(label)
                        end = time.perf_counter()
                        samples.setdefault(("segmentation", threads, other), []).append(middle - start)
                        samples.setdefault(("descriptor", threads, other), []).append(end - middle)
                    faiss.omp_set_num_threads(threads)
                    for name, database in maps.items():
                        samples.setdefault((name, threads, other), []).extend(
                            per_query_times(database, queries, k=10))
    faiss.omp_set_num_threads(1)
    results = {}
    print(f"  {'stage':<13} {'threads':>7} {'other core':>10}")
    for key in sorted(samples):
        stats = stats_ms(samples[key])
        results["/".join(map(str, key))] = stats
        print(f"  {key[0]:<13} {key[1]:>7} {key[2]:>10}   {fmt_ms(stats)}")
    write_json(args.json, "threads", results)
    return 0
