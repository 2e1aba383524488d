"""segmentation_node: camera image -> semantic label image (mono8, same header) + colour overlay (rgb8).

The label image has the size the segmenter works at (``label_size: model``, e.g. 240x320 for the shipped one,
whatever the camera's size: the descriptor and the re-ranking shrink it to their own sizes anyway, so a 1080p
frame gives a 77 kB label image, not 2 MB), or the camera frame's (``label_size: camera``). The overlay has the
label image's size. Camera frames are decoded as views of the message's bytes (no copy of a 6 MB frame).

The segmenter's id (with its label mapping; a quantized copy's is its source network's,
:func:`semloc_ros.models.loading.segmenter_identity`) is published once on ``semloc/segmenter_id``
(std_msgs/String, transient local): the descriptor node names it in each descriptor's pipeline id, so the
localizer refuses a map built with another segmenter.

The node logs the resolved (remapped) topic names it uses. While nothing arrives, it checks the ROS graph every
``INPUT_CHECK_PERIOD_S``: publishers of another message type on the camera topic (e.g. CompressedImage while it
subscribes Image), or none there but a ``/compressed`` (or base) topic of the other kind, give a warning in the
log and on /diagnostics that says which parameter to change.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from semloc_ros.core.image_codec import MAX_IMAGE_PIXELS, ImageEncodingError, to_rgb8
from semloc_ros.core.labels import overlay
from semloc_ros.core.settings import FRACTION, POSITIVE, Bounds
from semloc_ros.models import set_torch_threads
from semloc_ros.models.loading import load_segmenter, segmenter_identity
from semloc_ros.ros.conversions import array_to_imgmsg, compressed_imgmsg_to_array, imgmsg_to_array
from semloc_ros.ros.node_common import (
    SEGMENTER_ID_QOS,
    SEGMENTER_ID_TOPIC,
    OneOf,
    ParameterSpec,
    StageDiagnostics,
    ValidatedParameters,
    guarded,
    run_node,
)
from semloc_ros.ros.stage_stats import SequenceMonitor, StageStats

PARAMETERS = (
    ParameterSpec("model", "default", "segmenter: 'default' (shipped; int8 on the CPU, fp16 on CUDA), "
                  "'default-fp32', 'default-int8', 'default-fp16', 'untrained:<arch>' or a weights file",
                  read_only=True),
    ParameterSpec("trust_model_code", False, "allow a model file that is a program (TorchScript, ONNX with custom "
                  "operators): its code runs in this node; only for files you trust", read_only=True),
    ParameterSpec("model_arch", "", "architecture of a plain torchvision state-dict file", read_only=True),
    ParameterSpec("label_mapping", "identity",
                  "map the model's label ids to semloc's: identity, cityscapes19, camvid11 or a JSON file",
                  read_only=True),
    ParameterSpec("device", "auto", "torch device: auto (cuda if present), cpu, cuda, cuda:N", read_only=True),
    ParameterSpec("threads", 1, "torch intra-op threads (see docs/benchmarks.md)", POSITIVE, read_only=True),
    ParameterSpec("use_compressed", False, "subscribe to image_raw/compressed instead of image_raw",
                  read_only=True),
    ParameterSpec("publish_overlay", True, "also publish the rgb8 colour overlay for viewing"),
    ParameterSpec("overlay_alpha", 0.5, "weight of the label colours in the overlay", FRACTION),
    ParameterSpec("queue_depth", 1, "camera subscription depth (old frames are dropped, not queued)",
                  Bounds(1, 10), read_only=True),
    ParameterSpec("output_reliability", "reliable", "QoS reliability of the outputs",
                  OneOf("reliable", "best_effort"), read_only=True),
    ParameterSpec("label_size", "model", "size of the label image and overlay: 'model' (the segmenter's working "
                  "size; the descriptor and re-ranking resize to theirs) or 'camera' (the camera frame's, after "
                  "max_input_pixels)", OneOf("model", "camera")),
    ParameterSpec("max_input_pixels", 1920 * 1080,
                  "larger frames are downscaled (aspect kept) to at most this many pixels before segmentation "
                  "(label_size camera: labels then have the downscaled size). "
                  f"Frames over {MAX_IMAGE_PIXELS} pixels are rejected",
                  Bounds(64 * 64, MAX_IMAGE_PIXELS)),
)


INPUT_CHECK_PERIOD_S = 2.0
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


def input_type_problem(topic: str, subscribed_type: str, publisher_types: Callable[[str], list[str]]) -> str | None:
    """Why a subscription to ``topic`` of ``subscribed_type`` gets nothing, from the message types of the
    publishers of a topic (``publisher_types``); None when nothing explains it."""
    published = publisher_types(topic)
    others = sorted(set(published) - {subscribed_type})
    compressed = subscribed_type == COMPRESSED_TYPE
    if others:
        hint = "use_compressed false" if compressed else "use_compressed true and image_topic set to its base name"
        return (f"{topic} has publishers of {', '.join(others)} but this node subscribes {subscribed_type}: "
                f"set {hint}")
    if published:
        return None
    sibling = topic.removesuffix("/compressed") if compressed else topic.rstrip("/") + "/compressed"
    wanted = IMAGE_TYPE if compressed else COMPRESSED_TYPE
    if sibling != topic and wanted in publisher_types(sibling):
        hint = "use_compressed false" if compressed else "use_compressed true"
        return f"no publisher on {topic}, but {sibling} has {wanted} publishers: set {hint}"
    return None


class SegmentationNode(Node):
    """Segments each camera frame with the configured model."""

    def __init__(self) -> None:
        super().__init__("segmentation_node")
        self.params = ValidatedParameters(self, PARAMETERS)
        set_torch_threads(self.params.get("threads"))
        self.segmenter = load_segmenter(self.params.get("model"), self.params.get("device"),
                                        self.params.get("model_arch"), self.params.get("label_mapping"),
                                        self.params.get("trust_model_code"))
        self.stats = StageStats()
        self.diagnostics = StageDiagnostics(self, self.stats)
        self.sequence = SequenceMonitor()

        reliability = (ReliabilityPolicy.RELIABLE if self.params.get("output_reliability") == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        output_qos = QoSProfile(depth=5, reliability=reliability)
        self.labels_publisher = self.create_publisher(Image, "semloc/labels", output_qos)
        self.overlay_publisher = self.create_publisher(Image, "semloc/labels_overlay", output_qos)
        self.segmenter_id_publisher = self.create_publisher(String, SEGMENTER_ID_TOPIC, SEGMENTER_ID_QOS)
        # latched, before any labels: the descriptor node names it in its pipeline id
        self.segmenter_id_publisher.publish(String(data=segmenter_identity(self.segmenter)))

        camera_qos = QoSProfile(depth=self.params.get("queue_depth"),
                                reliability=qos_profile_sensor_data.reliability,
                                durability=qos_profile_sensor_data.durability)
        if self.params.get("use_compressed"):
            self.camera: Subscription = self.create_subscription(
                CompressedImage, "image_raw/compressed", self._on_compressed_with_info, camera_qos)
        else:
            self.camera = self.create_subscription(Image, "image_raw", self._on_image_with_info, camera_qos)
        self._received_at_check = 0
        self.create_timer(INPUT_CHECK_PERIOD_S, self.check_input)
        self.get_logger().info(
            f"segmenter {self.segmenter.model_id} ({self.segmenter.precision}) on {self.segmenter.device}; "
            f"listening on {self.camera.topic_name} "
            f"({self.camera_type}); publishing {self.labels_publisher.topic_name}, "
            f"{self.overlay_publisher.topic_name}")

    @property
    def camera_type(self) -> str:
        return COMPRESSED_TYPE if self.params.get("use_compressed") else IMAGE_TYPE

    def check_input(self) -> None:
        """Warn (log and /diagnostics) while nothing arrives and the graph shows why (module docstring)."""
        if self.stats.received != self._received_at_check:
            self._received_at_check = self.stats.received
            return
        problem = input_type_problem(self.camera.topic_name, self.camera_type, lambda topic: [
            info.topic_type for info in self.get_publishers_info_by_topic(topic)])
        if problem is not None:
            self.stats.record_warning("input_type", problem)
            self.get_logger().warning(f"nothing received: {problem}", throttle_duration_sec=10.0)

    def _count_lost(self, info: dict[str, Any]) -> None:
        """Count the frames the depth-limited camera subscription dropped (newer frames replaced them)."""
        lost = self.sequence.lost(str(info.get("publisher_gid")), info.get("publication_sequence_number"))
        if lost:
            self.stats.record_dropped(lost)

    def _on_image_with_info(self, message: Image, info: dict[str, Any]) -> None:
        self._count_lost(info)
        self.on_image(message)

    def _on_compressed_with_info(self, message: CompressedImage, info: dict[str, Any]) -> None:
        self._count_lost(info)
        self.on_compressed(message)

    @guarded
    def on_image(self, message: Image) -> None:
        self.stats.record_received()
        try:
            array = imgmsg_to_array(message, copy=False)  # a view of message.data: no 6 MB copy at 1080p
            rgb = to_rgb8(array, message.encoding)
        except ImageEncodingError as error:
            self._reject("bad_image", str(error))
            return
        self._segment_and_publish(rgb, message.header)

    @guarded
    def on_compressed(self, message: CompressedImage) -> None:
        self.stats.record_received()
        try:
            array, encoding = compressed_imgmsg_to_array(message)
            rgb = to_rgb8(array, encoding)
        except ImageEncodingError as error:
            self._reject("bad_image", str(error))
            return
        self._segment_and_publish(rgb, message.header)

    def _fit_to_max_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` downscaled (area interpolation, aspect kept) to at most ``max_input_pixels`` pixels."""
        height, width = rgb.shape[:2]
        limit = self.params.get("max_input_pixels")
        if height * width <= limit:
            return rgb
        scale = (limit / (height * width)) ** 0.5
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        self.stats.record_warning("downscaled", f"{width}x{height} frame downscaled to {size[0]}x{size[1]} "
                                  f"(max_input_pixels {limit})")
        self.get_logger().warning(f"{width}x{height} frames are downscaled to {size[0]}x{size[1]} "
                                  f"(max_input_pixels {limit})", throttle_duration_sec=30.0)
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _segment_and_publish(self, rgb, header) -> None:
        start = time.perf_counter()
        rgb = self._fit_to_max_pixels(rgb)
        try:
            labels = self.segmenter.predict(rgb, at_input_size=self.params.get("label_size") == "model")
        except (RuntimeError, MemoryError) as error:  # e.g. out of memory on a huge frame
            self._reject("segmentation_failed", f"{type(error).__name__}: {error}")
            return
        self.labels_publisher.publish(array_to_imgmsg(labels, "mono8", header))
        if self.params.get("publish_overlay") and self.overlay_publisher.get_subscription_count() > 0:
            if rgb.shape[:2] != labels.shape:  # label_size model: the overlay at the labels' size
                rgb = cv2.resize(rgb, labels.shape[::-1], interpolation=cv2.INTER_AREA)
            blended = overlay(rgb, labels, alpha=self.params.get("overlay_alpha"))
            self.overlay_publisher.publish(array_to_imgmsg(blended, "rgb8", header))
        self.stats.record_processed(time.perf_counter() - start)

    def _reject(self, kind: str, message: str) -> None:
        self.stats.record_error(kind, message)
        self.get_logger().warning(f"dropped frame ({kind}): {message}", throttle_duration_sec=2.0)


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(SegmentationNode, args))


if __name__ == "__main__":
    main()
