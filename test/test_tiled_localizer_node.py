"""LocalizerNode with a tiled map: tiles around a GNSS prior, then around the fixes, a path without a gap in one
fixed map frame across tile borders."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from semloc_msgs.msg import Descriptor
from sensor_msgs.msg import NavSatFix, NavSatStatus

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.tile_cache import TiledLocalizer
from semloc_ros.core.tiles import TiledMap
from semloc_ros.ros.localizer_node import LocalizerNode

DIMENSION = 16
SPACING_M = 20.0


@pytest.fixture
def road(tmp_path) -> tuple[GeoDatabase, TiledMap]:
    east = np.arange(0.0, 1600.0, SPACING_M)  # across three 500 m tiles at least
    lat, lon, _ = LocalENU(51.752, -1.2577).to_geodetic(east, np.zeros(len(east)))
    database = GeoDatabase(DIMENSION, "test-model")
    database.add(np.random.default_rng(3).normal(size=(len(east), DIMENSION)),
                 [PlaceRecord(float(a), float(o), 60.0, stamp_ns=i, image_id=f"{i:06d}")
                  for i, (a, o) in enumerate(zip(lat, lon, strict=True))])
    return database, TiledMap.create(tmp_path / "map", database, tile_size_m=500.0)


@pytest.fixture
def node(road):
    rclpy.init(args=["--ros-args", "-p", f"database_path:={road[1].folder}", "-p", "tile_radius_m:=300.0",
                     "-p", "tile_keep_radius_m:=400.0", "-p", "min_similarity:=0.8", "-p",
                     "gnss_prior_topic:=/gps/fix", "-p", "rerank_top_k:=0",
                     "-p", "integrity_threshold:=0.0",  # the shipped gate is fitted for re-ranked real descriptors
                     "-p", "sequence_filter:=false"])  # tile switching of single frames (the filter's: test_tiles)
    started = LocalizerNode()
    yield started
    started.destroy_node()
    rclpy.try_shutdown()


def descriptor(values: np.ndarray, sec: int) -> Descriptor:
    message = Descriptor(model_id="test-model", dimension=DIMENSION)
    message.header.frame_id, message.header.stamp.sec = "cam", sec
    message.data = values.astype(np.float32).tolist()
    return message


def test_a_tiled_map_is_followed_across_tile_borders_in_one_map_frame(road, node) -> None:
    database, tiled = road
    assert isinstance(node.localizer, TiledLocalizer) and node.database.count == len(database)
    fixes, paths = [], []
    node.fix_publisher.publish = fixes.append
    node.path_publisher.publish = paths.append
    prior = NavSatFix(latitude=float(database.lat[0]), longitude=float(database.lon[0]))
    prior.status.status = NavSatStatus.STATUS_FIX
    node.on_prior(prior)
    assert node.localizer.cache.wait_idle()
    assert 0 < len(node.localizer.database.keys) < len(tiled.keys)
    node.localizer.clear_prior()
    noise = np.random.default_rng(4).normal(scale=0.05, size=(len(database), DIMENSION))
    for row in range(len(database)):
        node.on_descriptor(descriptor(database.descriptors[row] + noise[row], sec=row))
        assert node.localizer.cache.wait_idle()
    assert [f.status.status for f in fixes] == [NavSatStatus.STATUS_FIX] * len(database)
    np.testing.assert_allclose([f.latitude for f in fixes], database.lat, atol=1e-5)
    assert node.localizer.cache.stats.switches >= 3 and not node.localizer.cache.stats.errors
    steps = np.diff([pose.pose.position.x for pose in paths[-1].poses])
    np.testing.assert_allclose(steps, SPACING_M, atol=2.0)  # one frame for the whole map: no jump at a switch
    assert node.set_parameters([Parameter("top_k", value=3)])[0].successful  # reconfigured in the background
    assert node.localizer.cache.wait_idle() and node.localizer.cache.current.localizer.config.top_k == 3
