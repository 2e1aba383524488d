"""localizer_node: semloc/descriptor -> NavSatFix, GeoPoseWithCovarianceStamped and RViz markers.

With ``rerank_top_k`` > 0 and a database that stores label thumbnails, the label image of the same stamp
(semloc/labels, kept for ``label_buffer`` frames) re-ranks the retrieval (:mod:`semloc_ros.core.reranking`); a
descriptor whose label image has not arrived is answered without re-ranking (counted as ``no_labels``).

``database_path`` may also name a tiled map folder (``semloc build-db --tile-size-m``): then only the tiles around
the estimate (and around the fixes of ``gnss_prior_topic``, when set) are loaded, by a background thread
(:mod:`semloc_ros.core.tile_cache`, parameters ``tile_*``); markers and path use a fixed ENU frame centred on the
map's tiles.

With ``use_odometry`` and the sequence filter, nav_msgs/Odometry on ``odom`` gives the filter the distance travelled
between consecutive descriptors (:mod:`semloc_ros.core.odometry`) instead of its speed estimate x their stamp
difference; a frame the odometry does not cover falls back to the stamps (counted as ``odometry_uncovered``).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from geographic_msgs.msg import GeoPoseWithCovarianceStamped
from geometry_msgs.msg import Point, PoseStamped, Quaternion
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMessage
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from semloc_msgs.msg import Descriptor
from sensor_msgs.msg import Image, NavSatFix, NavSatStatus
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from semloc_ros.core.database import DatabaseError, DescriptorMismatchError, GeoDatabase
from semloc_ros.core.estimate import FixStatus, PositionEstimate
from semloc_ros.core.geodesy import GeoError, LocalENU, UTMProjection
from semloc_ros.core.image_codec import ImageEncodingError
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.odometry import OdometryConfig, OdometryTrack
from semloc_ros.core.pipeline_id import split_pipeline_id
from semloc_ros.core.reranking import label_thumbnail
from semloc_ros.core.settings import Bounds, flat_fields
from semloc_ros.core.tile_cache import TileCacheConfig, TiledLocalizer
from semloc_ros.core.tiles import TiledMap, is_tiled_map
from semloc_ros.io.map_watcher import MapWatcher
from semloc_ros.ros.conversions import imgmsg_to_labels, stamp_to_ns
from semloc_ros.ros.node_common import (
    OneOf,
    ParameterSpec,
    StageDiagnostics,
    ValidatedParameters,
    config_parameters,
    guarded,
    run_node,
    warn_on_stamp_order,
)
from semloc_ros.ros.stage_stats import SequenceMonitor, StageStats

CONFIG_PARAMETERS = tuple(field.name for field in flat_fields(LocalizerConfig))  # the localizer configuration
TILE_PARAMETERS = tuple(field.name for field in flat_fields(TileCacheConfig))  # tile_<name>: tiled maps
ODOMETRY_PARAMETERS = tuple(field.name for field in flat_fields(OdometryConfig))  # odometry_<name>: use_odometry

PARAMETERS = (
    ParameterSpec("database_path", "", "GeoDatabase file or tiled map folder (semloc build-db); reloaded when the "
                  "parameter or the file changes (a bad new file is refused and the loaded database kept)"),
    ParameterSpec("database_retry_period_s", 2.0, "retry period while the database file is missing or bad",
                  Bounds(0.0, 86400.0, low_open=True), read_only=True),
    *config_parameters(LocalizerConfig),
    ParameterSpec("fix_frame_id", "", "frame_id of the outputs; empty = the map's GPS frame (the mapping "
                  "vehicle's antenna, stored by semloc build-db), or the camera frame for maps without one"),
    ParameterSpec("map_frame", "semloc_map", "frame_id of the markers and the path of fixes"),
    ParameterSpec("map_coordinates", "enu",
                  "marker/path coordinates: enu (database-centred ENU, origin logged at load) or utm (zone of "
                  "the database)", OneOf("enu", "utm")),
    ParameterSpec("path_length", 1000, "fixes kept in the published path (semloc/path)", Bounds(0, 100000)),
    ParameterSpec("marker_scale_m", 2.0, "diameter of a retrieved-place marker",
                  Bounds(0.0, 1000.0, low_open=True)),
    ParameterSpec("publish_markers", True, "publish the MarkerArray of retrieved places"),
    ParameterSpec("faiss_threads", 1, "FAISS OpenMP threads of the database search (see docs/benchmarks.md)",
                  Bounds(1, 256), read_only=True),
    ParameterSpec("unknown_altitude_m", 0.0, "altitude published when the database has none (variance 1e6 m^2); "
                  "robot_localization drops fixes with NaN altitude", Bounds(-1e4, 1e5)),
    ParameterSpec("unknown_heading_variance", 1e6, "orientation variance published when heading is unknown",
                  Bounds(0.0, 1e12)),
    *(ParameterSpec(f"tile_{f.name}", f.default, f"tiled maps: {f.help}", f.bounds, read_only=True)
      for f in flat_fields(TileCacheConfig)),
    ParameterSpec("gnss_prior_topic", "", "tiled maps: NavSatFix topic whose fixes also choose the tiles to load "
                  "(empty: none)", read_only=True),
    ParameterSpec("use_odometry", False, "sequence filter: take the travel between descriptors from nav_msgs/Odometry "
                  "on the topic odom (remap it) instead of its speed estimate x their stamp difference",
                  read_only=True),
    *(ParameterSpec(f"odometry_{f.name}", f.default, f"use_odometry: {f.help}", f.bounds, read_only=True)
      for f in flat_fields(OdometryConfig)),
    ParameterSpec("label_buffer", 30, "label images (semloc/labels) kept for re-ranking, waiting for their "
                  "descriptor", Bounds(1, 1000), read_only=True),
)

UNKNOWN_ALTITUDE_VARIANCE_M2 = 1e6

GREEN = ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0)
RED = ColorRGBA(r=0.9, g=0.2, b=0.1, a=0.8)
BLUE = ColorRGBA(r=0.1, g=0.4, b=1.0, a=0.35)


def altitude_and_covariance(estimate: PositionEstimate, unknown_altitude_m: float) -> tuple[float, np.ndarray]:
    """Altitude to publish and the ENU covariance (m^2) of an estimate.

    A database without altitudes gives NaN altitude; consumers such as robot_localization's navsat_transform
    drop every fix whose altitude is NaN, so ``unknown_altitude_m`` is published instead, with a variance of
    UNKNOWN_ALTITUDE_VARIANCE_M2 that says it carries no information.
    """
    covariance = np.array(estimate.covariance_enu, dtype=float).reshape(3, 3)
    if math.isfinite(estimate.alt):
        return float(estimate.alt), covariance
    covariance[2, :] = 0.0
    covariance[:, 2] = 0.0
    covariance[2, 2] = UNKNOWN_ALTITUDE_VARIANCE_M2
    return float(unknown_altitude_m), covariance


def covariance_ellipse(covariance_en: np.ndarray, n_sigma: float = 2.0) -> tuple[float, float, float]:
    """(major, minor) full axis lengths in metres of the n-sigma ellipse and the major axis yaw."""
    values, vectors = np.linalg.eigh(covariance_en)
    values = np.clip(values, 0.0, None)
    major = vectors[:, 1]
    return (2 * n_sigma * math.sqrt(values[1]), 2 * n_sigma * math.sqrt(values[0]),
            math.atan2(major[1], major[0]))


def yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))


def load_map(path: Path) -> GeoDatabase | TiledMap:
    """A database with at least one entry, its ENU frame computed, or a tiled map's manifest (runs on the map
    watcher's thread)."""
    if is_tiled_map(path):
        tiled = TiledMap.open(path)
        if tiled.count == 0:
            raise DatabaseError(f"{path}: the tiled map has no entries")
        return tiled
    database = GeoDatabase.load(path)
    if len(database) == 0:
        raise DatabaseError(f"{path}: the database has no entries")
    database.frame_and_enu()
    return database


@functools.cache
def shipped_segmenter() -> str | None:
    """The shipped segmenter's id, read once (imports torch: only for maps written before pipeline ids)."""
    from semloc_ros.models.loading import shipped_segmenter_id

    return shipped_segmenter_id()


def take_as_legacy(database: GeoDatabase | TiledMap, query_id: str) -> bool:
    """Let a map file written before pipeline ids (descriptor id only) answer label descriptors of the shipped
    segmenter (:func:`semloc_ros.core.pipeline_id.accepts`); True when this call made it do so. Tiled maps
    postdate pipeline ids: they match exactly."""
    if not isinstance(database, GeoDatabase) or database.legacy_segmenter_id is not None \
            or split_pipeline_id(database.model_id)[1] is not None or split_pipeline_id(query_id)[1] is None:
        return False
    database.legacy_segmenter_id = shipped_segmenter()
    return database.legacy_segmenter_id is not None


def accepts_pipeline(database: GeoDatabase | TiledMap, expected: tuple[str, int]) -> bool:
    """Whether the map answers the descriptors in flight (pipeline id, dimension)."""
    if not isinstance(database, GeoDatabase):
        return (database.model_id, database.dimension) == expected
    take_as_legacy(database, expected[0])
    return database.accepts(expected[0]) and database.dimension == expected[1]


class LocalizerNode(Node):
    """Matches descriptors against the geotagged database and publishes the position estimate."""

    def __init__(self) -> None:
        super().__init__("localizer_node")
        self.params = ValidatedParameters(self, PARAMETERS, on_change=self.on_parameters_changed)
        faiss.omp_set_num_threads(self.params.get("faiss_threads"))
        self.stats = StageStats()
        self.diagnostics = StageDiagnostics(self, self.stats)
        self.config = self._current_config()
        self.database: GeoDatabase | TiledMap | None = None
        self.localizer: Localizer | TiledLocalizer | None = None
        self._map_enu: LocalENU | None = None  # tiled maps: the fixed frame of markers and path
        self._map_ready = self.create_guard_condition(self._apply_map_load)
        self.map_watcher: MapWatcher[GeoDatabase | TiledMap] = MapWatcher(
            load_map, lambda db: (db.model_id, db.dimension), notify=self._map_ready.trigger, accept=accepts_pipeline)
        self.sequence = SequenceMonitor()

        qos = QoSProfile(depth=10)
        self.fix_publisher = self.create_publisher(NavSatFix, "semloc/fix", qos)
        self.geopose_publisher = self.create_publisher(GeoPoseWithCovarianceStamped, "semloc/geopose", qos)
        self.marker_publisher = self.create_publisher(MarkerArray, "semloc/places", qos)
        self.path_publisher = self.create_publisher(PathMessage, "semloc/path", qos)
        self.path = PathMessage()
        self._path_poses: deque[PoseStamped] = deque(maxlen=max(1, self.params.get("path_length")))
        self._utm: UTMProjection | None = None
        self.create_subscription(Descriptor, "semloc/descriptor", self.on_descriptor, QoSProfile(depth=10))
        self._thumbnails: dict[int, np.ndarray] = {}  # label thumbnails by stamp (ns), oldest first
        self.create_subscription(Image, "semloc/labels", self.on_labels, QoSProfile(depth=10))
        if self.params.get("gnss_prior_topic"):
            self.create_subscription(NavSatFix, self.params.get("gnss_prior_topic"), self.on_prior, qos)
        self.odometry: OdometryTrack | None = None
        if self.params.get("use_odometry"):
            self._start_odometry()

        self._loaded_path = ""
        self._try_load_database()
        self.wait_for_map_load()  # the first map before spinning: there is none to keep serving meanwhile
        self._retry_timer = self.create_timer(self.params.get("database_retry_period_s"),
                                              self._try_load_database)

    def _start_odometry(self) -> None:
        """Keep the odometry positions on ``odom`` (best effort: takes reliable and best-effort publishers)."""
        self.odometry = OdometryTrack(OdometryConfig(**{name: self.params.get(f"odometry_{name}")
                                                        for name in ODOMETRY_PARAMETERS}))
        self.create_subscription(Odometry, "odom", self.on_odometry,
                                 QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
        if not self.config.sequence_filter:
            self.get_logger().info("use_odometry: odometry is used only while sequence_filter is true")

    # --- database and configuration -------------------------------------------------------------
    def _current_config(self) -> LocalizerConfig:
        return LocalizerConfig.from_parameters({name: self.params.get(name) for name in CONFIG_PARAMETERS}).validate()

    @guarded
    def _try_load_database(self) -> None:
        """Start loading ``database_path`` in the background if a new version of it is there (retry timer).

        The loaded map keeps serving while a new one loads; ``_apply_map_load`` hands the result over.
        """
        path = self.params.get("database_path")
        self.map_watcher.set_path(path)
        if not path:
            if self.database is None:
                self.diagnostics.fatal = "no database_path set"
            self.get_logger().warning("no database_path set; waiting", throttle_duration_sec=30.0)
            return
        self.map_watcher.poll()

    def wait_for_map_load(self, timeout_s: float = 30.0) -> None:
        """Finish a background load now (start-up, tests): wait for it and apply its outcome."""
        self.map_watcher.wait(timeout_s)
        self._apply_map_load()

    @guarded
    def _apply_map_load(self) -> None:
        """Swap in a map loaded in the background, or report why it was refused (old map kept)."""
        outcome = self.map_watcher.take()
        if outcome is None:
            return
        path = outcome.version.path
        if outcome.map is None:
            message = f"database {path} not loaded ({outcome.error}); retrying when the file changes"
            if self.database is not None:
                message += f"; still using {self._loaded_path}"
                self.stats.record_error("database_refused", message)
            else:
                self.diagnostics.fatal = message
            self.get_logger().warning(message, throttle_duration_sec=10.0)
            return
        self._use_database(outcome.map, path)

    def _use_database(self, database: GeoDatabase | TiledMap, path: str) -> None:
        centres = []
        if isinstance(self.localizer, TiledLocalizer):
            centres = self.localizer.centres  # an updated tiled map starts with the tiles around the vehicle
            self.localizer.close()  # its tile loader thread
        if isinstance(database, TiledMap):
            self._use_tiled(database, path, centres)
            return
        self.database, self.localizer, self._loaded_path = database, Localizer(database, self.config), path
        self._map_enu = None
        try:
            self._utm = UTMProjection.from_points(database.lat, database.lon)
        except GeoError as error:  # e.g. a polar database: markers and path stay in ENU
            self._utm = None
            self.get_logger().warning(f"no UTM zone for this database ({error}); map_coordinates utm falls "
                                      "back to enu")
        self._path_poses.clear()
        self.diagnostics.fatal = ""
        origin = database.frame
        self.get_logger().info(
            f"database {path}: {len(database)} places, pipeline {database.model_id}, dimension "
            f"{database.dimension}, GPS frame '{database.gps_frame_id or 'none stored'}', camera yaw "
            f"{database.camera_yaw_deg:g} deg; "
            f"'{self.params.get('map_frame')}' frame origin at lat {origin.lat0:.7f} lon {origin.lon0:.7f}")
        if database.legacy_segmenter_id is not None:  # accepted by the map watcher for the descriptors in flight
            self._warn_legacy()

    def _use_tiled(self, tiled: TiledMap, path: str, centres: list[tuple[float, float]]) -> None:
        """A tiled map: its tiles load around the estimate (at once around ``centres``); UTM zone and a fixed ENU
        frame of the map."""
        tiles = TileCacheConfig(**{name: self.params.get(f"tile_{name}") for name in TILE_PARAMETERS})
        self.database, self.localizer = tiled, TiledLocalizer(tiled, self.config, tiles, centres)
        self._loaded_path, self._utm, self._map_enu = path, tiled.grid.projection, LocalENU(*tiled.centre())
        self._path_poses.clear()
        self.diagnostics.fatal = ""
        self.get_logger().info(
            f"tiled map {path}: {tiled.count} places in {len(tiled.keys)} tiles of {tiled.grid.size_m:g} m, model "
            f"{tiled.model_id}, camera yaw {tiled.camera_yaw_deg:g} deg; tiles load around the estimate; "
            f"'{self.params.get('map_frame')}' frame origin at "
            f"lat {self._map_enu.lat0:.7f} lon {self._map_enu.lon0:.7f}")

    def destroy_node(self) -> None:
        self.map_watcher.close()  # its load thread must not trigger the guard condition of a destroyed node
        if isinstance(self.localizer, TiledLocalizer):
            self.localizer.close()  # the tile loader thread
        super().destroy_node()

    @guarded
    def on_prior(self, message: NavSatFix) -> None:
        """A GNSS fix: with a tiled map, its tiles are loaded too."""
        if isinstance(self.localizer, TiledLocalizer) and message.status.status >= NavSatStatus.STATUS_FIX \
                and math.isfinite(message.latitude) and math.isfinite(message.longitude):
            self.localizer.set_prior(message.latitude, message.longitude)

    def on_parameters_changed(self, changed: dict[str, Any]) -> None:
        if any(name in CONFIG_PARAMETERS for name in changed):
            self.config = self._current_config()
            if isinstance(self.localizer, TiledLocalizer):
                self.localizer.set_config(self.config)
            elif self.localizer is not None:  # the sequence continues (the filter restarts if its settings changed)
                self.localizer = self.localizer.reconfigured(self.config)
            self.get_logger().info(f"localizer configuration updated: {self.config}")
        if "database_path" in changed:
            self._try_load_database()
        if "path_length" in changed:
            self._path_poses = deque(self._path_poses, maxlen=max(1, changed["path_length"]))
        if "map_coordinates" in changed:
            self._path_poses.clear()

    # --- per odometry message, label image and descriptor -------------------------------------------
    @guarded
    def on_odometry(self, message: Odometry) -> None:
        """An odometry position (x, y in its frame) for the travel between descriptors."""
        position = message.pose.pose.position
        notice = self.odometry.add(stamp_to_ns(message.header.stamp), position.x, position.y)
        if notice is not None:
            (self.stats.record_error if notice.refused else self.stats.record_warning)(notice.kind, notice.text)
            self.get_logger().warning(notice.text, throttle_duration_sec=5.0)

    def _odometry_travel(self, stamp_ns: int) -> float | None:
        """The odometry's travel since the previous descriptor when the filter will predict with it; None: the
        filter predicts from the stamps (no odometry, the first frame, a reset, or a frame the odometry does not
        cover, which is counted and logged)."""
        interval = None if self.odometry is None else self.localizer.predicted_interval(stamp_ns)
        if interval is None:
            return None
        travel = self.odometry.travel(*interval)
        if travel is None:
            text = (f"odometry does not cover {interval[0]}..{interval[1]} ns "
                    f"({self.odometry.coverage_problem(*interval)}): travel predicted from the stamps")
            self.stats.record_warning("odometry_uncovered", text)
            self.get_logger().warning(text, throttle_duration_sec=5.0)
        return travel

    @guarded
    def on_labels(self, message: Image) -> None:
        """Keep the label thumbnail of a frame for re-ranking its descriptor (only while re-ranking applies)."""
        if self.localizer is None or not self.localizer.reranks:
            return
        try:
            thumbnail = label_thumbnail(imgmsg_to_labels(message), self.localizer.database.thumbnails.shape[1:])
        except (ImageEncodingError, ValueError) as error:
            self.stats.record_error("bad_labels", str(error))
            self.get_logger().warning(f"label image not used for re-ranking: {error}", throttle_duration_sec=2.0)
            return
        self._thumbnails[stamp_to_ns(message.header.stamp)] = thumbnail
        while len(self._thumbnails) > self.params.get("label_buffer"):
            del self._thumbnails[next(iter(self._thumbnails))]

    def _thumbnail_for(self, stamp_ns: int) -> np.ndarray | None:
        """The label thumbnail of this stamp (dropping it and older ones), None when re-ranking does not apply."""
        if not self.localizer.reranks:
            return None
        thumbnail = self._thumbnails.pop(stamp_ns, None)
        for older in [stamp for stamp in self._thumbnails if stamp < stamp_ns]:
            del self._thumbnails[older]
        if thumbnail is None:
            self.stats.record_error("no_labels", "no label image with the descriptor's stamp: not re-ranked")
            self.get_logger().warning("no label image (semloc/labels) with the descriptor's stamp: answered "
                                      "without re-ranking", throttle_duration_sec=10.0)
        return thumbnail

    @guarded
    def on_descriptor(self, message: Descriptor) -> None:
        self.stats.record_received()
        warn_on_stamp_order(self, self.sequence, self.stats, message.header.stamp, "answered anyway")
        if 0 < len(message.data) == message.dimension:
            self.map_watcher.expect(message.model_id, message.dimension)  # maps loaded from now on must match
        if self.localizer is None:
            self.stats.record_error("no_database", "descriptor received before a database was loaded")
            return
        start = time.perf_counter()
        descriptor = np.asarray(message.data, dtype=np.float32)
        if descriptor.shape[0] != message.dimension:
            self._reject("bad_descriptor", f"dimension field {message.dimension} != {descriptor.shape[0]} values")
            return
        stamp_ns = stamp_to_ns(message.header.stamp)
        if take_as_legacy(self.database, message.model_id):
            self._warn_legacy()
        try:
            estimate = self.localizer.localize(descriptor, model_id=message.model_id, stamp_ns=stamp_ns,
                                               displacement_m=self._odometry_travel(stamp_ns),
                                               thumbnail=self._thumbnail_for(stamp_ns))
        except DescriptorMismatchError as error:
            self._reject("model_mismatch", str(error))
            return
        except ValueError as error:
            self._reject("bad_descriptor", str(error))
            return
        header = Header(stamp=message.header.stamp, frame_id=self.fix_frame_id(message.header.frame_id))
        self.fix_publisher.publish(self.navsatfix(estimate, header, self.params.get("unknown_altitude_m")))
        self.geopose_publisher.publish(self.geopose(estimate, header))
        if self.params.get("publish_markers"):
            self.marker_publisher.publish(self.markers(estimate, message.header.stamp))
        if estimate.status is FixStatus.FIX and self.params.get("path_length") > 0:
            self.path_publisher.publish(self.extend_path(estimate, message.header.stamp))
        self.stats.record_processed(time.perf_counter() - start)

    def _warn_legacy(self) -> None:
        self.get_logger().warning(
            f"database {self._loaded_path} predates pipeline ids (model {self.database.model_id}): taken as built "
            f"with the shipped segmenter {self.database.legacy_segmenter_id}; descriptors of any other segmenter are "
            "refused. Rebuild it with semloc build-db to record its pipeline")

    def fix_frame_id(self, camera_frame: str) -> str:
        """The outputs' frame_id: the parameter, else the map's GPS frame, else the camera's."""
        return self.params.get("fix_frame_id") or self.database.gps_frame_id or camera_frame

    def _reject(self, kind: str, text: str) -> None:
        self.stats.record_error(kind, text)
        self.get_logger().warning(f"descriptor rejected ({kind}): {text}", throttle_duration_sec=2.0)

    # --- message construction ---------------------------------------------------------------------
    @staticmethod
    def navsatfix(estimate: PositionEstimate, header: Header, unknown_altitude_m: float = 0.0) -> NavSatFix:
        """NavSatFix with the ENU position covariance (m^2) of the estimate.

        The covariance is derived from the spread and weights of the agreeing matches, not measured
        per fix, hence COVARIANCE_TYPE_APPROXIMATED; anything but a confident fix is STATUS_NO_FIX.
        """
        fix = NavSatFix(header=header)
        fix.status.status = (NavSatStatus.STATUS_FIX if estimate.status is FixStatus.FIX
                             else NavSatStatus.STATUS_NO_FIX)
        fix.status.service = 0  # not a GNSS receiver: no satellite system was used
        altitude, covariance = altitude_and_covariance(estimate, unknown_altitude_m)
        known = estimate.status is not FixStatus.NO_MATCH
        fix.latitude = estimate.lat if known else math.nan
        fix.longitude = estimate.lon if known else math.nan
        fix.altitude = altitude if known else math.nan
        fix.position_covariance = [float(v) for v in covariance.reshape(9)]
        fix.position_covariance_type = (NavSatFix.COVARIANCE_TYPE_APPROXIMATED if known
                                        else NavSatFix.COVARIANCE_TYPE_UNKNOWN)
        return fix

    def geopose(self, estimate: PositionEstimate, header: Header) -> GeoPoseWithCovarianceStamped:
        """GeoPose with covariance ordered (lat=north, lon=east, alt, rotE, rotN, rotU) in m^2 and rad^2."""
        message = GeoPoseWithCovarianceStamped(header=header)
        pose = message.pose.pose
        altitude, enu = altitude_and_covariance(estimate, self.params.get("unknown_altitude_m"))
        pose.position.latitude, pose.position.longitude = estimate.lat, estimate.lon
        pose.position.altitude = altitude
        pose.orientation = Quaternion(w=1.0)
        covariance = np.zeros((6, 6))
        order = [1, 0, 2]  # north, east, up
        covariance[:3, :3] = enu[np.ix_(order, order)]
        covariance[3:, 3:] = np.eye(3) * self.params.get("unknown_heading_variance")
        message.pose.covariance = [float(v) for v in covariance.reshape(36)]
        return message

    def map_xy(self, lat: float, lon: float, east: float, north: float) -> tuple[float, float]:
        """Marker coordinates of a place: database ENU (east, north; a tiled map's fixed frame) or UTM."""
        if self.params.get("map_coordinates") == "utm" and self._utm is not None:
            easting, northing = self._utm.forward(lat, lon)
            return float(easting), float(northing)
        if self._map_enu is not None:  # the estimate's east/north are in the frame of the tiles loaded now
            east, north, _ = self._map_enu.to_enu(lat, lon)
        return float(east), float(north)

    def extend_path(self, estimate: PositionEstimate, stamp) -> PathMessage:
        """The path of the last ``path_length`` confident fixes, in the map frame."""
        pose = PoseStamped(header=Header(stamp=stamp, frame_id=self.params.get("map_frame")))
        x, y = self.map_xy(estimate.lat, estimate.lon, estimate.east, estimate.north)
        pose.pose.position = Point(x=x, y=y, z=0.0)
        pose.pose.orientation.w = 1.0
        self._path_poses.append(pose)
        return PathMessage(header=pose.header, poses=list(self._path_poses))

    def markers(self, estimate: PositionEstimate, stamp) -> MarkerArray:
        """Retrieved places (green: agreeing, red: outliers) and the 2-sigma ellipse of the estimate."""
        frame = self.params.get("map_frame")
        scale = self.params.get("marker_scale_m")
        markers = [Marker(action=Marker.DELETEALL)]
        for rank, match in enumerate(estimate.matches):
            marker = Marker(header=Header(stamp=stamp, frame_id=frame), ns="retrieved", id=rank,
                            type=Marker.SPHERE, action=Marker.ADD)
            x, y = self.map_xy(match.lat, match.lon, match.east, match.north)
            marker.pose.position = Point(x=x, y=y, z=0.0)
            marker.pose.orientation.w = 1.0
            size = scale * (0.5 + match.weight)
            marker.scale.x = marker.scale.y = marker.scale.z = float(size)
            marker.color = GREEN if match.inlier else RED
            markers.append(marker)
        if estimate.status is not FixStatus.NO_MATCH:
            ellipse = Marker(header=Header(stamp=stamp, frame_id=frame), ns="estimate", id=0,
                             type=Marker.CYLINDER, action=Marker.ADD)
            major, minor, yaw = covariance_ellipse(np.asarray(estimate.covariance_enu)[:2, :2])
            x, y = self.map_xy(estimate.lat, estimate.lon, estimate.east, estimate.north)
            ellipse.pose.position = Point(x=x, y=y, z=0.0)
            ellipse.pose.orientation = yaw_quaternion(yaw)
            ellipse.scale.x, ellipse.scale.y, ellipse.scale.z = major, minor, 0.2
            ellipse.color = BLUE
            markers.append(ellipse)
        return MarkerArray(markers=markers)


def main(args: list[str] | None = None) -> None:
    sys.exit(run_node(LocalizerNode, args))


if __name__ == "__main__":
    main()
