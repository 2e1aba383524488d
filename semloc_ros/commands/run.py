"""semloc run: start segmentation_node, descriptor_node and localizer_node as separate processes.

Equivalent to `ros2 launch semloc_ros semloc.launch.py` (same YAML), for installs without ros2 launch.
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from semloc_ros.commands.common import add_parameter_arguments
from semloc_ros.ros.runner import NODES, PipelineRunner


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the nodes like Ctrl-C does."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parameter_arguments(parser, "ROS 2 parameter file (default: config/semloc.yaml)")
    parser.add_argument("--database", help="GeoDatabase file for the localizer (overrides the YAML)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="camera topic")
    parser.add_argument("--compressed", action="store_true",
                        help="subscribe to IMAGE_TOPIC/compressed (sensor_msgs/CompressedImage)")
    parser.add_argument("--odom-topic", help="nav_msgs/Odometry topic the localizer's odom is remapped to (read with "
                        "--set localizer_node.use_odometry=true and the sequence filter)")
    parser.add_argument("--no-localizer", action="store_true", help="start only segmentation and descriptor")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID for the nodes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for node, param, value in args.assignments:
        overrides.setdefault(node, {})[param] = value
    if args.database:
        overrides.setdefault("localizer_node", {})["database_path"] = args.database
    if args.compressed:
        overrides.setdefault("segmentation_node", {})["use_compressed"] = True
    nodes = NODES[:2] if args.no_localizer else NODES
    remaps = {"image_raw": args.image_topic, "image_raw/compressed": f"{args.image_topic}/compressed"}
    if args.odom_topic:
        remaps["odom"] = args.odom_topic
    runner = PipelineRunner(args.params_file, overrides, remaps=remaps, nodes=nodes, domain_id=args.domain_id)
    signal.signal(signal.SIGTERM, _interrupt)
    with runner:
        print(f"[semloc run] started {', '.join(nodes)} (Ctrl-C stops them)")
        code = runner.wait()
    return code
