"""Robustness under bad input and faults, in-process (issue 7): nothing crashes, nothing stored is lost.

Every case feeds one bad input or fault to a node constructed in this process (its callbacks are called
directly, as the executor would) or to the ROS-free core, then checks that
- no exception escapes (an exception in a callback would end ``rclpy.spin`` and the node),
- the input is rejected with a reason, or processed after conversion, as documented,
- ``node.stats`` counts it and ``node.diagnostics.status()`` reflects it (WARN / ERROR with the reason),
- the node still processes the next good input and nothing already stored (database, file) is lost.

The table of cases, behaviours and tests is docs/robustness.md. Multi-process faults (a node killed and
restarted mid-stream, 100 Hz bursts, a database written after the localizer started, a killed build-db)
are in test_robustness_processes.py.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.exceptions import ParameterNotDeclaredException
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from semloc_msgs.msg import Descriptor
from sensor_msgs.msg import CompressedImage, Image

from semloc_ros import mapping
from semloc_ros.commands import build_db
from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.file_lock import exclusive_lock
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.image_codec import compressed_image_size
from semloc_ros.core.labels import SEMLOC_SIM
from semloc_ros.models import DescriptorExtractor, Segmenter
from semloc_ros.ros import localizer_node, node_common
from semloc_ros.ros.conversions import array_to_compressed_imgmsg, array_to_imgmsg, ns_to_stamp
from semloc_ros.ros.descriptor_node import DescriptorNode
from semloc_ros.ros.localizer_node import LocalizerNode
from semloc_ros.ros.node_common import StageDiagnostics, run_node
from semloc_ros.ros.segmentation_node import SegmentationNode
from semloc_ros.ros.stage_stats import SequenceMonitor, StageStats

SEGMENTER = "untrained:lraspp_mobilenet_v3_large"
DESCRIPTOR = "untrained:semantic_alexnet"
NODE_PARAMETERS = {
    SegmentationNode: ("segmentation_node", {"model": SEGMENTER, "device": "cpu", "threads": 1}),
    DescriptorNode: ("descriptor_node", {"model": DESCRIPTOR, "device": "cpu", "threads": 1}),
    LocalizerNode: ("localizer_node", {"database_retry_period_s": 0.5}),
}
DIMENSION = 8
MODEL_ID = "test-model"


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def start(tmp_path):
    """Start one node class in this process with the test's models and extra parameters (a params file)."""
    nodes = []

    def start_node(node_class, **parameters):
        name, defaults = NODE_PARAMETERS[node_class]
        params_file = tmp_path / f"{name}.params.yaml"
        params_file.write_text(yaml.safe_dump({name: {"ros__parameters": {**defaults, **parameters}}}))
        rclpy.init(args=["--ros-args", "--params-file", str(params_file)])
        node = node_class()
        nodes.append(node)
        return node

    yield start_node
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


def capture(publisher) -> list:
    """Replace ``publisher.publish`` with a list append; returns the list of published messages."""
    published: list = []
    publisher.publish = published.append
    return published


def reload_map(node) -> None:
    """What the retry timer does (poll the map file), then wait for the background load and apply it."""
    node._try_load_database()
    node.wait_for_map_load(30.0)


def level(node) -> int:
    return node.diagnostics.status().level


def status_text(node) -> str:
    return node.diagnostics.status().message


def rgb_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def raw_image(height: int, width: int, encoding: str, step: int, data: bytes, is_bigendian: int = 0) -> Image:
    message = Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step)
    message.data = data
    return message


def places_database(n: int = 20, lat0: float = 51.752, lon0: float = -1.2577, step_deg: float = 1e-4,
                    along: str = "lat", alt: float | list[float] = 60.0, dimension: int = DIMENSION,
                    model_id: str = MODEL_ID, seed: int = 0) -> GeoDatabase:
    """``n`` random unit descriptors at places ``step_deg`` apart along latitude or longitude."""
    rng = np.random.default_rng(seed)
    descriptors = rng.normal(size=(n, dimension)).astype(np.float32)
    alts = alt if isinstance(alt, list) else [alt] * n
    records = [PlaceRecord(lat=lat0 + (step_deg * i if along == "lat" else 0.0),
                           lon=lon0 + (step_deg * i if along == "lon" else 0.0),
                           alt=alts[i], stamp_ns=i, image_id=f"{i:06d}") for i in range(n)]
    database = GeoDatabase(dimension, model_id)
    database.add(descriptors, records)
    return database


def descriptor_message(values: np.ndarray, stamp_ns: int = 7_000_000_000, model_id: str = MODEL_ID,
                       dimension: int | None = None) -> Descriptor:
    message = Descriptor(model_id=model_id, dimension=int(values.shape[0] if dimension is None else dimension))
    message.header.frame_id = "cam"
    message.header.stamp = ns_to_stamp(stamp_ns)
    message.data = np.asarray(values, dtype=np.float32).tolist()
    return message


# ------------------------------------------------------------------------------- segmentation: bad images
def _png_bomb() -> bytes:
    """A PNG whose header declares 30000 x 30000 pixels (2.7 GB decoded) in a few hundred bytes."""
    png = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    png[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")
    return bytes(png)


BAD_RAW_IMAGES = {
    "unsupported encoding": (lambda: raw_image(48, 64, "yuv422_weird", 128, bytes(128 * 48)),
                             "unsupported image encoding"),
    "empty encoding": (lambda: raw_image(48, 64, "", 192, bytes(192 * 48)), "unsupported image encoding"),
    "zero width": (lambda: raw_image(48, 0, "rgb8", 0, b""), "no pixels"),
    "zero height": (lambda: raw_image(0, 64, "rgb8", 192, b""), "no pixels"),
    "step smaller than a row": (lambda: raw_image(48, 64, "rgb8", 64, bytes(64 * 48)), "smaller than a packed row"),
    "truncated data": (lambda: raw_image(48, 64, "rgb8", 192, bytes(192 * 47 + 5)), "expected at least"),
    "no data at all": (lambda: raw_image(48, 64, "rgb8", 192, b""), "expected at least"),
    "absurd size header": (lambda: raw_image(100_000, 100_000, "rgb8", 300_000, bytes(16)), "exceeds the limit"),
}

BAD_COMPRESSED_IMAGES = {
    "corrupt bytes": (lambda: CompressedImage(format="jpeg", data=b"definitely not a jpeg" * 20), "cannot decode"),
    "empty payload": (lambda: CompressedImage(format="jpeg", data=b""), "no data"),
    "truncated jpeg": (lambda: CompressedImage(format="jpeg", data=array_to_compressed_imgmsg(
        rgb_image(), "rgb8", "jpeg").data[:300]), "cannot decode"),
    "compressedDepth": (lambda: CompressedImage(format="16UC1; compressedDepth png", data=b"\x00" * 64),
                        "compressedDepth"),
    "decompression bomb": (lambda: CompressedImage(format="png", data=_png_bomb()), "exceeds the limit"),
}


@pytest.mark.parametrize("case", sorted(BAD_RAW_IMAGES))
def test_segmentation_rejects_bad_raw_image_and_keeps_working(start, case):
    make, reason = BAD_RAW_IMAGES[case]
    node = start(SegmentationNode)
    labels = capture(node.labels_publisher)
    assert level(node) == DiagnosticStatus.OK
    node.on_image(make())
    assert node.stats.errors["bad_image"] == 1 and not labels
    assert level(node) == DiagnosticStatus.WARN and reason in status_text(node)
    node.on_image(array_to_imgmsg(rgb_image(), "rgb8"))
    assert len(labels) == 1 and node.stats.processed == 1


@pytest.mark.parametrize("case", sorted(BAD_COMPRESSED_IMAGES))
def test_segmentation_rejects_bad_compressed_image_and_keeps_working(start, case):
    make, reason = BAD_COMPRESSED_IMAGES[case]
    node = start(SegmentationNode, use_compressed=True)
    labels = capture(node.labels_publisher)
    node.on_compressed(make())
    assert node.stats.errors["bad_image"] == 1 and not labels
    assert level(node) == DiagnosticStatus.WARN and reason in status_text(node)
    node.on_compressed(array_to_compressed_imgmsg(rgb_image(), "rgb8", "jpeg"))
    assert len(labels) == 1 and labels[0].height == 48 and labels[0].width == 64


def test_png_and_jpeg_headers_are_read_without_decoding():
    assert compressed_image_size(_png_bomb()) == (30000, 30000)
    assert compressed_image_size(bytes(array_to_compressed_imgmsg(rgb_image(37, 53), "rgb8", "jpeg").data)) \
        == (37, 53)
    assert compressed_image_size(b"garbage") is None


def _deep(values: np.ndarray, encoding: str, bigendian: bool = False) -> Image:
    message = array_to_imgmsg(values, encoding)
    if bigendian:
        message.is_bigendian = 1
        message.data = values.astype(values.dtype.newbyteorder(">")).tobytes()
    return message


CONVERTED_IMAGES = {
    "rgb16": lambda: _deep((rgb_image().astype(np.uint16) * 257), "rgb16"),
    "rgb16 big-endian": lambda: _deep((rgb_image().astype(np.uint16) * 257), "rgb16", bigendian=True),
    "bgra16": lambda: _deep(np.dstack([rgb_image(), rgb_image(seed=1)[:, :, :1]]).astype(np.uint16) * 257,
                            "bgra16"),
    "mono16": lambda: _deep(rgb_image()[:, :, 0].astype(np.uint16) * 40, "mono16"),
    "16SC1": lambda: _deep(rgb_image()[:, :, 0].astype(np.int16) - 128, "16SC1"),
    "32FC1 with NaN and inf": lambda: _deep(np.where(rgb_image()[:, :, 0] > 250, np.inf,
                                                     rgb_image()[:, :, 1] / 255.0).astype(np.float32), "32FC1"),
    "64FC1 depth in metres": lambda: _deep(rgb_image()[:, :, 0].astype(np.float64) * 0.3, "64FC1"),
    "mono8": lambda: _deep(rgb_image()[:, :, 0].copy(), "mono8"),
    "bgra8": lambda: _deep(np.dstack([rgb_image(), rgb_image()[:, :, :1]]), "bgra8"),
    "padded rows": lambda: raw_image(48, 64, "rgb8", 200, b"".join(
        row.tobytes() + b"\xee" * 8 for row in rgb_image())),
    "trailing bytes": lambda: raw_image(48, 64, "rgb8", 192, rgb_image().tobytes() + b"\x01" * 99),
    "1x1 pixel": lambda: _deep(rgb_image(1, 1), "rgb8"),
}


@pytest.mark.parametrize("case", sorted(CONVERTED_IMAGES))
def test_segmentation_converts_16_bit_float_and_odd_layout_images(start, case):
    node = start(SegmentationNode)
    labels = capture(node.labels_publisher)
    message = CONVERTED_IMAGES[case]()
    message.header.stamp.sec = 5
    node.on_image(message)
    assert node.stats.error_count == 0 and node.stats.processed == 1
    assert (labels[0].height, labels[0].width, labels[0].encoding) == (message.height, message.width, "mono8")
    assert labels[0].header.stamp.sec == 5
    assert level(node) == DiagnosticStatus.OK


def test_big_endian_16_bit_gives_the_same_labels_as_little_endian(start):
    node = start(SegmentationNode)
    labels = capture(node.labels_publisher)
    node.on_image(CONVERTED_IMAGES["rgb16"]())
    node.on_image(CONVERTED_IMAGES["rgb16 big-endian"]())
    node.on_image(_deep(rgb_image(), "rgb8"))
    assert bytes(labels[0].data) == bytes(labels[1].data) == bytes(labels[2].data)


def test_compressed_16_bit_and_alpha_png_are_converted(start):
    node = start(SegmentationNode, use_compressed=True)
    labels = capture(node.labels_publisher)
    node.on_compressed(array_to_compressed_imgmsg(rgb_image().astype(np.uint16) * 257, "rgb16", "png"))
    node.on_compressed(array_to_compressed_imgmsg(np.dstack([rgb_image(), rgb_image()[:, :, :1]]), "rgba8", "png"))
    assert node.stats.processed == 2 and node.stats.error_count == 0 and len(labels) == 2


def test_8k_frame_is_downscaled_to_max_input_pixels_and_answered(start):
    """Decision: frames above ``max_input_pixels`` are downscaled (aspect kept), not rejected."""
    node = start(SegmentationNode, max_input_pixels=320 * 180)
    labels = capture(node.labels_publisher)
    frame = np.zeros((4320, 7680, 3), np.uint8)
    frame[:, 3840:] = 200
    node.on_image(array_to_imgmsg(frame, "rgb8"))
    assert node.stats.processed == 1 and node.stats.error_count == 0
    assert (labels[0].height, labels[0].width) == (180, 320)
    assert node.stats.warnings["downscaled"] == 1
    assert level(node) == DiagnosticStatus.WARN and "7680x4320" in status_text(node)
    assert node.diagnostics.status().values  # counters travel with the status
    # The default keeps 1080p as it is and brings 8K down to exactly 1920x1080.
    assert node.set_parameters([Parameter("max_input_pixels", value=1920 * 1080)])[0].successful
    assert node._fit_to_max_pixels(np.zeros((1080, 1920, 3), np.uint8)).shape == (1080, 1920, 3)
    assert node._fit_to_max_pixels(frame).shape == (1080, 1920, 3)


def test_segmenter_failure_is_contained(start, monkeypatch):
    node = start(SegmentationNode)
    labels = capture(node.labels_publisher)

    def out_of_memory(rgb, **_):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(node.segmenter, "predict", out_of_memory)
    node.on_image(_deep(rgb_image(), "rgb8"))
    assert node.stats.errors["segmentation_failed"] == 1 and "out of memory" in status_text(node)
    monkeypatch.setattr(node.segmenter, "predict", lambda rgb, **_: 1 / 0)  # a bug, not a known failure
    node.on_image(_deep(rgb_image(), "rgb8"))
    assert node.stats.errors["internal_error"] == 1 and "ZeroDivisionError" in status_text(node)
    monkeypatch.undo()
    node.on_image(_deep(rgb_image(), "rgb8"))
    assert len(labels) == 1


def test_segmentation_rejects_invalid_parameter_updates(start):
    node = start(SegmentationNode)
    for name, value, reason in (("overlay_alpha", 1.5, "overlay_alpha must be in"),
                                ("max_input_pixels", 0, "max_input_pixels must be in"),
                                ("overlay_alpha", "opaque", "type"),
                                ("model", "untrained:fcn_resnet50", "read-only"),
                                ("queue_depth", 100, "read-only")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, result.reason)
    assert node.get_parameter("overlay_alpha").value == 0.5
    assert node.set_parameters([Parameter("overlay_alpha", value=0.8)])[0].successful


# ---------------------------------------------------------------------------------------- descriptor node
def _labels(height: int = 48, width: int = 64, stamp_ns: int = 1_000_000_000) -> Image:
    ids = (np.arange(height * width).reshape(height, width) % 7).astype(np.uint8)
    message = array_to_imgmsg(ids, "mono8")
    message.header.stamp = ns_to_stamp(stamp_ns)
    return message


BAD_LABEL_IMAGES = {
    "colour image as labels": (lambda: array_to_imgmsg(rgb_image(), "rgb8"), "must be mono8"),
    "16-bit labels": (lambda: array_to_imgmsg(np.zeros((48, 64), np.uint16), "mono16"), "must be mono8"),
    "truncated labels": (lambda: raw_image(48, 64, "mono8", 64, bytes(64 * 10)), "expected at least"),
    "zero-size labels": (lambda: raw_image(0, 0, "mono8", 0, b""), "no pixels"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABEL_IMAGES))
def test_descriptor_rejects_bad_label_image_and_keeps_working(start, case):
    make, reason = BAD_LABEL_IMAGES[case]
    node = start(DescriptorNode)
    out = capture(node.publisher)
    node.on_image(make())
    assert node.stats.errors["bad_image"] == 1 and not out
    assert level(node) == DiagnosticStatus.WARN and reason in status_text(node)
    node.on_image(_labels())
    assert len(out) == 1 and out[0].dimension == 256 and len(out[0].data) == 256


def test_descriptor_counts_out_of_order_and_duplicate_stamps_and_still_answers(start):
    node = start(DescriptorNode)
    out = capture(node.publisher)
    for stamp_ns in (3_000_000_000, 3_000_000_000, 2_000_000_000, 4_000_000_000):
        node.on_image(_labels(stamp_ns=stamp_ns))
    assert [o.header.stamp.sec for o in out] == [3, 3, 2, 4]  # every frame answered with its own stamp
    assert node.stats.warnings["duplicate_stamp"] == 1 and node.stats.warnings["out_of_order_stamp"] == 1
    assert node.stats.error_count == 0 and level(node) == DiagnosticStatus.WARN
    assert node.diagnostics.status().values and "out_of_order" in status_text(node)


@pytest.mark.parametrize(("node_class", "topic", "reliability"), [
    (SegmentationNode, "image_raw", ReliabilityPolicy.BEST_EFFORT),  # the entrance: newest frame, depth 1
    (DescriptorNode, "semloc/labels", ReliabilityPolicy.BEST_AVAILABLE),  # reliable to a reliable publisher
])
def test_frames_are_dropped_at_the_entrance_only(start, node_class, topic, reliability):
    """The camera is taken best effort, newest frame first; label images between the nodes are not dropped by
    QoS (was: best effort, about half of the 1080p label images lost under load)."""
    node = start(node_class)
    subscription = next(s for s in node.subscriptions if s.topic_name.endswith(topic))
    assert subscription.qos_profile.reliability == reliability


def test_descriptor_extractor_failure_is_contained(start, monkeypatch):
    node = start(DescriptorNode)
    out = capture(node.publisher)
    monkeypatch.setattr(node.extractor, "describe", lambda image: np.linalg.inv(np.zeros((2, 2))))
    node.on_image(_labels())
    assert node.stats.errors["internal_error"] == 1 and "LinAlgError" in status_text(node)
    monkeypatch.undo()
    node.on_image(_labels())
    assert len(out) == 1


def test_descriptor_masks_dynamic_classes_when_asked(start):
    node = start(DescriptorNode, mask_dynamic=True)
    assert node.extractor.model_id.endswith("+mask-dynamic")  # a database built without the mask is refused
    out = capture(node.publisher)
    ids = (np.arange(48 * 64).reshape(48, 64) % 7).astype(np.uint8)
    ids[:, :20] = SEMLOC_SIM.id_of("CAR")
    node.on_image(array_to_imgmsg(ids, "mono8"))
    unmasked = DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu")
    published = np.asarray(out[0].data)
    np.testing.assert_allclose(published, unmasked.masking_dynamic_classes().describe(ids), atol=1e-5)
    assert not np.allclose(published, unmasked.describe(ids), atol=1e-3)


def test_descriptor_rejects_parameter_updates_with_a_reason(start):
    node = start(DescriptorNode)
    for name, value, reason in (("model", "untrained:rgb_netvlad", "read-only"),
                                ("queue_depth", 0, "read-only"), ("threads", -1, "read-only")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, result.reason)
    with pytest.raises(ParameterNotDeclaredException):
        node.set_parameters([Parameter("no_such_parameter", value=1)])
    node.on_image(_labels())
    assert node.stats.processed == 1


# ----------------------------------------------------------------------------------------- localizer node
@pytest.fixture
def database_file(tmp_path) -> tuple[Path, GeoDatabase]:
    path = tmp_path / "route.semdb"
    database = places_database()
    database.save(path)
    return path, database


def _huge(values: np.ndarray) -> np.ndarray:
    return values * np.float32(1e38)


BAD_DESCRIPTORS = {
    "NaN value": (lambda d: np.where(np.arange(DIMENSION) == 0, np.nan, d), {}, "bad_descriptor"),
    "infinite value": (lambda d: np.where(np.arange(DIMENSION) == 1, np.inf, d), {}, "bad_descriptor"),
    "all zeros": (lambda d: np.zeros(DIMENSION), {}, "bad_descriptor"),
    "empty": (lambda d: np.zeros(0), {}, "model_mismatch"),
    "wrong dimension": (lambda d: np.ones(DIMENSION * 2), {}, "model_mismatch"),
    "dimension field disagrees": (lambda d: d, {"dimension": DIMENSION + 3}, "bad_descriptor"),
    "other model id": (lambda d: d, {"model_id": "another-model@123"}, "model_mismatch"),
}


@pytest.mark.parametrize("case", sorted(BAD_DESCRIPTORS))
def test_localizer_rejects_bad_descriptor_and_keeps_answering(start, database_file, case):
    path, database = database_file
    make, fields, kind = BAD_DESCRIPTORS[case]
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    node.on_descriptor(descriptor_message(make(database.descriptors[4].copy()), **fields))
    assert not fixes and node.stats.errors[kind] == 1
    assert level(node) == DiagnosticStatus.WARN and kind in status_text(node)
    node.on_descriptor(descriptor_message(database.descriptors[4], stamp_ns=8_000_000_000))
    assert len(fixes) == 1 and fixes[0].latitude == pytest.approx(database.lat[4], abs=1e-6)
    assert len(node.database) == 20


def test_localizer_answers_descriptors_at_the_float32_limits(start, database_file):
    """Huge or tiny (but finite, non-zero) values keep their direction: norms are computed in float64."""
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    node.on_descriptor(descriptor_message(_huge(database.descriptors[6])))
    node.on_descriptor(descriptor_message(database.descriptors[9] * np.float32(1e-30), stamp_ns=8_000_000_000))
    assert node.stats.error_count == 0
    assert fixes[0].latitude == pytest.approx(database.lat[6], abs=1e-6)
    assert fixes[1].latitude == pytest.approx(database.lat[9], abs=1e-6)


def test_localizer_counts_out_of_order_and_duplicate_stamps_and_still_answers(start, database_file):
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    for stamp_s in (10, 10, 9, 11):
        node.on_descriptor(descriptor_message(database.descriptors[3], stamp_ns=stamp_s * 1_000_000_000))
    assert [f.header.stamp.sec for f in fixes] == [10, 10, 9, 11]
    assert node.stats.warnings["duplicate_stamp"] == 1 and node.stats.warnings["out_of_order_stamp"] == 1
    assert node.stats.error_count == 0
    assert level(node) == DiagnosticStatus.WARN and "out_of_order_stamp" in status_text(node)
    keys = {kv.key: kv.value for kv in node.diagnostics.status().values}
    assert keys["warnings.out_of_order_stamp"] == "1" and keys["warnings.duplicate_stamp"] == "1"


def test_sequence_filter_survives_out_of_order_duplicate_and_zero_stamps(start, database_file):
    """With the temporal filter on, odd stamps still get an answer (the filter resets; the node counts them)."""
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), sequence_filter=True)
    fixes = capture(node.fix_publisher)
    stamps_s = (10.0, 10.1, 10.1, 9.0, 0.0, 10.2, 500.0)
    for index, stamp_s in enumerate(stamps_s):
        node.on_descriptor(descriptor_message(database.descriptors[3 + index], stamp_ns=int(stamp_s * 1e9)))
    assert len(fixes) == len(stamps_s) and node.stats.error_count == 0
    assert node.stats.warnings["duplicate_stamp"] == 1 and node.stats.warnings["out_of_order_stamp"] == 2
    assert all(math.isfinite(f.latitude) or f.status.status == f.status.STATUS_NO_FIX for f in fixes)


def test_localizer_rejects_invalid_parameter_updates_and_keeps_its_configuration(start, database_file):
    path, _ = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    for name, value, reason in (("top_k", 0, "top_k"), ("top_k", 5000, "top_k"),
                                ("temperature", -1.0, "temperature"), ("temperature", math.nan, "temperature"),
                                ("consensus_radius_m", math.inf, "consensus_radius_m"),
                                ("min_similarity", 2.0, "min_similarity"), ("marker_scale_m", 0.0, "marker_scale_m"),
                                ("path_length", -1, "path_length"), ("map_coordinates", "wgs84", "map_coordinates"),
                                ("database_retry_period_s", 0.1, "read-only"), ("top_k", "ten", "type")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, value, result.reason)
    assert node.config.top_k == 10 and node.localizer.config.temperature == 0.02
    assert node.localizer is not None and len(node.database) == 20


# ---------------------------------------------------------------------- localizer: bad database files
def _rewrite_header(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


class _Payload:
    """Unpickling this creates a marker file: it must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickled_descriptors(path: Path, marker: Path) -> None:
    places_database().save(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["descriptors"] = np.array([_Payload(marker)], dtype=object)
    with open(path, "wb") as stream:
        np.savez(stream, allow_pickle=True, **arrays)


def _write_empty_database(path: Path) -> None:
    GeoDatabase(DIMENSION, MODEL_ID).save(path)


BAD_DATABASE_FILES = {
    "missing": (lambda path, marker: None, "no geo-database file"),
    "empty file": (lambda path, marker: path.write_bytes(b""), "empty"),
    "truncated": (lambda path, marker: (places_database().save(path),
                                        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])),
                  "not a readable semloc geo-database"),
    "random bytes": (lambda path, marker: path.write_bytes(os.urandom(4096)), "not a readable semloc geo-database"),
    "newer format version": (lambda path, marker: (places_database().save(path),
                                                   _rewrite_header(path, format_version=99)), "newer semloc_ros"),
    "pickled objects": (_pickled_descriptors, "pickled objects"),
    "zero entries": (lambda path, marker: _write_empty_database(path), "no entries"),
    "a directory": (lambda path, marker: path.mkdir(), "no geo-database file"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATABASE_FILES))
def test_localizer_waits_on_a_bad_database_file_then_loads_the_good_one(start, tmp_path, case):
    path = tmp_path / "map.semdb"
    marker = tmp_path / "payload-executed"
    make, reason = BAD_DATABASE_FILES[case]
    make(path, marker)
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    assert node.localizer is None
    assert level(node) == DiagnosticStatus.ERROR and reason in status_text(node), status_text(node)
    node.on_descriptor(descriptor_message(np.ones(DIMENSION)))
    assert node.stats.errors["no_database"] == 1 and not fixes
    reload_map(node)  # what the retry timer does
    assert node.localizer is None and not marker.exists()
    if path.is_dir():
        path.rmdir()
    database = places_database()
    database.save(path)
    reload_map(node)
    assert node.localizer is not None and level(node) != DiagnosticStatus.ERROR
    node.on_descriptor(descriptor_message(database.descriptors[2], stamp_ns=9_000_000_000))
    assert len(fixes) == 1 and not marker.exists()


def test_localizer_keeps_its_database_when_the_file_is_replaced_by_a_bad_one(start, database_file, tmp_path):
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    corrupt = tmp_path / "corrupt.tmp"
    corrupt.write_bytes(b"PK\x03\x04 half a zip")
    os.replace(corrupt, path)  # how a broken writer would replace it
    reload_map(node)
    assert len(node.database) == 20 and node.stats.errors["database_refused"] == 1
    assert level(node) == DiagnosticStatus.WARN and "still using" in status_text(node)
    reload_map(node)
    assert node.stats.errors["database_refused"] == 1  # the same bad file is not re-read every period
    node.on_descriptor(descriptor_message(database.descriptors[5]))
    assert fixes[-1].latitude == pytest.approx(database.lat[5], abs=1e-6)
    path.unlink()  # a removed file does not unload the database either
    reload_map(node)
    assert len(node.database) == 20
    bigger = places_database(n=30, seed=1)
    bigger.save(path)  # a rebuilt database at the same path is picked up
    reload_map(node)
    assert len(node.database) == 30
    assert node.set_parameters([Parameter("database_path", value=str(tmp_path / "nope.semdb"))])[0].successful
    assert len(node.database) == 30 and "still using" in status_text(node)


def test_localizer_refuses_a_reloaded_map_of_another_pipeline_and_keeps_its_own(start, database_file, tmp_path):
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    node.on_descriptor(descriptor_message(database.descriptors[3]))  # the pipeline in use: MODEL_ID, 8-d
    other = tmp_path / "other-model.semdb"
    places_database(n=25, model_id="another-model", seed=3).save(other)
    node.set_parameters([Parameter("database_path", value=str(other))])  # a valid map of another model
    node.wait_for_map_load()
    assert len(node.database) == 20 and node.database.model_id == MODEL_ID
    assert node.stats.errors["database_refused"] == 1 and level(node) == DiagnosticStatus.WARN
    assert "another-model" in status_text(node) and "does not match the descriptors in use" in status_text(node)
    os.replace(other, path)  # the same map replacing the loaded file in place
    reload_map(node)
    assert node.database.model_id == MODEL_ID and node.stats.errors["database_refused"] == 2
    node.on_descriptor(descriptor_message(database.descriptors[5], stamp_ns=8_000_000_000))
    assert len(fixes) == 2 and fixes[-1].latitude == pytest.approx(database.lat[5], abs=1e-6)
    assert node.stats.errors["model_mismatch"] == 0


def test_localizer_answers_from_the_old_map_while_a_new_one_loads(start, database_file, tmp_path, monkeypatch):
    path, database = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    gate, threads = threading.Event(), []
    real_load = localizer_node.load_map

    def slow_load(file: Path) -> GeoDatabase:
        threads.append(threading.current_thread())
        gate.wait(20.0)
        return real_load(file)

    monkeypatch.setattr(node.map_watcher, "_load_file", slow_load)
    places_database(n=30, seed=1).save(path)  # a rebuilt map
    node._try_load_database()  # returns at once: the load runs on another thread
    assert threads and threads[0] is not threading.current_thread()
    node.on_descriptor(descriptor_message(database.descriptors[4]))
    assert len(fixes) == 1 and fixes[0].latitude == pytest.approx(database.lat[4], abs=1e-6)
    assert len(node.database) == 20
    gate.set()
    node.wait_for_map_load()
    assert len(node.database) == 30 and level(node) != DiagnosticStatus.ERROR


def test_localizer_without_a_map_reads_a_bad_file_again_only_when_it_changes(start, tmp_path, monkeypatch):
    path = tmp_path / "map.semdb"
    path.write_bytes(b"PK\x03\x04 not a map")
    reads = []
    real_load = GeoDatabase.load
    monkeypatch.setattr(GeoDatabase, "load", classmethod(lambda cls, *a, **k: reads.append(a) or real_load(*a, **k)))
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    assert node.localizer is None and len(reads) == 1 and level(node) == DiagnosticStatus.ERROR
    for _ in range(3):
        reload_map(node)  # the retry timer
    assert len(reads) == 1 and "not a readable" in status_text(node)
    places_database().save(path)
    reload_map(node)
    assert len(reads) == 2 and node.localizer is not None


def test_localizer_refuses_a_compressed_map_bomb_without_inflating_it(start, database_file, tmp_path):
    path, _ = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes())
    count = (256 << 20) // (4 * DIMENSION)  # 256 MiB of descriptors in about 250 kB
    header["count"] = count
    arrays |= {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
               "descriptors": np.zeros((count, DIMENSION), dtype=np.float32), "stamp_ns": np.zeros(count, np.int64),
               "image_id": np.full(count, "x"), **{name: np.zeros(count) for name in ("lat", "lon", "alt", "heading")}}
    bomb = tmp_path / "bomb.semdb"
    with open(bomb, "wb") as stream:
        np.savez_compressed(stream, **arrays)
    assert bomb.stat().st_size < (4 << 20)
    os.replace(bomb, path)
    reload_map(node)
    assert len(node.database) == 20 and node.stats.errors["database_refused"] == 1
    assert "decompression bomb" in status_text(node)


def test_localizer_reports_a_database_of_another_descriptor_dimension(start, tmp_path):
    path = tmp_path / "wide.semdb"
    places_database(dimension=64, model_id="wide-model").save(path)
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    node.on_descriptor(descriptor_message(np.ones(DIMENSION), model_id="wide-model"))
    assert node.stats.errors["model_mismatch"] == 1 and "dimension 8 does not match" in status_text(node)


# ------------------------------------------------------------------------------------ GPS and metadata
@pytest.mark.parametrize("lat, lon, alt", [(math.nan, 0.0, 0.0), (0.0, math.inf, 0.0), (91.0, 0.0, 0.0),
                                           (0.0, -180.5, 0.0), (-math.inf, 0.0, 0.0), (10.0, 10.0, math.inf)])
def test_bad_coordinates_are_refused_without_touching_the_stored_database(tmp_path, lat, lon, alt):
    path = tmp_path / "db.semdb"
    database = places_database()
    database.save(path)
    before = GeoDatabase.load(path)
    with pytest.raises(ValueError):
        database.add(np.ones((2, DIMENSION)), [PlaceRecord(lat=1.0, lon=1.0), PlaceRecord(lat=lat, lon=lon, alt=alt)])
    assert len(database) == 20 and database.index_type == "flat"
    assert np.array_equal(database.search(database.descriptors[3], 1)[1], [[3]])
    database.save(path)
    # Compare contents, not bytes: the file is a zip whose headers carry the save time (2 s resolution).
    after = GeoDatabase.load(path)
    assert len(after) == 20
    for field in ("descriptors", "lat", "lon", "alt", "stamp_ns", "image_ids"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))


def test_build_db_skips_and_reports_frames_with_bad_gps(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = [("ok0.png", "51.75", "-1.25", "60"), ("nan.png", "nan", "-1.25", ""), ("far.png", "95.0", "-1.25", ""),
            ("empty.png", "", "", ""), ("ok1.png", "51.7501", "-1.25", ""), ("inflon.png", "51.75", "inf", ""),
            ("infalt.png", "51.7502", "-1.25", "inf")]
    for name, *_ in rows:
        cv2.imwrite(str(folder / name), rgb_image(32, 48))
    (folder / "gps.csv").write_text("filename,lat,lon,alt\n" + "".join(",".join(row) + "\n" for row in rows))
    out = tmp_path / "db.semdb"
    code = build_db.main([str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"])
    assert code == 0
    assert "invalid_gps=4" in capsys.readouterr().out
    database = GeoDatabase.load(out)
    assert list(database.image_ids) == ["ok0.png", "ok1.png", "infalt.png"]
    assert database.alt[0] == 60.0 and math.isnan(database.alt[1]) and math.isnan(database.alt[2])


def test_unknown_altitude_gives_a_fix_with_uninformative_altitude(start, tmp_path):
    path = tmp_path / "noalt.semdb"
    database = places_database(alt=math.nan)
    database.save(path)
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes, geoposes = capture(node.fix_publisher), capture(node.geopose_publisher)
    paths, markers = capture(node.path_publisher), capture(node.marker_publisher)
    node.on_descriptor(descriptor_message(database.descriptors[7]))
    fix = fixes[0]
    # A number, not NaN (navsat_transform drops NaN-altitude fixes), with a variance that says "unknown".
    assert fix.status.status == fix.status.STATUS_FIX and fix.altitude == 0.0
    assert fix.position_covariance[8] == 1e6
    assert fix.latitude == pytest.approx(database.lat[7], abs=1e-6)
    assert np.all(np.isfinite(fix.position_covariance))
    assert geoposes[0].pose.pose.position.altitude == 0.0
    assert paths and all(math.isfinite(m.pose.position.x) for m in markers[0].markers[1:])


def test_partly_known_altitude_averages_the_known_ones(start, tmp_path):
    path = tmp_path / "somealt.semdb"
    database = places_database(alt=[math.nan if i % 2 else 100.0 + i for i in range(20)])
    database.save(path)
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    fixes = capture(node.fix_publisher)
    node.on_descriptor(descriptor_message(database.descriptors[8]))
    assert math.isfinite(fixes[0].altitude) and 100.0 <= fixes[0].altitude <= 120.0


@pytest.mark.parametrize("boundary_lon", [-6.0, 0.0])
def test_database_across_a_utm_zone_boundary(start, tmp_path, boundary_lon):
    """Places every ~7 m along latitude 51.5 from 35 m west to 35 m east of a zone boundary (29/30, 30/31)."""
    step = 1e-4  # degrees of longitude: ~6.9 m at 51.5 N
    path = tmp_path / "boundary.semdb"
    database = places_database(n=11, lat0=51.5, lon0=boundary_lon - 5 * step, step_deg=step, along="lon")
    database.save(path)
    _, enu = database.frame_and_enu()
    consecutive = np.hypot(*np.diff(enu[:, :2], axis=0).T)
    truth = geodesic_distance_m(database.lat[:-1], database.lon[:-1], database.lat[1:], database.lon[1:])
    assert np.allclose(consecutive, truth, atol=1e-3)  # ENU is continuous across the boundary
    assert 6.8 < truth[0] < 7.0

    node = start(LocalizerNode, database_path=str(path), top_k=3, consensus_radius_m=10.0,
                 sequence_filter=False)
    fixes, markers = capture(node.fix_publisher), capture(node.marker_publisher)
    for index in (4, 5, 6):  # west of, on and east of the boundary
        node.on_descriptor(descriptor_message(database.descriptors[index], stamp_ns=(10 + index) * 10**9))
        error_m = float(geodesic_distance_m(database.lat[index], database.lon[index],
                                            fixes[-1].latitude, fixes[-1].longitude))
        assert error_m < 3.5, (index, error_m)
    assert node.set_parameters([Parameter("map_coordinates", value="utm")])[0].successful
    node.on_descriptor(descriptor_message(database.descriptors[5], stamp_ns=20 * 10**9))
    assert len([m for m in markers[-1].markers if m.ns == "retrieved"]) == 3
    xy = np.array([node.map_xy(lat, lon, 0.0, 0.0) for lat, lon in zip(database.lat, database.lon, strict=True)])
    steps = np.hypot(*np.diff(xy, axis=0).T)
    assert np.allclose(steps, truth, rtol=2e-3)  # one zone for the whole map: no jump at the boundary


def test_database_across_the_antimeridian_localizes_in_enu(start, tmp_path):
    path = tmp_path / "dateline.semdb"
    lons = (179.9995 + 1e-4 * np.arange(11) + 180.0) % 360.0 - 180.0  # 179.9995 ... -179.9995
    wrapped = GeoDatabase(DIMENSION, MODEL_ID)
    wrapped.add(np.random.default_rng(0).normal(size=(11, DIMENSION)),
                [PlaceRecord(lat=-16.8, lon=float(lon)) for lon in lons])
    wrapped.save(path)
    node = start(LocalizerNode, database_path=str(path), top_k=3, consensus_radius_m=15.0,
                 sequence_filter=False)
    fixes = capture(node.fix_publisher)
    for index in (4, 5, 6):
        node.on_descriptor(descriptor_message(wrapped.descriptors[index], stamp_ns=(10 + index) * 10**9))
        error_m = float(geodesic_distance_m(-16.8, lons[index], fixes[-1].latitude, fixes[-1].longitude))
        assert error_m < 5.0, (index, error_m)


def test_polar_database_without_a_utm_zone_still_localizes(start, tmp_path):
    path = tmp_path / "polar.semdb"
    database = places_database(lat0=85.0)
    database.save(path)
    node = start(LocalizerNode, database_path=str(path), map_coordinates="utm", sequence_filter=False)
    fixes, markers = capture(node.fix_publisher), capture(node.marker_publisher)
    node.on_descriptor(descriptor_message(database.descriptors[3]))
    assert fixes[0].latitude == pytest.approx(database.lat[3], abs=1e-6)
    sphere = next(m for m in markers[0].markers if m.ns == "retrieved")
    assert abs(sphere.pose.position.y) < 1000.0  # ENU metres, not a UTM northing


def test_local_enu_distance_matches_geodesic_across_zone_boundaries():
    for lon in (-6.0, 0.0, 180.0 - 1e-9):
        lats, lons = np.array([48.0, 48.0005]), np.array([lon - 0.0004, lon + 0.0004])
        lons = (lons + 180.0) % 360.0 - 180.0
        east, north, _ = LocalENU.centred_on(lats, lons).to_enu(lats, lons)
        assert math.hypot(east[1] - east[0], north[1] - north[0]) == pytest.approx(
            float(geodesic_distance_m(lats[0], lons[0], lats[1], lons[1])), abs=1e-3)


# --------------------------------------------------------------------------------- weights files (nodes)
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    segmenter, descriptor = folder / "segmenter.pt", folder / "descriptor.pt"
    Segmenter.untrained(seed=1, device="cpu").save(segmenter)
    DescriptorExtractor.untrained("semantic_alexnet", seed=1, device="cpu").save(descriptor)
    return {"segmentation_node": segmenter, "descriptor_node": descriptor}


def _evil_pickle(path: Path, marker: Path, valid: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(marker)))


def _evil_zip(path: Path, marker: Path, valid: Path) -> None:
    torch.save({"format": "semloc-weights", "payload": _Payload(marker)}, path)


def _flip_tensor_bytes(path: Path, marker: Path, valid: Path) -> None:
    with zipfile.ZipFile(valid) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if "/data/" in item.filename and len(data) > 16:
                data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
            target.writestr(item, data)


def _with_blob(change):
    def make(path: Path, marker: Path, valid: Path) -> None:
        blob = torch.load(valid, weights_only=True)
        change(blob)
        torch.save(blob, path)

    return make


BAD_WEIGHTS = {
    "missing": (lambda path, marker, valid: None, "not found"),
    "empty": (lambda path, marker, valid: path.write_bytes(b""), "empty"),
    "truncated": (lambda path, marker, valid: path.write_bytes(valid.read_bytes()[:5000]), "truncated or corrupt"),
    "random bytes": (lambda path, marker, valid: path.write_bytes(np.random.default_rng(5).bytes(2048)),
                     "refused to load|corrupt"),
    "malicious pickle": (_evil_pickle, "refused"),
    "malicious torch archive": (_evil_zip, "refused"),
    "altered tensors": (_flip_tensor_bytes, "do not match the stored model_id"),
    "wrong model id": (_with_blob(lambda blob: blob["meta"].update(model_id="someone-else@000000000000")),
                       "do not match the stored model_id"),
    "newer format version": (_with_blob(lambda blob: blob.update(format_version=99)), "newer"),
}


@pytest.fixture
def patient_watchdog(monkeypatch):
    """run_node in the test process: its teardown watchdog would end pytest itself on a slow (loaded) teardown."""
    monkeypatch.setattr(node_common, "SHUTDOWN_TIMEOUT_S", 120.0)


@pytest.mark.parametrize("node_name", ["segmentation_node", "descriptor_node"])
@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_node_given_bad_weights_exits_non_zero_with_the_reason(tmp_path, capfd, weights, node_name, case,
                                                               patient_watchdog):
    make, reason = BAD_WEIGHTS[case]
    path, marker = tmp_path / "model.pt", tmp_path / "payload-executed"
    make(path, marker, weights[node_name])
    node_class = SegmentationNode if node_name == "segmentation_node" else DescriptorNode
    code = run_node(node_class, ["--ros-args", "-p", f"model:={path}", "-p", "device:=cpu"])
    err = capfd.readouterr().err
    assert code == 1
    assert "cannot start" in err and any(r in err for r in reason.split("|")), err[-2000:]
    assert not marker.exists()


@pytest.mark.parametrize("node_name, model, reason", [
    ("segmentation_node", "descriptor", "not a segmenter"),
    ("descriptor_node", "segmenter", "not a descriptor"),
    ("segmentation_node", "untrained:no_such_arch", "no_such_arch"),
    ("descriptor_node", "untrained:no_such_arch", "no_such_arch"),
])
def test_node_given_the_wrong_kind_of_model_exits_non_zero(capfd, weights, node_name, model, reason,
                                                           patient_watchdog):
    other = {"descriptor": weights["descriptor_node"], "segmenter": weights["segmentation_node"]}
    spec = str(other.get(model, model))
    node_class = SegmentationNode if node_name == "segmentation_node" else DescriptorNode
    assert run_node(node_class, ["--ros-args", "-p", f"model:={spec}", "-p", "device:=cpu"]) == 1
    err = capfd.readouterr().err
    assert "cannot start" in err and reason in err, err[-2000:]


def test_good_weights_files_start_both_nodes(start, weights):
    segmentation = start(SegmentationNode, model=str(weights["segmentation_node"]))
    labels = capture(segmentation.labels_publisher)
    segmentation.on_image(_deep(rgb_image(), "rgb8"))
    assert len(labels) == 1


# ------------------------------------------------------------------------------- atomic database writes
def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device (simulated)"),
                                     KeyboardInterrupt()])
def test_failed_save_leaves_the_previous_database_intact(tmp_path, monkeypatch, failure):
    path = tmp_path / "map.semdb"
    places_database().save(path)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(stream, **arrays):
        real_savez(stream, **{name: arrays[name] for name in list(arrays)[:2]})  # half the archive...
        raise failure

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(type(failure)):
        places_database(n=40, seed=3).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and len(GeoDatabase.load(path)) == 20
    assert _no_temporaries(tmp_path)


def test_failed_rename_leaves_the_previous_database_intact(tmp_path, monkeypatch):
    path = tmp_path / "map.semdb"
    places_database().save(path)
    before = path.read_bytes()

    def refuse(source, target):
        raise PermissionError(errno.EACCES, "Permission denied (simulated)")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        places_database(n=40, seed=3).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _no_temporaries(tmp_path)


def _demo_folder(tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rgb_image(32, 48, seed=i))
        lines.append(f"{i}.png,{51.75 + 1e-4 * i},-1.25\n")
    (folder / "gps.csv").write_text("filename,lat,lon\n" + "".join(lines))
    return folder


@pytest.mark.parametrize("where", ["describing", "saving"])
def test_interrupted_build_db_append_leaves_the_previous_database_intact(tmp_path, monkeypatch, where):
    folder = _demo_folder(tmp_path)
    out = tmp_path / "map.semdb"
    arguments = [str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]
    assert build_db.main(arguments) == 0
    before = out.read_bytes()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "describing":
        monkeypatch.setattr("semloc_ros.mapping.describe_drive_views", interrupt)
    else:
        monkeypatch.setattr(np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_db.main([*arguments, "--append"])
    monkeypatch.undo()
    assert out.read_bytes() == before and len(GeoDatabase.load(out)) == 6 and _no_temporaries(tmp_path)


def test_build_db_refuses_to_append_to_a_corrupt_database_and_leaves_it(tmp_path, capsys):
    folder = _demo_folder(tmp_path)
    out = tmp_path / "map.semdb"
    out.write_bytes(b"PK\x03\x04 broken")
    arguments = [str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet", "--append"]
    assert build_db.main(arguments) == 1
    assert "cannot append" in capsys.readouterr().err
    assert out.read_bytes() == b"PK\x03\x04 broken"


def test_two_concurrent_build_db_appends_to_one_file_both_land(tmp_path, monkeypatch):
    first, second = _demo_folder(tmp_path / "a"), _demo_folder(tmp_path / "b", n=4)
    out = tmp_path / "map.semdb"
    common = ["--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]
    assert build_db.main([str(_demo_folder(tmp_path / "base", n=3)), *common]) == 0
    both_read = threading.Barrier(2, timeout=60)  # each run has read the file before either writes it
    describe = mapping.describe_drive_frames

    def describe_together(*args, **kwargs):
        both_read.wait()
        return describe(*args, **kwargs)

    monkeypatch.setattr(mapping, "describe_drive_frames", describe_together)
    codes = []
    runs = [threading.Thread(target=lambda folder=folder: codes.append(
        build_db.main([str(folder), *common, "--append"]))) for folder in (first, second)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    assert codes == [0, 0]
    assert len(GeoDatabase.load(out)) == 3 + 6 + 4  # no run's entries lost (was: the last writer's only)


def test_build_db_waits_for_another_writer_then_gives_up_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "map.semdb"
    arguments = [str(_demo_folder(tmp_path)), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]
    assert build_db.main(arguments) == 0
    before = out.read_bytes()
    with exclusive_lock(out, timeout_s=1.0):  # another writer holds the file
        assert build_db.main([*arguments, "--append", "--lock-timeout-s", "0.3"]) == 1
    captured = capsys.readouterr()
    assert "waiting for another process writing" in captured.out
    assert "cannot append" in captured.err and "being written by another process" in captured.err
    assert out.read_bytes() == before


def test_build_db_skips_and_reports_gps_jumps(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    rows = []
    for i in range(8):
        cv2.imwrite(str(folder / f"{i}.png"), rgb_image(32, 48, seed=i))
        lat = 51.75 + 1e-5 * i + (0.09 if i == 4 else 0.0)  # 1.1 m per 0.1 s; frame 4 jumps 10 km
        rows.append(f"{i}.png,{lat},-1.25,{i * 100_000_000}\n")
    (folder / "gps.csv").write_text("filename,lat,lon,stamp_ns\n" + "".join(rows))
    out = tmp_path / "map.semdb"
    assert build_db.main([str(folder), "--out", str(out), "--untrained-ok", "--threads", "1", "--quiet"]) == 0
    assert "implausible_speed=1" in capsys.readouterr().out
    database = GeoDatabase.load(out)
    assert len(database) == 7 and np.max(np.abs(database.lat - 51.75)) < 1e-3


# ------------------------------------------------------------------------------ stats and diagnostics
def test_sequence_monitor_counts_gaps_and_orders_stamps():
    monitor = SequenceMonitor()
    assert [monitor.lost("a", n) for n in (1, 2, 5, 6, 10)] == [0, 0, 2, 0, 3]
    assert monitor.lost("b", 7) == 0 and monitor.lost("a", 1) == 0  # another publisher; a restarted one
    assert monitor.lost("a", None) == 0
    assert [monitor.stamp_order(s) for s in (5, 6, 6, 4, 7)] == [None, None, "duplicate", "out_of_order", None]


def test_sequence_monitor_counts_an_implausible_stamp_once_and_re_anchors():
    second = 1_000_000_000
    monitor = SequenceMonitor()
    one_bad = [100, 101, (2**31 - 1), 102, 103, 102.5]  # one frame stamped 2^31-1 s, then the clock goes on
    assert [monitor.stamp_order(int(s * second)) for s in one_bad] == [None, None, "jump", None, None, "out_of_order"]
    monitor = SequenceMonitor()
    new_clock = [1_700_000_000, 1_700_000_001, 5, 6, 7, 6]  # the clock restarts (sim time): counted once
    assert [monitor.stamp_order(int(s * second)) for s in new_clock] == [None, None, "jump", None, None,
                                                                          "out_of_order"]


@pytest.mark.parametrize("node_class", [DescriptorNode, LocalizerNode])
def test_one_absurd_stamp_warns_once_and_diagnostics_recover(start, database_file, node_class):
    path, database = database_file
    node = start(node_class, database_path=str(path)) if node_class is LocalizerNode else start(node_class)
    diagnostics = StageDiagnostics(node, node.stats, period_s=60.0, warn_window_s=0.3)
    second = 1_000_000_000
    stamps = [100 * second, (2**31 - 1) * second, *(int((100.1 + 0.1 * i) * second) for i in range(10))]
    for stamp in stamps:
        if node_class is LocalizerNode:
            node.on_descriptor(descriptor_message(database.descriptors[2], stamp_ns=stamp))
        else:
            node.on_image(_labels(stamp_ns=stamp))
    assert node.stats.warnings["stamp_jump"] == 1 and node.stats.warnings["out_of_order_stamp"] == 0
    assert node.stats.processed == len(stamps)
    time.sleep(0.4)
    assert diagnostics.status().level == DiagnosticStatus.OK  # was: WARN out_of_order until a restart


def test_diagnostics_level_follows_errors_warnings_and_fatal(start, database_file):
    path, _ = database_file
    node = start(LocalizerNode, database_path=str(path), integrity_threshold=0.0,
                 sequence_filter=False)  # unrelated synthetic descriptors: no gate, single frames
    stats = StageStats()
    diagnostics = StageDiagnostics(node, stats, period_s=60.0, warn_window_s=0.2)
    assert diagnostics.status().level == DiagnosticStatus.OK
    stats.record_warning("downscaled", "big frame")
    assert diagnostics.status().level == DiagnosticStatus.WARN and "downscaled" in diagnostics.status().message
    stats.record_error("bad_image", "broken")
    assert "bad_image" in diagnostics.status().message
    diagnostics.fatal = "no database"
    assert diagnostics.status().level == DiagnosticStatus.ERROR
    diagnostics.fatal = ""
    stats.last_error_time -= 1.0
    stats.last_warning_time -= 1.0
    assert diagnostics.status().level == DiagnosticStatus.OK
    stats.record_dropped(3)
    values = {kv.key: kv.value for kv in diagnostics.status().values}
    assert values["dropped"] == "3" and values["warnings.downscaled"] == "1" and values["errors.bad_image"] == "1"


def test_a_hung_shutdown_still_ends_the_node_process():
    """run_node's watchdog: if tearing down rclpy/DDS hangs, the process exits anyway with its exit code."""
    import subprocess
    import sys
    import time

    script = "\n".join([
        "import time, rclpy",
        "from semloc_ros.ros import node_common",
        "node_common.SHUTDOWN_TIMEOUT_S = 0.5",
        "rclpy.try_shutdown = lambda *args, **kwargs: time.sleep(60)  # a DDS teardown that never returns",
        "def broken():",
        "    raise ValueError('no model')",
        "raise SystemExit(node_common.run_node(broken, []))",
    ])
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr  # the start-up failure's code, not the hang's
    assert time.monotonic() - start < 20
    assert "did not finish within 0.5 s" in result.stderr
