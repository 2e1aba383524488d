"""A camera stream and fix collector for demos and end-to-end tests (rclpy).

Publishes RGB frames on the camera topic with given stamps and collects the localizer's NavSatFix
messages by stamp, so each fix can be paired with the frame that produced it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, NavSatFix
from std_msgs.msg import Header

from semloc_ros.ros.conversions import array_to_imgmsg, ns_to_stamp, stamp_to_ns

LINK_TOPICS = ("/semloc/labels", "/semloc/descriptor")  # between the nodes: each needs a publisher and a subscriber


class StreamClient(Node):
    """Plays frames as a camera and records fixes keyed by their stamp in nanoseconds."""

    def __init__(self, image_topic: str = "/camera/image_raw", fix_topic: str = "/semloc/fix",
                 frame_id: str = "camera") -> None:
        super().__init__("semloc_stream_client")
        self.frame_id = frame_id
        self.fix_topic = fix_topic
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

    def pipeline_problems(self, nodes: Iterable[str]) -> list[str]:
        """What keeps the pipeline of ``nodes`` from answering a frame yet, in words (empty: ready).

        From the ROS graph and /diagnostics: a node not discovered, or discovered twice (another pipeline or test
        on this ROS_DOMAIN_ID, whose frames, labels and segmenter id would mix with these), a link of the chain
        camera -> labels -> descriptor -> fix without both ends, a node in ERROR (e.g. no map loaded).
        """
        nodes = list(nodes)
        names = [name for name, _ in self.get_node_names_and_namespaces()]
        problems = []
        for node in nodes:
            if names.count(node) > 1:
                problems.append(f"{names.count(node)} nodes named {node}: another pipeline or test shares "
                                f"ROS_DOMAIN_ID {self.context.get_domain_id()}")
            elif node not in names:
                problems.append(f"{node} not discovered")
        if self.camera_publisher.get_subscription_count() == 0:
            problems.append(f"no subscriber on {self.camera_publisher.topic_name}")
        for topic in LINK_TOPICS:
            publishers, subscribers = self.count_publishers(topic), self.count_subscribers(topic)
            if publishers == 0 or subscribers == 0:
                problems.append(f"{topic}: {publishers} publisher(s), {subscribers} subscriber(s)")
        if self.count_publishers(self.fix_topic) == 0:
            problems.append(f"no publisher on {self.fix_topic}")
        problems += [f"{node} in ERROR: {status.message}" for node, status in self.diagnostics.items()
                     if node in nodes and status.level == DiagnosticStatus.ERROR]
        return problems

    def foreign_nodes(self, nodes: Iterable[str]) -> list[str]:
        """Nodes on this domain besides ``nodes`` (each once) and this client: another pipeline, test or tool."""
        names = sorted(name for name, _ in self.get_node_names_and_namespaces() if name != self.get_name())
        for node in nodes:
            if node in names:
                names.remove(node)
        return names

    def start_up(self, rgb: np.ndarray, nodes: Iterable[str], timeout_s: float,
                 failed: Callable[[], str | None] = lambda: None, period_s: float = 0.5) -> str | None:
        """Wait until the pipeline answers: None when a fix for a warm-up frame came back, else why not.

        Ends at once when ``failed()`` gives a reason (e.g. a node exited) or another pipeline shares the domain;
        otherwise waits for discovery (:meth:`pipeline_problems`), then publishes ``rgb`` every ``period_s``
        (:meth:`warm_up`) until a fix comes back or ``timeout_s`` has passed since the call. The reason names
        what was still missing.
        """
        nodes = list(nodes)
        deadline = time.monotonic() + timeout_s
        problems = ["nothing checked yet"]
        while time.monotonic() < deadline:
            if (reason := failed()) is not None:
                return reason
            problems = self.pipeline_problems(nodes)
            if any("another pipeline" in problem for problem in problems):
                return "; ".join(problems)
            if not problems:
                if self.warm_up(rgb, timeout_s=min(5.0, max(0.0, deadline - time.monotonic())), period_s=period_s):
                    return None
                problems = ["no fix for the warm-up frames yet (every link is matched)"]
            else:
                self.spin_for(period_s)
        return f"not ready after {timeout_s:g} s: " + "; ".join(problems)

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
