"""Start-up of the three-node pipeline as the e2e benchmark waits for it: a reason instead of a bare timeout,
an immediate end when a node exited or another pipeline shares the ROS domain."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import rclpy

from semloc_ros.ros.runner import NODES, PipelineRunner
from semloc_ros.ros.stream_client import StreamClient

FRAME = np.zeros((24, 32, 3), np.uint8)


@pytest.fixture
def client():
    rclpy.init()
    created = StreamClient(image_topic="/readiness_test/image_raw")
    yield created
    created.destroy_node()
    rclpy.try_shutdown()


def test_start_up_says_what_is_missing_and_ends_at_once_when_a_node_failed(client) -> None:
    reason = client.start_up(FRAME, NODES, timeout_s=0.2)
    assert reason is not None and reason.startswith("not ready after 0.2 s")
    for missing in ("segmentation_node not discovered", "localizer_node not discovered",
                    "no subscriber on /readiness_test/image_raw", "/semloc/labels: 0 publisher(s), 0 subscriber(s)",
                    "no publisher on /semloc/fix"):
        assert missing in reason
    # a node that exited ends the wait now, not after the (long) start-up timeout
    assert client.start_up(FRAME, NODES, timeout_s=600.0, failed=lambda: "descriptor_node exited with code 1") \
        == "descriptor_node exited with code 1"


def test_another_pipeline_on_the_domain_ends_the_wait_with_that_reason(client) -> None:
    """Nodes of another pipeline or test on the same ROS_DOMAIN_ID (its segmenter id, labels and fixes would mix
    with the benchmark's) are named, not waited for."""
    contexts, others = [], []
    for name in ("segmentation_node", "segmentation_node", "camera_driver"):
        context = rclpy.Context()
        rclpy.init(context=context)
        contexts.append(context)
        others.append(rclpy.create_node(name, context=context))
    try:
        deadline = time.monotonic() + 20.0
        while len(client.foreign_nodes([])) < 3 and time.monotonic() < deadline:
            client.spin_for(0.1)
        assert client.foreign_nodes(["segmentation_node"]) == ["camera_driver", "segmentation_node"]
        reason = client.start_up(FRAME, NODES, timeout_s=600.0)
        assert reason is not None and "2 nodes named segmentation_node: another pipeline or test shares " \
            "ROS_DOMAIN_ID" in reason
    finally:
        for node, context in zip(others, contexts, strict=True):
            node.destroy_node()
            rclpy.try_shutdown(context=context)


def test_exit_report_names_the_node_its_code_and_its_last_log_line(tmp_path, monkeypatch) -> None:
    runner = PipelineRunner(nodes=("segmentation_node",), log_dir=tmp_path)
    monkeypatch.setattr(runner, "command", lambda node: [
        sys.executable, "-c", "print('starting'); print('cannot start: ValueError: bad model'); raise SystemExit(3)"])
    with runner:
        assert runner.processes["segmentation_node"].wait(30) == 3
        assert runner.exit_report() == "segmentation_node exited with code 3: cannot start: ValueError: bad model"
    assert PipelineRunner(nodes=()).exit_report() is None
