"""The real chain: three node processes over DDS (loopback, own domain), camera frames in, fixes out."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import rclpy
from geographic_msgs.msg import GeoPoseWithCovarianceStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import NavSatFix
from visualization_msgs.msg import MarkerArray

from semloc_ros.commands.demo import DEMO_DATA
from semloc_ros.core.geodesy import geodesic_distance_m
from semloc_ros.io.datasets import load_semloc_sim_split
from semloc_ros.mapping import build_database
from semloc_ros.models import set_torch_threads
from semloc_ros.models.pipeline import Pipeline
from semloc_ros.ros.runner import PipelineRunner
from semloc_ros.ros.stream_client import StreamClient

DATABASE_FRAMES = slice(0, 240, 4)   # 60 places, ~6 m apart
QUERY_INDICES = tuple(range(3, 13))  # consecutive places, 0.8 s apart: one sequence for the filter
CONVERGING = 1  # frames the shipped sequence filter answers before its first FIX (from a uniform belief)


@pytest.fixture(scope="module")
def running_pipeline(tmp_path_factory):
    """Database of embedded day frames; the three nodes started from config/semloc.yaml."""
    set_torch_threads(1)
    database_drive, _ = load_semloc_sim_split(DEMO_DATA)
    places = database_drive.subset(DATABASE_FRAMES)
    database = build_database(Pipeline.from_method("semantic"), places)
    path = tmp_path_factory.mktemp("e2e") / "route.semdb"
    database.save(path)
    domain_id = int(os.environ["ROS_DOMAIN_ID"])
    runner = PipelineRunner(overrides={"localizer_node": {"database_path": str(path)},
                                       "segmentation_node": {"threads": 1},
                                       "descriptor_node": {"threads": 1}},
                            remaps={"image_raw": "/camera/image_raw"}, domain_id=domain_id,
                            log_dir=path.parent / "logs")
    rclpy.init()
    runner.start()
    client = StreamClient(frame_id="rear_camera")
    try:
        if not client.wait_for_pipeline(timeout_s=120.0, ready=lambda: not runner.exited()):
            logs = {p.name: p.read_text()[-2000:] for p in (path.parent / "logs").glob("*.log")}
            pytest.fail(f"pipeline did not come up; exited={runner.exited()} logs={logs}")
        assert client.warm_up(places[0].load_rgb(), timeout_s=60.0), "no fix for the warm-up frames"
        yield places, client, runner
    finally:
        client.destroy_node()
        codes = runner.stop()
        rclpy.try_shutdown()
    assert all(code == 0 for code in codes.values()), f"nodes did not shut down cleanly: {codes}"


def test_every_frame_is_answered_and_fixes_near_the_truth_once_the_filter_converged(running_pipeline):
    places, client, runner = running_pipeline
    geoposes, markers = [], []
    client.create_subscription(GeoPoseWithCovarianceStamped, "/semloc/geopose", geoposes.append,
                               QoSProfile(depth=50))
    client.create_subscription(MarkerArray, "/semloc/places", markers.append, QoSProfile(depth=50))
    client.spin_for(1.0)

    for count, index in enumerate(QUERY_INDICES):  # lockstep: each frame is answered before the next is sent
        frame = places[index]
        stamp_ns = frame.stamp_ns + 12_345  # distinct stamp: the fix must carry the frame's own stamp
        client.publish_frame(frame.load_rgb(), stamp_ns)
        received = client.wait_for_fixes([stamp_ns], timeout_s=30.0)
        assert stamp_ns in received, f"no fix for frame {frame.image_id}; exited={runner.exited()}"
        fix: NavSatFix = received[stamp_ns]
        assert fix.header.frame_id == "rear_camera"
        if count < CONVERGING:
            continue
        error_m = float(geodesic_distance_m(frame.lat, frame.lon, fix.latitude, fix.longitude))
        assert error_m < 5.0, f"frame {frame.image_id}: fix {error_m:.1f} m from the truth"
        assert fix.status.status == fix.status.STATUS_FIX
        assert fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
        covariance = np.asarray(fix.position_covariance).reshape(3, 3)
        assert np.allclose(covariance, covariance.T)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)

    client.spin_for(0.5)
    assert len(geoposes) >= len(QUERY_INDICES)
    last = geoposes[-1]
    assert math.isfinite(last.pose.pose.position.latitude)
    assert np.asarray(last.pose.covariance).reshape(6, 6)[0, 0] > 0
    assert markers and any(m.ns == "retrieved" for m in markers[-1].markers)
    assert all(m.header.frame_id == "semloc_map" for m in markers[-1].markers if m.ns)


def test_bad_frame_is_dropped_and_pipeline_keeps_running(running_pipeline):
    places, client, runner = running_pipeline
    from sensor_msgs.msg import Image

    bad = Image(height=240, width=320, encoding="yuv422_weird", step=640, data=bytes(640 * 240))
    client.camera_publisher.publish(bad)
    client.spin_for(0.5)
    frame = places[20]
    client.publish_frame(frame.load_rgb(), frame.stamp_ns + 999)
    received = client.wait_for_fixes([frame.stamp_ns + 999], timeout_s=30.0)
    assert frame.stamp_ns + 999 in received
    assert not runner.exited()
