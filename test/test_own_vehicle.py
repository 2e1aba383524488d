"""docs/own-vehicle.md end to end on small bags written here: build-db, train --source (one drive, two drives),
build-db with the fine-tuned descriptor, the nodes on the replayed second drive, fixes in the GPS frame.

The bags are made like a car records them: CompressedImage at 5 Hz, NavSatFix at 1 Hz in the antenna frame
with a NO_FIX and a NaN outage, /tf_static with base_link -> camera / gps, and an unrelated String topic.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from semloc_ros.commands.demo import DEMO_DATA
from semloc_ros.core.geodesy import geodesic_distance_m
from semloc_ros.io.datasets import Drive, load_semloc_sim_drive

S = 1_000_000_000
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types
STRIDE = 3  # every 3rd demo frame: ~5 m apart, keeps the test small


def _header(stamp_ns: int, frame_id: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // S, nanosec=stamp_ns % S),
                                    frame_id=frame_id)


def _static_transforms(stamp_ns: int):
    def transform(child: str, x: float, z: float):
        return T["geometry_msgs/msg/TransformStamped"](
            header=_header(stamp_ns, "base_link"), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=x, y=0.0, z=z),
                rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))

    return T["tf2_msgs/msg/TFMessage"](transforms=[transform("camera", 1.2, 1.5), transform("gps", -0.4, 1.9)])


def car_messages(drive: Drive) -> list[tuple[str, object, int]]:
    """``(topic, message, bag time ns)`` of a drive recorded like a car: see the module docstring."""
    messages: list[tuple[str, object, int]] = [("/tf_static", _static_transforms(drive[0].stamp_ns),
                                               drive[0].stamp_ns - S)]
    for frame in drive.frames:
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.load_rgb(), cv2.COLOR_RGB2BGR))[1]
        image = T["sensor_msgs/msg/CompressedImage"](header=_header(frame.stamp_ns, "camera"), format="jpeg",
                                                     data=jpeg.reshape(-1))
        messages.append(("/cam/image_raw/compressed", image, frame.stamp_ns + 20_000_000))
    stamps = drive.stamps_ns
    for k, stamp in enumerate(range(int(stamps[0]) - S // 2, int(stamps[-1]) + S, S)):  # 1 Hz, spanning all images
        lat, lon = (np.interp(stamp, stamps, getattr(drive, axis)) for axis in ("lat", "lon"))
        status, lat, lon = (-1, lat, lon) if k == 3 else (0, np.nan, np.nan) if k == 5 else (0, lat, lon)
        fix = T["sensor_msgs/msg/NavSatFix"](
            header=_header(stamp, "gps"), status=T["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
            latitude=float(lat), longitude=float(lon), altitude=60.0,
            position_covariance=np.eye(3).reshape(9) * 4.0, position_covariance_type=2)
        messages.append(("/gps/fix", fix, stamp + 5_000_000))
        messages.append(("/driver/status", T["std_msgs/msg/String"](data=f"ok {k}"), stamp + 6_000_000))
    return messages


def write_car_bag(path: Path, drive: Drive) -> Path:
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msg, t in sorted(car_messages(drive), key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            writer.write(connections[topic], t, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
    return path


def demo_drive(name: str, frames: slice) -> Drive:
    drive = load_semloc_sim_drive(DEMO_DATA, name)
    return drive.subset(list(range(len(drive)))[frames])


def semloc(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "semloc_ros.cli", *args], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"semloc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> tuple[Path, Path, Drive]:
    root = tmp_path_factory.mktemp("own_vehicle")
    day = demo_drive("eval_day_l0", slice(0, 240, STRIDE))
    night = demo_drive("eval_night_l0", slice(0, 120, STRIDE))
    return write_car_bag(root / "day.mcap", day), write_car_bag(root / "night.mcap", night), night


def test_own_vehicle_workflow_from_bags_to_fixes_in_the_gps_frame(bags, tmp_path: Path) -> None:
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import NavSatFix

    from semloc_ros.ros.runner import PipelineRunner

    day, night, night_drive = bags
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    fast = ["--threads", "1", "--device", "cpu", "--quiet"]
    topics = ["--image-topic", "/cam/image_raw/compressed", "--gps-topic", "/gps/fix"]
    train = ["semantic", *topics, *fast, "--init", "default", "--steps", "2", "--batch-size", "2",
             "--cache-dir", str(tmp_path / "cache"), "--min-distance-m", "2"]
    one = semloc("train", *train, "--source", str(day), "--out", str(tmp_path / "one.pt"), env=env)
    assert "anchors with GPS positives" in one and "Recall@N (10 m) before R@1" in one
    two = semloc("train", *train, "--source", str(day), "--source", str(night), "--out", str(tmp_path / "two.pt"),
                 env=env)
    assert "0 anchors with GPS positives" not in two  # the night drive passes the day drive's places
    built = semloc("build-db", str(day), *topics, *fast, "--min-distance-m", "2", "--descriptor",
                   str(tmp_path / "two.pt"), "--out", str(tmp_path / "map.semdb"), env=env)
    assert "fix_no_fix=1, fix_nan=1" in built and "GPS frame 'gps'" in built  # the bag's NavSatFix frame_id

    fixes: list[NavSatFix] = []
    runner = PipelineRunner(
        overrides={"segmentation_node": {"use_compressed": True, "threads": 1},
                   "descriptor_node": {"model": str(tmp_path / "two.pt"), "threads": 1},
                   "localizer_node": {"database_path": str(tmp_path / "map.semdb")}},  # fixes: the map's GPS frame
        remaps={"image_raw/compressed": "/cam/image_raw/compressed"},
        domain_id=int(os.environ["ROS_DOMAIN_ID"]), log_dir=tmp_path / "logs")
    rclpy.init()
    node = rclpy.create_node("own_vehicle_test")
    node.create_subscription(NavSatFix, "/semloc/fix", fixes.append, QoSProfile(depth=100))
    runner.start()
    try:
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and not (node.count_publishers("/semloc/fix")
                                                   and node.count_subscribers("/cam/image_raw/compressed")):
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(3.0)  # the rest of the chain (labels, descriptors) matches in the meantime
        replay = subprocess.Popen([sys.executable, "-m", "semloc_ros.cli", "replay", str(night), "--rate", "0.5",
                                   "--topics", "/cam/image_raw/compressed", "/tf_static", "--wait-for-subscribers",
                                   "30"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while replay.poll() is None and time.monotonic() < deadline + 120.0:
            rclpy.spin_once(node, timeout_sec=0.1)
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        replay_output = replay.communicate()[0]
    finally:
        codes = runner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "logs").glob("*.log")}
    assert "published" in replay_output, replay_output
    assert len(fixes) >= len(night_drive) // 3, (len(fixes), logs)
    assert all(fix.header.frame_id == "gps" for fix in fixes)
    truth = {frame.stamp_ns: frame for frame in night_drive.frames}
    errors = [float(geodesic_distance_m(truth[s].lat, truth[s].lon, fix.latitude, fix.longitude))
              for fix in fixes if fix.status.status == 0 and (s := fix.header.stamp.sec * S + fix.header.stamp.nanosec)
              in truth]
    assert errors and float(np.median(errors)) < 15.0, errors
    assert set(codes) == {"segmentation_node", "descriptor_node", "localizer_node"}
