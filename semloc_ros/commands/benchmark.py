"""``semloc benchmark stages|threads|e2e|index|build``: what the CPU pipeline costs, measured (docs/benchmarks.md;
the measurements live in semloc_ros.benchmarks).

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
- ``build``: database building from a rosbag written from the benchmark frames, images/s by threads, batch size
  and database views (single vs the 7 recommended views in the same run).
- ``ray``: the same bag described on a loopback Ray cluster with 1 and 2 worker processes (ratio, same run).
- ``tiles``: a tiled map of a million synthetic places: the localizer's memory with the tiles around the vehicle,
  query and tile-switch time, a cold-start search of every tile.
- ``rerank``: label re-ranking of one query's top 50 on one thread, the bit-packed alignment against the
  per-shift reference on the same thumbnails (ratio, and a check that both give the same scores).

Every figure is a median over repeats; ratios compare measurements of the same run. Every process started here
that uses ROS 2 gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, the ``--domain-id`` given and, unless
``FASTDDS_DEFAULT_PROFILES_FILE`` is set, config/fastdds_large_frames.xml (``runner.apply_ros_defaults``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from semloc_ros.benchmarks.build import run_build
from semloc_ros.benchmarks.e2e import run_e2e
from semloc_ros.benchmarks.index import run_index
from semloc_ros.benchmarks.rerank import run_rerank
from semloc_ros.benchmarks.scale import run_ray, run_tiles
from semloc_ros.benchmarks.stages import run_stages
from semloc_ros.benchmarks.threads import run_threads
from semloc_ros.commands.common import view_set
from semloc_ros.core.views import RECOMMENDED_VIEWS, SINGLE_VIEW

DEFAULT_DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "semloc-sim-v1"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "semloc-bench"
DEFAULT_DOMAIN_ID = 230


def frame_size(text: str) -> tuple[int, int]:
    """argparse type ``WxH`` -> (width, height)."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"{text}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    return int(width), int(height)


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
    e2e.add_argument("--frame-size", type=frame_size, default=None, metavar="WxH",
                     help="resize the camera frames to this size (e.g. 1920x1080) instead of 320x240")
    e2e.add_argument("--duration", type=float, default=30.0, help="seconds streamed per run")
    e2e.add_argument("--max-frames", type=int, default=400, help="distinct frames held in memory (cycled)")
    e2e.add_argument("--drain-s", type=float, default=3.0, help="wait for late fixes after the stream")
    e2e.add_argument("--startup-timeout-s", type=float, default=300.0,
                     help="longest wait for the nodes to answer a first frame (ends at once when a node exits)")
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
    index.add_argument("--exact-candidates", type=int, nargs="+", default=[64, 256, 1024],
                       help="IVF-PQ sweep of candidates re-scored exactly per query")
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
    build.add_argument("--views", nargs="+", type=view_set, default=[SINGLE_VIEW, RECOMMENDED_VIEWS], metavar="VIEWS",
                       help="database view sets to compare: single, recommended (0 +-0.1 +-0.2 +-0.3) or "
                       "comma-separated shifts such as 0,-0.1,0.1")
    build.add_argument("--cli", action="store_true", help="also time one whole `semloc build-db` command per view set")

    ray = modes.add_parser("ray", parents=[common], help="describing on a loopback Ray cluster, 1 vs 2 workers")
    ray.add_argument("--drive", default="eval_day_l0")
    ray.add_argument("--frames", type=int, default=256)
    ray.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes to compare")
    ray.add_argument("--chunk-frames", type=int, default=32, help="frames per task")
    ray.add_argument("--batch-size", type=int, default=16)
    ray.add_argument("--repeats", type=int, default=2)

    tiles = modes.add_parser("tiles", parents=[common], help="a 1M-entry tiled map: memory, query, tile switch")
    tiles.add_argument("--entries", type=int, default=1_000_000)
    tiles.add_argument("--spacing-m", type=float, default=2.0, help="distance between places along a road")
    tiles.add_argument("--tile-size-m", type=float, default=1000.0)
    tiles.add_argument("--radius-m", type=float, default=600.0, help="tiles within this of the vehicle are loaded")
    tiles.add_argument("--route-m", type=float, default=3000.0, help="length of the drive across tile borders")

    rerank = modes.add_parser("rerank", parents=[common], help="label re-ranking: bit-packed vs per-shift loop")
    rerank.add_argument("--drive", default="eval_night_l0", help="query drive")
    rerank.add_argument("--queries", type=int, default=30, help="query frames, evenly spaced")
    rerank.add_argument("--top-k", type=int, default=50, help="candidates re-ranked per query")
    rerank.add_argument("--repeats", type=int, default=3, help="rounds")

    return parser


MODES: dict[str, Callable[[argparse.Namespace], int]] = {
    "stages": run_stages, "threads": run_threads, "e2e": run_e2e, "index": run_index, "build": run_build,
    "ray": run_ray, "tiles": run_tiles, "rerank": run_rerank,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.dataset / "splits.json").is_file():
        print(f"semloc benchmark: no semloc-sim dataset at {args.dataset} (--dataset)", file=sys.stderr)
        return 2
    saved = {name: os.environ.get(name) for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    try:
        return MODES[args.mode](args)
    finally:  # called as a library (tests), the caller's ROS environment is left as it was
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
