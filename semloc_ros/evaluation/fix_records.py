"""Per-frame records of a described drive localized against a database: what the fits and the reports need.

For each frame, in stamp order, single-frame or through the sequence filter (``mode``):

1. the estimate's east/north in the database frame and its error against the drive's pose (NaN off the map,
   where the frame has no true place in this database, or without an estimate);
2. its base covariance (the localizer's geometry before the covariance model) and the track direction of the
   places behind it (the inliers' database headings single-frame, the filter's places filtered);
3. its status under the configuration's ``min_confidence`` (before the integrity gate and the landmark rule) and
   the integrity cues (:mod:`semloc_ros.core.integrity`), the consecutive-fix ``jump`` included, and the landmark
   share of the query's label thumbnail (:func:`semloc_ros.core.labels.landmark_share`, localizer step 7b);
4. the route distance from the drive's start (out-of-map frames near the start of a map lie on the road every
   map shares, :data:`semloc_ros.evaluation.metrics.DEFAULT_NEGATIVE_MIN_ROUTE_M`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import FixStatus
from semloc_ros.core.integrity import CUES
from semloc_ros.core.labels import landmark_share
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.uncertainty import smoothed_alignments
from semloc_ros.evaluation.calibration import route_distance_m
from semloc_ros.evaluation.described import DescribedDrive

MODES = ("single", "filtered")


@dataclass
class FixRecords:
    """Steps 1-4 for the N frames of one drive against one database in one mode."""

    drive: str
    database: str
    mode: str
    in_map: bool
    stamps_ns: np.ndarray
    truth_en: np.ndarray  # (N, 2) the drive's poses in the database frame
    truth_yaw: np.ndarray  # (N,) ENU yaw of the poses (NaN where unknown)
    estimate_en: np.ndarray  # (N, 2), NaN without an estimate
    error_en: np.ndarray  # (N, 2), NaN off the map or without an estimate
    base_covariance: np.ndarray  # (N, 2, 2)
    direction: np.ndarray  # (N, 2), NaN where no heading is known
    fix: np.ndarray  # (N,) status FIX under the configuration
    cues: dict[str, np.ndarray]
    route_m: np.ndarray
    landmark_share: np.ndarray | None = None  # (N,) of the query's label thumbnail (localizer step 7b); None: none

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def lane_alignments(self, time_constant_s: float, max_gap_s: float) -> np.ndarray:
        """(N,) the alignment cue smoothed as the localizer smooths it for the lane-offset term
        (:class:`semloc_ros.core.uncertainty.LaneEvidence`; the frames are one camera's, in stamp order)."""
        return smoothed_alignments(self.stamps_ns, self.cues["alignment"], time_constant_s, max_gap_s)

    @property
    def error_m(self) -> np.ndarray:
        return np.hypot(self.error_en[:, 0], self.error_en[:, 1])

    def select(self, keep: np.ndarray) -> FixRecords:
        """The records of the frames ``keep`` (a boolean mask)."""
        return dataclasses.replace(
            self,
            **{name: getattr(self, name)[keep] for name in ("stamps_ns", "truth_en", "truth_yaw", "estimate_en",
                                                            "error_en",
                                                            "base_covariance", "direction", "fix", "route_m")},
            cues={name: values[keep] for name, values in self.cues.items()},
            landmark_share=None if self.landmark_share is None else self.landmark_share[keep],
        )

    def featureless_withheld(self, min_landmark_share: float) -> FixRecords:
        """The records with the localizer's step 7b applied: a FIX of a query thumbnail with a landmark share below
        ``min_landmark_share`` is not one (the records themselves are taken before it, :func:`records_config`)."""
        if min_landmark_share <= 0.0 or self.landmark_share is None:
            return self
        return dataclasses.replace(self, fix=self.fix & ~(self.landmark_share < min_landmark_share))


def records_config(config: LocalizerConfig, mode: str) -> LocalizerConfig:
    """``config`` without the covariance model, the integrity gate and the landmark rule (localizer step 7b), in
    ``mode``: what the fits start from."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return config.with_parameters(covariance_along_scale=1.0, covariance_cross_scale=1.0,
                                  position_sigma_along_m=0.0, position_sigma_cross_m=0.0, integrity_threshold=0.0,
                                  min_landmark_share=0.0,
                                  sequence_filter=mode == "filtered").validate()


def fix_records(
    database: GeoDatabase,
    described: DescribedDrive,
    config: LocalizerConfig,
    mode: str = "single",
    in_map: bool = True,
    database_name: str = "",
) -> FixRecords:
    """Steps 1-4 with the :class:`Localizer` (the node's code) in stamp order, as the node sees the drive."""
    drive = described.drive
    localizer = Localizer(database, records_config(config, mode))
    stamps = drive.stamps_ns.tolist()
    if mode == "filtered":
        estimates = localizer.localize_sequence(described.descriptors, stamps, thumbnails=described.thumbnails)
    else:
        estimates = localizer.localize_batch(described.descriptors, thumbnails=described.thumbnails, stamps_ns=stamps)
    count = len(estimates)
    estimate_en = np.array([[e.east, e.north] for e in estimates], float).reshape(count, 2)
    true_east, true_north, _ = database.frame.to_enu(drive.lat, drive.lon)
    truth_en = np.column_stack([true_east, true_north])
    direction = np.full((count, 2), np.nan)
    for i, estimate in enumerate(estimates):
        if estimate.direction is not None:
            direction[i] = estimate.direction
    return FixRecords(
        drive=drive.name,
        database=database_name,
        mode=mode,
        in_map=in_map,
        stamps_ns=drive.stamps_ns,
        truth_en=truth_en,
        truth_yaw=np.array([f.heading for f in drive.frames], float),
        estimate_en=estimate_en,
        error_en=estimate_en - truth_en if in_map else np.full((count, 2), np.nan),
        base_covariance=np.array([e.base_covariance_en for e in estimates], float).reshape(count, 2, 2),
        direction=direction,
        fix=np.array([e.status is FixStatus.FIX for e in estimates], bool),
        cues={name: np.array([e.cues.get(name, 0.0) for e in estimates], float) for name in CUES},
        route_m=route_distance_m(drive),
        landmark_share=None if described.thumbnails is None else np.array(
            [landmark_share(thumbnail) for thumbnail in described.thumbnails], float),
    )


def correct_mask(records: FixRecords, threshold_m: float) -> np.ndarray:
    """Frames whose estimate is within ``threshold_m`` of the truth (never off the map)."""
    error = records.error_m
    return np.isfinite(error) & (error <= threshold_m) if records.in_map else np.zeros(len(records), bool)
