"""Tests of the EKF consistency check (semloc_ros.evaluation.navigation) on a synthetic drive."""

from __future__ import annotations

import numpy as np
import pytest

from semloc_ros.evaluation.navigation import OdometryNoise, consistent, fuse, simulate_odometry


def _drive(count: int = 1500, step_m: float = 2.0):
    """A winding road at 10 m/s (a fix every 0.2 s): positions, yaw and fixes drawn from heading-aligned
    covariances (along-track sigma 4 m, cross-track 1.5 m), as the localizer reports them."""
    rng = np.random.default_rng(7)
    yaw = np.cumsum(np.r_[0.0, 0.01 * np.sin(np.arange(count - 1) / 40.0)])
    east_north = np.cumsum(step_m * np.column_stack([np.cos(yaw), np.sin(yaw)]), axis=0)
    covariances = np.empty((count, 2, 2))
    for i, heading in enumerate(yaw):
        rotation = np.array([[np.cos(heading), -np.sin(heading)], [np.sin(heading), np.cos(heading)]])
        covariances[i] = rotation @ np.diag([4.0**2, 1.5**2]) @ rotation.T
    fixes = east_north + np.einsum("nij,nj->ni", np.linalg.cholesky(covariances), rng.standard_normal((count, 2)))
    return east_north, yaw, fixes, covariances


def test_simulated_odometry_reproduces_the_path_within_its_noise():
    east_north, yaw, _, _ = _drive(200)
    distance, turn = simulate_odometry(east_north, yaw, OdometryNoise())
    assert distance[1:] == pytest.approx(np.full(199, 2.0), rel=0.1)
    assert np.abs(turn[1:] - np.diff(yaw)).max() < 0.05
    assert distance[0] == 0.0 and turn[0] == 0.0


def test_nees_is_consistent_with_the_true_covariance_and_not_when_it_is_scaled():
    east_north, yaw, fixes, covariances = _drive()
    is_fix = np.ones(len(fixes), bool)
    nominal = fuse(east_north, yaw, fixes, covariances, is_fix)["summary"]
    assert consistent(nominal), nominal
    assert nominal["fused_error_median_m"] < nominal["fix_error_median_m"]  # fusion helps
    too_wide = fuse(east_north, yaw, fixes, 10.0 * covariances, is_fix)["summary"]
    too_narrow = fuse(east_north, yaw, fixes, 0.1 * covariances, is_fix)["summary"]
    assert too_wide["mean_nees"] < too_wide["nees_bounds_95"][0]
    assert too_narrow["mean_nees"] > too_narrow["nees_bounds_95"][1]


def test_rejection_threshold_drops_a_wrong_fix_and_no_fix_frames_are_not_fused():
    east_north, yaw, fixes, covariances = _drive(300)
    wrong = fixes.copy()
    wrong[150] += [300.0, 0.0]  # a confident fix of another place
    is_fix = np.ones(len(fixes), bool)
    gated = fuse(east_north, yaw, wrong, covariances, is_fix, rejection_threshold=5.0)
    assert gated["summary"]["n_rejected"] >= 1
    assert np.hypot(*(gated["fused_en"][150] - east_north[150])) < 10.0
    is_fix[:20] = False
    late = fuse(east_north, yaw, fixes, covariances, is_fix)
    assert np.isnan(late["nees"][:20]).all() and np.isfinite(late["nees"][20:]).all()


def test_innovations_are_consistent_and_the_correlated_nees_gets_a_wider_interval():
    east_north, yaw, fixes, covariances = _drive()
    summary = fuse(east_north, yaw, fixes, covariances, np.ones(len(fixes), bool))["summary"]
    assert consistent(summary, "nis"), summary
    assert summary["nees_effective_n"] < 0.5 * summary["n_frames"]
    assert summary["nis_effective_n"] == summary["n_fixes"] - 1  # the first fix starts the filter
