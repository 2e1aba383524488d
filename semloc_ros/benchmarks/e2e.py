"""``e2e``: the three nodes as separate processes (``PipelineRunner``) fed 240x320 frames by a ``StreamClient`` at
a target rate: achieved fix rate, end-to-end latency percentiles (fix arrival - publish, paired by stamp) and
dropped frames; ``--variant`` compares node parameter sets in one run."""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.benchmarks.common import (
    cpu_seconds,
    load_frames,
    machine_line,
    semantic_pipeline,
    splits,
    stats_ms,
    thumbnail_database,
    write_json,
)
from semloc_ros.core.views import RECOMMENDED_VIEWS


def parse_assignments(text: str) -> dict[str, dict[str, Any]]:
    """``node.param=value,node.param=value`` -> {node: {param: value}} (values parsed as YAML scalars)."""
    import yaml

    overrides: dict[str, dict[str, Any]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        node, dot, parameter = key.partition(".")
        if not sep or not dot or not node or not parameter:
            raise ValueError(f"expected node.parameter=value, got {item!r}")
        overrides.setdefault(node, {})[parameter] = yaml.safe_load(value)
    return overrides


def merge_overrides(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for node, values in layer.items():
            merged.setdefault(node, {}).update(values)
    return merged


def e2e_database(args: argparse.Namespace) -> Path:
    """The map the e2e nodes load: ``--database``, else the benchmark's database drive mapped as recommended: the
    shipped models, label thumbnails (the localizer re-ranks as configured) and the recommended views."""
    if args.database is not None:
        return args.database
    return thumbnail_database(args.dataset, splits(args.dataset)["database"], semantic_pipeline(args.device),
                              args.cache, RECOMMENDED_VIEWS)


def run_e2e(args: argparse.Namespace) -> int:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    database = e2e_database(args)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from semloc_ros.ros.conversions import array_to_imgmsg
    from semloc_ros.ros.runner import PipelineRunner, apply_ros_defaults
    from semloc_ros.ros.stream_client import StreamClient

    count = max(1, round(args.rate * args.duration))
    frames = load_frames(args.dataset, args.drive, min(count, args.max_frames))
    if args.frame_size is not None:  # e.g. 1920x1080: upscaled copies of the drive's frames
        import cv2

        frames = [cv2.resize(rgb, args.frame_size, interpolation=cv2.INTER_LINEAR) for rgb in frames]
    messages = [array_to_imgmsg(rgb, "rgb8") for rgb in frames]
    for message in messages:
        message.header.frame_id = "camera"
    base = merge_overrides({"localizer_node": {"database_path": str(database.resolve())}},
                           parse_assignments(",".join(args.set)))
    variants = []
    for spec in args.variant or ["default"]:
        name, _, assignments = spec.partition(":")
        variants.append((name, merge_overrides(base, parse_assignments(assignments))))
    print(f"semloc benchmark e2e: {machine_line()}")
    height, width = messages[0].height, messages[0].width
    print(f"{count} frames of {args.drive} ({height}x{width} rgb8 Image) at {args.rate:g} Hz for "
          f"{args.duration:g} s per run; database {database.name}; ROS_DOMAIN_ID={args.domain_id}; "
          f"{args.repeats} round(s) of {len(variants)} variant(s)")
    apply_ros_defaults()  # before rclpy.init: this process publishes the camera frames (large-frame profile)
    rclpy.init()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    try:
        client = StreamClient(image_topic="/camera/image_raw")
        client.hop_times = {}  # topic -> {stamp: arrival monotonic}
        if args.hops:
            add_hop_probes(client)
        executor = SingleThreadedExecutor()
        client.spin_for(2.0)  # discovery: is anybody else on this domain?
        if foreign := client.foreign_nodes([]):
            print(f"semloc benchmark e2e: ROS_DOMAIN_ID {args.domain_id} already has nodes ({', '.join(foreign)}): "
                  "another pipeline or test; choose a free --domain-id", file=sys.stderr)
            return 2
        for round_index in range(args.repeats):
            for name, overrides in variants:
                log_dir = args.cache / "e2e-logs" / f"{name}-{round_index}"
                runner = PipelineRunner(overrides=overrides, remaps={"image_raw": "/camera/image_raw"},
                                        domain_id=args.domain_id, log_dir=log_dir)
                with runner:
                    run = stream_once(client, executor, runner, messages, count, args)
                run["overrides"] = overrides
                results[name].append(run)
                print(f"  [{name} round {round_index + 1}] " + e2e_line(run))
        client.destroy_node()
    finally:
        rclpy.try_shutdown()
    print("\nsummary (median over rounds; target: >= 20 Hz, p95 <= 80 ms)")
    summary = {}
    for name, runs in results.items():
        valid = [run for run in runs if run.get("ok")]
        if not valid:
            print(f"  {name:<24} no valid run")
            continue
        summary[name] = {key: float(np.median([run[key] for run in valid]))
                         for key in ("fix_rate_hz", "p50_ms", "p95_ms", "p99_ms", "max_ms", "dropped_fraction")}
        summary[name]["cpu_percent"] = {node: float(np.median([run["cpu_percent"][node] for run in valid]))
                                        for node in valid[0]["cpu_percent"]}
        s = summary[name]
        cpu = " ".join(f"{node.split('_')[0]} {value:.0f}%" for node, value in s["cpu_percent"].items())
        print(f"  {name:<24} fix rate {s['fix_rate_hz']:6.2f} Hz  latency p50 {s['p50_ms']:6.1f} ms  "
              f"p95 {s['p95_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms  dropped {100 * s['dropped_fraction']:5.1f} %"
              f"  CPU {cpu}")
    write_json(args.json, "e2e", {"runs": results, "summary": summary})
    return 0


def add_hop_probes(client) -> None:
    """Also record when each frame's labels and descriptor pass (best effort, so the nodes are not slowed)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from semloc_msgs.msg import Descriptor
    from sensor_msgs.msg import Image

    from semloc_ros.ros.conversions import stamp_to_ns

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    for topic, kind in (("/semloc/labels", Image), ("/semloc/descriptor", Descriptor)):
        arrivals = client.hop_times.setdefault(topic, {})

        def record(message, arrivals=arrivals) -> None:
            arrivals[stamp_to_ns(message.header.stamp)] = time.monotonic()

        client.create_subscription(kind, topic, record, qos)


def stream_once(client, executor, runner, messages, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run: wait for the nodes, warm up, stream ``count`` frames at ``args.rate``, collect the fixes."""
    from semloc_ros.ros.conversions import imgmsg_to_array, ns_to_stamp

    client.fixes.clear()
    client.fix_times.clear()
    client.diagnostics.clear()
    for arrivals in client.hop_times.values():
        arrivals.clear()
    problem = client.start_up(imgmsg_to_array(messages[0]), runner.nodes, args.startup_timeout_s,
                              failed=runner.exit_report)
    if problem is not None:
        return {"ok": False, "error": f"pipeline not ready: {problem} (node logs: {runner.log_dir})"}
    client.spin_for(1.0)
    client.fixes.clear()
    client.fix_times.clear()
    pids = {node: process.pid for node, process in runner.processes.items()}
    executor.add_node(client)  # only now: wait_for_pipeline/warm_up spin the node in rclpy's global executor
    # Fixes are taken (and timed) on a thread of their own: spun between publishes, a camera that publishes large
    # frames at a high rate left the fixes waiting and the latencies and gaps measured its own backlog.
    stop = threading.Event()
    spinner = threading.Thread(target=_spin_until, args=(executor, stop), daemon=True)
    spinner.start()
    cpu_before = {node: cpu_seconds(pid) for node, pid in pids.items()}
    published: dict[int, float] = {}
    period = 1.0 / args.rate
    start = time.monotonic() + 0.05
    for i in range(count):
        time.sleep(max(0.0, start + i * period - time.monotonic()))
        message = messages[i % len(messages)]
        stamp_ns = client.get_clock().now().nanoseconds
        message.header.stamp = ns_to_stamp(stamp_ns)
        published[stamp_ns] = time.monotonic()
        client.camera_publisher.publish(message)
    stream_s = time.monotonic() - start
    cpu_after = {node: cpu_seconds(pid) for node, pid in pids.items()}
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline and not all(stamp in client.fix_times for stamp in published):
        time.sleep(0.05)
    stop.set()
    spinner.join()
    executor.remove_node(client)
    if foreign := client.foreign_nodes(runner.nodes):
        return {"ok": False, "error": f"other nodes joined ROS_DOMAIN_ID {args.domain_id} during the run "
                f"({', '.join(foreign)}): their messages may have mixed with these; use a free --domain-id"}
    latencies = [client.fix_times[stamp] - sent for stamp, sent in published.items() if stamp in client.fix_times]
    arrivals = sorted(t for stamp, t in client.fix_times.items() if stamp in published)
    gaps = np.diff([start, *arrivals, start + stream_s]) if arrivals else [stream_s]
    # the same, by the publish times of the answered frames: not distorted when this client is slow to spin
    answered_sent = sorted(sent for stamp, sent in published.items() if stamp in client.fix_times)
    frame_gaps = np.diff([start, *answered_sent, start + stream_s]) if answered_sent else [stream_s]
    answered = len(latencies)
    late = np.asarray(latencies) * 1e3
    hops = {}
    if client.hop_times:
        stages = [("camera->labels", published, client.hop_times["/semloc/labels"]),
                  ("labels->descriptor", client.hop_times["/semloc/labels"], client.hop_times["/semloc/descriptor"]),
                  ("descriptor->fix", client.hop_times["/semloc/descriptor"], client.fix_times)]
        for name, earlier, later in stages:
            hops[name] = stats_ms([later[stamp] - earlier[stamp] for stamp in published
                                   if stamp in earlier and stamp in later])
    return {
        "hops": hops,
        "ok": True,
        "published": len(published),
        "answered": answered,
        "stream_s": stream_s,
        "fix_rate_hz": answered / (stream_s + period) if stream_s > 0 else math.nan,
        "dropped_fraction": 1.0 - answered / len(published),
        "p50_ms": float(np.percentile(late, 50)) if answered else math.nan,
        "p95_ms": float(np.percentile(late, 95)) if answered else math.nan,
        "p99_ms": float(np.percentile(late, 99)) if answered else math.nan,
        "max_ms": float(late.max()) if answered else math.nan,
        "max_gap_s": float(np.max(gaps)),  # longest time without a fix while streaming
        "max_answered_frame_gap_s": float(np.max(frame_gaps)),  # longest run of published frames never answered
        "cpu_percent": {node: 100.0 * (cpu_after[node] - cpu_before[node]) / stream_s for node in pids},
        "diagnostics": {node: client.diagnostic_values(node) for node in pids},
    }


def _spin_until(executor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)


def e2e_line(run: dict[str, Any]) -> str:
    if not run.get("ok"):
        return f"FAILED: {run.get('error')}"
    cpu = " ".join(f"{node.split('_')[0]} {value:.0f}%" for node, value in run["cpu_percent"].items())
    hops = "".join(f"; {name} p50 {stats['median']:.1f} p95 {stats['p95']:.1f} ms"
                   for name, stats in run.get("hops", {}).items())
    return (f"{run['answered']}/{run['published']} fixes, {run['fix_rate_hz']:.2f} Hz, latency p50 "
            f"{run['p50_ms']:.1f} p95 {run['p95_ms']:.1f} p99 {run['p99_ms']:.1f} max {run['max_ms']:.1f} ms; longest "
            f"gap without a fix {run['max_gap_s']:.2f} s (between answered frames "
            f"{run['max_answered_frame_gap_s']:.2f} s); "
            f"CPU {cpu}{hops}")
