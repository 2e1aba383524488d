"""``semloc replay BAG``: publish a ROS 2 bag's topics live, with their recorded timing (like ``ros2 bag play``).

The raw CDR bytes from the bag are published as they are (no deserialisation); the publisher's message class
comes from the type name in the bag (``pkg/msg/Name`` -> ``pkg.msg.Name``), topics whose type is not
installed are skipped with a warning. Images use the sensor-data QoS (best effort), ``/tf_static`` is reliable
and transient-local like tf2's static broadcaster (a listener that starts later still gets the transforms,
while the replay runs), everything else reliable with a deep queue. Examples::

    semloc replay drive.mcap --remap /cam/image_raw:=/camera/image_raw
    semloc replay drive.mcap --topics /cam/image_raw --rate 0.5 --loop --start-offset 30 --clock
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from semloc_ros.io.bag_playback import BagSource, PlaybackError, Scheduled, parse_remap, play, schedule
from semloc_ros.io.bags import BagError
from semloc_ros.io.datasets import IMAGE_MSGTYPES
from semloc_ros.ros.conversions import message_class


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", help="ROS 2 bag: a directory with metadata.yaml, a .mcap or a .db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="play the bag again and again until stopped")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="start this many seconds after the bag's first message")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics (default: all)")
    parser.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW",
                        help="publish bag topic OLD on NEW (repeatable)")
    parser.add_argument("--clock", nargs="?", type=float, const=40.0, default=None, metavar="HZ",
                        help="publish rosgraph_msgs/Clock on /clock from the bag time (default 40 Hz, and "
                             "before each message)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                        help="before playing, wait up to S seconds until every topic has a subscriber")
    parser.add_argument("--settle", type=float, default=1.5, metavar="S",
                        help="after --wait-for-subscribers matched, wait S seconds more: the subscribers' side of "
                             "DDS discovery may not have matched yet, and a message sent before it has is lost")
    return parser


TF_STATIC_TOPIC = "/tf_static"


def topic_qos(topic: str, msgtype: str) -> Any:
    """The QoS a bag topic is published with: sensor data for images, transient local for /tf_static."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data

    if msgtype in IMAGE_MSGTYPES:
        return qos_profile_sensor_data
    if topic == TF_STATIC_TOPIC:
        return QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return QoSProfile(depth=100)


class BagReplayer:
    """Publishers for a bag's topics on one rclpy node; publishes :class:`Scheduled` messages raw."""

    def __init__(self, node: Any, topics: dict[str, tuple[str, type]], remaps: dict[str, str],
                 clock: bool) -> None:
        from rclpy.qos import QoSProfile

        self.node = node
        self.publishers: dict[str, Any] = {}
        for topic, (msgtype, cls) in topics.items():
            target = remaps.get(topic, topic)
            self.publishers[topic] = node.create_publisher(cls, target, topic_qos(target, msgtype))
        self.clock_publisher = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self.clock_publisher = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))

    def wait_for_subscribers(self, timeout_s: float, should_stop, settle_s: float = 1.5) -> bool:
        """Wait until every publisher is matched by a subscriber (DDS discovery) or the timeout.

        Discovery is asymmetric: our writer can see a reader before that reader has matched our writer, and a
        sample sent in between is lost. ``settle_s`` after the match gives the other side time to catch up.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not should_stop():
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                time.sleep(settle_s)
                return True
            time.sleep(0.05)
        return False

    def wait_for_delivery(self, timeout_s: float) -> bool:
        """Wait until every subscriber acknowledged the reliable topics' messages (a process that exits right
        after its last publish otherwise takes samples in flight with it); best-effort topics have no acks."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        delivered = True
        for publisher in self.publishers.values():
            remaining = max(0.0, deadline - time.monotonic())
            delivered &= publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9)))
        return delivered

    def publish(self, item: Scheduled) -> None:
        self.publishers[item.message.topic].publish(item.message.raw)

    def publish_clock(self, bag_time_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        seconds, nanoseconds = divmod(max(0, int(bag_time_ns)), 1_000_000_000)
        self.clock_publisher.publish(Clock(clock=Time(sec=seconds, nanosec=nanoseconds)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        remaps = dict(parse_remap(rule) for rule in args.remap)
        source = BagSource(args.bag, args.topics)
        if unknown := sorted(set(remaps) - set(source.topics)):
            raise PlaybackError(f"--remap of topic(s) {unknown} that are not played; played: {sorted(source.topics)}")
        playable: dict[str, tuple[str, type]] = {}
        for topic, msgtype in source.topics.items():
            if (cls := message_class(msgtype)) is None:
                print(f"[semloc replay] skipping {topic}: message type {msgtype} is not installed", file=sys.stderr)
            else:
                playable[topic] = (msgtype, cls)
        if not playable:
            raise PlaybackError("no topic with an installed message type to play")
        source.topics = {topic: msgtype for topic, (msgtype, _) in playable.items()}
        items = schedule(source, rate=args.rate, start_offset_s=args.start_offset, loop=args.loop)
        if args.clock is not None and not args.clock > 0.0:
            raise PlaybackError(f"--clock rate must be > 0 Hz, got {args.clock}")
    except (PlaybackError, BagError, OSError) as error:
        print(f"semloc replay: {error}", file=sys.stderr)
        return 2

    import rclpy

    from semloc_ros.ros.node_common import init_with_stop_request

    stop = init_with_stop_request()
    node = rclpy.create_node("semloc_replay")
    try:
        replayer = BagReplayer(node, playable, remaps, clock=args.clock is not None)
        for topic in replayer.publishers:
            target = remaps.get(topic, topic)
            print(f"[semloc replay] {topic} -> {target}" if target != topic else f"[semloc replay] {topic}")
        if args.wait_for_subscribers > 0 and not replayer.wait_for_subscribers(
                args.wait_for_subscribers, lambda: bool(stop), settle_s=max(0.0, args.settle)):
            print("[semloc replay] not every topic has a subscriber; playing anyway", file=sys.stderr)
        count = play(items, replayer.publish, rate=args.rate,
                     clock_period_s=1.0 / args.clock if args.clock else None,
                     publish_clock=replayer.publish_clock if args.clock else None,
                     should_stop=lambda: bool(stop))
        if not stop and not replayer.wait_for_delivery(timeout_s=3.0):
            print("[semloc replay] some reliable messages were not acknowledged by every subscriber",
                  file=sys.stderr)
        print(f"[semloc replay] published {count} messages" + (" (stopped)" if stop else ""))
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
