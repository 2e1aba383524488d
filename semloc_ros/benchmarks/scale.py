"""``ray`` and ``tiles``: building past one process, localizing with a map too big to load.

- ``ray``: the frames of the benchmark bag described on a loopback Ray cluster with 1 and with 2 worker
  processes (one torch thread each), images/s of the describing (cluster start-up timed apart), ratio of the two
  in the same run; both maps are checked equal to each other.
- ``tiles``: a tiled map of ``--entries`` synthetic places (random unit descriptors, a grid of roads, one place
  every ``--spacing-m``), built once and cached; a fresh process then opens it with a :class:`TiledLocalizer`
  given a GNSS prior and reports its resident memory with the tiles around the vehicle loaded, the query time,
  the time to switch tiles while driving across a border, and a cold-start search of every tile.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.benchmarks.build import write_benchmark_bag
from semloc_ros.benchmarks.common import machine_line, proc_status, stats_ms, write_json

ORIGIN = (48.10, 11.50)


def run_ray(args: argparse.Namespace) -> int:
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.distributed import PipelineSpec, build_on_ray, connect
    from semloc_ros.io.datasets import load_drive
    from semloc_ros.models.pipeline import Pipeline

    args.cache.mkdir(parents=True, exist_ok=True)
    bag = write_benchmark_bag(args.dataset, args.drive, args.frames, args.cache / f"bag_{args.drive}_{args.frames}_raw",
                              False)
    drive = load_drive(str(bag)).drop_invalid_gps()
    spec = PipelineSpec("semantic", batch_size=args.batch_size)
    pipeline = Pipeline.from_method("semantic", device="cpu")
    print(f"semloc benchmark ray: {machine_line()}")
    print(f"bag {bag} ({len(drive)} frames, 240x320); tasks of {args.chunk_frames} frames; loopback cluster per "
          f"worker count; {args.repeats} round(s); images/s of the describing (workers warmed up by one round)")
    results: dict[str, Any] = {"images_per_s": {}, "cluster_start_s": {}}
    maps = {}
    for workers in args.workers:
        start = time.perf_counter()
        with connect("auto", workers) as ray:
            results["cluster_start_s"][workers] = time.perf_counter() - start
            rates = []
            for round_number in range(args.repeats + 1):
                database = GeoDatabase(pipeline.dimension, pipeline.model_id)
                begin = time.perf_counter()
                build_on_ray(ray, spec, pipeline, [drive], database, chunk_frames=args.chunk_frames, progress=False)
                if round_number:  # round 0 loads the models in every worker
                    rates.append(len(drive) / (time.perf_counter() - begin))
            maps[workers] = np.array(database.descriptors)
        results["images_per_s"][workers] = float(np.median(rates))
        rounds = ", ".join(f"{rate:.1f}" for rate in rates)
        print(f"  {workers} worker(s): {np.median(rates):6.1f} images/s (median; rounds: {rounds}); cluster start "
              f"{results['cluster_start_s'][workers]:.1f} s")
    first, *others = args.workers
    for workers in others:
        ratio = results["images_per_s"][workers] / results["images_per_s"][first]
        results[f"speedup_{workers}_vs_{first}"] = ratio
        same = np.array_equal(maps[workers], maps[first])
        print(f"  {workers} vs {first} worker(s): {ratio:.2f}x; descriptors identical: {same}")
    write_json(args.json, "ray", results)
    return 0


def _road_layout(entries: int, spacing_m: float) -> tuple[np.ndarray, np.ndarray, int]:
    """East/north (m) of ``entries`` places on a square grid of roads 200 m apart, and the places per road."""
    side = math.sqrt(entries * spacing_m * 200.0)
    along = np.arange(0.0, side, spacing_m)
    roads = int(side // 200.0) + 1
    east = np.concatenate([np.concatenate([along, np.full(len(along), 200.0 * r)]) for r in range(roads)])
    north = np.concatenate([np.concatenate([np.full(len(along), 200.0 * r), along]) for r in range(roads)])
    return east[:entries], north[:entries], len(along)


def _raw_descriptors(start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the synthetic descriptors (before normalisation), generated in blocks of 10k."""
    blocks = [np.random.default_rng(block).standard_normal((10_000, 256), dtype=np.float32)
              for block in range(start // 10_000, (stop - 1) // 10_000 + 1)]
    offset = (start // 10_000) * 10_000
    return np.concatenate(blocks)[start - offset : stop - offset]


def synthetic_tiled_map(folder: Path, entries: int, spacing_m: float, tile_size_m: float) -> Path:
    """A tiled map of ``entries`` places on a grid of roads (cached in ``folder``)."""
    from semloc_ros.core.database import GeoDatabase, PlaceRecord
    from semloc_ros.core.geodesy import LocalENU
    from semloc_ros.core.tiles import TiledMap, is_tiled_map

    if is_tiled_map(folder) and TiledMap.open(folder).count == entries:
        return folder
    east, north, _ = _road_layout(entries, spacing_m)
    lat, lon, _ = LocalENU(*ORIGIN).to_geodetic(east, north)
    database = GeoDatabase(256, "synthetic-256")
    for start in range(0, entries, 10_000):
        stop = min(entries, start + 10_000)
        database.add(_raw_descriptors(start, stop),
                     [PlaceRecord(float(lat[i]), float(lon[i]), image_id=f"s{i}") for i in range(start, stop)])
    TiledMap.create(folder, database, tile_size_m)
    return folder


def route_queries(path: Path, entries: int, spacing_m: float, route_m: float, step_m: float) -> Path:
    """Queries along the first road (east, from the origin): map descriptors plus noise, with their positions."""
    from semloc_ros.core.geodesy import LocalENU

    east, north, per_road = _road_layout(entries, spacing_m)
    rows = np.arange(0, min(per_road, int(route_m / spacing_m)), max(1, int(step_m / spacing_m)))
    noise = 0.05 * np.random.default_rng(99).standard_normal((len(rows), 256), dtype=np.float32)
    lat, lon, _ = LocalENU(*ORIGIN).to_geodetic(east[rows], north[rows])
    np.savez(path, descriptors=_raw_descriptors(0, int(rows[-1]) + 1)[rows] + noise, lat=lat, lon=lon)
    return path


def run_tiles(args: argparse.Namespace) -> int:
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = args.cache / f"tiled_{args.entries}_{args.tile_size_m:g}m"
    print(f"semloc benchmark tiles: {machine_line()}")
    start = time.perf_counter()
    synthetic_tiled_map(folder, args.entries, args.spacing_m, args.tile_size_m)
    manifest = json.loads((folder / "tiles.json").read_text())
    sizes = [tile["count"] for tile in manifest["tiles"].values()]
    print(f"map {folder}: {manifest['count']} entries in {len(sizes)} tiles of {args.tile_size_m:g} m "
          f"(median {np.median(sizes):.0f}, max {max(sizes)} entries), index {manifest['index']['type']}; "
          f"ready in {time.perf_counter() - start:.0f} s")
    queries = route_queries(args.cache / "tiles_route.npz", args.entries, args.spacing_m, args.route_m, 10.0)
    measured = subprocess.run([sys.executable, "-c", "from semloc_ros.benchmarks.scale import vehicle_probe; "
                               f"vehicle_probe({str(folder)!r}, {str(queries)!r}, {args.radius_m!r})"],
                              capture_output=True, text=True, check=True)
    results = json.loads(measured.stdout.strip().splitlines()[-1])
    results["tiles"], results["entries"] = len(sizes), manifest["count"]
    print(f"  fresh process, imports done: RSS {results['rss_start_mib']:.0f} MiB")
    print(f"  tiles around the vehicle loaded ({results['loaded_tiles']} tiles, {results['loaded_entries']} "
          f"entries, radius {args.radius_m:g} m): RSS {results['rss_loaded_mib']:.0f} MiB, peak "
          f"{results['rss_peak_mib']:.0f} MiB (target <= 300)")
    print(f"  query (localize, 1 thread): median {results['query_ms']['median']:.2f} ms, p95 "
          f"{results['query_ms']['p95']:.2f} ms")
    print(f"  tile switch (load, view, localizer; off the query thread): median {results['switch_ms']['median']:.0f}"
          f" ms over {results['switches']} switches; fixes missed while driving across: {results['missed']}")
    print(f"  cold start, every tile searched one at a time: {results['cold_start_s']:.1f} s; RSS after "
          f"{results['rss_after_search_mib']:.0f} MiB")
    write_json(args.json, "tiles", results)
    return 0


def vehicle_probe(folder: str, queries: str, radius_m: float) -> None:
    """In a fresh process: memory, query and switch times of a :class:`TiledLocalizer` (prints one JSON line)."""
    import faiss

    from semloc_ros.core.geodesy import geodesic_distance_m
    from semloc_ros.core.localizer import FixStatus, LocalizerConfig
    from semloc_ros.core.tile_cache import TileCacheConfig, TiledLocalizer
    from semloc_ros.core.tiles import TiledMap

    faiss.omp_set_num_threads(1)
    out: dict[str, Any] = {"rss_start_mib": proc_status()["VmRSS"]}
    with np.load(queries) as route:
        descriptors, lat, lon = route["descriptors"], route["lat"], route["lon"]
    tiled = TiledMap.open(folder)
    config = LocalizerConfig(min_similarity=0.8, sequence_filter=False)  # tile search of unstamped queries
    located = TiledLocalizer(tiled, config, TileCacheConfig(radius_m=radius_m, keep_radius_m=1.5 * radius_m))
    located.set_prior(float(lat[0]), float(lon[0]))
    located.cache.wait_idle(600)
    out["rss_loaded_mib"] = proc_status()["VmRSS"]
    out["loaded_tiles"], out["loaded_entries"] = len(located.cache.current.view.keys), len(located.cache.current.view)
    located.clear_prior()
    times, switches, missed, errors = [], [], 0, []
    for descriptor, true_lat, true_lon in zip(descriptors, lat, lon, strict=True):
        begin = time.perf_counter()
        estimate = located.localize(descriptor)
        times.append(time.perf_counter() - begin)
        missed += estimate.status is not FixStatus.FIX
        errors.append(float(geodesic_distance_m(estimate.lat, estimate.lon, true_lat, true_lon)))
        before = located.cache.stats.switches
        located.cache.wait_idle(600)
        if located.cache.stats.switches > before:
            switches.append(located.cache.stats.last_switch_s)
    out["query_ms"], out["switch_ms"] = stats_ms(times), stats_ms(switches)
    out["switches"], out["missed"], out["median_error_m"] = len(switches), missed, float(np.nanmedian(errors))
    out["rss_peak_mib"] = proc_status()["VmHWM"]
    located.close()
    cold = TiledLocalizer(tiled, config, TileCacheConfig(radius_m=radius_m))
    begin = time.perf_counter()
    cold.localize(descriptors[len(descriptors) // 2])
    cold.cache.wait_idle(600)
    out["cold_start_s"] = time.perf_counter() - begin
    found = cold.localize(descriptors[len(descriptors) // 2])
    out["cold_start_fix"] = found.status is FixStatus.FIX
    out["rss_after_search_mib"] = proc_status()["VmRSS"]
    cold.close()
    print(json.dumps(out, default=float))
