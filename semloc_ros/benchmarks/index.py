"""``index``: flat vs HNSW vs IVF-PQ on real semantic descriptors of the benchmark, replicated with small Gaussian
perturbations to 100k and 1M entries (synthetic-from-real); query latency (1 thread), recall of the exact top-5 on
held-out real queries, build and load time, resident memory; optionally the localizer node's memory with the 1M
database. Building and querying run in fresh processes (``python -m semloc_ros.benchmarks.index build|query
SPEC``) so that each reports memory figures of its own."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.benchmarks.common import (
    drive_descriptors,
    fmt_ms,
    machine_line,
    per_query_times,
    proc_status,
    semantic_pipeline,
    splits,
    stats_ms,
    write_json,
)


def index_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Real database-side descriptors (+ their lat/lon), real held-out query descriptors, and their provenance."""
    from semloc_ros.io.datasets import load_semloc_sim_drive

    split = splits(args.dataset)
    base_drives = [split["database"], *split["train"]]
    pipeline = semantic_pipeline(args.device)
    base, lat, lon = [], [], []
    for drive in base_drives:
        base.append(drive_descriptors(args.dataset, drive, pipeline, args.cache))
        frames = load_semloc_sim_drive(args.dataset, drive).frames
        lat += [frame.lat for frame in frames]
        lon += [frame.lon for frame in frames]
    queries = np.concatenate([drive_descriptors(args.dataset, drive, pipeline, args.cache)
                              for drive in split["queries"]])
    info = {"base_drives": base_drives, "query_drives": split["queries"], "model_id": pipeline.model_id}
    return np.concatenate(base), np.stack([lat, lon], axis=1), queries, info


def matched_noise_sigma(base: np.ndarray) -> tuple[float, float]:
    """Per-dimension sigma whose perturbed copy has, on average, the cosine of a real frame to its nearest
    neighbour (the median over the real frames); returns (sigma, that cosine)."""
    import faiss

    similarities, _ = faiss.knn(base, base, 2, metric=faiss.METRIC_INNER_PRODUCT)
    cosine = float(np.median(similarities[:, 1]))
    return math.sqrt((1.0 / cosine**2 - 1.0) / base.shape[1]), cosine


def synthetic_set(base: np.ndarray, count: int, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` unit rows: the real ``base`` rows first, then copies of base row ``i % len(base)`` plus
    N(0, sigma^2) noise, re-normalised. Returns (rows, source row of each)."""
    rng = np.random.default_rng(seed)
    source = np.arange(count) % len(base)
    rows = np.empty((count, base.shape[1]), dtype=np.float32)
    rows[: min(count, len(base))] = base[: min(count, len(base))]
    for start in range(len(base), count, 100_000):
        stop = min(count, start + 100_000)
        block = base[source[start:stop]] + rng.standard_normal((stop - start, base.shape[1]), np.float32) * sigma
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        rows[start:stop] = block
    return rows, source


def run_index(args: argparse.Namespace) -> int:
    import faiss

    args.cache.mkdir(parents=True, exist_ok=True)
    base, positions, queries, info = index_data(args)
    sigma, cosine = matched_noise_sigma(base) if args.noise_sigma is None else (args.noise_sigma, math.nan)
    print(f"semloc benchmark index: {machine_line()}")
    print(f"real descriptors: {len(base)} database-side frames ({', '.join(info['base_drives'])}), "
          f"{len(queries)} held-out queries ({', '.join(info['query_drives'])}); model {info['model_id']}")
    print(f"SYNTHETIC-FROM-REAL: entries beyond the {len(base)} real ones are copies of real descriptors plus "
          f"Gaussian noise (sigma {sigma:.4f} per dimension, re-normalised"
          + (f"; a copy keeps cosine ~{cosine:.3f} to its source, the median cosine of a real frame to its nearest "
             "other frame)" if not math.isnan(cosine) else ")"))
    faiss.omp_set_num_threads(1)
    results: dict[str, Any] = {"info": info, "sigma": sigma, "threshold": {}, "sizes": {}}
    if args.threshold_sizes:
        results["threshold"] = index_threshold(args, base, positions, queries, sigma, info)
    for size in args.sizes:
        rows, source = synthetic_set(base, size, sigma)
        tag = f"{size}_{sigma:.5f}_{hashlib.sha1(base.tobytes()).hexdigest()[:8]}"
        rows_path = args.cache / f"synthetic_{tag}.npy"
        truth_path = args.cache / f"truth_{tag}.npy"
        if not rows_path.is_file():
            np.save(rows_path, rows, allow_pickle=False)
            np.save(args.cache / f"synthetic_{tag}_source.npy", source, allow_pickle=False)
        if not truth_path.is_file():
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            start = time.perf_counter()
            _, truth = faiss.knn(queries, rows, 5, metric=faiss.METRIC_INNER_PRODUCT)
            print(f"  exact top-5 of {len(queries)} queries over {size} entries: {time.perf_counter() - start:.1f} s")
            np.save(truth_path, truth, allow_pickle=False)
            faiss.omp_set_num_threads(1)
        del rows
        np.save(args.cache / "queries.npy", queries, allow_pickle=False)
        np.save(args.cache / "base_positions.npy", positions, allow_pickle=False)
        print(f"\n== {size} entries ({len(base)} real + {size - len(base)} synthetic) ==")
        per_type = {}
        for index_type in args.index_types:
            if index_type == "hnsw" and size > args.hnsw_max_entries:
                print(f"  hnsw: skipped above --hnsw-max-entries {args.hnsw_max_entries}")
                continue
            spec = {"rows": str(rows_path), "truth": str(truth_path), "queries": str(args.cache / "queries.npy"),
                    "positions": str(args.cache / "base_positions.npy"),
                    "source": str(args.cache / f"synthetic_{tag}_source.npy"), "index_type": index_type,
                    "model_id": info["model_id"], "db": str(args.cache / f"index_{index_type}_{tag}.semdb"),
                    "latency_queries": args.latency_queries, "nprobe": args.nprobe,
                    "exact_candidates": args.exact_candidates,
                    "ef_search": args.ef_search,
                    "rebuild": args.rebuild}
            built = worker("build", spec)
            loaded = worker("query", spec)
            per_type[index_type] = {"build": built, "query": loaded}
            print_index_result(index_type, built, loaded)
        if args.node and "ivfpq" in per_type:
            per_type["localizer_node"] = localizer_node_memory(args, Path(per_type["ivfpq"]["build"]["db"]))
        results["sizes"][str(size)] = per_type
    write_json(args.json, "index", results)
    return 0


def index_threshold(args, base, positions, queries, sigma, info) -> dict[str, Any]:
    """Single-query latency of exact vs IVF-PQ search by database size (where "auto" should switch)."""
    import faiss

    from semloc_ros.core.database import GeoDatabase, PlaceRecord

    print("\n== exact vs IVF-PQ by size (auto threshold; 1 thread, top-5) ==")
    results = {}
    for size in args.threshold_sizes:
        rows, source = synthetic_set(base, size, sigma, seed=1)
        records = [PlaceRecord(lat=float(positions[i, 0]), lon=float(positions[i, 1])) for i in source]
        _, truth = faiss.knn(queries, rows, 5, metric=faiss.METRIC_INNER_PRODUCT)
        line = {}
        for index_type in ("flat", "ivfpq"):
            database = GeoDatabase(rows.shape[1], info["model_id"], index_type)
            start = time.perf_counter()
            database.add(rows, records)
            build_s = time.perf_counter() - start
            picks = np.random.default_rng(0).choice(len(queries), size=min(300, len(queries)), replace=False)
            latency = stats_ms(per_query_times(database, queries[picks]))
            recall = top5_recall(database.search(queries, 5)[1], truth)
            line[index_type] = {"latency": latency, "recall": recall, "build_s": build_s}
        results[str(size)] = line
        defaults = GeoDatabase(1, "m")
        print(f"  {size:>8} entries: flat {line['flat']['latency']['median']:7.3f} ms; ivfpq (nprobe "
              f"{defaults.nprobe}, exact candidates {defaults.exact_candidates}) "
              f"{line['ivfpq']['latency']['median']:7.3f} ms, recall "
              f"{100 * line['ivfpq']['recall']:5.1f} %, build {line['ivfpq']['build_s']:.1f} s")
    return results


def top5_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-5 found in the approximate top-5, averaged over queries."""
    return float(np.mean([len(set(a[:5].tolist()) & set(t[:5].tolist())) / 5.0
                          for a, t in zip(found, truth, strict=True)]))


def worker(job: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement (``build`` or ``query``) in a fresh Python process (memory figures of its own);
    returns its JSON result."""
    completed = subprocess.run([sys.executable, "-m", "semloc_ros.benchmarks.index", job, json.dumps(spec)],
                               capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {job} failed ({completed.returncode}):\n"
                           f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1])


def index_build_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build (or reuse) the database of ``spec`` and time it; prints nothing but the JSON result."""
    import faiss

    from semloc_ros.core.database import GeoDatabase, PlaceRecord

    path = Path(spec["db"])
    if path.is_file() and not spec["rebuild"]:
        return {"db": str(path), "reused": True, "file_mib": path.stat().st_size / 2**20}
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rows = np.load(spec["rows"], allow_pickle=False)
    source = np.load(spec["source"], allow_pickle=False)
    positions = np.load(spec["positions"], allow_pickle=False)
    records = [PlaceRecord(lat=float(positions[i, 0]), lon=float(positions[i, 1]), image_id=f"{i}#{n}")
               for n, i in enumerate(source.tolist())]
    before = proc_status()
    database = GeoDatabase(rows.shape[1], spec["model_id"], spec["index_type"])
    start = time.perf_counter()
    database.add(rows, records)
    build_s = time.perf_counter() - start
    after = proc_status()
    start = time.perf_counter()
    database.save(path)
    save_s = time.perf_counter() - start
    return {"db": str(path), "reused": False, "build_s": build_s, "save_s": save_s,
            "build_threads": os.cpu_count(), "active_index": database.active_index,
            "rss_growth_mib": after["VmRSS"] - before["VmRSS"], "file_mib": path.stat().st_size / 2**20}


def index_query_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the database in a fresh process (time, resident memory) and measure 1-thread queries and recall."""
    import faiss

    from semloc_ros.core.database import GeoDatabase

    faiss.omp_set_num_threads(1)
    queries = np.load(spec["queries"], allow_pickle=False)
    truth = np.load(spec["truth"], allow_pickle=False)
    before = proc_status()
    start = time.perf_counter()
    database = GeoDatabase.load(spec["db"])
    load_s = time.perf_counter() - start
    after = proc_status()
    picks = np.random.default_rng(0).choice(len(queries), size=min(spec["latency_queries"], len(queries)),
                                            replace=False)
    if database.active_index == "ivfpq":
        sweep = [{"nprobe": n, "exact_candidates": c} for c in spec["exact_candidates"] for n in spec["nprobe"]]
    elif database.active_index == "hnsw":
        sweep = [{"ef_search": value} for value in spec["ef_search"]]
    else:
        sweep = [{}]
    points = []
    for setting in sweep:
        for name, value in setting.items():
            setattr(database, name, value)
        latency = stats_ms(per_query_times(database, queries[picks]))
        recall = top5_recall(database.search(queries, 5)[1], truth)
        points.append({"setting": setting, "latency": latency, "recall": recall})
    return {"load_s": load_s, "entries": len(database), "active_index": database.active_index,
            "rss_before_mib": before["VmRSS"], "rss_after_load_mib": after["VmRSS"],
            "peak_rss_mib": after["VmHWM"], "database_rss_mib": after["VmRSS"] - before["VmRSS"],
            "points": points}


def print_index_result(index_type: str, built: dict[str, Any], loaded: dict[str, Any]) -> None:
    build = "reused file" if built.get("reused") else (
        f"build {built['build_s']:.1f} s ({built['build_threads']} threads), save {built['save_s']:.1f} s")
    print(f"  {index_type:<6} {build}; file {built['file_mib']:.0f} MiB; load {loaded['load_s']:.2f} s; "
          f"RSS after load {loaded['rss_after_load_mib']:.0f} MiB (database {loaded['database_rss_mib']:.0f} MiB, "
          f"peak {loaded['peak_rss_mib']:.0f} MiB)")
    for point in loaded["points"]:
        label = " ".join(f"{name} {value}" for name, value in point["setting"].items()) or "exact"
        print(f"         {label:<22} query {fmt_ms(point['latency'])}  recall of exact top-5 "
              f"{100 * point['recall']:6.2f} %")


def localizer_node_memory(args: argparse.Namespace, database: Path) -> dict[str, Any]:
    """Resident memory of a real localizer_node process once it has loaded ``database``."""
    from semloc_ros.ros.runner import PipelineRunner

    log_dir = args.cache / "node-memory"
    runner = PipelineRunner(overrides={"localizer_node": {"database_path": str(database)}},
                            nodes=("localizer_node",), domain_id=args.domain_id, log_dir=log_dir)
    start = time.monotonic()
    result: dict[str, Any] = {"loaded": False}
    with runner:
        log = log_dir / "localizer_node.log"
        while time.monotonic() - start < args.node_timeout_s and not runner.exited():
            if log.is_file() and " places, model " in log.read_text(errors="replace"):
                result["loaded"] = True
                result["load_s"] = time.monotonic() - start
                time.sleep(2.0)
                status = proc_status(runner.processes["localizer_node"].pid)
                result.update(rss_mib=status["VmRSS"], peak_rss_mib=status["VmHWM"])
                break
            time.sleep(0.2)
    print(f"  localizer_node with {database.name}: " + (
        f"started + loaded in {result['load_s']:.1f} s, RSS {result['rss_mib']:.0f} MiB, peak "
        f"{result['peak_rss_mib']:.0f} MiB (target <= 1536 MiB)" if result["loaded"] else "did not load in time"))
    return result


WORKERS = {"build": index_build_worker, "query": index_query_worker}

if __name__ == "__main__":  # a worker process: python -m semloc_ros.benchmarks.index build|query SPEC
    if len(sys.argv) != 3 or sys.argv[1] not in WORKERS:
        sys.exit("usage: python -m semloc_ros.benchmarks.index build|query SPEC_JSON")
    print(json.dumps(WORKERS[sys.argv[1]](json.loads(sys.argv[2]))))
