"""Large camera frames over DDS: the shipped Fast DDS profile (config/fastdds_large_frames.xml), the one function
that gives it to every ROS process semloc starts (``runner.apply_ros_defaults``), its packaging, and a 1080p rgb8
frame published best effort from another process reaching the real segmentation node."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from semloc_ros.ros.conversions import stamp_to_ns
from semloc_ros.ros.runner import FASTDDS_PROFILE_NAME, PipelineRunner, apply_ros_defaults, ros_environment

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / FASTDDS_PROFILE_NAME
VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
NS = {"dds": "http://www.eprosima.com"}


def test_the_profile_is_set_only_when_the_user_has_not_chosen_one(monkeypatch) -> None:
    env = apply_ros_defaults({"ROS_DOMAIN_ID": "7"})
    assert env[VARIABLE] == str(PROFILE) and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    for chosen in ("/etc/my_fastdds.xml", ""):  # the user's file, or an explicit "no profile"
        assert apply_ros_defaults({VARIABLE: chosen})[VARIABLE] == chosen
    assert apply_ros_defaults({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    # node processes started by semloc (run, benchmark, demo) and in-process publishers (os.environ)
    monkeypatch.delenv(VARIABLE, raising=False)
    assert ros_environment(71)[VARIABLE] == str(PROFILE) and VARIABLE not in os.environ
    apply_ros_defaults()
    assert os.environ[VARIABLE] == str(PROFILE)
    monkeypatch.setenv(VARIABLE, "/etc/my_fastdds.xml")
    assert PipelineRunner(domain_id=71).env[VARIABLE] == "/etc/my_fastdds.xml"


def test_the_profile_holds_a_1080p_frame_and_keeps_dds_on_loopback() -> None:
    root = ET.parse(PROFILE).getroot()
    transports = {t.findtext("dds:transport_id", namespaces=NS): t
                  for t in root.iterfind(".//dds:transport_descriptor", NS)}
    participant = root.find(".//dds:participant", NS)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=NS) == "false"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", NS)]
    assert sorted(used) == sorted(transports)
    kinds = {transports[name].findtext("dds:type", namespaces=NS) for name in used}
    assert kinds == {"SHM", "UDPv4"}
    for name in used:
        descriptor = transports[name]
        if descriptor.findtext("dds:type", namespaces=NS) == "SHM":
            message, segment = (int(descriptor.findtext(f"dds:{key}", namespaces=NS))
                                for key in ("maxMessageSize", "segment_size"))
            assert message >= 1920 * 1080 * 3 + 1024 and segment >= 2 * message
        else:  # no traffic leaves 127.0.0.1
            addresses = [a.text for a in descriptor.iterfind("dds:interfaceWhiteList/dds:address", NS)]
            assert addresses == ["127.0.0.1"]


def test_the_profile_is_installed_with_the_package(monkeypatch) -> None:
    import setuptools

    arguments: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: arguments.update(kwargs))
    monkeypatch.chdir(ROOT)  # setup.py globs relative to the source tree, as colcon and pip run it
    runpy.run_path(str(ROOT / "setup.py"))
    installed = {Path(target) / Path(source).name for target, sources in arguments["data_files"] for source in sources}
    assert Path("share/semloc_ros/config") / FASTDDS_PROFILE_NAME in installed


# A camera publishing like `semloc replay` and the benchmark's stream client do (rclpy set up by semloc), about
# 10 Hz; frame k is stamped STEP_NS * k after the first, so the labels' stamps tell how many frames were sent.
STEP_NS = 100_000_000
CAMERA = textwrap.dedent("""
    import numpy as np
    from semloc_ros.ros.node_common import init_with_stop_request
    stop = init_with_stop_request()
    from semloc_ros.ros.stream_client import StreamClient
    client = StreamClient(image_topic="/large_frames_test/image_raw")
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)  # 6 MB rgb8
    first, k = client.get_clock().now().nanoseconds, 0
    while not stop:
        client.publish_frame(frame, first + STEP_NS * k)
        client.spin_for(0.1)
        k += 1
""").replace("STEP_NS", str(STEP_NS))


def test_1080p_frames_from_another_process_reach_the_segmentation_node(tmp_path) -> None:
    """Without the profile the odd frame gets through (5-20 % here); with it, nearly every one.

    The node downscales to a tiny working size (max_input_pixels), so it keeps up with 10 Hz and labels every frame
    that arrives; in the 3 s after the first label image, at least 60 % of the frames sent must be labelled."""
    domain_id = int(os.environ["ROS_DOMAIN_ID"])
    env = {name: value for name, value in os.environ.items() if name != VARIABLE}  # as a user's shell
    runner = PipelineRunner(
        overrides={"segmentation_node": {"model": "untrained:lraspp_mobilenet_v3_large", "device": "cpu",
                                         "threads": 1, "max_input_pixels": 160 * 90, "publish_overlay": False}},
        remaps={"image_raw": "/large_frames_test/image_raw", "semloc/labels": "/large_frames_test/labels"},
        nodes=("segmentation_node",), domain_id=domain_id, log_dir=tmp_path)
    labels: dict[int, float] = {}  # stamp -> arrival
    rclpy.init(domain_id=domain_id)
    camera, output = None, ""
    try:
        node = rclpy.create_node("large_frames_test")
        node.create_subscription(Image, "/large_frames_test/labels", lambda message: labels.setdefault(
            stamp_to_ns(message.header.stamp), time.monotonic()), QoSProfile(depth=10))
        with runner:
            camera = subprocess.Popen([sys.executable, "-c", CAMERA], env={**env, "ROS_DOMAIN_ID": str(domain_id)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 40.0
            while (not labels or time.monotonic() < min(labels.values()) + 3.0) and time.monotonic() < deadline \
                    and camera.poll() is None and not runner.exited():
                rclpy.spin_once(node, timeout_sec=0.05)
        node.destroy_node()
    finally:
        if camera is not None:
            camera.terminate()
            output = camera.communicate(timeout=10)[0].decode(errors="replace")
        rclpy.try_shutdown()
    log = (tmp_path / "segmentation_node.log").read_text(errors="replace")
    window = sorted(stamp for stamp, arrival in labels.items() if arrival <= min(labels.values(), default=0) + 3.0)
    sent = (window[-1] - window[0]) // STEP_NS + 1 if window else 0
    assert len(window) >= 10 and len(window) >= 0.6 * sent, (
        f"{len(window)} of {sent} 1080p frames labelled in the 3 s after the first label image"
        f"\ncamera: {output[-2000:]}\nnode: {log[-2000:]}")
