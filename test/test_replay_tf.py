"""`semloc replay` publishes a bag's /tf and /tf_static (tf2_msgs generated from interfaces/tf2_msgs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

S = 1_000_000_000
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types


def transform(parent: str, child: str, x: float, z: float, t: float):
    ns = round(t * S)
    return T["geometry_msgs/msg/TransformStamped"](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // S, nanosec=ns % S),
                                        frame_id=parent),
        child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=z),
            rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))


def write_tf_bag(path: Path) -> None:
    """A static base_link -> camera / gps pair at the start, then odom -> base_link at 10 Hz for 0.5 s."""
    tf_message = T["tf2_msgs/msg/TFMessage"]
    messages = [("/tf_static", tf_message(transforms=[transform("base_link", "camera", 1.2, 1.5, 0.0),
                                                      transform("base_link", "gps", -0.4, 1.9, 0.0)]), 0.0)]
    messages += [("/tf", tf_message(transforms=[transform("odom", "base_link", 0.1 * i, 0.0, 0.1 * i)]), 0.1 * i)
                 for i in range(5)]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msg, t in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            writer.write(connections[topic], round(t * S) + S, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def test_generated_tf2_msgs_has_the_upstream_type_hash() -> None:
    # rosbags carries the upstream definitions: the same hash means real tf2 consumers accept our messages
    description = Path(sys.prefix) / "share" / "tf2_msgs" / "msg" / "TFMessage.json"
    assert TYPESTORE.hash_rihs01("tf2_msgs/msg/TFMessage") in description.read_text()


def test_replay_publishes_tf_and_latched_tf_static(tmp_path: Path) -> None:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from tf2_msgs.msg import TFMessage

    bag = tmp_path / "tf_bag"
    write_tf_bag(bag)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("replay_tf_test", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    dynamic: list[TFMessage] = []
    static: list[TFMessage] = []
    node.create_subscription(TFMessage, "/tf", dynamic.append, QoSProfile(depth=100))
    # a tf2 static listener asks for transient local: a volatile publisher would never match it
    node.create_subscription(TFMessage, "/tf_static", static.append,
                             QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    process = subprocess.Popen([sys.executable, "-m", "semloc_ros.cli", "replay", str(bag), "--rate", "5",
                                "--wait-for-subscribers", "20"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and process.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and (len(dynamic) < 5 or not static):
            executor.spin_once(timeout_sec=0.05)
    finally:
        process.kill()
        output = process.communicate()[0]
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert process.returncode == 0, output
    assert "skipping" not in output and "published 6 messages" in output
    assert [(t.header.frame_id, t.child_frame_id, t.transform.translation.x) for t in static[0].transforms] == [
        ("base_link", "camera", 1.2), ("base_link", "gps", -0.4)]
    assert [round(m.transforms[0].transform.translation.x, 3) for m in dynamic] == [0.0, 0.1, 0.2, 0.3, 0.4]
