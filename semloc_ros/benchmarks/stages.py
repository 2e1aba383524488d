"""``stages``: per-stage latency of one frame through the shipped semantic pipeline (image conversion, DDS
serialisation, segmentation, descriptor, search, fix message), and an RGB NetVLAD-VGG16 pipeline timed on the same
frames in the same run; prints the speed ratio.

1. Load the shipped semantic pipeline, a map of the database drive, an untrained NetVLAD-VGG16 (timing only) and
   the "before" variants of the two networks (batch norms not folded, contiguous weights).
2. Per torch thread count: warm up, then run every frame through the whole chain of the three nodes with each
   stage timed, plus the before/after variants and the RGB baseline on the same frames.
3. Print medians, the speed ratio RGB / semantic, and the speed-ups of the optimisations.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semloc_ros.benchmarks.common import (
    FRAME_SHAPE,
    drive_database,
    fmt_ms,
    load_frames,
    machine_line,
    semantic_pipeline,
    splits,
    stats_ms,
    write_json,
)

VGG_CONF: dict[str, Any] = {"backbone": "vgg16", "clusters": 64, "dim": 4096}  # NetVLAD paper: K=64, 4096-d
SEGMENTATION = "segmentation (LR-ASPP 240x320)"
DESCRIPTOR = "descriptor (AlexNet-NetVLAD 120x160)"


@dataclass
class StageModels:
    """Everything one round times (step 1)."""

    segmenter: Any
    semantic: Any
    database: Any
    localizer: Any
    vgg: Any
    vgg_half: Any
    unfolded: Any
    contiguous: Any


@dataclass
class Samples:
    """Durations (s) collected at one thread count (step 2)."""

    stages: dict[str, list[float]] = field(default_factory=dict)
    before_after: dict[str, list[float]] = field(default_factory=dict)
    semantic: list[float] = field(default_factory=list)
    rgb: list[float] = field(default_factory=list)
    rgb_half: list[float] = field(default_factory=list)


def load_models(args: argparse.Namespace) -> StageModels:
    """Step 1."""
    import torch

    from semloc_ros.core.localizer import Localizer
    from semloc_ros.models import DescriptorExtractor

    pipeline = semantic_pipeline(args.device)
    segmenter, semantic = pipeline.segmenter, pipeline.descriptor
    database = drive_database(args.dataset, splits(args.dataset)["database"], pipeline, args.cache)
    vgg = DescriptorExtractor.untrained("rgb_netvlad", device=args.device, input_size=FRAME_SHAPE, **VGG_CONF)
    vgg_half = copy.copy(vgg)  # same network, run at the semantic descriptor's input size
    vgg_half.input_size = semantic.input_size
    unfolded = copy.copy(segmenter)  # "before": the network as trained, batch norms not folded
    unfolded.fold_norms = False
    contiguous = copy.copy(semantic)  # "before": weights in the default (contiguous) memory format
    contiguous.net = copy.deepcopy(semantic.net).to(memory_format=torch.contiguous_format)
    return StageModels(segmenter, semantic, database, Localizer(database), vgg, vgg_half, unfolded, contiguous)


def chain(models: StageModels, rgb: np.ndarray, header, times: dict[str, list[float]]) -> np.ndarray:
    """One frame through every stage of the three nodes, each stage timed; returns its labels."""
    from rclpy.serialization import deserialize_message, serialize_message
    from semloc_msgs.msg import Descriptor
    from sensor_msgs.msg import Image

    from semloc_ros.core.image_codec import to_rgb8
    from semloc_ros.ros.conversions import array_to_imgmsg, imgmsg_to_array
    from semloc_ros.ros.localizer_node import LocalizerNode

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
    labels = models.segmenter.predict(image)
    mark(SEGMENTATION)
    segmented = labels
    raw = serialize_message(array_to_imgmsg(labels, "mono8", header))
    mark("labels: numpy -> Image -> CDR")
    labels = imgmsg_to_array(deserialize_message(raw, Image))
    mark("descriptor_node: CDR -> labels")
    vector = models.semantic.describe(labels)
    mark(DESCRIPTOR)
    out = Descriptor(header=header, model_id=models.semantic.model_id, dimension=int(vector.shape[0]))
    out.data = vector.astype(np.float32).tolist()
    raw = serialize_message(out)
    mark("descriptor message: build + CDR")
    query = np.asarray(deserialize_message(raw, Descriptor).data, dtype=np.float32)
    mark("localizer_node: CDR -> numpy")
    top_k = models.localizer.config.top_k
    models.database.search(query, top_k)
    mark(f"search ({len(models.database)} entries, flat, top-{top_k})")
    estimate = models.localizer.localize(query)
    mark("localize (search + consensus)")
    serialize_message(LocalizerNode.navsatfix(estimate, header))
    mark("fix: NavSatFix build + CDR")
    return segmented


def timed(samples: list[float], function, argument) -> None:
    start = time.perf_counter()
    function(argument)
    samples.append(time.perf_counter() - start)


def measure(models: StageModels, frames: list[np.ndarray], header, args: argparse.Namespace) -> Samples:
    """Step 2 at the current torch thread count."""
    m = models
    samples = Samples()
    for rgb in frames[:2]:  # warm-up (first-call allocations, oneDNN kernel selection)
        chain(m, rgb, header, {})
        m.vgg.describe(rgb)
        m.vgg_half.describe(rgb)
        m.contiguous.describe(m.unfolded.predict(rgb))
    for _ in range(args.repeats):
        for i, rgb in enumerate(frames):
            labels = chain(m, rgb, header, samples.stages)
            for name, function, argument in (
                    ("segmentation before (batch norms not folded)", m.unfolded.predict, rgb),
                    ("segmentation after (folded)", m.segmenter.predict, rgb),
                    ("descriptor before (contiguous weights)", m.contiguous.describe, labels),
                    ("descriptor after (channels_last)", m.semantic.describe, labels)):
                timed(samples.before_after.setdefault(name, []), function, argument)
            timed(samples.semantic, lambda image: m.semantic.describe(m.segmenter.predict(image)), rgb)
            if i < args.rgb_frames:
                timed(samples.rgb, m.vgg.describe, rgb)
                timed(samples.rgb_half, m.vgg_half.describe, rgb)
    return samples


def report(threads: int, samples: Samples) -> dict[str, Any]:
    """Step 3 for one thread count; returns its results."""
    print(f"\n== torch threads {threads} ==")
    stage_stats = {name: stats_ms(values) for name, values in samples.stages.items()}
    for name, stats in stage_stats.items():
        print(f"  {name:<42} {fmt_ms(stats)}")
    chain_total = sum(stats["median"] for stats in stage_stats.values())
    semantic_stats, rgb_stats = stats_ms(samples.semantic), stats_ms(samples.rgb)
    rgb_half_stats = stats_ms(samples.rgb_half)
    shared = chain_total - stage_stats[SEGMENTATION]["median"] - stage_stats[DESCRIPTOR]["median"]
    print(f"  {'sum of stage medians (whole chain)':<42} {chain_total:8.2f} ms")
    print(f"  {'semantic: segmentation + descriptor':<42} {fmt_ms(semantic_stats)}")
    print(f"  {'RGB NetVLAD-VGG16 at 240x320':<42} {fmt_ms(rgb_stats)}")
    print(f"  {'RGB NetVLAD-VGG16 at 120x160':<42} {fmt_ms(rgb_half_stats)}")
    ratio = rgb_stats["median"] / semantic_stats["median"]
    ratio_half = rgb_half_stats["median"] / semantic_stats["median"]
    ratio_chain = (rgb_stats["median"] + shared) / chain_total
    print(f"  speed ratio RGB-VGG16(240x320) / semantic, models only: {ratio:6.1f}x  "
          f"(whole chain incl. conversions and search: {ratio_chain:.1f}x; VGG16 at 120x160: {ratio_half:.1f}x)")
    optimisation = {name: stats_ms(values) for name, values in samples.before_after.items()}
    for name, stats in optimisation.items():
        print(f"  {name:<42} {fmt_ms(stats)}")
    names = list(optimisation)
    print(f"  speed-up: segmentation {optimisation[names[0]]['median'] / optimisation[names[1]]['median']:.2f}x, "
          f"descriptor {optimisation[names[2]]['median'] / optimisation[names[3]]['median']:.2f}x")
    return {"optimisation": optimisation, "stages": stage_stats, "semantic": semantic_stats, "rgb_vgg16": rgb_stats,
            "rgb_vgg16_120x160": rgb_half_stats, "ratio": ratio, "ratio_chain": ratio_chain,
            "ratio_120x160": ratio_half}


def run_stages(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from std_msgs.msg import Header

    from semloc_ros.ros.conversions import ns_to_stamp

    faiss.omp_set_num_threads(1)  # as the localizer node (faiss_threads default)
    models = load_models(args)
    frames = load_frames(args.dataset, args.drive, args.frames, stride=7)
    header = Header(stamp=ns_to_stamp(1_700_000_000_000_000_000), frame_id="camera")
    print(f"semloc benchmark stages: {machine_line()}")
    print(f"frames: {len(frames)} of {args.drive} ({FRAME_SHAPE[0]}x{FRAME_SHAPE[1]}), {args.repeats} rounds; "
          f"database {len(models.database)} entries; device {models.segmenter.device}")
    print(f"RGB baseline: rgb_netvlad {VGG_CONF} (untrained weights: timing only), "
          f"{min(args.rgb_frames, len(frames))} frames per round")
    results: dict[str, Any] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results[str(threads)] = report(threads, measure(models, frames, header, args))
    write_json(args.json, "stages", results)
    return 0
