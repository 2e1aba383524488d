"""``stages``: per-stage latency of one frame through the shipped semantic pipeline (image conversion, DDS
serialisation, segmentation, descriptor, search with label re-ranking, fix message), and an RGB NetVLAD-VGG16
pipeline timed on the same frames in the same run; prints the speed ratio.

1. Load the shipped semantic pipeline, its map of the database drive (with label thumbnails), a localizer that
   re-ranks the top ``RERANK_TOP_K`` as config/semloc.yaml does, an untrained NetVLAD-VGG16 (timing only) and the
   variants compared: the float32 segmenter with and without batch norms folded, the int8 segmenter (CPU), the
   descriptor with contiguous weights. Torch threads are set to the first count first: the int8 segmenter's ONNX
   Runtime session keeps the count it was created with.
2. Per torch thread count: warm up, then run every frame through the whole chain of the three nodes with each
   stage timed, plus the before/after variants and the RGB baseline on the same frames (the per-frame compute
   and the baseline also on process CPU time, which a loaded machine inflates less than the wall clock).
3. Print medians, the speed ratios RGB / semantic (wall clock and CPU time), and the speed-ups of the
   optimisations.
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
    fmt_ms,
    load_frames,
    machine_line,
    semantic_pipeline,
    splits,
    stats_ms,
    thumbnail_database,
    write_json,
)

VGG_CONF: dict[str, Any] = {"backbone": "vgg16", "clusters": 64, "dim": 4096}  # NetVLAD paper: K=64, 4096-d
RERANK_TOP_K = 50  # localizer_node.rerank_top_k of config/semloc.yaml
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
    fp32: Any
    int8: Any | None
    contiguous: Any


@dataclass
class Samples:
    """Durations (s) collected at one thread count (step 2)."""

    stages: dict[str, list[float]] = field(default_factory=dict)
    before_after: dict[str, list[float]] = field(default_factory=dict)
    semantic: list[float] = field(default_factory=list)
    rgb: list[float] = field(default_factory=list)
    rgb_half: list[float] = field(default_factory=list)
    semantic_cpu: list[float] = field(default_factory=list)  # process CPU time: what a loaded machine inflates less
    rgb_cpu: list[float] = field(default_factory=list)


def load_models(args: argparse.Namespace) -> StageModels:
    """Step 1."""
    import torch

    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.core.localizer import Localizer, LocalizerConfig
    from semloc_ros.core.reranking import RerankConfig
    from semloc_ros.models import DescriptorExtractor, Segmenter

    pipeline = semantic_pipeline(args.device)
    segmenter, semantic = pipeline.segmenter, pipeline.descriptor
    database = GeoDatabase.load(thumbnail_database(args.dataset, splits(args.dataset)["database"], pipeline,
                                                   args.cache))
    vgg = DescriptorExtractor.untrained("rgb_netvlad", device=args.device, input_size=FRAME_SHAPE, **VGG_CONF)
    vgg_half = copy.copy(vgg)  # same network, run at the semantic descriptor's input size
    vgg_half.input_size = semantic.input_size
    fp32 = Segmenter.default(device=args.device, precision="fp32")
    int8 = Segmenter.default(device="cpu", precision="int8") if fp32.device.type == "cpu" else None
    unfolded = copy.copy(fp32)  # "before": the network as trained, batch norms not folded
    unfolded.fold_norms = False
    contiguous = copy.copy(semantic)  # "before": weights in the default (contiguous) memory format
    contiguous.net = copy.deepcopy(semantic.net).to(memory_format=torch.contiguous_format)
    # the single-frame stages (frames out of order); the sequence filter is timed by `semloc benchmark e2e`
    localizer = Localizer(database, LocalizerConfig(sequence_filter=False, rerank=RerankConfig(top_k=RERANK_TOP_K)))
    return StageModels(segmenter, semantic, database, localizer, vgg, vgg_half, unfolded, fp32, int8, contiguous)


def chain(models: StageModels, rgb: np.ndarray, header, times: dict[str, list[float]]) -> np.ndarray:
    """One frame through every stage of the three nodes, each stage timed; returns its labels."""
    from rclpy.serialization import deserialize_message, serialize_message
    from semloc_msgs.msg import Descriptor
    from sensor_msgs.msg import Image

    from semloc_ros.core.image_codec import to_rgb8
    from semloc_ros.core.reranking import label_thumbnail
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
    thumbnail = label_thumbnail(labels)
    mark("labels -> thumbnail")
    estimate = models.localizer.localize(query, thumbnail=thumbnail)
    mark(f"localize (search + re-ranking top {RERANK_TOP_K} + consensus)")
    serialize_message(LocalizerNode.navsatfix(estimate, header))
    mark("fix: NavSatFix build + CDR")
    return segmented


def timed(samples: list[float], function, argument, cpu_samples: list[float] | None = None) -> None:
    """Append the wall-clock duration of ``function(argument)`` (and its process CPU time to ``cpu_samples``)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    function(argument)
    samples.append(time.perf_counter() - start)
    if cpu_samples is not None:
        cpu_samples.append(time.process_time() - start_cpu)


def per_frame_compute(models: StageModels, rgb: np.ndarray) -> None:
    """What the three nodes compute for one frame: segmentation, descriptor, search with re-ranking, consensus."""
    from semloc_ros.core.reranking import label_thumbnail

    labels = models.segmenter.predict(rgb)
    models.localizer.localize(models.semantic.describe(labels), thumbnail=label_thumbnail(labels))


def compared(models: StageModels, rgb: np.ndarray, labels: np.ndarray) -> list[tuple[str, Any, np.ndarray]]:
    """The variants timed in pairs (step 2): name, function, argument."""
    m = models
    pairs = [("segmentation fp32, batch norms not folded", m.unfolded.predict, rgb),
             ("segmentation fp32, folded", m.fp32.predict, rgb),
             ("descriptor before (contiguous weights)", m.contiguous.describe, labels),
             ("descriptor after (channels_last)", m.semantic.describe, labels)]
    if m.int8 is not None:
        pairs.append(("segmentation int8 (ONNX Runtime)", m.int8.predict, rgb))
    return pairs


def measure(models: StageModels, frames: list[np.ndarray], header, args: argparse.Namespace) -> Samples:
    """Step 2 at the current torch thread count."""
    m = models
    samples = Samples()
    for rgb in frames[:2]:  # warm-up (first-call allocations, oneDNN kernel selection)
        labels = chain(m, rgb, header, {})
        m.vgg.describe(rgb)
        m.vgg_half.describe(rgb)
        for _, function, argument in compared(m, rgb, labels):
            function(argument)
    for _ in range(args.repeats):
        for i, rgb in enumerate(frames):
            labels = chain(m, rgb, header, samples.stages)
            for name, function, argument in compared(m, rgb, labels):
                timed(samples.before_after.setdefault(name, []), function, argument)
            timed(samples.semantic, lambda image: per_frame_compute(m, image), rgb, samples.semantic_cpu)
            if i < args.rgb_frames:
                timed(samples.rgb, m.vgg.describe, rgb, samples.rgb_cpu)
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
    print(f"  {'semantic: segment + describe + search + re-rank':<42} {fmt_ms(semantic_stats)}")
    print(f"  {'RGB NetVLAD-VGG16 at 240x320':<42} {fmt_ms(rgb_stats)}")
    print(f"  {'RGB NetVLAD-VGG16 at 120x160':<42} {fmt_ms(rgb_half_stats)}")
    ratio = rgb_stats["median"] / semantic_stats["median"]
    ratio_half = rgb_half_stats["median"] / semantic_stats["median"]
    ratio_chain = (rgb_stats["median"] + shared) / chain_total
    cpu_ratio = float(np.median(samples.rgb_cpu) / np.median(samples.semantic_cpu))
    print(f"  speed ratio RGB-VGG16(240x320) / semantic, models only: {ratio:6.1f}x  "
          f"(whole chain incl. conversions and search: {ratio_chain:.1f}x; VGG16 at 120x160: {ratio_half:.1f}x)")
    print(f"  the same on process CPU time (medians {1e3 * np.median(samples.rgb_cpu):.1f} / "
          f"{1e3 * np.median(samples.semantic_cpu):.1f} ms): {cpu_ratio:6.1f}x")
    optimisation = {name: stats_ms(values) for name, values in samples.before_after.items()}
    for name, stats in optimisation.items():
        print(f"  {name:<42} {fmt_ms(stats)}")
    medians = [stats["median"] for stats in optimisation.values()]
    int8 = f", segmentation int8 over fp32 {medians[1] / medians[4]:.2f}x" if len(medians) > 4 else ""
    print(f"  speed-up: segmentation folding {medians[0] / medians[1]:.2f}x, "
          f"descriptor {medians[2] / medians[3]:.2f}x{int8}")
    return {"optimisation": optimisation, "stages": stage_stats, "semantic": semantic_stats, "rgb_vgg16": rgb_stats,
            "rgb_vgg16_120x160": rgb_half_stats, "ratio": ratio, "ratio_chain": ratio_chain,
            "ratio_120x160": ratio_half, "cpu_ratio": cpu_ratio}


def run_stages(args: argparse.Namespace) -> int:
    import faiss
    import torch
    from std_msgs.msg import Header

    from semloc_ros.ros.conversions import ns_to_stamp

    faiss.omp_set_num_threads(1)  # as the localizer node (faiss_threads default)
    torch.set_num_threads(args.threads[0])  # the int8 segmenter's ONNX Runtime session keeps the count it starts with
    models = load_models(args)
    frames = load_frames(args.dataset, args.drive, args.frames, stride=7)
    header = Header(stamp=ns_to_stamp(1_700_000_000_000_000_000), frame_id="camera")
    print(f"semloc benchmark stages: {machine_line()}")
    print(f"frames: {len(frames)} of {args.drive} ({FRAME_SHAPE[0]}x{FRAME_SHAPE[1]}), {args.repeats} rounds; "
          f"database {len(models.database)} entries; device {models.segmenter.device}, segmenter "
          f"{models.segmenter.precision}")
    print(f"RGB baseline: rgb_netvlad {VGG_CONF} (untrained weights: timing only), "
          f"{min(args.rgb_frames, len(frames))} frames per round")
    results: dict[str, Any] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        results[str(threads)] = report(threads, measure(models, frames, header, args))
    write_json(args.json, "stages", results)
    return 0
