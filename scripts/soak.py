#!/usr/bin/env python3
"""Soak test: drive the three-node pipeline with a 30 Hz camera for N minutes and report what it did.

Not part of the test suite. Starts the nodes with ``PipelineRunner`` on a domain of its own (discovery on
loopback only), builds a database of the embedded day drive, then replays the embedded night drive in a
loop as the camera. Reports, per node process, the resident memory (VmRSS) after warm-up, at the end, its
peak and growth, and CPU use; frames published vs answered (a fix came back) vs dropped; the nodes' own
counters from /diagnostics; and the publish-to-fix latency percentiles.

    source scripts/env.sh
    python scripts/soak.py --minutes 2            # the figures in docs/robustness.md
    python scripts/soak.py --models untrained     # without trained weights

Exit status 1 if a node exited during the soak or no frame was answered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UNTRAINED = {"segmentation_node": "untrained:lraspp_mobilenet_v3_large",
             "descriptor_node": "untrained:semantic_alexnet"}


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (psutil when installed, else /proc/PID/status VmRSS)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` in seconds (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration (default 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frame rate in Hz (default 30)")
    parser.add_argument("--models", choices=("default", "untrained"), default="default",
                        help="shipped trained models (default) or seeded untrained networks")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each node")
    parser.add_argument("--sample-s", type=float, default=5.0, help="memory sampling period")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="streaming before the first memory sample")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS domain (default: $ROS_DOMAIN_ID + 60, or 97)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.sample_s <= 0 or args.threads < 1:
        parser.error("--minutes, --rate, --sample-s and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    domain_id = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", 37)) + 60
    import rclpy

    from semloc_ros.commands.demo import DEMO_DATA
    from semloc_ros.core.geodesy import geodesic_distance_m
    from semloc_ros.io.datasets import load_semloc_sim_split
    from semloc_ros.mapping import build_database
    from semloc_ros.models import DescriptorExtractor, Segmenter, set_torch_threads
    from semloc_ros.models.pipeline import Pipeline
    from semloc_ros.ros.runner import PipelineRunner, apply_ros_defaults
    from semloc_ros.ros.stream_client import StreamClient

    set_torch_threads(2)
    database_drive, query_drives = load_semloc_sim_split(DEMO_DATA)
    if args.models == "untrained":
        pipeline = Pipeline(Segmenter.untrained(seed=0, device="cpu"),
                            DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu"), "semantic")
    else:
        pipeline = Pipeline.from_method("semantic", device="cpu")
    work = Path(tempfile.mkdtemp(prefix="semloc-soak-"))
    database_path = work / "soak.semdb"
    build_database(pipeline, database_drive.subset(slice(0, None, 4))).save(database_path)
    queries = query_drives[0]
    frames = [(frame.load_rgb(), frame.lat, frame.lon) for frame in queries]
    print(f"database {database_path}: {len(database_drive.frames[::4])} places; camera: {len(frames)} frames of "
          f"{queries.name} at {args.rate:g} Hz for {args.minutes:g} min; domain {domain_id}; logs in {work}")

    node_params = {"device": "cpu", "threads": args.threads}
    overrides = {"segmentation_node": dict(node_params), "descriptor_node": dict(node_params),
                 "localizer_node": {"database_path": str(database_path)}}
    if args.models == "untrained":
        for node, model in UNTRAINED.items():
            overrides[node]["model"] = model
    runner = PipelineRunner(overrides=overrides, remaps={"image_raw": "/camera/image_raw"}, domain_id=domain_id,
                            log_dir=work / "logs")
    apply_ros_defaults()  # before rclpy.init: this process publishes the camera frames
    rclpy.init(domain_id=domain_id)
    runner.start()
    client = StreamClient(frame_id="camera")
    sent: dict[int, tuple[float, int]] = {}  # stamp -> (monotonic publish time, frame index)
    memory: dict[str, list[tuple[float, float]]] = {node: [] for node in runner.nodes}
    cpu_start: dict[str, float] = {}
    exited: dict[str, int] = {}
    try:
        if not client.wait_for_pipeline(timeout_s=120.0, ready=lambda: not runner.exited()):
            print(f"pipeline did not come up: exited {runner.exited()}; logs in {work / 'logs'}", file=sys.stderr)
            return 1
        client.spin_for(2.0)
        period = 1.0 / args.rate
        start = time.monotonic()
        end = start + args.minutes * 60.0
        next_sample = start + args.warmup_s
        stamp_ns = time.time_ns()
        count = 0
        while (now := time.monotonic()) < end and not (exited := runner.exited()):
            rgb = frames[count % len(frames)][0]
            stamp_ns += int(period * 1e9)
            client.publish_frame(rgb, stamp_ns)
            sent[stamp_ns] = (time.monotonic(), count % len(frames))
            count += 1
            if now >= next_sample:
                if not cpu_start:
                    cpu_start = {node: cpu_seconds(p.pid) for node, p in runner.processes.items()}
                    cpu_start["_t"] = now
                for node, process in runner.processes.items():
                    memory[node].append((now - start, rss_mb(process.pid)))
                next_sample += args.sample_s
            deadline = start + count * period
            while (remaining := deadline - time.monotonic()) > 0:
                rclpy.spin_once(client, timeout_sec=remaining)
        publish_end = time.monotonic()
        client.spin_for(3.0)
        measured_s = max(1e-9, publish_end - cpu_start.get("_t", start))
        cpu = {node: (cpu_seconds(p.pid) - cpu_start.get(node, 0.0)) / measured_s
               for node, p in runner.processes.items() if p.poll() is None}
        for node in runner.nodes:
            client.diagnostics.pop(node, None)
        client.spin_for(1.5)
        counters = {node: client.diagnostic_values(node) for node in runner.nodes}
    finally:
        client.destroy_node()
        codes = runner.stop()
        rclpy.try_shutdown()

    answered = {stamp: client.fix_times[stamp] - sent[stamp][0] for stamp in sent if stamp in client.fix_times}
    latencies_ms = np.array(sorted(answered.values())) * 1000.0
    fixes = [client.fixes[s] for s in answered if client.fixes[s].status.status >= 0]
    errors_m = [float(geodesic_distance_m(frames[sent[s][1]][1], frames[sent[s][1]][2], client.fixes[s].latitude,
                                          client.fixes[s].longitude)) for s in answered
                if client.fixes[s].status.status >= 0]
    published = len(sent)
    duration_s = publish_end - start
    report: dict = {
        "command": "python scripts/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "minutes": round(duration_s / 60.0, 2), "rate_hz": args.rate, "models": args.models,
        "published": published, "published_hz": round(published / duration_s, 1),
        "answered": len(answered), "answered_hz": round(len(answered) / duration_s, 2),
        "dropped": published - len(answered), "fix_status_fix": len(fixes),
        "median_error_m_of_fixes": round(float(np.median(errors_m)), 1) if errors_m else None,
        "latency_ms": {name: round(float(np.percentile(latencies_ms, q)), 1) for name, q in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if len(latencies_ms) else {},
        "nodes": {}, "exit_codes": codes, "exited_during_soak": exited,
    }
    for node in runner.nodes:
        samples = memory[node]
        values = [mb for _, mb in samples]
        node_report = {"diagnostics": {k: v for k, v in counters.get(node, {}).items() if not k.startswith("last")},
                       "cpu_fraction": round(cpu.get(node, float("nan")), 2)}
        if values:
            half = [(t, mb) for t, mb in samples if t >= samples[len(samples) // 2][0]]
            slope = np.polyfit(*zip(*half, strict=True), 1)[0] * 60.0 if len(half) >= 2 else float("nan")
            node_report.update({"rss_first_mb": round(values[0], 1), "rss_last_mb": round(values[-1], 1),
                                "rss_max_mb": round(max(values), 1), "rss_growth_mb": round(values[-1] - values[0], 1),
                                "rss_slope_second_half_mb_per_min": round(float(slope), 2)})
        report["nodes"][node] = node_report

    print(json.dumps(report, indent=2))
    print("\n| node | RSS after warm-up (MiB) | RSS end | peak | growth | 2nd-half slope (MiB/min) | CPU | "
          "received | processed | dropped (transport) | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for node, values in report["nodes"].items():
        d = values["diagnostics"]
        print(f"| {node} | {values.get('rss_first_mb')} | {values.get('rss_last_mb')} | {values.get('rss_max_mb')} | "
              f"{values.get('rss_growth_mb')} | {values.get('rss_slope_second_half_mb_per_min')} | "
              f"{values['cpu_fraction']:.0%} | {d.get('received')} | {d.get('processed')} | {d.get('dropped')} | "
              f"{d.get('errors')} |")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if exited or not answered else 0


if __name__ == "__main__":
    sys.exit(main())
