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
import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_TOPICS = ("/semloc/fix", "/semloc/geopose", "/semloc/places", "/semloc/path", "/diagnostics")
STORAGES = {"mcap": ".mcap", "sqlite3": ".db3"}
_BUILTIN_TYPES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
                  "uint32", "int64", "uint64", "string", "wstring"}


class RecordError(ValueError):
    """Bad recording options or a message type whose definition cannot be found."""


# ------------------------------------------------------------------------------------- message definitions


def _msg_file(msgtype: str) -> Path:
    """The installed ``.msg`` definition of ``pkg/msg/Name`` (ament index, else this Python's share/)."""
    package, _, name = msgtype.split("/")
    share_dirs = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError):
            share_dirs.append(Path(get_package_share_directory(package)))
    except ImportError:
        pass
    share_dirs.append(Path(sys.prefix) / "share" / package)
    for share in share_dirs:
        if (path := share / "msg" / f"{name}.msg").is_file():
            return path
    raise RecordError(f"no definition of {msgtype} found (looked in {[str(d) for d in share_dirs]})")


def _field_types(text: str, package: str) -> set[str]:
    """Non-builtin types used by the fields of a ``.msg`` text, as ``pkg/msg/Name``."""
    types = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        type_name = re.split(r"[\s\[<]", line, maxsplit=1)[0]  # also constants: their types are builtin
        if type_name in _BUILTIN_TYPES:
            continue
        if type_name == "Header":
            types.add("std_msgs/msg/Header")
        elif "/" in type_name:
            pkg, _, name = type_name.rpartition("/")
            types.add(f"{pkg.split('/')[0]}/msg/{name}")
        else:
            types.add(f"{package}/msg/{type_name}")
    return types


def typestore_for(msgtypes: Sequence[str]):
    """A rosbags Kilted typestore that also knows ``msgtypes`` (and their field types) from installed .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    pending, found = list(msgtypes), {}
    while pending:
        msgtype = pending.pop()
        if msgtype in typestore.types or msgtype in found:
            continue
        text = _msg_file(msgtype).read_text()
        found.update(get_types_from_msg(text, msgtype))
        pending.extend(_field_types(text, msgtype.split("/")[0]))
    if found:
        typestore.register(found)
    return typestore


# ------------------------------------------------------------------------------------------ output files


def resolve_output(out: Path, storage: str | None) -> tuple[Path, str, bool]:
    """``(path, storage, single_file)`` of the bag to write; refuses to overwrite."""
    suffix_storage = next((name for name, suffix in STORAGES.items() if out.suffix == suffix), None)
    if suffix_storage and storage and storage != suffix_storage:
        raise RecordError(f"{out} has the {suffix_storage} suffix but --storage is {storage}")
    if out.exists():
        raise RecordError(f"{out} exists; choose a new name")
    return out, suffix_storage or storage or "mcap", suffix_storage is not None


class BagFile:
    """A rosbags Writer for one bag; a single-file output is written in a hidden directory, then moved."""

    def __init__(self, out: Path, storage: str, single_file: bool) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.out, self.single_file = out, single_file
        self.directory = out.with_name(f".{out.name}.recording") if single_file else out
        if self.directory.exists():
            raise RecordError(f"{self.directory} exists (left by an interrupted recording?); remove it")
        out.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.directory, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        typestore = typestore_for([msgtype])
        self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=typestore)
        self.counts[topic] = 0

    def write(self, topic: str, raw: bytes, receive_time_ns: int) -> None:
        self.writer.write(self.connections[topic], receive_time_ns, raw)
        self.counts[topic] += 1

    def close(self) -> Path:
        """Finalise the bag (footer/index and metadata); a single file is then moved to its name."""
        self.writer.close()
        if self.single_file:
            (storage_file,) = [p for p in self.directory.iterdir() if p.suffix in STORAGES.values()]
            os.replace(storage_file, self.out)
            shutil.rmtree(self.directory)
        return self.out


# -------------------------------------------------------------------------------------------- recorder


class TopicRecorder:
    """Subscribes (raw) to the wanted topics once they have a publisher and writes what arrives to a bag."""

    def __init__(self, node: Any, bag: BagFile, topics: Sequence[str]) -> None:
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
            except (RecordError, OSError, ValueError) as error:
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
        bag = BagFile(out, storage, single_file)
    except (RecordError, OSError) as error:
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
