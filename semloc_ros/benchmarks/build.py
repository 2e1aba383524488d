"""``build``: database building from a rosbag written from the benchmark frames, images/s by torch threads, batch
size and database views (e.g. the image alone against the 7 recommended views, in the same run); optionally one
whole ``semloc build-db`` command per view set.

1. Write the bag once (cached): ``--frames`` camera images of a drive and a NavSatFix each.
2. Per thread count: set the threads, then load the pipeline (the int8 segmenter's ONNX Runtime session takes its
   thread count when it is created).
3. Per round, batch size and view set: time the whole ingestion as ``build-db`` does it (bag scan and GPS
   interpolation, decoding, segmentation once per frame, the descriptors of the views, label thumbnails, index),
   in wall-clock and in process CPU time (all threads; the CPU time a frame costs does not depend on what else
   runs on the machine, so its ratios hold on a loaded machine).
4. Print the median images/s of each setting (images are camera frames: 7 views of a frame count once), its
   CPU ms per image, and the ratios of each view set's figures to the first set's.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.benchmarks.common import machine_line, semantic_pipeline, write_json


def write_benchmark_bag(dataset: Path, drive: str, count: int, path: Path, compressed: bool) -> Path:
    """A rosbag2 (mcap) of ``count`` camera frames (Image rgb8, or JPEG CompressedImage) and NavSatFix fixes."""
    import cv2

    from semloc_ros.io.bags import BagWriter
    from semloc_ros.io.datasets import load_semloc_sim_drive, read_rgb

    if path.exists():
        return path
    frames = load_semloc_sim_drive(dataset, drive).frames
    period_ns = int(np.median(np.diff([frame.stamp_ns for frame in frames]))) or 100_000_000
    t0 = frames[0].stamp_ns
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    camera = "/camera/image_raw" + ("/compressed" if compressed else "")
    partial = path.with_name(path.name + ".partial")
    with BagWriter(partial, "mcap") as bag:
        kinds = bag.typestore.types
        bag.add_topic(camera, image_type)
        bag.add_topic("/gps/fix", "sensor_msgs/msg/NavSatFix")
        for i in range(count):
            frame = frames[i % len(frames)]
            stamp = t0 + i * period_ns
            header = kinds["std_msgs/msg/Header"](
                stamp=kinds["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id="camera")
            rgb = read_rgb(frame.rgb_path)
            if compressed:
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise RuntimeError(f"cannot JPEG-encode {frame.rgb_path}")
                image = kinds[image_type](header=header, format="rgb8; jpeg compressed bgr8",
                                          data=np.frombuffer(jpeg.tobytes(), np.uint8))
            else:
                image = kinds[image_type](header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                          is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1))
            fix = kinds["sensor_msgs/msg/NavSatFix"](
                header=kinds["std_msgs/msg/Header"](stamp=header.stamp, frame_id="gps"),
                status=kinds["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
                latitude=frame.lat, longitude=frame.lon, altitude=0.0 if math.isnan(frame.alt) else frame.alt,
                position_covariance=np.eye(3).reshape(9) * 4.0, position_covariance_type=2)
            bag.write_message(camera, image, stamp)
            bag.write_message("/gps/fix", fix, stamp)
    partial.rename(path)
    return path


def run_build(args: argparse.Namespace) -> int:
    import torch

    from semloc_ros.core.views import format_views
    from semloc_ros.io.datasets import load_drive
    from semloc_ros.mapping import build_database

    args.cache.mkdir(parents=True, exist_ok=True)
    kind = "jpeg" if args.compressed else "raw"
    bag = write_benchmark_bag(args.dataset, args.drive, args.frames, args.cache / f"bag_{args.drive}_{args.frames}_"
                              f"{kind}", args.compressed)  # step 1
    print(f"semloc benchmark build: {machine_line()}")
    print(f"bag {bag} ({args.frames} frames, {kind} 240x320 images + NavSatFix, mcap); {args.repeats} round(s); "
          "images/s over the whole ingestion (bag scan, decoding, segmentation, descriptor per view, thumbnails, "
          "index)")
    samples: dict[tuple[int, int, tuple[float, ...]], list[float]] = {}
    cpu_ms: dict[tuple[int, int, tuple[float, ...]], list[float]] = {}
    index_s: list[float] = []
    for threads in args.threads:
        torch.set_num_threads(threads)  # step 2
        pipeline = semantic_pipeline(args.device)
        for _ in range(args.repeats):
            for batch_size in args.batch_sizes:
                for views in args.views:  # step 3
                    start, cpu_start = time.perf_counter(), time.process_time()
                    drive = load_drive(str(bag)).drop_invalid_gps()
                    index_s.append(time.perf_counter() - start)
                    database = build_database(pipeline, drive, batch_size=batch_size, views=views)
                    elapsed = time.perf_counter() - start
                    if len(database) != args.frames * len(views):
                        raise RuntimeError(f"built {len(database)} entries from {args.frames} frames x {len(views)}")
                    samples.setdefault((threads, batch_size, views), []).append(args.frames / elapsed)
                    cpu = 1000.0 * (time.process_time() - cpu_start) / args.frames
                    cpu_ms.setdefault((threads, batch_size, views), []).append(cpu)
    results: dict[str, Any] = {"bag_scan_s": float(np.median(index_s)), "images_per_s": {}, "views_ratio": {},
                               "cpu_ms_per_image": {}, "views_cpu_ratio": {}}
    print(f"  bag scan (topics, stamps, GPS interpolation): median {results['bag_scan_s']:.2f} s")
    for (threads, batch_size, views), rates in samples.items():  # step 4
        name = f"threads {threads} batch {batch_size} views {format_views(views)}"
        rate = float(np.median(rates))
        results["images_per_s"][name] = rate
        ratio = rate / float(np.median(samples[(threads, batch_size, args.views[0])]))
        results["views_ratio"][name] = ratio
        cpu = float(np.median(cpu_ms[(threads, batch_size, views)]))
        results["cpu_ms_per_image"][name] = cpu
        cpu_ratio = float(np.median(cpu_ms[(threads, batch_size, args.views[0])])) / cpu
        results["views_cpu_ratio"][name] = cpu_ratio
        print(f"  threads {threads} batch {batch_size:>3} {len(views)} view(s): {rate:6.1f} images/s (median; rounds: "
              f"{', '.join(f'{r:.1f}' for r in rates)}; {ratio:.2f}x of {len(args.views[0])} view(s)) (target >= 30); "
              f"CPU {cpu:.1f} ms/image ({cpu_ratio:.2f}x the images per CPU second of {len(args.views[0])} view(s))")
    if args.cli:
        results["cli"] = run_cli(args, bag, samples)
    write_json(args.json, "build", results)
    return 0


def run_cli(args: argparse.Namespace, bag: Path, samples: dict) -> dict[str, Any]:
    """One whole ``semloc build-db`` command per view set, with the fastest threads and batch size measured."""
    from semloc_ros.core.views import format_views

    threads, best, _ = max(samples, key=lambda setting: np.median(samples[setting]))
    results = {}
    for views in args.views:
        out = args.cache / "build_cli.semdb"
        command = [sys.executable, "-m", "semloc_ros.cli", "build-db", str(bag), "--out", str(out), "--threads",
                   str(threads), "--batch-size", str(best), "--quiet", "--device", args.device,
                   "--views", *(f"{view:g}" for view in views)]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - start
        results[format_views(views)] = {"command": " ".join(command[2:]), "wall_s": wall,
                                        "images_per_s": args.frames / wall}
        print(f"  semloc build-db (whole command incl. start-up and model loading), threads {threads} batch {best}, "
              f"{len(views)} view(s): {wall:.1f} s = {args.frames / wall:.1f} images/s")
    return results
