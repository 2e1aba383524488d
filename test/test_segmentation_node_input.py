"""segmentation_node: resolved topic names, and a warning when the camera topic carries another message type."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage

from semloc_ros.ros.conversions import array_to_imgmsg
from semloc_ros.ros.segmentation_node import COMPRESSED_TYPE, IMAGE_TYPE, SegmentationNode, input_type_problem


def graph(**types: list[str]):
    return lambda topic: types.get(topic.strip("/").replace("/", "_"), [])


def test_input_type_problem_names_the_publishers_type_and_the_parameter() -> None:
    problem = input_type_problem("/cam/image_raw", IMAGE_TYPE, graph(cam_image_raw=[COMPRESSED_TYPE]))
    assert problem is not None and COMPRESSED_TYPE in problem and "use_compressed true" in problem
    problem = input_type_problem("/cam/image_raw/compressed", COMPRESSED_TYPE,
                                 graph(cam_image_raw_compressed=[IMAGE_TYPE]))
    assert problem is not None and "use_compressed false" in problem
    # nothing on the topic, but image_transport's compressed sibling carries images
    problem = input_type_problem("/cam/image_raw", IMAGE_TYPE, graph(cam_image_raw_compressed=[COMPRESSED_TYPE]))
    assert problem is not None and "/cam/image_raw/compressed" in problem
    problem = input_type_problem("/cam/image_raw/compressed", COMPRESSED_TYPE, graph(cam_image_raw=[IMAGE_TYPE]))
    assert problem is not None and "use_compressed false" in problem
    # the right type is published (just slow), or nothing anywhere: nothing to explain
    assert input_type_problem("/cam/image_raw", IMAGE_TYPE, graph(cam_image_raw=[IMAGE_TYPE])) is None
    assert input_type_problem("/cam/image_raw", IMAGE_TYPE, graph()) is None


@pytest.fixture
def node():
    rclpy.init(args=["--ros-args", "-p", "model:=untrained:lraspp_mobilenet_v3_large", "-p", "device:=cpu",
                     "-r", "image_raw:=/own_test/cam"])
    created = SegmentationNode()
    yield created
    created.destroy_node()
    rclpy.try_shutdown()


def test_node_uses_the_remapped_topic_and_warns_about_a_compressed_publisher(node) -> None:
    assert node.camera.topic_name == "/own_test/cam"
    node.check_input()  # nothing published anywhere: no warning
    assert node.diagnostics.status().level == DiagnosticStatus.OK
    # another participant (context): one participant refuses two types on one topic
    context = rclpy.Context()
    rclpy.init(context=context)
    other = rclpy.create_node("compressed_camera", context=context)
    try:
        other.create_publisher(CompressedImage, "/own_test/cam", QoSProfile(depth=1))
        deadline = time.monotonic() + 10.0
        while node.stats.warnings["input_type"] == 0 and time.monotonic() < deadline:
            node.check_input()
            time.sleep(0.05)
    finally:
        other.destroy_node()
        rclpy.shutdown(context=context)
    status = node.diagnostics.status()
    assert status.level == DiagnosticStatus.WARN
    assert COMPRESSED_TYPE in status.message and "use_compressed true" in status.message


def test_labels_and_overlay_have_the_segmenters_working_size_unless_camera_is_asked(node) -> None:
    """A 1080p camera and a network at 240x320: labels at 240x320 (77 kB, not 2 MB); ``label_size camera``: the
    camera's size, as before."""
    node.segmenter.input_size = (24, 32)  # the untrained network runs at the image's size; give it a working size
    labels, overlays = [], []
    node.labels_publisher.publish = labels.append
    node.overlay_publisher.publish = overlays.append
    node.overlay_publisher.get_subscription_count = lambda: 1  # someone views the overlay
    frame = array_to_imgmsg(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8), "rgb8")
    node.on_image(frame)
    assert (labels[-1].height, labels[-1].width) == (24, 32) and (overlays[-1].height, overlays[-1].width) == (24, 32)
    assert node.set_parameters([Parameter("label_size", value="camera")])[0].successful
    node.on_image(frame)
    assert (labels[-1].height, labels[-1].width) == (96, 128) and (overlays[-1].height, overlays[-1].width) == (96, 128)
    assert not node.set_parameters([Parameter("label_size", value="full")])[0].successful
    assert node.stats.processed == 2 and node.stats.error_count == 0
