"""``semloc record OUT``: record the localizer's outputs into a ROS 2 bag (rosbags; mcap or sqlite3).

Topics are subscribed as soon as a publisher appears (their type comes from the ROS graph), with the
reliability their publishers offer, and the raw CDR bytes are written with the receive time, like
``ros2 bag record``. Ctrl-C, SIGTERM or ``--duration`` stop the recording; the bag is then finalised.

OUT ending in ``.mcap`` or ``.db3`` is written as that single file (storage from the suffix; it appears only
once the recording is complete); any other OUT is a rosbag2 directory (``metadata.yaml`` + storage file).
Examples::

    semloc record run1.mcap
    semloc record run1 --storage sqlite3 --topics /semloc/fix /semloc/path --duration 120
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semloc_ros.io.bags import STORAGES, BagError, BagWriter

DEFAULT_TOPICS = ("/semloc/fix", "/semloc/geopose", "/semloc/places", "/semloc/path", "/diagnostics")


class RecordError(BagError):
    """Bad recording options."""


# ------------------------------------------------------------------------------------------ output files


def resolve_output(out: Path, storage: str | None) -> tuple[Path, str, bool]:
    """``(path, storage, single_file)`` of the bag to write; refuses to overwrite."""
    suffix_storage = next((name for name, suffix in STORAGES.items() if out.suffix == suffix), None)
    if suffix_storage and storage and storage != suffix_storage:
        raise RecordError(f"{out} has the {suffix_storage} suffix but --storage is {storage}")
    if out.exists():
        raise RecordError(f"{out} exists; choose a new name")
    return out, suffix_storage or storage or "mcap", suffix_storage is not None


# -------------------------------------------------------------------------------------------- recorder


class TopicRecorder:
    """Subscribes (raw) to the wanted topics once they have a publisher and writes what arrives to a bag."""

    def __init__(self, node: Any, bag: BagWriter, topics: Sequence[str]) -> None:
        self.node, self.bag = node, bag
        self.wanted = [t if t.startswith("/") else "/" + t for t in topics]
        self.subscriptions: dict[str, Any] = {}
        self.refused: set[str] = set()
        self.discover()
        self.timer = node.create_timer(0.2, self.discover)

    def _qos(self, topic: str):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        offered = self.node.get_publishers_info_by_topic(topic)
        reliable = offered and all(info.qos_profile.reliability == ReliabilityPolicy.RELIABLE for info in offered)
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                          else ReliabilityPolicy.BEST_EFFORT)

    def discover(self) -> None:
        """Subscribe to each wanted topic that now has a publisher (type from the graph)."""
        from semloc_ros.ros.conversions import message_class

        types = dict(self.node.get_topic_names_and_types())
        for topic in self.wanted:
            if (topic in self.subscriptions or topic in self.refused or not types.get(topic)
                    or not self.node.count_publishers(topic)):
                continue
            msgtype = types[topic][0]
            try:
                if (cls := message_class(msgtype)) is None:
                    raise RecordError(f"type {msgtype} is not installed")
                self.bag.add_topic(topic, msgtype)
            except (BagError, OSError, ValueError) as error:
                self.node.get_logger().warning(f"not recording {topic}: {error}")
                self.refused.add(topic)
                continue
            self.subscriptions[topic] = self.node.create_subscription(
                cls, topic, lambda raw, t=topic: self.bag.write(t, raw, time.time_ns()), self._qos(topic),
                raw=True)
            self.node.get_logger().info(f"recording {topic} ({msgtype})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="OUT.mcap / OUT.db3 (single file) or a bag directory")
    parser.add_argument("--topics", nargs="+", default=list(DEFAULT_TOPICS), metavar="TOPIC",
                        help=f"topics to record (default: {' '.join(DEFAULT_TOPICS)})")
    parser.add_argument("--storage", choices=sorted(STORAGES), default=None,
                        help="storage plugin (default: from the OUT suffix, else mcap)")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.duration is not None and not args.duration > 0.0:
            raise RecordError(f"--duration must be > 0, got {args.duration}")
        out, storage, single_file = resolve_output(args.out, args.storage)
        bag = BagWriter(out, storage, single_file)
    except (BagError, OSError) as error:
        print(f"semloc record: {error}", file=sys.stderr)
        return 2

    import rclpy

    from semloc_ros.ros.node_common import init_with_stop_request

    stop = init_with_stop_request()
    node = rclpy.create_node("semloc_record")
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    try:
        TopicRecorder(node, bag, args.topics)
        print(f"[semloc record] writing {out} ({storage}); waiting for {' '.join(args.topics)} (Ctrl-C stops)",
              flush=True)
        while not stop and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        bag.close()
    counts = ", ".join(f"{topic}: {n}" for topic, n in bag.counts.items()) or "nothing"
    print(f"[semloc record] wrote {out}: {sum(bag.counts.values())} messages ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
