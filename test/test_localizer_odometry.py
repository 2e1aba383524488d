"""LocalizerNode with use_odometry: the sequence filter predicts the travel between descriptors from odom."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from semloc_msgs.msg import Descriptor

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.localizer import Localizer
from semloc_ros.ros.localizer_node import LocalizerNode

DIMENSION = 8
PLACES = 30
SPACING_M = 2.0
S = 1_000_000_000
FRAMES_S = (100.0, 100.5, 101.0, 101.5)  # descriptor stamps: within filter_max_gap_s of each other


def _database(path) -> GeoDatabase:
    """Places every 2 m along a road heading north (the filter's prior speed moves the belief north)."""
    rng = np.random.default_rng(3)
    descriptors = rng.normal(size=(PLACES, DIMENSION)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    records = [PlaceRecord(lat=51.752 + SPACING_M / 111_320.0 * i, lon=-1.2577, alt=60.0, heading=math.pi / 2,
                           stamp_ns=i, image_id=f"{i:06d}") for i in range(PLACES)]
    database = GeoDatabase(DIMENSION, "test-model")
    database.add(descriptors, records)
    database.save(path)
    return database


@pytest.fixture
def node(tmp_path, request):
    """A LocalizerNode with the sequence filter and ``use_odometry`` (the test's parameter, default true)."""
    use_odometry = getattr(request, "param", True)
    _database(tmp_path / "road.semdb")
    settings = [f"database_path:={tmp_path / 'road.semdb'}", "sequence_filter:=true", "integrity_threshold:=0.0",
                f"use_odometry:={str(use_odometry).lower()}"]
    rclpy.init(args=["--ros-args", *(part for setting in settings for part in ("-p", setting))])
    localizer_node = LocalizerNode()
    yield localizer_node
    localizer_node.destroy_node()
    rclpy.try_shutdown()


def _odometry(stamp_s: float, x: float, y: float) -> Odometry:
    message = Odometry()
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(round(stamp_s * S), S)
    message.header.frame_id, message.child_frame_id = "odom", "base_link"
    message.pose.pose.position.x, message.pose.pose.position.y = x, y
    return message


def _descriptor(node: LocalizerNode, place: int, stamp_s: float) -> Descriptor:
    message = Descriptor(model_id="test-model", dimension=DIMENSION)
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(round(stamp_s * S), S)
    message.data = node.database.descriptors[place].tolist()
    return message


def _reference_belief(node: LocalizerNode, places: list[int], displacements: list[float | None]) -> np.ndarray:
    """The filter's belief after the same frames given to the core localizer with these displacements."""
    localizer = Localizer(node.database, node.config)
    for place, stamp_s, displacement in zip(places, FRAMES_S[:len(places)], displacements, strict=True):
        localizer.localize(node.database.descriptors[place], stamp_ns=round(stamp_s * S), displacement_m=displacement)
    return localizer.sequence_filter.belief


def _spin_until(executor: SingleThreadedExecutor, done, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        executor.spin_once(timeout_sec=0.05)


def test_odometry_over_dds_gives_the_filter_the_travel_between_descriptors(node):
    """Odometry and descriptors published over DDS, the vehicle standing: the filter predicts 0 m of travel per
    frame where the prior speed predicts 5 m."""
    feed = rclpy.create_node("odometry_feed")
    odometry = feed.create_publisher(Odometry, "odom", 100)
    descriptors = feed.create_publisher(Descriptor, "semloc/descriptor", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(feed)
    try:
        _spin_until(executor, lambda: odometry.get_subscription_count() and descriptors.get_subscription_count(),
                    "discovery")
        samples = [99.8 + 0.1 * i for i in range(21)]  # 99.8 .. 101.8 s, standing at (5, -2)
        for stamp_s in samples:
            odometry.publish(_odometry(stamp_s, 5.0, -2.0))
        _spin_until(executor, lambda: len(node.odometry) == len(samples), "the odometry")
        for count, stamp_s in enumerate(FRAMES_S, start=1):
            descriptors.publish(_descriptor(node, 10, stamp_s))
            _spin_until(executor, lambda count=count: node.stats.processed == count, f"descriptor {count}")
    finally:
        feed.destroy_node()
    belief = node.localizer.sequence_filter.belief
    stopped = _reference_belief(node, [10] * 4, [None, 0.0, 0.0, 0.0])
    by_stamps = _reference_belief(node, [10] * 4, [None] * 4)
    np.testing.assert_allclose(belief, stopped, atol=1e-9)
    assert np.abs(stopped - by_stamps).max() > 0.01  # what the node would have had without the odometry
    assert not node.stats.warnings and not node.stats.errors


def test_frames_the_odometry_does_not_cover_fall_back_to_the_stamps_with_a_warning(node):
    for stamp_s in np.arange(99.9, 100.65, 0.05):  # covers the first interval only, moving 4 m/s north
        node.on_odometry(_odometry(float(stamp_s), 0.0, 4.0 * (stamp_s - 99.9)))
    for stamp_s in FRAMES_S[:3]:
        node.on_descriptor(_descriptor(node, 10, stamp_s))
    assert node.stats.processed == 3 and node.stats.warnings["odometry_uncovered"] == 1
    expected = _reference_belief(node, [10] * 3, [None, 2.0, None])  # 4 m/s x 0.5 s, then the stamps
    np.testing.assert_allclose(node.localizer.sequence_filter.belief, expected, atol=1e-9)
    assert not np.allclose(expected, _reference_belief(node, [10] * 3, [None] * 3), atol=1e-6)
    status = node.diagnostics.status()
    assert status.level == DiagnosticStatus.WARN and "odometry_uncovered" in status.message
    assert {item.key: item.value for item in status.values}["warnings.odometry_uncovered"] == "1"


def test_non_finite_and_backwards_odometry_is_counted_and_the_node_keeps_answering(node):
    node.on_odometry(_odometry(100.0, 1.0, 1.0))
    node.on_odometry(_odometry(100.1, math.nan, 1.0))
    assert node.stats.errors["odometry_not_finite"] == 1 and len(node.odometry) == 1
    node.on_odometry(_odometry(50.0, 1.0, 1.0))  # a replayed bag
    assert node.stats.warnings["odometry_backwards"] == 1 and node.odometry.newest_ns == 50 * S
    node.on_descriptor(_descriptor(node, 3, 100.0))
    assert node.stats.processed == 1
    assert len(node.get_subscriptions_info_by_topic("/odom")) == 1


@pytest.mark.parametrize("node", [False], indirect=True)
def test_without_use_odometry_the_node_does_not_listen_to_odom(node):
    assert node.odometry is None and node.get_subscriptions_info_by_topic("/odom") == []
