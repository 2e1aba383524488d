"""DescriptorNode: the pipeline id of its descriptors names the segmenter announced on semloc/segmenter_id."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from semloc_ros.ros.conversions import array_to_imgmsg
from semloc_ros.ros.descriptor_node import DescriptorNode
from semloc_ros.ros.node_common import SEGMENTER_ID_QOS, SEGMENTER_ID_TOPIC

HISTOGRAM = "untrained:label_histogram"


@pytest.fixture
def ros():
    rclpy.init(args=["--ros-args", "-p", f"model:={HISTOGRAM}", "-p", "device:=cpu"])
    yield
    rclpy.try_shutdown()


def _described(node: DescriptorNode) -> list:
    out: list = []
    node.publisher.publish = out.append
    node.on_image(array_to_imgmsg(np.full((12, 16), 3, np.uint8), "mono8"))
    return out


def test_descriptors_name_the_segmenter_announced_before_the_node_started(ros):
    announcer = rclpy.create_node("segmenter_announcer")
    announcer.create_publisher(String, SEGMENTER_ID_TOPIC, SEGMENTER_ID_QOS).publish(String(data="seg@1+map:x"))
    node = DescriptorNode()  # latched: a descriptor node started later still gets the id
    try:
        assert len(node.get_subscriptions_info_by_topic(f"/{SEGMENTER_ID_TOPIC}")) == 1
        plain = _described(node)[0].model_id
        assert "|segmenter:" not in plain  # nothing announced received yet: the descriptor id alone
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(announcer)
        deadline = time.monotonic() + 10.0
        while node.pipeline_id == plain and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert _described(node)[0].model_id == f"{plain}|segmenter:seg@1+map:x"
    finally:
        node.destroy_node()
        announcer.destroy_node()


def test_rgb_descriptors_do_not_listen_for_a_segmenter(ros):
    rclpy.try_shutdown()
    rclpy.init(args=["--ros-args", "-p", "model:=untrained:rgb_netvlad", "-p", "device:=cpu"])
    node = DescriptorNode()
    try:
        assert node.get_subscriptions_info_by_topic(f"/{SEGMENTER_ID_TOPIC}") == []
        assert node.pipeline_id == node.extractor.model_id
    finally:
        node.destroy_node()
