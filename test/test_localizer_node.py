"""LocalizerNode in-process: parameters, database (re)loading, bad descriptors, output messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from semloc_msgs.msg import Descriptor
from sensor_msgs.msg import NavSatFix

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.ros import localizer_node
from semloc_ros.ros.localizer_node import LocalizerNode

DIMENSION = 8


def _database(path, model_id="test-model") -> GeoDatabase:
    rng = np.random.default_rng(0)
    descriptors = rng.normal(size=(20, DIMENSION)).astype(np.float32)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    records = [PlaceRecord(lat=51.752 + 1e-4 * i, lon=-1.2577, alt=60.0, stamp_ns=i, image_id=f"{i:06d}")
               for i in range(20)]
    database = GeoDatabase(DIMENSION, model_id)
    database.add(descriptors, records)
    database.save(path)
    return database


@pytest.fixture
def start_node():
    """Start a LocalizerNode with database_path set the way a launch file or `--ros-args -p` does."""
    nodes = []

    def start(database_path, *parameters: str) -> LocalizerNode:
        """``parameters``: more ``NAME:=VALUE`` settings."""
        arguments = [f"database_path:={database_path}", *parameters]
        rclpy.init(args=["--ros-args", *(part for argument in arguments for part in ("-p", argument))])
        nodes.append(LocalizerNode())
        return nodes[-1]

    yield start
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def reload_map(node) -> None:
    """What the retry timer does (poll the map file), then wait for the background load and apply it."""
    node._try_load_database()
    node.wait_for_map_load(30.0)


def _descriptor(values: np.ndarray, model_id: str = "test-model") -> Descriptor:
    message = Descriptor(model_id=model_id, dimension=int(values.shape[0]))
    message.header.frame_id = "cam"
    message.header.stamp.sec = 7
    message.data = values.astype(np.float32).tolist()
    return message


def test_starts_without_database_then_loads_it_when_it_appears(start_node, tmp_path):
    path = tmp_path / "late.semdb"
    node = start_node(path)
    assert node.localizer is None
    assert node.diagnostics.status().level == DiagnosticStatus.ERROR
    node.on_descriptor(_descriptor(np.ones(DIMENSION)))  # before a database: counted, no crash
    assert node.stats.errors["no_database"] == 1
    _database(path)
    reload_map(node)
    assert node.localizer is not None and len(node.database) == 20
    assert node.diagnostics.status().level != DiagnosticStatus.ERROR  # WARN: the rejected descriptor


def test_invalid_parameter_updates_are_rejected_with_a_reason(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    _database(path)
    node = start_node(path)
    result = node.set_parameters([Parameter("top_k", value=0)])[0]
    assert not result.successful and "top_k" in result.reason
    result = node.set_parameters([Parameter("min_confidence", value=1.5)])[0]
    assert not result.successful and "min_confidence" in result.reason
    assert node.config.top_k == 10
    assert node.set_parameters([Parameter("top_k", value=3)])[0].successful
    assert node.config.top_k == 3 and node.localizer.config.top_k == 3


def test_reload_failure_keeps_the_loaded_database(start_node, tmp_path):
    good = tmp_path / "db.semdb"
    _database(good)
    corrupt = tmp_path / "corrupt.semdb"
    corrupt.write_bytes(b"not a database")
    node = start_node(good)
    assert node.set_parameters([Parameter("database_path", value=str(corrupt))])[0].successful
    assert node.database is not None and len(node.database) == 20  # still serving the old one
    assert node._loaded_path == str(good)


def test_mismatched_and_malformed_descriptors_are_rejected(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    database = _database(path)
    node = start_node(path)
    fixes = []
    node.fix_publisher.publish = fixes.append
    node.on_descriptor(_descriptor(np.ones(DIMENSION + 1)))
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="other-model"))
    bad_length = _descriptor(database.descriptors[3])
    bad_length.dimension = DIMENSION + 2
    node.on_descriptor(bad_length)
    nan = database.descriptors[3].copy()
    nan[0] = np.nan
    node.on_descriptor(_descriptor(nan))
    assert not fixes
    assert node.stats.errors["model_mismatch"] == 2
    assert node.stats.errors["bad_descriptor"] == 2
    node.on_descriptor(_descriptor(database.descriptors[3]))
    assert len(fixes) == 1


def test_fix_message_carries_stamp_frame_status_and_covariance(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    database = _database(path)
    node = start_node(path, "integrity_threshold:=0.0",  # the shipped gate is fitted for real descriptors
                      "sequence_filter:=false")  # unrelated synthetic queries: single frames
    fixes, geoposes, markers = [], [], []
    node.fix_publisher.publish = fixes.append
    node.geopose_publisher.publish = geoposes.append
    node.marker_publisher.publish = markers.append
    node.on_descriptor(_descriptor(database.descriptors[5]))
    fix: NavSatFix = fixes[0]
    assert fix.header.stamp.sec == 7 and fix.header.frame_id == "cam"
    assert fix.latitude == pytest.approx(database.lat[5], abs=1e-6)
    assert fix.status.status == fix.status.STATUS_FIX
    assert fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    covariance = np.asarray(fix.position_covariance).reshape(3, 3)
    assert covariance[0, 0] >= 9.0 and covariance[2, 2] == pytest.approx(100.0)
    geo = np.asarray(geoposes[0].pose.covariance).reshape(6, 6)
    assert geo[0, 0] == pytest.approx(covariance[1, 1]) and geo[1, 1] == pytest.approx(covariance[0, 0])
    assert markers[0].markers[0].action == markers[0].markers[0].DELETEALL
    assert {m.ns for m in markers[0].markers[1:]} == {"retrieved", "estimate"}

    # a gate on cues this map gives (no thumbnails here, so no re-ranking alignment: its weight is 0)
    assert node.set_parameters([Parameter("integrity_weights", value=[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]),
                                Parameter("integrity_bias", value=-3.5),
                                Parameter("integrity_threshold", value=0.99)])[0].successful
    node.on_descriptor(_descriptor(database.descriptors[5]))  # the same match, now below the integrity gate
    assert fixes[-1].status.status == fixes[-1].status.STATUS_NO_FIX
    assert not node.set_parameters([Parameter("integrity_weights", value=[1.0, 2.0])])[0].successful
    assert node.set_parameters([Parameter("min_similarity", value=0.999)])[0].successful
    node.on_descriptor(_descriptor(-database.descriptors[5]))  # far from everything stored
    assert fixes[-1].status.status == fixes[-1].status.STATUS_NO_FIX
    assert np.isnan(fixes[-1].latitude)
    assert fixes[-1].position_covariance_type == NavSatFix.COVARIANCE_TYPE_UNKNOWN


def test_path_of_fixes_and_utm_marker_coordinates(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    database = _database(path)
    node = start_node(path, "integrity_threshold:=0.0", "sequence_filter:=false")
    paths, markers = [], []
    node.path_publisher.publish = paths.append
    node.marker_publisher.publish = markers.append
    for index in (2, 4, 6):
        node.on_descriptor(_descriptor(database.descriptors[index]))
    assert [len(p.poses) for p in paths] == [1, 2, 3]
    north_steps = np.diff([p.pose.position.y for p in paths[-1].poses])
    assert np.all(north_steps > 15)  # entries are 1e-4 deg (~11 m) apart: 2 entries ~22 m
    assert node.set_parameters([Parameter("map_coordinates", value="utm")])[0].successful
    assert not node.set_parameters([Parameter("map_coordinates", value="wgs84")])[0].successful
    node.on_descriptor(_descriptor(database.descriptors[2]))
    sphere = next(m for m in markers[-1].markers if m.ns == "retrieved")
    assert 5.7e6 < sphere.pose.position.y < 5.8e6  # UTM northing near Oxford
    assert len(paths[-1].poses) == 1  # switching coordinates restarts the path


def test_unknown_altitude_is_published_as_a_number_with_a_huge_variance(start_node, tmp_path):
    rng = np.random.default_rng(1)
    descriptors = rng.normal(size=(10, DIMENSION)).astype(np.float32)
    database = GeoDatabase(DIMENSION, "test-model")
    database.add(descriptors, [PlaceRecord(lat=51.752 + 1e-4 * i, lon=-1.2577) for i in range(10)])  # no alt
    path = tmp_path / "no-alt.semdb"
    database.save(path)
    node = start_node(path)
    fixes, geoposes = [], []
    node.fix_publisher.publish = fixes.append
    node.geopose_publisher.publish = geoposes.append
    assert node.set_parameters([Parameter("unknown_altitude_m", value=42.0)])[0].successful
    node.on_descriptor(_descriptor(database.descriptors[4]))
    covariance = np.asarray(fixes[0].position_covariance).reshape(3, 3)
    assert fixes[0].altitude == 42.0  # navsat_transform drops fixes whose altitude is NaN
    assert covariance[2, 2] == 1e6 and covariance[0, 2] == covariance[2, 1] == 0.0
    assert covariance[0, 0] < 1e3
    assert geoposes[0].pose.pose.position.altitude == 42.0


def test_label_image_of_the_same_stamp_reranks_the_retrieval(start_node, tmp_path):
    from semloc_ros.core.reranking import label_thumbnail
    from semloc_ros.ros.conversions import array_to_imgmsg

    rng = np.random.default_rng(1)
    scenes = rng.integers(0, 18, size=(20, 24, 32)).astype(np.uint8)
    descriptors = rng.normal(size=(20, DIMENSION)).astype(np.float32)
    records = [PlaceRecord(lat=51.752 + 1e-3 * i, lon=-1.2577, image_id=f"{i}") for i in range(20)]
    database = GeoDatabase(DIMENSION, "test-model")
    database.add(descriptors, records, label_thumbnail(scenes))
    path = database.save(tmp_path / "thumbs.semdb")
    node = start_node(path, "sequence_filter:=false")
    fixes = []
    node.fix_publisher.publish = fixes.append
    query = _descriptor(database.descriptors[2] + 0.5 * database.descriptors[9])  # the descriptor prefers 2

    assert node.set_parameters([Parameter("rerank_top_k", value=0)])[0].successful
    node.on_descriptor(query)  # re-ranking off (rerank_top_k 0): the descriptor decides
    assert fixes[-1].latitude == pytest.approx(database.lat[2], abs=1e-6)
    assert node.set_parameters([Parameter("rerank_top_k", value=5)])[0].successful
    node.on_descriptor(query)  # on, but no label image with this stamp: answered anyway, counted
    assert fixes[-1].latitude == pytest.approx(database.lat[2], abs=1e-6)
    assert node.stats.errors["no_labels"] == 1

    labels = array_to_imgmsg(scenes[9], "mono8", query.header)  # the labels say place 9
    node.on_labels(labels)
    node.on_descriptor(query)
    assert fixes[-1].latitude == pytest.approx(database.lat[9], abs=1e-6)
    assert not node._thumbnails  # used once, then dropped

    node.on_labels(array_to_imgmsg(np.zeros((24, 32, 3), np.uint8), "rgb8", query.header))
    assert node.stats.errors["bad_labels"] == 1 and not node._thumbnails
    assert not node.set_parameters([Parameter("rerank_max_shift", value=1.5)])[0].successful


@pytest.mark.parametrize("name, value", [("unknown_heading_variance", math.inf), ("unknown_altitude_m", math.nan),
                                         ("unknown_altitude_m", math.inf), ("marker_scale_m", math.inf),
                                         ("filter_temperature", math.nan), ("covariance_cross_scale", math.inf)])
def test_non_finite_float_parameters_are_refused_and_outputs_stay_finite(start_node, tmp_path, name, value):
    path = tmp_path / "db.semdb"
    database = _database(path)
    node = start_node(path)
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and name in result.reason and "finite" in result.reason, result.reason
    fixes, geoposes = [], []
    node.fix_publisher.publish = fixes.append
    node.geopose_publisher.publish = geoposes.append
    node.on_descriptor(_descriptor(database.descriptors[5]))
    assert np.all(np.isfinite(geoposes[0].pose.covariance)) and np.all(np.isfinite(fixes[0].position_covariance))
    assert math.isfinite(geoposes[0].pose.pose.position.altitude)


def test_a_non_finite_float_parameter_at_start_up_stops_the_node_with_the_reason(tmp_path):
    rclpy.init(args=["--ros-args", "-p", "unknown_heading_variance:=.inf"])
    try:
        with pytest.raises(ValueError, match="unknown_heading_variance must be a finite number"):
            LocalizerNode()
    finally:
        rclpy.try_shutdown()


def test_declared_defaults_are_the_shipped_configuration_in_a_running_node(start_node, tmp_path):
    node = start_node(tmp_path / "absent.semdb")
    assert node.config == LocalizerConfig()
    assert (node.config.rerank.top_k, node.config.covariance_cross_scale) == (50, 0.0399)
    assert (node.config.filter.temperature, node.config.filter.kidnap_probability) == (1.4, 0.0001)
    assert node.config.filter.speed_time_constant_s == 20.0
    assert node.config.integrity_weights == LocalizerConfig().integrity_weights  # a double array parameter
    assert list(node.get_parameter("integrity_weights").value) == list(LocalizerConfig().integrity_weights)
    assert node.get_parameter("rerank_shift_step").value == 0.025


# ------------------------------------------------------------------------------------------------ pipeline ids
MAP_PIPELINE = "desc@1|segmenter:seg@2+map:cityscapes19"


def _warnings(node) -> list[str]:
    """Capture the node's warning lines."""
    lines: list[str] = []
    node.get_logger().warning = lambda text, **_: lines.append(text)
    return lines


def test_descriptors_of_another_segmenter_are_refused_with_the_reason_in_the_log_and_diagnostics(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    database = _database(path, model_id=MAP_PIPELINE)
    node = start_node(path)
    fixes, warnings = [], _warnings(node)
    node.fix_publisher.publish = fixes.append
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@1|segmenter:seg@2+map:camvid11"))
    assert not fixes and node.stats.errors["model_mismatch"] == 1
    assert "segmenter or label mapping differs" in warnings[-1]
    status = node.diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert "segmenter or label mapping differs" in status.message
    node.on_descriptor(_descriptor(database.descriptors[3], model_id=MAP_PIPELINE))
    assert len(fixes) == 1


def test_a_map_written_before_pipeline_ids_answers_the_shipped_segmenter_only(start_node, tmp_path, monkeypatch):
    monkeypatch.setattr(localizer_node, "shipped_segmenter", lambda: "shipped@3")
    path = tmp_path / "old.semdb"
    database = _database(path, model_id="desc@1")
    node = start_node(path)
    fixes, warnings = [], _warnings(node)
    node.fix_publisher.publish = fixes.append
    for _ in range(2):
        node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@1|segmenter:shipped@3"))
    assert len(fixes) == 2
    assert [line for line in warnings if "predates pipeline ids" in line] == [warnings[0]]  # warned once
    assert "shipped@3" in warnings[0]
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@1|segmenter:user@4"))
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@2|segmenter:shipped@3"))
    assert len(fixes) == 2 and node.stats.errors["model_mismatch"] == 2
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@1"))  # RGB-style: descriptor id only
    assert len(fixes) == 3


def test_a_reloaded_map_must_fit_the_pipeline_in_flight(start_node, tmp_path, monkeypatch):
    monkeypatch.setattr(localizer_node, "shipped_segmenter", lambda: "shipped@3")
    path = tmp_path / "db.semdb"
    database = _database(path, model_id="desc@1|segmenter:shipped@3")
    node = start_node(path)
    node.on_descriptor(_descriptor(database.descriptors[3], model_id="desc@1|segmenter:shipped@3"))
    _database(tmp_path / "other.semdb", model_id="desc@1|segmenter:user@4")
    assert node.set_parameters([Parameter("database_path", value=str(tmp_path / "other.semdb"))])[0].successful
    node.wait_for_map_load(30.0)
    assert node.database.model_id == "desc@1|segmenter:shipped@3"  # refused, the loaded map kept
    _database(tmp_path / "old.semdb", model_id="desc@1")  # before pipeline ids: the shipped segmenter's
    assert node.set_parameters([Parameter("database_path", value=str(tmp_path / "old.semdb"))])[0].successful
    node.wait_for_map_load(30.0)
    assert node.database.model_id == "desc@1" and node.database.legacy_segmenter_id == "shipped@3"


def test_the_shipped_segmenter_is_the_one_maps_before_pipeline_ids_were_built_with():
    from semloc_ros.models import Segmenter
    from semloc_ros.models.loading import segmenter_identity

    # in every precision the segmentation node may run it (on the CPU, default is the int8 copy)
    for precision in ("auto", "fp32", "int8"):
        shipped = Segmenter.default(device="cpu", precision=precision)
        assert localizer_node.shipped_segmenter() == segmenter_identity(shipped)
    assert segmenter_identity(Segmenter.default(device="cpu", precision="int8")) != \
        Segmenter.default(device="cpu", precision="int8").model_id  # the quantized file has its own model id


def test_fixes_are_in_the_maps_gps_frame_unless_fix_frame_id_is_set(start_node, tmp_path):
    path = tmp_path / "db.semdb"
    database = _database(path)
    database.gps_frame_id = "gnss"
    database.save(path)
    node = start_node(path)
    fixes = []
    node.fix_publisher.publish = fixes.append
    node.on_descriptor(_descriptor(database.descriptors[5]))
    assert fixes[-1].header.frame_id == "gnss"  # not the camera's "cam": the map's positions are the antenna's
    assert node.set_parameters([Parameter("fix_frame_id", value="antenna_link")])[0].successful
    node.on_descriptor(_descriptor(database.descriptors[5]))
    assert fixes[-1].header.frame_id == "antenna_link"
