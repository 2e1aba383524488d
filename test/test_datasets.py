"""Loaders of semloc_ros.io.datasets on tiny data written here (and the embedded demo data)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from semloc_ros.core.geodesy import UTMProjection, geodesic_distance_m
from semloc_ros.io.datasets import (
    DatasetError,
    Drive,
    Frame,
    load_drive,
    load_image_folder,
    load_rgbs,
    load_rosbag,
    load_semloc_sim_drive,
    load_semloc_sim_split,
    load_vpr_filenames,
    parse_vpr_filename,
)
from semloc_ros.io.gps_track import drop_implausible_speed, implausible_speed, interpolate_fixes

DEMO = Path(__file__).resolve().parent.parent / "semloc_ros" / "data" / "demo"


def pattern(seed: int, height: int = 6, width: int = 8) -> np.ndarray:
    """A distinct HxWx3 uint8 RGB image per seed."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


# ------------------------------------------------------------------------------------------------- semloc-sim


def make_sim_drive(root: Path, name: str, condition: str, n: int, lat0: float) -> list[np.ndarray]:
    drive = root / "drives" / name
    (drive / "rgb").mkdir(parents=True)
    (drive / "label").mkdir()
    (drive / "drive.json").write_text(json.dumps({"name": name, "condition": condition}))
    labels = []
    with open(drive / "poses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "stamp_ns", "x_m", "y_m", "heading_rad", "speed_mps", "lat", "lon", "alt_m"])
        for i in range(n):
            writer.writerow([i, 1000 + i, 1.0 * i, 0.0, 0.5, 8.0, lat0 + 1e-5 * i, -1.25, 60.0])
            label = np.full((6, 8), i + 2, np.uint8)
            label[0, 0] = 17
            labels.append(label)
            assert cv2.imwrite(str(drive / "label" / f"{i:06d}.png"), label)
            assert cv2.imwrite(str(drive / "rgb" / f"{i:06d}.jpg"), np.full((6, 8, 3), 40 * i, np.uint8))
    return labels


def test_semloc_sim_drive_and_split(tmp_path: Path) -> None:
    labels = make_sim_drive(tmp_path, "db_day", "day", 3, 51.75)
    make_sim_drive(tmp_path, "q_night", "night", 2, 51.76)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [], "database": "db_day", "queries": ["q_night"]}))

    drive = load_semloc_sim_drive(tmp_path, "db_day")
    assert (drive.name, drive.condition, len(drive)) == ("db_day", "day", 3)
    frame = drive[2]
    assert (frame.image_id, frame.stamp_ns) == ("db_day/000002", 1002)
    assert (frame.lat, frame.lon, frame.alt, frame.heading) == (pytest.approx(51.75002), -1.25, 60.0, 0.5)
    assert frame.rgb is None  # nothing loaded up front
    rgb = frame.load_rgb()
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8 and abs(int(rgb.mean()) - 80) <= 2
    np.testing.assert_array_equal(frame.load_labels(), labels[2])
    assert frame.rgb is None and frame.labels is None  # and nothing cached on the frame
    assert drive.has_labels

    database, queries = load_semloc_sim_split(tmp_path)
    assert database.name == "db_day" and [(q.name, q.condition, len(q)) for q in queries] == [("q_night", "night", 2)]
    assert len(load_drive(f"semloc-sim:{tmp_path}:q_night")) == 2
    assert load_drive(str(tmp_path / "drives" / "q_night")).condition == "night"
    with pytest.raises(DatasetError):
        load_semloc_sim_drive(tmp_path, "missing")


def test_positions_enu_and_subset(tmp_path: Path) -> None:
    make_sim_drive(tmp_path, "d", "day", 3, 51.75)
    drive = load_semloc_sim_drive(tmp_path, "d")
    enu = drive.positions_enu()
    assert enu.shape == (3, 3)
    steps = np.hypot(*np.diff(enu[:, :2], axis=0).T)
    np.testing.assert_allclose(
        steps, geodesic_distance_m(drive.lat[:-1], drive.lon[:-1], drive.lat[1:], drive.lon[1:]), rtol=1e-4
    )
    assert abs(enu[1, 0]) < 1e-3 and enu[2, 1] > enu[0, 1]  # moving north
    assert [f.image_id for f in drive.subset(slice(None, None, 2))] == ["d/000000", "d/000002"]


def test_demo_data_matches_the_layout() -> None:
    database, queries = load_semloc_sim_split(DEMO)
    assert (database.name, database.condition, len(database)) == ("eval_day_l0", "day", 300)
    assert [(q.name, q.condition, len(q)) for q in queries] == [("eval_night_l0", "night", 120)]
    assert database[0].load_rgb().shape == (240, 320, 3)
    assert queries[0][0].load_labels().shape == (240, 320)
    # every night query has a day database frame within 2 m (same lane, same route)
    query = queries[0]
    for i in range(0, len(query), 10):
        assert geodesic_distance_m(query[i].lat, query[i].lon, database.lat, database.lon).min() < 2.0


# ------------------------------------------------------------------------------------------------- folders


def test_image_folder_csv(tmp_path: Path) -> None:
    write_rgb_png(tmp_path / "a.png", pattern(1))
    write_rgb_png(tmp_path / "sub" / "b.png", pattern(2))
    write_rgb_png(tmp_path / "c.png", pattern(3))
    (tmp_path / "places.csv").write_text(
        "filename,lat,lon,alt,heading,stamp_ns\n"
        "a.png,48.1,11.5,520.5,1.5,100\n"
        "sub/b.png,48.2,11.6,,,200\n"
        "c.png,,11.7,,,300\n"
    )
    drive = load_image_folder(tmp_path)
    assert [f.image_id for f in drive] == ["a.png", "sub/b.png", "c.png"]
    assert (drive[0].lat, drive[0].lon, drive[0].alt, drive[0].heading, drive[0].stamp_ns) == (
        48.1,
        11.5,
        520.5,
        1.5,
        100,
    )
    assert math.isnan(drive[1].alt) and math.isnan(drive[1].heading)
    np.testing.assert_array_equal(drive[1].load_rgb(), pattern(2))
    assert drive[1].load_labels() is None

    valid = drive.drop_invalid_gps()
    assert len(valid) == 2 and valid.skipped == {"invalid_gps": 1}
    assert len(load_drive(str(tmp_path))) == 3

    (tmp_path / "bad.csv").write_text("name,lat,lon\na.png,1,2\n")
    with pytest.raises(DatasetError, match="exactly one"):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetError, match="filename"):
        load_image_folder(tmp_path, tmp_path / "bad.csv")


def test_vpr_filenames(tmp_path: Path) -> None:
    # lat/lon fields present (San Francisco, zone 10 S)
    name_latlon = "@0551034.57@4180374.33@10@S@037.77000@-122.43000@pano@@090@@@@201311@@.jpg"
    # no lat/lon: from UTM (Sydney, zone 56 H: southern hemisphere from the letter)
    east, north = UTMProjection(56, False).forward(-33.8688, 151.2093)
    name_utm = f"@{east:.2f}@{north:.2f}@56@H@@@@@000@@@@@@.jpg"
    for i, name in enumerate([name_latlon, name_utm]):
        write_rgb_png(tmp_path / "database" / name, np.full((6, 8, 3), (200, 100 + i, 50), np.uint8))  # JPEG

    drive = load_vpr_filenames(tmp_path)
    by_name = {Path(f.image_id).name: f for f in drive}
    sf, sydney = by_name[name_latlon], by_name[name_utm]
    assert (sf.lat, sf.lon) == (37.77, -122.43)
    assert sf.heading == pytest.approx(0.0)  # compass 90 deg (east) = ENU yaw 0
    assert (sydney.lat, sydney.lon) == (pytest.approx(-33.8688, abs=1e-7), pytest.approx(151.2093, abs=1e-7))
    assert sydney.heading == pytest.approx(math.pi / 2)  # compass 0 deg (north) = ENU yaw pi/2
    assert np.abs(sf.load_rgb().astype(int) - (200, 100, 50)).max() <= 3  # RGB order kept

    parsed = parse_vpr_filename(f"@{east:.2f}@{north:.2f}@@@@@.jpg", utm_zone=56, north=False)
    assert parsed["lat"] == pytest.approx(-33.8688, abs=1e-7) and math.isnan(parsed["heading"])
    assert load_drive(str(tmp_path / "database")).frames[0].lat == pytest.approx(sf.lat)
    with pytest.raises(DatasetError):
        parse_vpr_filename("0001.jpg")
    with pytest.raises(DatasetError):
        parse_vpr_filename("@@@@@@@.jpg")  # neither lat/lon nor UTM


# ------------------------------------------------------------------------------------------------- rosbags

S = 1_000_000_000
# (stamp s, lat, lon, alt, status): a NaN fix and a NO_FIX fix between 2 s and 5 s leave a 3 s gap
FIXES = [
    (1.0, 10.000, 20.000, 100.0, 0),
    (2.0, 10.001, 20.002, 110.0, 0),
    (3.0, math.nan, math.nan, math.nan, 0),
    (3.5, 10.002, 20.002, 100.0, -1),
    (5.0, 10.003, 20.003, 100.0, 0),
    (5.5, 10.004, 20.004, 100.0, 2),
]
IMAGE_STAMPS = [
    0.5,
    1.25,
    2.0,
    2.5,
    5.25,
    6.0,
]  # before span, interpolated, exact, in gap, interpolated, after


def write_bag(path: Path, storage: StoragePlugin, fixes: list[tuple] | None = None,
              image_stamps: list[float] | None = None) -> list[np.ndarray]:
    """Raw bgr8 images, PNG CompressedImages and NavSatFix; bag time = header stamp + 10 ms."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    header_type, time_type = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]

    def header(t: float):
        ns = round(t * S)
        return header_type(stamp=time_type(sec=ns // S, nanosec=ns % S), frame_id="camera")

    messages = []
    images = []
    for i, t in enumerate(IMAGE_STAMPS if image_stamps is None else image_stamps):
        rgb = pattern(100 + i)
        images.append(rgb)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        raw = types["sensor_msgs/msg/Image"](
            header=header(t),
            height=6,
            width=8,
            encoding="bgr8",
            is_bigendian=0,
            step=24,
            data=bgr.reshape(-1),
        )
        png = np.frombuffer(cv2.imencode(".png", bgr)[1].tobytes(), np.uint8)
        compressed = types["sensor_msgs/msg/CompressedImage"](header=header(t), format="png", data=png)
        messages += [("/cam/image_raw", raw, t), ("/cam/compressed", compressed, t)]
    for t, lat, lon, alt, status in FIXES if fixes is None else fixes:
        fix = types["sensor_msgs/msg/NavSatFix"](
            header=header(t),
            status=types["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
            latitude=lat,
            longitude=lon,
            altitude=alt,
            position_covariance=np.zeros(9),
            position_covariance_type=0,
        )
        messages.append(("/gps/fix", fix, t))

    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, msg, _ in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=typestore)
        for topic, msg, t in sorted(messages, key=lambda m: m[2]):
            writer.write(connections[topic], round(t * S) + 10_000_000, typestore.serialize_cdr(msg, msg.__msgtype__))
    return images


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
@pytest.mark.parametrize("topic", ["/cam/image_raw", "/cam/compressed"])
def test_rosbag_interpolation_and_skips(tmp_path: Path, storage: StoragePlugin, topic: str) -> None:
    bag = tmp_path / "bag"
    images = write_bag(bag, storage)
    drive = load_rosbag(bag, image_topic=topic, gps_topic="/gps/fix", max_gap_s=1.0)

    assert drive.skipped == {"fix_no_fix": 1, "fix_nan": 1, "image_outside_fix_span": 2, "image_fix_gap": 1}
    assert [f.stamp_ns for f in drive] == [1_250_000_000, 2_000_000_000, 5_250_000_000]
    # 1.25 s: a quarter of the way from the 1 s fix to the 2 s fix
    assert (drive[0].lat, drive[0].lon, drive[0].alt) == (
        pytest.approx(10.00025, abs=1e-12),
        pytest.approx(20.0005, abs=1e-12),
        pytest.approx(102.5),
    )
    assert (drive[1].lat, drive[1].lon, drive[1].alt) == (10.001, 20.002, 110.0)  # on a fix
    # 5.25 s: halfway between the 5 s fix and the 5.5 s fix (status 2 = GBAS fix is valid)
    assert (drive[2].lat, drive[2].lon) == (
        pytest.approx(10.0035, abs=1e-12),
        pytest.approx(20.0035, abs=1e-12),
    )

    assert all(f.rgb is None and f.bag_ref is not None for f in drive)
    np.testing.assert_array_equal(drive[0].load_rgb(), images[1])  # lossless: raw bgr8 and PNG
    for frame, rgb in zip(load_rgbs(drive.frames[::-1]), [images[4], images[2], images[1]], strict=True):
        np.testing.assert_array_equal(frame, rgb)


def test_rosbag_wider_gap_and_topic_detection(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP)
    drive = load_rosbag(bag, image_topic="/cam/image_raw", gps_topic="/gps/fix", max_gap_s=3.0)
    assert drive.skipped["image_fix_gap"] == 0 and len(drive) == 4
    # 2.5 s between the 2 s and 5 s fixes (the NaN and NO_FIX fixes in between were dropped)
    assert drive[2].lat == pytest.approx(10.001 + (0.5 / 3.0) * 0.002, abs=1e-12)

    with pytest.raises(DatasetError, match="image topic"):  # two image topics: must be named
        load_rosbag(bag, gps_topic="/gps/fix")
    with pytest.raises(DatasetError, match="is sensor_msgs/msg/Image"):
        load_rosbag(bag, image_topic="/cam/image_raw", gps_topic="/cam/image_raw")
    assert len(load_drive(str(bag), image_topic="/cam/compressed", gps_topic="/gps/fix")) == 3
    mcap_files = list(bag.glob("*.mcap"))
    assert len(load_drive(str(mcap_files[0]), image_topic="/cam/compressed")) == 3  # single file, GPS detected


def test_a_gps_jump_in_a_bag_is_dropped_not_stored_off_the_route(tmp_path: Path) -> None:
    fixes = [(0.1 * i, 48.0 + 9e-6 * i, 11.0, 500.0, 0) for i in range(30)]  # 1 m per 0.1 s: 10 m/s north
    fixes[12] = (1.2, 48.0 + 0.09, 11.0, 500.0, 0)  # one fix 10 km off
    write_bag(tmp_path / "bag", StoragePlugin.MCAP, fixes, image_stamps=[0.05 + 0.1 * i for i in range(28)])
    drive = load_rosbag(tmp_path / "bag", image_topic="/cam/image_raw", max_gap_s=1.0)
    assert max(abs(f.lat - 48.0) for f in drive) > 0.04  # interpolated towards the jump: kilometres off
    checked = drop_implausible_speed(drive, 70.0)
    assert checked.skipped["implausible_speed"] == 2 and len(checked) == 26  # the two frames beside the jump
    assert max(abs(f.lat - 48.0) for f in checked) < 3e-4  # every frame kept is on the 30 m route


def test_implausible_speed_finds_jumps_and_keeps_the_route() -> None:
    seconds = np.arange(10, dtype=np.int64) * S
    lat, lon = 48.0 + 1e-4 * np.arange(10), np.full(10, 11.0)  # 11 m/s
    assert not implausible_speed(seconds, lat, lon, 70.0).any()
    jumped = lat.copy()
    jumped[[0, 5]] += 0.1  # the first fix and one in the middle 11 km off
    assert implausible_speed(seconds, jumped, lon, 70.0).nonzero()[0].tolist() == [0, 5]
    after_a_pause = implausible_speed(np.array([0, S, 1000 * S]), np.array([48.0, 48.0001, 48.3]),
                                      np.full(3, 11.0), 70.0)
    assert not after_a_pause.any()  # 33 km in 1000 s is 33 m/s
    assert not implausible_speed(np.zeros(3, dtype=np.int64), np.array([48.0, 49.0, 50.0]), np.full(3, 11.0),
                                 70.0).any()  # no time information: nothing to judge


def test_interpolate_fixes_directly() -> None:
    stamps = np.array([0, 10, 20], dtype=np.int64)
    lat, lon, alt, reason = interpolate_fixes(
        np.array([-1, 0, 5, 20, 21], dtype=np.int64),
        stamps,
        np.array([0.0, 1.0, 3.0]),
        np.array([0.0, -1.0, -3.0]),
        np.array([0.0, 10.0, 30.0]),
        max_gap_s=20e-9,
    )
    assert reason.tolist() == [1, 0, 0, 0, 1]
    np.testing.assert_allclose(lat[1:4], [0.0, 0.5, 3.0])
    np.testing.assert_allclose(lon[1:4], [0.0, -0.5, -3.0])
    np.testing.assert_allclose(alt[1:4], [0.0, 5.0, 30.0])


def test_in_memory_frames_and_invalid_sources() -> None:
    frame = Frame("mem", 0, 1.0, 2.0, rgb=pattern(5), labels=np.zeros((6, 8), np.uint8))
    np.testing.assert_array_equal(load_rgbs([frame])[0], pattern(5))
    assert Drive("m", [frame]).has_labels
    with pytest.raises(DatasetError):
        Frame("none", 0, 1.0, 2.0).load_rgb()
    with pytest.raises(DatasetError):
        load_drive("/definitely/not/here")
    with pytest.raises(DatasetError):
        load_drive("semloc-sim:only-root")
