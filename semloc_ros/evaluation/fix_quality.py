"""What a navigation filter receives from one drive: the published fixes, their covariance and integrity.

For the records of a drive (:mod:`semloc_ros.evaluation.fix_records`) under a covariance model and an integrity
gate, exactly as the localizer publishes them:

1. Published fix (STATUS_FIX): status FIX under ``min_confidence`` and an integrity score at least the gate's
   threshold; its covariance is the heading-aligned model's (:mod:`semloc_ros.core.uncertainty`).
2. In the map: coverage of the 1- and 2-sigma ellipses over the published fixes (Gaussian: 39.3 / 86.5 %), the
   share beyond 3 sigma (an integrity failure; Gaussian: 1.1 %), the largest error of a published fix, the
   false-fix rate (published fixes farther than ``threshold_m``, per frame) and the kept-fix rate (frames
   within ``threshold_m`` that stay published), and the EKF consistency (:mod:`semloc_ros.evaluation.navigation`).
3. Off the map (frames beyond ``min_route_m``): the false-fix rate is the share of frames published as a fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from semloc_ros.core.calibration import covariance_coverage, mahalanobis_squared
from semloc_ros.core.integrity import IntegrityModel
from semloc_ros.core.uncertainty import TrackCovarianceModel
from semloc_ros.evaluation.fix_records import FixRecords, correct_mask
from semloc_ros.evaluation.navigation import DEFAULT_ODOMETRY, OdometryNoise, fuse
from semloc_ros.evaluation.uncertainty_fit import model_covariances

SIGMA3_SQUARED = 9.0


def published(records: FixRecords, integrity: IntegrityModel) -> np.ndarray:
    """Step 1: which frames are published as STATUS_FIX."""
    return records.fix & (np.asarray(integrity.score(records.cues)) >= integrity.threshold)


def _stat(values: np.ndarray, function) -> float:
    return float(function(values)) if len(values) else math.nan


def drive_report(
    records: FixRecords,
    track_model: TrackCovarianceModel,
    integrity: IntegrityModel,
    threshold_m: float,
    min_route_m: float,
    noise: OdometryNoise | None = DEFAULT_ODOMETRY,
) -> dict[str, Any]:
    """Steps 1-3 for one drive (``noise`` None: no EKF run)."""
    fixes = published(records, integrity)
    report: dict[str, Any] = {"drive": records.drive, "database": records.database, "mode": records.mode,
                              "in_map": records.in_map, "n_frames": len(records)}
    if not records.in_map:
        counted = records.route_m > min_route_m
        report.update(n_counted=int(counted.sum()), false_fix_rate=_stat(fixes[counted], np.mean),
                      fix_rate_before_gate=_stat(records.fix[counted], np.mean))
        return report
    alignments = records.lane_alignments(track_model.lane_time_constant_s, integrity.max_gap_s)
    covariances = model_covariances(records.base_covariance, records.direction, track_model, alignments)
    d2 = mahalanobis_squared(records.error_en[fixes], covariances[fixes])
    errors = records.error_m[fixes]
    correct = correct_mask(records, threshold_m)
    coverage = covariance_coverage(d2)
    report.update(
        n_fixes=int(fixes.sum()),
        fix_rate=float(fixes.mean()) if len(fixes) else math.nan,
        within_1sigma=coverage["within_1sigma"],
        within_2sigma=coverage["within_2sigma"],
        beyond_3sigma=_stat(d2[np.isfinite(d2)] > SIGMA3_SQUARED, np.mean),
        max_fix_error_m=_stat(errors, np.max),
        median_fix_error_m=_stat(errors, np.median),
        false_fix_rate=float(np.mean(fixes & ~correct)) if len(fixes) else math.nan,
        kept_fix_rate=float(np.sum(fixes & correct) / correct.sum()) if correct.any() else math.nan,
        kept_fix_rate_before_gate=float(np.sum(records.fix & correct) / correct.sum()) if correct.any() else math.nan,
    )
    if noise is not None:
        report["navigation"] = fuse(records.truth_en, records.truth_yaw, records.estimate_en, covariances, fixes,
                                    noise)["summary"]
    return report
