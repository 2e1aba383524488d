"""A camera stream and fix collector for demos and end-to-end tests (rclpy).

Publishes RGB frames on the camera topic with given stamps and collects the localizer's NavSatFix
messages by stamp, so each fix can be paired with the frame that produced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, NavSatFix
from std_msgs.msg import Header

from semloc_ros.ros.conversions import array_to_imgmsg, ns_to_stamp, stamp_to_ns


class StreamClient(Node):
    """Plays frames as a camera and records fixes keyed by their stamp in nanoseconds."""

    def __init__(self, image_topic: str = "/camera/image_raw", fix_topic: str = "/semloc/fix",
                 frame_id: str = "camera") -> None:
        super().__init__("semloc_stream_client")
        self.frame_id = frame_id
        camera_qos = QoSProfile(depth=5, reliability=qos_profile_sensor_data.reliability)
        self.camera_publisher = self.create_publisher(Image, image_topic, camera_qos)
        self.fixes: dict[int, NavSatFix] = {}
        self.fix_times: dict[int, float] = {}  # stamp -> time.monotonic() of arrival
        self.diagnostics: dict[str, DiagnosticStatus] = {}  # node name -> latest status
        self.create_subscription(NavSatFix, fix_topic, self._on_fix, QoSProfile(depth=50))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, QoSProfile(depth=50))

    def _on_fix(self, message: NavSatFix) -> None:
        stamp_ns = stamp_to_ns(message.header.stamp)
        self.fixes[stamp_ns] = message
        self.fix_times[stamp_ns] = time.monotonic()

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            self.diagnostics[status.name.removeprefix("semloc: ")] = status

    def diagnostic_values(self, node: str) -> dict[str, str]:
        """Key values of the latest diagnostic status of ``node`` (e.g. received, processed, dropped)."""
        status = self.diagnostics.get(node)
        return {} if status is None else {kv.key: kv.value for kv in status.values}

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    def wait_for_pipeline(self, timeout_s: float = 60.0,
                          ready: Callable[[], bool] | None = None) -> bool:
        """Wait until the camera topic has a subscriber and the fix topic a publisher (DDS discovery)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (self.camera_publisher.get_subscription_count() > 0
                    and self.count_publishers("/semloc/fix") > 0 and (ready is None or ready())):
                return True
            self.spin_for(0.1)
        return False

    def warm_up(self, rgb: np.ndarray, timeout_s: float = 60.0, period_s: float = 0.5) -> bool:
        """Publish ``rgb`` every ``period_s`` until a fix for one of these frames comes back.

        Discovery matches each link of the chain on its own; until all are matched a best-effort frame can
        vanish on the way. One answered frame proves every link is up. The warm-up fixes are forgotten.
        """
        deadline = time.monotonic() + timeout_s
        stamps: list[int] = []
        while time.monotonic() < deadline:
            stamps.append(self.get_clock().now().nanoseconds)
            self.publish_frame(rgb, stamps[-1])
            self.spin_for(period_s)
            if any(stamp in self.fixes for stamp in stamps):
                self.spin_for(period_s)  # let answers to the other warm-up frames arrive, then drop them all
                for stamp in stamps:
                    self.fixes.pop(stamp, None)
                return True
        return False

    def publish_frame(self, rgb: np.ndarray, stamp_ns: int) -> None:
        header = Header(stamp=ns_to_stamp(stamp_ns), frame_id=self.frame_id)
        self.camera_publisher.publish(array_to_imgmsg(rgb, "rgb8", header))

    def wait_for_fixes(self, stamps_ns: list[int], timeout_s: float) -> dict[int, NavSatFix]:
        """Spin until a fix arrived for every stamp or the timeout; returns the fixes received."""
        deadline = time.monotonic() + timeout_s
        wanted = set(stamps_ns)
        while time.monotonic() < deadline and not wanted.issubset(self.fixes):
            self.spin_for(0.05)
        return {stamp: self.fixes[stamp] for stamp in stamps_ns if stamp in self.fixes}
