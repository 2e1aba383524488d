"""descriptor_node: label image (or RGB image, for RGB descriptors) -> semloc_msgs/Descriptor.

Each descriptor's ``model_id`` is its pipeline id (:mod:`semloc_ros.core.pipeline_id`): the descriptor model id
and, for label descriptors, the id of the segmenter that made the labels, as the segmentation node announces it on
``semloc/segmenter_id`` (std_msgs/String, transient local). The nodes stay decoupled: no segmenter parameters
here, and another labeller only has to publish its id there. Until an id arrives the descriptor id stands alone
(the localizer then answers only maps written before pipeline ids).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from semloc_msgs.msg import Descriptor
from sensor_msgs.msg import Image
from std_msgs.msg import String

from semloc_ros.core.image_codec import ImageEncodingError, to_rgb8
from semloc_ros.core.pipeline_id import pipeline_id
from semloc_ros.core.settings import POSITIVE, Bounds
from semloc_ros.models import set_torch_threads
from semloc_ros.models.loading import load_descriptor
from semloc_ros.ros.conversions import imgmsg_to_array, imgmsg_to_labels
from semloc_ros.ros.node_common import (
    SEGMENTER_ID_QOS,
    SEGMENTER_ID_TOPIC,
    OneOf,
    ParameterSpec,
    StageDiagnostics,
    ValidatedParameters,
    guarded,
    run_node,
    warn_on_stamp_order,
)
from semloc_ros.ros.stage_stats import SequenceMonitor, StageStats

PARAMETERS = (
    ParameterSpec("model", "default",
                  "descriptor: 'default' (shipped), 'untrained:<arch>' or a weights file", read_only=True),
    ParameterSpec("kind", "semantic", "which shipped model 'default' means", OneOf("semantic", "rgb"),
                  read_only=True),
    ParameterSpec("mask_dynamic", False, "ignore the pixels of dynamic classes (vehicles, pedestrians); the "
                  "database must be built the same way (semloc build-db --mask-dynamic)", read_only=True),
    ParameterSpec("device", "auto", "torch device: auto (cuda if present), cpu, cuda, cuda:N", read_only=True),
    ParameterSpec("threads", 1, "torch intra-op threads (see docs/benchmarks.md)", POSITIVE, read_only=True),
    ParameterSpec("queue_depth", 2, "input subscription depth", Bounds(1, 10), read_only=True),
)


class DescriptorNode(Node):
    """Embeds each label image (semloc/labels) into a global descriptor (semloc/descriptor).

    An RGB descriptor model (input kind 'rgb') subscribes to the camera (image_raw) instead.
    """

    def __init__(self) -> None:
        super().__init__("descriptor_node")
        self.params = ValidatedParameters(self, PARAMETERS)
        set_torch_threads(self.params.get("threads"))
        self.extractor = load_descriptor(self.params.get("model"), self.params.get("device"),
                                         self.params.get("kind"))
        if self.params.get("mask_dynamic"):
            self.extractor = self.extractor.masking_dynamic_classes()  # ValueError for an RGB model
        self.stats = StageStats()
        self.diagnostics = StageDiagnostics(self, self.stats)
        self.sequence = SequenceMonitor()
        self.publisher = self.create_publisher(Descriptor, "semloc/descriptor", QoSProfile(depth=10))
        topic = "semloc/labels" if self.extractor.input_kind == "labels" else "image_raw"
        # Frames are dropped at the entrance only: label images from the segmentation node arrive reliably when it
        # publishes them reliably (best available: still connects to a best-effort publisher); the camera (RGB
        # descriptors) is taken best effort, newest first, like the segmentation node's.
        reliability = ReliabilityPolicy.BEST_AVAILABLE if topic == "semloc/labels" else ReliabilityPolicy.BEST_EFFORT
        input_qos = QoSProfile(depth=self.params.get("queue_depth"), reliability=reliability)
        self.create_subscription(Image, topic, self._on_image_with_info, input_qos)
        self.pipeline_id = self.extractor.model_id  # + the segmenter's, once announced (module docstring)
        if self.extractor.input_kind == "labels":
            self.create_subscription(String, SEGMENTER_ID_TOPIC, self.on_segmenter_id, SEGMENTER_ID_QOS)
        self.get_logger().info(f"descriptor {self.extractor.model_id} (dimension {self.extractor.dimension}) "
                               f"on {topic}")

    @guarded
    def on_segmenter_id(self, message: String) -> None:
        """The labels' segmenter (with its label mapping) joins the pipeline id of the descriptors."""
        identity = pipeline_id(self.extractor.model_id, message.data or None)
        if identity != self.pipeline_id:
            self.pipeline_id = identity
            self.get_logger().info(f"segmenter {message.data}: descriptors of pipeline {identity}")

    def _input_array(self, message: Image) -> np.ndarray:
        if self.extractor.input_kind == "rgb":
            return to_rgb8(imgmsg_to_array(message), message.encoding)
        return imgmsg_to_labels(message)

    def _on_image_with_info(self, message: Image, info: dict[str, Any]) -> None:
        lost = self.sequence.lost(str(info.get("publisher_gid")), info.get("publication_sequence_number"))
        if lost:
            self.stats.record_dropped(lost)
        self.on_image(message)

    @guarded
    def on_image(self, message: Image) -> None:
        self.stats.record_received()
        start = time.perf_counter()
        warn_on_stamp_order(self, self.sequence, self.stats, message.header.stamp, "described anyway")
        try:
            descriptor = self.extractor.describe(self._input_array(message))
        except ImageEncodingError as error:
            self.stats.record_error("bad_image", str(error))
            self.get_logger().warning(f"dropped frame: {error}", throttle_duration_sec=2.0)
            return
        except (RuntimeError, MemoryError) as error:  # e.g. out of memory
            self.stats.record_error("describe_failed", f"{type(error).__name__}: {error}")
            self.get_logger().warning(f"dropped frame: {type(error).__name__}: {error}", throttle_duration_sec=2.0)
            return
        out = Descriptor(header=message.header, model_id=self.pipeline_id,
                         dimension=int(descriptor.shape[0]))
        out.data = descriptor.astype(np.float32).tolist()
        self.publisher.publish(out)
        self.stats.record_processed(time.perf_counter() - start)


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(DescriptorNode, args))


if __name__ == "__main__":
    main()
