"""``semloc benchmark stages|threads|e2e|index|build``: what the CPU pipeline costs, measured (docs/benchmarks.md).

- ``stages``: per-stage latency of one frame through the shipped semantic pipeline (image conversion, DDS
  serialisation, segmentation, descriptor, search, fix message), and an RGB NetVLAD-VGG16 pipeline timed on the
  same frames in the same run; prints the speed ratio.
- ``threads``: segmentation and descriptor latency with 1 and 2 torch threads, the other core idle or busy (a
  busy-loop process): how the nodes' default ``threads`` was chosen.
- ``e2e``: the three nodes as separate processes (``PipelineRunner``) fed 240x320 frames by a ``StreamClient``
  at a target rate: achieved fix rate, end-to-end latency percentiles (fix arrival - publish, paired by stamp)
  and dropped frames; ``--variant`` compares node parameter sets in one run.
- ``index``: flat vs HNSW vs IVF-PQ on real semantic descriptors of the benchmark, replicated with small
  Gaussian perturbations to 100k and 1M entries (synthetic-from-real); query latency (1 thread), recall of the
  exact top-5 on held-out real queries, build and load time, resident memory; optionally the localizer node's
  memory with the 1M database.
- ``build``: database building from a rosbag written from the benchmark frames, images/s by batch size.

Every figure is a median over repeats; ratios compare measurements of the same run. Every process started here
that uses ROS 2 gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and the ``--domain-id`` given.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "semloc-sim-v1"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "semloc-bench"
DEFAULT_DOMAIN_ID = 230
FRAME_SHAPE = (240, 320)
VGG_CONF: dict[str, Any] = {"backbone": "vgg16", "clusters": 64, "dim": 4096}  # NetVLAD paper: K=64, 4096-d


# ------------------------------------------------------------------------------------------------ helpers
def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM (peak) and VmSize of a process in MiB, from /proc/PID/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as stream:
        for line in stream:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (s)."""
    with open(f"/proc/{pid}/stat") as stream:
        fields = stream.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95, mean and count of durations given in seconds, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    if values.size == 0:
        return {"median": math.nan, "p95": math.nan, "mean": math.nan, "n": 0}
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "mean": float(values.mean()), "n": int(values.size)}


def fmt_ms(stats: dict[str, float]) -> str:
    return f"median {stats['median']:8.2f} ms  p95 {stats['p95']:8.2f} ms  (n={stats['n']})"


def time_calls(function: Callable[[], Any], count: int, warmup: int = 2) -> list[float]:
    """Durations (s) of ``count`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return durations


@contextlib.contextmanager
def busy_core(enabled: bool = True) -> Iterator[subprocess.Popen | None]:
    """A busy-loop child process occupying one core while the block runs (stopped by its own pid)."""
    if not enabled:
        yield None
        return
    process = subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])
    try:
        time.sleep(0.3)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def machine_line() -> str:
    """CPU model, core count and load average: printed above every table."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as stream:
        model = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), model)
    load = os.getloadavg()
    return f"{model}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def load_frames(dataset: Path, drive: str, count: int, stride: int = 1) -> list[np.ndarray]:
    """``count`` RGB frames (HxWx3 uint8, 240x320) of a semloc-sim drive, every ``stride``-th frame, cycling."""
    import cv2

    from semloc_ros.io.datasets import load_semloc_sim_drive, read_rgb

    frames = load_semloc_sim_drive(dataset, drive).frames
    images = []
    for i in range(count):
        rgb = read_rgb(frames[(i * stride) % len(frames)].rgb_path)
        if rgb.shape[:2] != FRAME_SHAPE:
            rgb = cv2.resize(rgb, FRAME_SHAPE[::-1], interpolation=cv2.INTER_AREA)
        images.append(rgb)
    return images


def splits(dataset: Path) -> dict[str, Any]:
    return json.loads((dataset / "splits.json").read_text())


def semantic_pipeline(device: str = "auto"):
    from semloc_ros.models.pipeline import Pipeline

    return Pipeline.from_method("semantic", device=device)


def drive_descriptors(dataset: Path, drive: str, pipeline, cache: Path, batch_size: int = 16) -> np.ndarray:
    """Semantic descriptors of every frame of ``drive`` (segmenter on RGB), cached in ``cache`` per model pair."""
    from semloc_ros.evaluation.loop import cache_key
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import describe_drive_frames

    digest = hashlib.sha1(cache_key(pipeline, oracle=False).encode("utf-8")).hexdigest()[:12]
    path = cache / f"descriptors_{drive}_{digest}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    loaded = load_semloc_sim_drive(dataset, drive)
    start = time.perf_counter()
    descriptors = describe_drive_frames(pipeline, loaded.frames, batch_size=batch_size)
    print(f"  described {drive}: {len(descriptors)} frames in {time.perf_counter() - start:.1f} s -> {path}")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, descriptors, allow_pickle=False)
    return descriptors


def drive_database(dataset: Path, drive: str, pipeline, cache: Path, index_type: str = "flat"):
    """GeoDatabase of one drive with the shipped semantic pipeline (descriptors cached)."""
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import place_records

    descriptors = drive_descriptors(dataset, drive, pipeline, cache)
    database = GeoDatabase(pipeline.dimension, pipeline.model_id, index_type)
    database.add(descriptors, place_records(load_semloc_sim_drive(dataset, drive).frames))
    return database


# ------------------------------------------------------------------------------------------------ stages
def run_stages(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from rclpy.serialization import deserialize_message, serialize_message
    from semloc_msgs.msg import Descriptor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from semloc_ros.core.image_codec import to_rgb8
    from semloc_ros.core.localizer import Localizer
    from semloc_ros.models import DescriptorExtractor
    from semloc_ros.ros.conversions import array_to_imgmsg, imgmsg_to_array, ns_to_stamp
    from semloc_ros.ros.localizer_node import LocalizerNode

    faiss.omp_set_num_threads(1)  # as the localizer node (faiss_threads default)
    pipeline = semantic_pipeline(args.device)
    segmenter, semantic = pipeline.segmenter, pipeline.descriptor
    database = drive_database(args.dataset, splits(args.dataset)["database"], pipeline, args.cache)
    localizer = Localizer(database)
    vgg = DescriptorExtractor.untrained("rgb_netvlad", device=args.device, input_size=FRAME_SHAPE, **VGG_CONF)
    vgg_half = copy.copy(vgg)  # same network, run at the semantic descriptor's input size
    vgg_half.input_size = semantic.input_size
    unfolded = copy.copy(segmenter)  # "before": the network as trained, batch norms not folded
    unfolded.fold_norms = False
    contiguous = copy.copy(semantic)  # "before": weights in the default (contiguous) memory format
    contiguous.net = copy.deepcopy(semantic.net).to(memory_format=torch.contiguous_format)
    frames = load_frames(args.dataset, args.drive, args.frames, stride=7)
    header = Header(stamp=ns_to_stamp(1_700_000_000_000_000_000), frame_id="camera")

    def chain(rgb: np.ndarray, times: dict[str, list[float]]) -> np.ndarray:
        """One frame through every stage of the three nodes, each stage timed; returns its labels."""
        marks = [time.perf_counter()]

        def mark(name: str) -> None:
            marks.append(time.perf_counter())
            times.setdefault(name, []).append(marks[-1] - marks[-2])

        msg = array_to_imgmsg(rgb, "rgb8", header)
        mark("camera: numpy -> Image")
        raw = serialize_message(msg)
        mark("camera: Image -> CDR bytes")
        received = deserialize_message(raw, Image)
        mark("segmentation_node: CDR -> Image")
        image = to_rgb8(imgmsg_to_array(received), received.encoding)
        mark("segmentation_node: Image -> numpy RGB")
        labels = segmenter.predict(image)
        mark("segmentation (LR-ASPP 240x320)")
        segmented = labels
        raw = serialize_message(array_to_imgmsg(labels, "mono8", header))
        mark("labels: numpy -> Image -> CDR")
        labels = imgmsg_to_array(deserialize_message(raw, Image))
        mark("descriptor_node: CDR -> labels")
        vector = semantic.describe(labels)
        mark("descriptor (AlexNet-NetVLAD 120x160)")
        out = Descriptor(header=header, model_id=semantic.model_id, dimension=int(vector.shape[0]))
        out.data = vector.astype(np.float32).tolist()
        raw = serialize_message(out)
        mark("descriptor message: build + CDR")
        query = np.asarray(deserialize_message(raw, Descriptor).data, dtype=np.float32)
        mark("localizer_node: CDR -> numpy")
        database.search(query, localizer.config.top_k)
        mark(f"search ({len(database)} entries, flat, top-{localizer.config.top_k})")
        estimate = localizer.localize(query)
        mark("localize (search + consensus)")
        serialize_message(LocalizerNode.navsatfix(estimate, header))
        mark("fix: NavSatFix build + CDR")
        return segmented

    print(f"semloc benchmark stages: {machine_line()}")
    print(f"frames: {len(frames)} of {args.drive} ({FRAME_SHAPE[0]}x{FRAME_SHAPE[1]}), {args.repeats} rounds; "
          f"database {len(database)} entries; device {segmenter.device}")
    print(f"RGB baseline: rgb_netvlad {VGG_CONF} (untrained weights: timing only), "
          f"{min(args.rgb_frames, len(frames))} frames per round")
    results: dict[str, Any] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {}
        semantic_frame: list[float] = []
        rgb_frame: list[float] = []
        rgb_half_frame: list[float] = []
        before_after: dict[str, list[float]] = {}
        for rgb in frames[:2]:  # warm-up (first-call allocations, oneDNN kernel selection)
            chain(rgb, {})
            vgg.describe(rgb)
            vgg_half.describe(rgb)
            contiguous.describe(unfolded.predict(rgb))
        for _ in range(args.repeats):
            for i, rgb in enumerate(frames):
                labels = chain(rgb, times)
                for name, function, argument in (
                        ("segmentation before (batch norms not folded)", unfolded.predict, rgb),
                        ("segmentation after (folded)", segmenter.predict, rgb),
                        ("descriptor before (contiguous weights)", contiguous.describe, labels),
                        ("descriptor after (channels_last)", semantic.describe, labels)):
                    start = time.perf_counter()
                    function(argument)
                    before_after.setdefault(name, []).append(time.perf_counter() - start)
                start = time.perf_counter()
                semantic.describe(segmenter.predict(rgb))
                semantic_frame.append(time.perf_counter() - start)
                if i < args.rgb_frames:
                    start = time.perf_counter()
                    vgg.describe(rgb)
                    rgb_frame.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    vgg_half.describe(rgb)
                    rgb_half_frame.append(time.perf_counter() - start)
        print(f"\n== torch threads {threads} ==")
        stage_stats = {name: stats_ms(values) for name, values in times.items()}
        for name, stats in stage_stats.items():
            print(f"  {name:<42} {fmt_ms(stats)}")
        chain_total = sum(stats["median"] for stats in stage_stats.values())
        semantic_stats, rgb_stats = stats_ms(semantic_frame), stats_ms(rgb_frame)
        rgb_half_stats = stats_ms(rgb_half_frame)
        shared = chain_total - stage_stats["segmentation (LR-ASPP 240x320)"]["median"] \
            - stage_stats["descriptor (AlexNet-NetVLAD 120x160)"]["median"]
        print(f"  {'sum of stage medians (whole chain)':<42} {chain_total:8.2f} ms")
        print(f"  {'semantic: segmentation + descriptor':<42} {fmt_ms(semantic_stats)}")
        print(f"  {'RGB NetVLAD-VGG16 at 240x320':<42} {fmt_ms(rgb_stats)}")
        print(f"  {'RGB NetVLAD-VGG16 at 120x160':<42} {fmt_ms(rgb_half_stats)}")
        ratio = rgb_stats["median"] / semantic_stats["median"]
        ratio_half = rgb_half_stats["median"] / semantic_stats["median"]
        ratio_chain = (rgb_stats["median"] + shared) / chain_total
        print(f"  speed ratio RGB-VGG16(240x320) / semantic, models only: {ratio:6.1f}x  "
              f"(whole chain incl. conversions and search: {ratio_chain:.1f}x; VGG16 at 120x160: {ratio_half:.1f}x)")
        optimisation = {name: stats_ms(values) for name, values in before_after.items()}
        for name, stats in optimisation.items():
            print(f"  {name:<42} {fmt_ms(stats)}")
        names = list(optimisation)
        print(f"  speed-up: segmentation {optimisation[names[0]]['median'] / optimisation[names[1]]['median']:.2f}x, "
              f"descriptor {optimisation[names[2]]['median'] / optimisation[names[3]]['median']:.2f}x")
        results[str(threads)] = {"optimisation": optimisation, "stages": stage_stats,
                                 "semantic": semantic_stats, "rgb_vgg16": rgb_stats,
                                 "rgb_vgg16_120x160": rgb_half_stats, "ratio": ratio, "ratio_chain": ratio_chain,
                                 "ratio_120x160": ratio_half}
    write_json(args, "stages", results)
    return 0


# ------------------------------------------------------------------------------------------------ threads
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
    write_json(args, "threads", results)
    return 0


# ------------------------------------------------------------------------------------------------ e2e
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
    """The map the e2e nodes load: the benchmark's database drive, shipped semantic models, label thumbnails
    (so the localizer re-ranks as configured)."""
    from semloc_ros.io.datasets import load_semloc_sim_drive
    from semloc_ros.mapping import build_database

    if args.database is not None:
        return args.database
    pipeline = semantic_pipeline(args.device)
    drive = splits(args.dataset)["database"]
    digest = hashlib.sha1(pipeline.model_id.encode("utf-8")).hexdigest()[:12]
    path = args.cache / f"e2e_{drive}_{digest}_thumbnails.semdb"
    if not path.is_file():
        build_database(pipeline, load_semloc_sim_drive(args.dataset, drive)).save(path)
    return path


def run_e2e(args: argparse.Namespace) -> int:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    database = e2e_database(args)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from semloc_ros.ros.conversions import array_to_imgmsg, ns_to_stamp
    from semloc_ros.ros.runner import PipelineRunner
    from semloc_ros.ros.stream_client import StreamClient

    count = max(1, round(args.rate * args.duration))
    frames = load_frames(args.dataset, args.drive, min(count, args.max_frames))
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
    print(f"{count} frames of {args.drive} ({FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} rgb8 Image) at {args.rate:g} Hz for "
          f"{args.duration:g} s per run; database {database.name}; ROS_DOMAIN_ID={args.domain_id}; "
          f"{args.repeats} round(s) of {len(variants)} variant(s)")
    rclpy.init()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    try:
        client = StreamClient(image_topic="/camera/image_raw")
        client.hop_times = {}  # topic -> {stamp: arrival monotonic}
        if args.hops:
            add_hop_probes(client)
        executor = SingleThreadedExecutor()
        for round_index in range(args.repeats):
            for name, overrides in variants:
                log_dir = args.cache / "e2e-logs" / f"{name}-{round_index}"
                runner = PipelineRunner(overrides=overrides, remaps={"image_raw": "/camera/image_raw"},
                                        domain_id=args.domain_id, log_dir=log_dir)
                with runner:
                    run = stream_once(client, executor, runner, messages, count, args, ns_to_stamp)
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
    write_json(args, "e2e", {"runs": results, "summary": summary})
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


def stream_once(client, executor, runner, messages, count: int, args: argparse.Namespace,
                ns_to_stamp: Callable[[int], Any]) -> dict[str, Any]:
    """One run: wait for the nodes, warm up, stream ``count`` frames at ``args.rate``, collect the fixes."""
    from semloc_ros.ros.conversions import imgmsg_to_array

    client.fixes.clear()
    client.fix_times.clear()
    client.diagnostics.clear()
    for arrivals in client.hop_times.values():
        arrivals.clear()
    ready = client.wait_for_pipeline(timeout_s=90.0) and client.warm_up(imgmsg_to_array(messages[0]), 120.0)
    if not ready or runner.exited():
        return {"ok": False, "error": f"pipeline not ready (exited: {runner.exited()})"}
    client.spin_for(1.0)
    client.fixes.clear()
    client.fix_times.clear()
    pids = {node: process.pid for node, process in runner.processes.items()}
    executor.add_node(client)  # only now: wait_for_pipeline/warm_up spin the node in rclpy's global executor
    cpu_before = {node: cpu_seconds(pid) for node, pid in pids.items()}
    published: dict[int, float] = {}
    period = 1.0 / args.rate
    start = time.monotonic() + 0.05
    for i in range(count):
        due = start + i * period
        while (now := time.monotonic()) < due:
            executor.spin_once(timeout_sec=due - now)
        message = messages[i % len(messages)]
        stamp_ns = client.get_clock().now().nanoseconds
        message.header.stamp = ns_to_stamp(stamp_ns)
        published[stamp_ns] = time.monotonic()
        client.camera_publisher.publish(message)
    stream_s = time.monotonic() - start
    cpu_after = {node: cpu_seconds(pid) for node, pid in pids.items()}
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline and not set(published).issubset(client.fix_times):
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(client)
    latencies = [client.fix_times[stamp] - sent for stamp, sent in published.items() if stamp in client.fix_times]
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
        "cpu_percent": {node: 100.0 * (cpu_after[node] - cpu_before[node]) / stream_s for node in pids},
        "diagnostics": {node: client.diagnostic_values(node) for node in pids},
    }


def e2e_line(run: dict[str, Any]) -> str:
    if not run.get("ok"):
        return f"FAILED: {run.get('error')}"
    cpu = " ".join(f"{node.split('_')[0]} {value:.0f}%" for node, value in run["cpu_percent"].items())
    hops = "".join(f"; {name} p50 {stats['median']:.1f} p95 {stats['p95']:.1f} ms"
                   for name, stats in run.get("hops", {}).items())
    return (f"{run['answered']}/{run['published']} fixes, {run['fix_rate_hz']:.2f} Hz, latency p50 "
            f"{run['p50_ms']:.1f} p95 {run['p95_ms']:.1f} p99 {run['p99_ms']:.1f} max {run['max_ms']:.1f} ms; "
            f"CPU {cpu}{hops}")


# ------------------------------------------------------------------------------------------------ index
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
                    "latency_queries": args.latency_queries, "nprobe": args.nprobe, "rerank": args.rerank,
                    "ef_search": args.ef_search,
                    "rebuild": args.rebuild}
            built = worker(["index-build", json.dumps(spec)])
            loaded = worker(["index-query", json.dumps(spec)])
            per_type[index_type] = {"build": built, "query": loaded}
            print_index_result(index_type, built, loaded)
        if args.node and "ivfpq" in per_type:
            per_type["localizer_node"] = localizer_node_memory(args, Path(per_type["ivfpq"]["build"]["db"]))
        results["sizes"][str(size)] = per_type
    write_json(args, "index", results)
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
              f"{defaults.nprobe}, rerank {defaults.rerank}) {line['ivfpq']['latency']['median']:7.3f} ms, recall "
              f"{100 * line['ivfpq']['recall']:5.1f} %, build {line['ivfpq']['build_s']:.1f} s")
    return results


def per_query_times(database, queries: np.ndarray, k: int = 5) -> list[float]:
    """Duration of each single-query search (one call per query, after a short warm-up)."""
    for query in queries[:10]:
        database.search(query, k)
    durations = []
    for query in queries:
        start = time.perf_counter()
        database.search(query, k)
        durations.append(time.perf_counter() - start)
    return durations


def top5_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-5 found in the approximate top-5, averaged over queries."""
    return float(np.mean([len(set(a[:5].tolist()) & set(t[:5].tolist())) / 5.0
                          for a, t in zip(found, truth, strict=True)]))


def worker(argv: list[str]) -> dict[str, Any]:
    """Run a measurement in a fresh Python process (memory figures of its own); returns its JSON result."""
    completed = subprocess.run([sys.executable, "-m", "semloc_ros.commands.benchmark", *argv],
                               capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {argv[0]} failed ({completed.returncode}):\n"
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
        sweep = [{"nprobe": n, "rerank": r} for r in spec["rerank"] for n in spec["nprobe"]]
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


# ------------------------------------------------------------------------------------------------ build
def write_benchmark_bag(dataset: Path, drive: str, count: int, path: Path, compressed: bool) -> Path:
    """A rosbag2 (mcap) of ``count`` camera frames (Image rgb8, or JPEG CompressedImage) and NavSatFix fixes."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from semloc_ros.io.datasets import load_semloc_sim_drive, read_rgb

    if path.exists():
        return path
    types = get_typestore(Stores.ROS2_KILTED)
    kinds = types.types
    frames = load_semloc_sim_drive(dataset, drive).frames
    period_ns = int(np.median(np.diff([frame.stamp_ns for frame in frames]))) or 100_000_000
    t0 = frames[0].stamp_ns
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    partial = path.with_name(path.name + ".partial")
    with Writer(partial, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection("/camera/image_raw" + ("/compressed" if compressed else ""), image_type,
                                       typestore=types)
        gps = writer.add_connection("/gps/fix", "sensor_msgs/msg/NavSatFix", typestore=types)
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
            writer.write(camera, stamp, types.serialize_cdr(image, image_type))
            writer.write(gps, stamp, types.serialize_cdr(fix, "sensor_msgs/msg/NavSatFix"))
    partial.rename(path)
    return path


def run_build(args: argparse.Namespace) -> int:
    import torch

    from semloc_ros.io.datasets import load_drive
    from semloc_ros.mapping import build_database

    args.cache.mkdir(parents=True, exist_ok=True)
    kind = "jpeg" if args.compressed else "raw"
    bag = write_benchmark_bag(args.dataset, args.drive, args.frames, args.cache / f"bag_{args.drive}_{args.frames}_"
                              f"{kind}", args.compressed)
    pipeline = semantic_pipeline(args.device)
    print(f"semloc benchmark build: {machine_line()}")
    print(f"bag {bag} ({args.frames} frames, {kind} 240x320 images + NavSatFix, mcap); {args.repeats} round(s); "
          "images/s over the whole ingestion (bag scan, decoding, segmentation, descriptor, index)")
    settings = [(threads, size) for threads in args.threads for size in args.batch_sizes]
    samples: dict[tuple[int, int], list[float]] = {setting: [] for setting in settings}
    index_s: list[float] = []
    for _ in range(args.repeats):
        for threads, batch_size in settings:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            drive = load_drive(str(bag)).drop_invalid_gps()
            indexed = time.perf_counter()
            database = build_database(pipeline, drive, batch_size=batch_size)
            elapsed = time.perf_counter() - start
            if len(database) != args.frames:
                raise RuntimeError(f"built {len(database)} entries from {args.frames} frames")
            samples[(threads, batch_size)].append(args.frames / elapsed)
            index_s.append(indexed - start)
    results: dict[str, Any] = {"bag_scan_s": float(np.median(index_s)), "images_per_s": {}}
    print(f"  bag scan (topics, stamps, GPS interpolation): median {results['bag_scan_s']:.2f} s")
    for (threads, batch_size), rates in samples.items():
        results["images_per_s"][f"threads {threads} batch {batch_size}"] = float(np.median(rates))
        print(f"  threads {threads} batch {batch_size:>3}: {np.median(rates):6.1f} images/s (median; rounds: "
              f"{', '.join(f'{rate:.1f}' for rate in rates)}) (target >= 30)")
    if args.cli:
        threads, best = max(samples, key=lambda setting: np.median(samples[setting]))
        out = args.cache / "build_cli.semdb"
        command = [sys.executable, "-m", "semloc_ros.cli", "build-db", str(bag), "--out", str(out), "--threads",
                   str(threads), "--batch-size", str(best), "--quiet", "--device", args.device]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - start
        results["cli"] = {"command": " ".join(command[2:]), "wall_s": wall, "images_per_s": args.frames / wall}
        print(f"  semloc build-db (whole command incl. start-up and model loading), threads {threads} batch {best}: "
              f"{wall:.1f} s = {args.frames / wall:.1f} images/s")
    write_json(args, "build", results)
    return 0


# ------------------------------------------------------------------------------------------------ CLI
def write_json(args: argparse.Namespace, mode: str, results: dict[str, Any]) -> None:
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mode": mode, "machine": machine_line(), "results": results}, indent=1,
                                        default=float))
        print(f"results: {args.json}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc benchmark", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="semloc-sim-v1 root")
    common.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="descriptor, database and bag cache")
    common.add_argument("--device", default="auto", help="torch device (auto: cuda when present)")
    common.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    common.add_argument("--domain-id", type=int, default=DEFAULT_DOMAIN_ID, help="ROS_DOMAIN_ID of started nodes")
    modes = parser.add_subparsers(dest="mode", required=True)

    stages = modes.add_parser("stages", parents=[common], help="per-stage latency; semantic vs RGB NetVLAD-VGG16")
    stages.add_argument("--drive", default="eval_night_l0")
    stages.add_argument("--frames", type=int, default=30, help="distinct frames per round")
    stages.add_argument("--rgb-frames", type=int, default=8, help="of those, frames also run through VGG16")
    stages.add_argument("--repeats", type=int, default=3, help="rounds")
    stages.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads to measure")

    threads = modes.add_parser("threads", parents=[common], help="1 vs 2 torch threads, other core idle/busy")
    threads.add_argument("--drive", default="eval_night_l0")
    threads.add_argument("--frames", type=int, default=30)
    threads.add_argument("--repeats", type=int, default=3)
    threads.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    threads.add_argument("--index-db", type=Path, default=None,
                         help="also time FAISS threads on this database (e.g. the 1M IVF-PQ file of `index`)")

    e2e = modes.add_parser("e2e", parents=[common], help="three node processes over DDS at a camera rate")
    e2e.add_argument("--drive", default="eval_night_l0", help="query drive streamed as the camera")
    e2e.add_argument("--database", type=Path, default=None, help="map (default: the database drive, cached)")
    e2e.add_argument("--rate", type=float, default=20.0, help="camera rate (Hz)")
    e2e.add_argument("--duration", type=float, default=30.0, help="seconds streamed per run")
    e2e.add_argument("--max-frames", type=int, default=400, help="distinct frames held in memory (cycled)")
    e2e.add_argument("--drain-s", type=float, default=3.0, help="wait for late fixes after the stream")
    e2e.add_argument("--repeats", type=int, default=3, help="rounds (each variant once per round)")
    e2e.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                     help="parameter override for every variant (repeatable)")
    e2e.add_argument("--variant", action="append", default=[], metavar="NAME[:NODE.PARAM=VALUE,...]",
                     help="a named parameter set to compare (repeatable; default: one variant, no overrides)")
    e2e.add_argument("--hops", action="store_true",
                     help="also time each hop (labels and descriptor arrivals; adds a subscriber to each)")

    index = modes.add_parser("index", parents=[common], help="flat vs HNSW vs IVF-PQ at 100k / 1M entries")
    index.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    index.add_argument("--index-types", nargs="+", default=["flat", "hnsw", "ivfpq"],
                       choices=["flat", "hnsw", "ivfpq", "auto"])
    index.add_argument("--threshold-sizes", type=int, nargs="*", default=[10_000, 25_000, 50_000, 100_000],
                       help="sizes of the exact vs IVF-PQ comparison behind the auto threshold")
    index.add_argument("--latency-queries", type=int, default=300, help="single queries timed per setting")
    index.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64], help="IVF-PQ nprobe sweep")
    index.add_argument("--rerank", type=int, nargs="+", default=[64, 256, 1024],
                       help="IVF-PQ sweep of candidates re-ranked exactly per query")
    index.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128], help="HNSW efSearch sweep")
    index.add_argument("--noise-sigma", type=float, default=None,
                       help="per-dimension noise of the synthetic copies (default: matched to real neighbours)")
    index.add_argument("--hnsw-max-entries", type=int, default=1_000_000, help="skip HNSW above this size")
    index.add_argument("--rebuild", action="store_true", help="rebuild cached database files")
    index.add_argument("--node", action="store_true", help="also measure a localizer_node with the IVF-PQ map")
    index.add_argument("--node-timeout-s", type=float, default=300.0)

    build = modes.add_parser("build", parents=[common], help="database building from a rosbag (images/s)")
    build.add_argument("--drive", default="eval_day_l0")
    build.add_argument("--frames", type=int, default=400)
    build.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    build.add_argument("--threads", type=int, nargs="+", default=[2], help="torch threads to compare")
    build.add_argument("--repeats", type=int, default=3)
    build.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw Image")
    build.add_argument("--cli", action="store_true", help="also time one whole `semloc build-db` command")

    for name in ("index-build", "index-query"):  # internal: one measurement in a fresh process
        hidden = modes.add_parser(name)
        hidden.add_argument("spec")
    return parser


MODES: dict[str, Callable[[argparse.Namespace], int]] = {
    "stages": run_stages, "threads": run_threads, "e2e": run_e2e, "index": run_index, "build": run_build,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode in ("index-build", "index-query"):
        function = index_build_worker if args.mode == "index-build" else index_query_worker
        print(json.dumps(function(json.loads(args.spec))))
        return 0
    if not (args.dataset / "splits.json").is_file():
        print(f"semloc benchmark: no semloc-sim dataset at {args.dataset} (--dataset)", file=sys.stderr)
        return 2
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    return MODES[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
