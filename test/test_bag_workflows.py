"""Rosbags in, RViz and navigation out: bag databases, replay, record, plot, the RViz and navsat configs."""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.io.bag_playback import BagMessage, BagSource, PlaybackError, Scheduled, parse_remap, play, schedule
from semloc_ros.io.datasets import Drive, Frame, load_rosbag, subsample_by_distance

ROOT = Path(__file__).resolve().parents[1]
S = 1_000_000_000
# A domain of this file's own (valid ids stop at 232), so these DDS tests do not hear other tests.
DOMAIN_ID = 150 + (int(os.environ["ROS_DOMAIN_ID"]) + 50 - 150) % 83
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
T = TYPESTORE.types

LAT0, LON0 = 48.0, 11.0
SPEED_MPS = 10.0  # due north
M_PER_DEG_LAT = 111_200.0  # only to lay out the test drive; positions are checked through geodesy
# (stamp s, status, NaN?): a NaN fix at 4 s, a NO_FIX fix at 6.5 s and no fix from 6 s to 10 s (a gap)
FIXES = [(1.0, 0, False), (2.0, 0, False), (3.0, 0, False), (4.0, 0, True), (5.0, 0, False), (6.0, 0, False),
         (6.5, -1, False), (10.0, 0, False), (11.0, 0, False)]
# 0.5 s: before the first fix; 8 s: in the gap; the others are matched (3.5 s and 4.5 s across the NaN fix)
IMAGE_STAMPS = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 8.0, 10.5]
MATCHED = [1.5, 2.5, 3.5, 4.5, 5.5, 10.5]


def lat_at(t: float) -> float:
    return LAT0 + SPEED_MPS * t / M_PER_DEG_LAT


def header(t: float, frame_id: str = "camera"):
    ns = round(t * S)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // S, nanosec=ns % S),
                                    frame_id=frame_id)


def image_msg(t: float, seed: int):
    rgb = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return T["sensor_msgs/msg/Image"](header=header(t), height=6, width=8, encoding="rgb8", is_bigendian=0,
                                      step=24, data=rgb.reshape(-1))


def fix_msg(t: float, lat: float, lon: float, status: int = 0, alt: float = 500.0, frame_id: str = "gps"):
    return T["sensor_msgs/msg/NavSatFix"](
        header=header(t, frame_id), status=T["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
        latitude=lat, longitude=lon, altitude=alt, position_covariance=np.eye(3).reshape(9) * 4.0,
        position_covariance_type=2)


def write_bag(path: Path, messages: list[tuple[str, object, float]],
              storage: StoragePlugin = StoragePlugin.MCAP) -> None:
    """``(topic, message, bag time s)`` into a rosbag2 directory; bag time = given time + 10 ms."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, msg, t in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            writer.write(connections[topic], round(t * S) + 10_000_000,
                         TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def drive_messages(lon: float = LON0, seed: int = 0, fix_frame: str = "gps") -> list[tuple[str, object, float]]:
    messages = [("/cam/image_raw", image_msg(t, seed + i), t) for i, t in enumerate(IMAGE_STAMPS)]
    for t, status, nan in FIXES:
        lat, lon_t = (math.nan, math.nan) if nan else (lat_at(t), lon)
        messages.append(("/gps/fix", fix_msg(t, lat, lon_t, status, frame_id=fix_frame), t))
    return messages


@pytest.fixture
def drive_bag(tmp_path: Path) -> Path:
    bag = tmp_path / "drive1"
    write_bag(bag, drive_messages())
    return bag


# ------------------------------------------------------------------------------------ subsample_by_distance


def line_drive(east_m: list[float]) -> Drive:
    frame = LocalENU(LAT0, LON0)
    lat, lon, _ = frame.to_geodetic(np.array(east_m), np.zeros(len(east_m)))
    frames = [Frame(f"f{i}", i, float(a), float(o)) for i, (a, o) in enumerate(zip(lat, lon, strict=True))]
    return Drive("line", frames, skipped={"fix_nan": 2})


def test_subsample_by_distance_keeps_first_then_each_far_enough_from_last_kept() -> None:
    drive = line_drive([0.0, 3.0, 6.0, 9.0, 12.0, 12.0, 30.0, 31.0, 41.0])
    kept = subsample_by_distance(drive, 10.0)
    # 0 kept; 3/6/9 are within 10 m of it; 12 kept; the stop at 12 dropped; 30 kept; 31 dropped; 41 is 11 m
    # from 30 (the last kept), not from 31
    assert [f.image_id for f in kept] == ["f0", "f4", "f6", "f8"]
    assert kept.skipped == {"fix_nan": 2, "below_min_distance": 5}
    assert drive.skipped == {"fix_nan": 2} and len(drive) == 9  # input untouched
    assert [f.image_id for f in subsample_by_distance(drive, 0.0)] == [f.image_id for f in drive]
    assert len(subsample_by_distance(drive, 1000.0)) == 1
    assert len(subsample_by_distance(line_drive([]), 5.0)) == 0
    with pytest.raises(ValueError):
        subsample_by_distance(drive, -1.0)
    with pytest.raises(ValueError):
        subsample_by_distance(drive, math.nan)


def test_subsample_distance_is_geodesic_far_from_the_centre() -> None:
    # the last two frames, 2 km apart and 20 km from the drive's centre, are kept apart exactly when the
    # threshold is below their geodesic distance (to 5 mm)
    drive = line_drive([0.0, 40000.0, 42000.0])
    d = float(geodesic_distance_m(drive[1].lat, drive[1].lon, drive[2].lat, drive[2].lon))
    assert [f.image_id for f in subsample_by_distance(drive, d - 0.005)] == ["f0", "f1", "f2"]
    assert [f.image_id for f in subsample_by_distance(drive, d + 0.005)] == ["f0", "f1"]


# ------------------------------------------------------------------------------------------- build-db


def test_build_db_from_bags_subsampled_and_appended(tmp_path: Path, drive_bag: Path, capsys) -> None:
    from semloc_ros.commands import build_db
    from semloc_ros.core.database import GeoDatabase

    drive = load_rosbag(drive_bag, max_gap_s=1.5)
    assert [f.stamp_ns for f in drive] == [round(t * S) for t in MATCHED]
    assert drive.skipped == {"fix_no_fix": 1, "fix_nan": 1, "image_outside_fix_span": 1, "image_fix_gap": 1}

    common = ["--method", "label-histogram", "--untrained-ok", "--threads", "1", "--device", "cpu", "--quiet",
              "--max-gap-s", "1.5"]
    db = tmp_path / "map.semdb"
    # matched images are 15, 25, 35, 45, 55 and 105 m north of the start: 15 m spacing keeps 15, 35, 55, 105
    assert build_db.main([str(drive_bag), "--out", str(db), "--min-distance-m", "15", *common]) == 0
    out = capsys.readouterr().out
    assert "6 frames with a position, 6 with valid GPS, 4 kept (>= 15 m apart)" in out
    assert ("skipped: fix_no_fix=1, fix_nan=1, image_outside_fix_span=1, image_fix_gap=1, "
            "below_min_distance=2") in out
    first = GeoDatabase.load(db)
    assert len(first) == 4
    np.testing.assert_allclose(first.lat, [lat_at(t) for t in (1.5, 3.5, 5.5, 10.5)], rtol=0, atol=1e-9)

    second_bag = tmp_path / "drive2.mcap"  # a second drive 0.001 deg further east, as a single mcap file
    write_bag(tmp_path / "drive2", drive_messages(lon=LON0 + 0.001, seed=50))
    (tmp_path / "drive2" / "drive2.mcap").rename(second_bag)
    assert build_db.main([str(second_bag), "--out", str(db), "--append", *common]) == 0
    assert "appending to" in capsys.readouterr().out
    merged = GeoDatabase.load(db)
    assert len(merged) == 10 and merged.model_id == first.model_id
    np.testing.assert_allclose(merged.lon, [LON0] * 4 + [LON0 + 0.001] * 6, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(merged.descriptors[:4], first.descriptors)

    other = tmp_path / "other.semdb"  # a database of another model: appending is refused, file unchanged
    GeoDatabase(first.dimension, "another-model@0").save(other)
    before = other.read_bytes()
    assert build_db.main([str(drive_bag), "--out", str(other), "--append", *common]) == 1
    assert "cannot append" in capsys.readouterr().err
    assert other.read_bytes() == before


ARCH = "lraspp_mobilenet_v3_large"


def test_build_db_records_the_segmenter_its_label_mapping_and_the_gps_frame(tmp_path: Path, capsys) -> None:
    from semloc_ros.commands import build_db
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.core.labels import CITYSCAPES_19
    from semloc_ros.core.pipeline_id import split_pipeline_id
    from semloc_ros.models import SegmentationNet, Segmenter

    bag = tmp_path / "antenna"
    write_bag(bag, drive_messages(fix_frame="gnss_antenna"))
    user = tmp_path / "city.pth"  # a Cityscapes-19 model of the user, a plain state dict
    torch.save(SegmentationNet({"arch": ARCH, "num_classes": 19}).net.state_dict(), user)
    common = ["--method", "label-histogram", "--threads", "1", "--device", "cpu", "--quiet", "--max-gap-s", "1.5",
              "--segmenter-arch", ARCH]
    db = tmp_path / "map.semdb"
    assert build_db.main([str(bag), "--out", str(db), "--segmenter", str(user), "--label-mapping", "cityscapes19",
                          *common]) == 0
    built = GeoDatabase.load(db)
    segmenter = Segmenter.from_file(user, device="cpu", arch=ARCH, label_mapping=CITYSCAPES_19).model_id
    assert "+map:cityscapes19" in segmenter and split_pipeline_id(built.model_id)[1] == segmenter
    assert built.gps_frame_id == "gnss_antenna"  # the bag's NavSatFix frame_id
    assert "GPS frame 'gnss_antenna'" in capsys.readouterr().out

    # the shipped segmenter's descriptors do not extend this map; other fixes' frame neither
    assert build_db.main([str(bag), "--out", str(db), "--append", *common]) == 1
    assert "does not match" in capsys.readouterr().err
    assert build_db.main([str(bag), "--out", str(db), "--append", "--segmenter", str(user), "--label-mapping",
                          "cityscapes19", "--gps-frame-id", "gps", *common]) == 1
    assert "frame 'gnss_antenna'" in capsys.readouterr().err
    assert len(GeoDatabase.load(db)) == len(built)
    # a 19-class model read with the mapping of another label set: one line, no traceback
    assert build_db.main([str(bag), "--out", str(tmp_path / "x.semdb"), "--segmenter", str(user),
                          "--label-mapping", "camvid11", *common]) == 2
    assert "label_mapping" in capsys.readouterr().err
    assert build_db.main([str(bag), "--out", str(tmp_path / "x.semdb"), "--label-mapping", "camvid11", *common]) == 2
    assert "needs a segmenter file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- playback core


class FakeSource:
    """Messages in memory; ``start_ns`` may precede the first message (another topic started the bag)."""

    def __init__(self, times_s: list[float], start_s: float) -> None:
        self.list = [BagMessage(f"/t{i % 2}", "std_msgs/msg/String", round(t * S), bytes([i]))
                     for i, t in enumerate(times_s)]
        self.start_ns = round(start_s * S)
        self.reads = 0

    def messages(self, start_ns: int):
        self.reads += 1
        return iter([m for m in self.list if m.log_time_ns >= start_ns])


def dues(items: list[Scheduled]) -> list[tuple[float, int, int]]:
    return [(round(i.due_s, 9), i.loop, i.message.raw[0]) for i in items]


def test_schedule_rate_offset_and_loop() -> None:
    source = FakeSource([10.0, 11.0, 11.0, 13.0], start_s=9.5)
    assert dues(list(schedule(source))) == [(0.5, 0, 0), (1.5, 0, 1), (1.5, 0, 2), (3.5, 0, 3)]
    assert dues(list(schedule(source, rate=2.0))) == [(0.25, 0, 0), (0.75, 0, 1), (0.75, 0, 2), (1.75, 0, 3)]
    # 1.5 s into the bag (bag time 11 s): the two 11 s messages are due at once, 13 s two seconds later
    assert dues(list(schedule(source, start_offset_s=1.5))) == [(0.0, 0, 1), (0.0, 0, 2), (2.0, 0, 3)]
    # loop: the second pass starts one mean interval (1 s) after the last message: (13 - 9.5 + 1) / 2
    looped = list(schedule(source, rate=2.0, loop=True, max_loops=3))
    assert dues(looped)[4:8] == [(2.5, 1, 0), (3.0, 1, 1), (3.0, 1, 2), (4.0, 1, 3)]
    assert [i.loop for i in looped] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(a.due_s <= b.due_s for a, b in itertools.pairwise(looped))
    assert source.reads == 3 + 3  # each pass is read again, nothing is kept in memory
    # an offset past the end plays nothing, even looping; bad options are refused when scheduling
    assert list(schedule(source, start_offset_s=10.0, loop=True)) == []
    for bad in ({"rate": 0.0}, {"start_offset_s": -1.0}, {"max_loops": 0}):
        with pytest.raises(PlaybackError):
            schedule(source, **bad)
    assert parse_remap("cam/image:=/camera/image_raw") == ("/cam/image", "/camera/image_raw")
    with pytest.raises(PlaybackError):
        parse_remap("/cam/image")


def test_play_waits_for_due_times_publishes_clock_and_stops() -> None:
    clock = [100.0]
    published: list[tuple[float, int]] = []
    clocks: list[tuple[float, int]] = []
    source = FakeSource([1.0, 1.2, 2.0], start_s=1.0)
    count = play(schedule(source, rate=2.0), lambda item: published.append((clock[0], item.bag_time_ns)),
                 rate=2.0, clock_period_s=0.25, publish_clock=lambda ns: clocks.append((clock[0], ns)),
                 now=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert count == 3
    assert [(round(t - 100.0, 6), ns) for t, ns in published] == [(0.0, 1 * S), (0.1, 1.2 * S), (0.5, 2 * S)]
    # bag time on /clock never runs ahead of the messages and reaches each message's time
    assert all(ns <= next(p for t, p in published if t >= when) for when, ns in clocks)
    assert {ns for _, ns in clocks} >= {1 * S, round(1.2 * S), 2 * S}

    # looping: between two passes the clock runs on from the last message, then rewinds to the first
    clocks.clear()
    start = clock[0]
    play(schedule(source, loop=True, max_loops=2), lambda item: None, clock_period_s=0.1,
         publish_clock=lambda ns: clocks.append((clock[0] - start, ns)), now=lambda: clock[0],
         sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    between = [ns for when, ns in clocks if 1.0 < when < 1.5 - 1e-6]  # pass 2 starts 0.5 s after the last
    assert len(between) >= 4 and all(2 * S < ns < 2.5 * S for ns in between)
    assert between == sorted(between)
    assert next(ns for when, ns in clocks if when > 1.5 - 1e-6) == 1 * S and clocks[-1][1] == 2 * S

    stopped: list[int] = []
    count = play(schedule(source), lambda item: stopped.append(item.bag_time_ns),
                 should_stop=lambda: len(stopped) >= 1, now=lambda: clock[0],
                 sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert count == 1 and stopped == [1 * S]


def test_bag_source_filters_topics_and_orders_by_time(drive_bag: Path) -> None:
    source = BagSource(drive_bag, ["gps/fix"])
    assert source.topics == {"/gps/fix": "sensor_msgs/msg/NavSatFix"}
    assert source.start_ns == round(0.5 * S) + 10_000_000  # the bag's first message is an image
    times = [m.log_time_ns for m in source.messages(source.start_ns)]
    assert times == [round(t * S) + 10_000_000 for t, _, _ in FIXES]
    assert len(list(BagSource(drive_bag).messages(0))) == len(FIXES) + len(IMAGE_STAMPS)
    with pytest.raises(PlaybackError, match="no topic"):
        BagSource(drive_bag, ["/nope"])


# ------------------------------------------------------------------------------------- DDS round trips


def ros_env() -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env


def semloc(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "semloc_ros.cli", *args], env=ros_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def ros_node():
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("bag_workflow_test", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(executor, done, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        executor.spin_once(timeout_sec=0.05)
    return done()


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_message_classes_come_from_installed_packages() -> None:
    from sensor_msgs.msg import NavSatFix

    from semloc_ros.ros.conversions import message_class

    assert message_class("sensor_msgs/msg/NavSatFix") is NavSatFix
    assert message_class("sensor_msgs/NavSatFix") is NavSatFix
    for unknown in ("nonexistent_msgs/msg/Thing", "sensor_msgs/msg/NoSuchMessage", "garbage"):
        assert message_class(unknown) is None


def test_replay_publishes_bag_messages_over_dds(tmp_path: Path, ros_node) -> None:
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rosbags.typesys import get_types_from_msg
    from sensor_msgs.msg import Image, NavSatFix

    # the drive plus a topic whose message package is not installed: skipped with a warning
    drive_bag = tmp_path / "drive"
    typestore = get_typestore(Stores.ROS2_KILTED)
    typestore.register(get_types_from_msg("int32 value", "uninstalled_msgs/msg/Thing"))
    with Writer(drive_bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msg, t in sorted(drive_messages(), key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE)
            writer.write(connections[topic], round(t * S) + 10_000_000, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
        thing = typestore.types["uninstalled_msgs/msg/Thing"](value=7)
        unknown = writer.add_connection("/thing", thing.__msgtype__, typestore=typestore)
        writer.write(unknown, 2 * S, typestore.serialize_cdr(thing, thing.__msgtype__))

    node, executor = ros_node
    fixes: list[tuple[float, NavSatFix]] = []
    images: list[Image] = []
    node.create_subscription(NavSatFix, "/rt/fix", lambda m: fixes.append((time.monotonic(), m)),
                             QoSProfile(depth=50))
    node.create_subscription(Image, "/rt/image", images.append,
                             QoSProfile(depth=50, reliability=qos_profile_sensor_data.reliability))
    # bag span 0.51 s .. 11.01 s played 10x faster: about 1 s
    process = semloc("replay", str(drive_bag), "--rate", "10", "--wait-for-subscribers", "20",
                     "--remap", "/gps/fix:=/rt/fix", "--remap", "/cam/image_raw:=/rt/image")
    try:
        spin_until(executor, lambda: process.poll() is not None, 30.0)
        spin_until(executor, lambda: len(fixes) == len(FIXES) and len(images) == len(IMAGE_STAMPS), 2.0)
    finally:
        process.kill()
        output = process.communicate()[0]
    assert process.returncode == 0, output
    assert f"published {len(FIXES) + len(IMAGE_STAMPS)} messages" in output
    assert "skipping /thing: message type uninstalled_msgs/msg/Thing is not installed" in output

    expected = {msg.header.stamp.sec * S + msg.header.stamp.nanosec: msg for topic, msg, _ in drive_messages()
                if topic == "/gps/fix"}
    assert len(fixes) == len(FIXES)
    for _, fix in fixes:
        want = expected[fix.header.stamp.sec * S + fix.header.stamp.nanosec]
        assert fix.status.status == want.status.status and fix.header.frame_id == "gps"
        assert same_float(fix.latitude, want.latitude) and same_float(fix.longitude, want.longitude)
        assert list(fix.position_covariance) == list(want.position_covariance)
    # recorded timing: the fixes span 10 s of bag time, 1 s at rate 10
    assert 0.8 < fixes[-1][0] - fixes[0][0] < 3.0
    want_images = [msg for topic, msg, _ in drive_messages() if topic == "/cam/image_raw"]
    assert len(images) == len(want_images)
    for got, want in zip(images, want_images, strict=True):
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (want.header.stamp.sec, want.header.stamp.nanosec)
        assert bytes(got.data) == bytes(want.data) and (got.height, got.width, got.encoding) == (6, 8, "rgb8")


def test_record_writes_readable_bags_on_signals_and_duration(tmp_path: Path, ros_node, capsys) -> None:
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import NavSatFix

    from semloc_ros.commands import record

    node, executor = ros_node
    publisher = node.create_publisher(NavSatFix, "/rec/fix", QoSProfile(depth=50))
    single = tmp_path / "out.mcap"  # single mcap file, stopped by SIGTERM
    directory = tmp_path / "out_sqlite"  # rosbag2 directory with sqlite3 storage, stopped by Ctrl-C
    empty = tmp_path / "empty.db3"  # --duration, a topic nobody publishes
    by_term = semloc("record", str(single), "--topics", "/rec/fix", "/rec/absent")
    by_int = semloc("record", str(directory), "--storage", "sqlite3", "--topics", "rec/fix")
    by_duration = semloc("record", str(empty), "--topics", "/rec/none", "--duration", "0.5")
    processes = (by_term, by_int, by_duration)
    sent = []
    try:
        assert spin_until(executor, lambda: publisher.get_subscription_count() >= 2, 20.0), "recorders not up"
        time.sleep(0.3)  # let the recorders' side of discovery settle too
        for i in range(5):
            fix = NavSatFix()
            fix.header.stamp.sec, fix.header.frame_id = 100 + i, "camera"
            fix.latitude, fix.longitude, fix.altitude = lat_at(i), LON0, math.nan if i == 2 else 500.0 + i
            fix.status.status = -1 if i == 3 else 0
            fix.position_covariance = [float(i)] * 9
            publisher.publish(fix)
            sent.append(fix)
            time.sleep(0.02)
        spin_until(executor, lambda: False, 0.5)
        assert not single.exists()  # written under a hidden name until the recording is complete
        by_term.send_signal(signal.SIGTERM)
        by_int.send_signal(signal.SIGINT)
        outputs = [process.communicate(timeout=15)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert "5 messages (/rec/fix: 5)" in outputs[0] and "5 messages (/rec/fix: 5)" in outputs[1]
    assert "0 messages (nothing)" in outputs[2]
    assert single.is_file() and (directory / "metadata.yaml").is_file() and empty.is_file()
    assert not list(tmp_path.glob(".*"))  # no partial recording left behind

    for bag in (single, directory):
        with AnyReader([bag], default_typestore=TYPESTORE) as reader:
            assert [c.topic for c in reader.connections] == ["/rec/fix"]
            got = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
        assert len(got) == len(sent)
        for g, s in zip(got, sent, strict=True):
            assert (g.header.stamp.sec, g.header.frame_id, g.status.status) == (s.header.stamp.sec, "camera",
                                                                               s.status.status)
            assert (g.latitude, g.longitude) == (s.latitude, s.longitude) and same_float(g.altitude, s.altitude)
            assert list(g.position_covariance) == list(s.position_covariance)
    with AnyReader([empty], default_typestore=TYPESTORE) as reader:
        assert reader.connections == [] and list(reader.messages()) == []

    assert record.main([str(single)]) == 2  # never overwrites
    assert record.main([str(tmp_path / "x.db3"), "--storage", "mcap"]) == 2  # suffix and storage disagree
    assert "exists" in capsys.readouterr().err


def test_record_typestore_knows_installed_messages_outside_rosbags() -> None:
    from semloc_ros.io.bags import typestore_for

    typestore = typestore_for(["geographic_msgs/msg/GeoPoseWithCovarianceStamped"])
    assert "geographic_msgs/msg/GeoPoint" in typestore.types  # field types are registered too
    # the same type hash as the installed package, so real ROS consumers of the bag accept it
    description = Path(sys.prefix) / "share" / "geographic_msgs" / "msg" / "GeoPoseWithCovarianceStamped.json"
    assert typestore.hash_rihs01("geographic_msgs/msg/GeoPoseWithCovarianceStamped") in description.read_text()


# ------------------------------------------------------------------------------------------------- plot


def test_plot_compares_recorded_fixes_with_the_ground_truth(tmp_path: Path, drive_bag: Path, capsys) -> None:
    from semloc_ros.commands import plot
    from semloc_ros.core.database import GeoDatabase, PlaceRecord

    frame = LocalENU(lat_at(2.5), LON0)
    east20_lat, east20_lon, _ = frame.to_geodetic(20.0, 0.0)  # 20 m east of the truth at 2.5 s
    out_messages = [
        ("/semloc/fix", fix_msg(2.5, float(east20_lat), float(east20_lon)), 2.6),
        ("/semloc/fix", fix_msg(3.0, lat_at(3.0), LON0, status=-1), 3.1),  # low confidence, on the truth
        ("/semloc/fix", fix_msg(4.0, math.nan, math.nan, status=-1), 4.1),  # no match
        ("/semloc/fix", fix_msg(50.0, lat_at(5.0), LON0), 50.1),  # no ground truth at that stamp
    ]
    recorded = tmp_path / "run"
    write_bag(recorded, out_messages)
    fixes = plot.read_fixes(recorded)
    assert list(fixes.confident) == [True, False, False, True]
    truth = load_rosbag(drive_bag, max_gap_s=1.5)
    error = plot.fix_errors(fixes, truth.stamps_ns, truth.lat, truth.lon, max_gap_s=1.5)
    assert error[0] == pytest.approx(20.0, abs=0.01) and error[1] == pytest.approx(0.0, abs=0.01)
    assert math.isnan(error[2]) and math.isnan(error[3])

    database = tmp_path / "map.semdb"
    db = GeoDatabase(4, "test@0")
    db.add(np.eye(4, dtype=np.float32), [PlaceRecord(lat=lat_at(t), lon=LON0) for t in (1, 2, 3, 4)])
    db.save(database)
    png = tmp_path / "fixes.png"
    code = plot.main([str(recorded), "--truth", str(drive_bag), "--gps-topic", "/gps/fix", "--max-gap-s", "1.5",
                      "--database", str(database), "--out", str(png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 fixes (2 FIX, 1 NO_FIX with a position, 1 without position), 2 compared" in out
    assert "FIX error median 20.0 m" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.main([str(recorded), "--truth", str(drive_bag), "--fix-topic", "/nope", "--out", str(png)]) == 2


# ------------------------------------------------------------------------------------- RViz and navsat


def test_rviz_config_is_an_rviz2_config_showing_the_semloc_topics() -> None:
    config = yaml.safe_load((ROOT / "rviz" / "semloc.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "semloc_map"  # the localizer's map_frame
    assert any(panel["Class"] == "rviz_common/Displays" for panel in config["Panels"])
    displays = {d["Class"]: d for d in manager["Displays"]}
    assert displays["rviz_default_plugins/Image"]["Topic"]["Value"] == "/semloc/labels_overlay"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/semloc/places"
    assert displays["rviz_default_plugins/Path"]["Topic"]["Value"] == "/semloc/path"
    assert "rviz_default_plugins/Grid" in displays
    assert all(d["Enabled"] is True and d["Name"] for d in manager["Displays"])
    # a best-effort image subscription also receives from the reliable overlay publisher
    assert displays["rviz_default_plugins/Image"]["Topic"]["Reliability Policy"] == "Best Effort"
    assert manager["Views"]["Current"]["Class"] == "rviz_default_plugins/TopDownOrtho"


def test_navsat_example_is_a_ros2_parameter_file_fed_by_semloc_fix() -> None:
    from rclpy.parameter import parameter_dict_from_yaml_file

    path = ROOT / "config" / "navsat_transform.example.yaml"
    text = path.read_text()
    nodes = yaml.safe_load(text)
    assert set(nodes) == {"ekf_local", "ekf_global", "navsat_transform"}
    assert all(set(v) == {"ros__parameters"} for v in nodes.values())
    navsat = parameter_dict_from_yaml_file(str(path), target_nodes=["navsat_transform"])
    assert navsat["zero_altitude"].value.bool_value and not navsat["wait_for_datum"].value.bool_value
    local = nodes["ekf_local"]["ros__parameters"]
    glob = nodes["ekf_global"]["ros__parameters"]
    assert (local["world_frame"], glob["world_frame"]) == ("odom", "map")
    assert glob["odom1"] == "odometry/gps" and glob["odom1_differential"] is False
    assert glob["odom1_config"][:3] == [True, True, False] and len(glob["odom1_config"]) == 15
    assert "odom1_pose_rejection_threshold" in glob
    assert "gps/fix:=/semloc/fix" in text and "odometry/filtered:=odometry/global" in text
