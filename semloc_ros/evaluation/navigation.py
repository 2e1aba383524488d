"""Does a navigation filter get consistent with semloc's fixes? An EKF fusing fixes and simulated odometry.

robot_localization fuses a fix by its covariance; whether the published covariance is right shows in the fused
state's consistency. Per drive (poses with stamps, fixes with their 2x2 east/north covariance and status):

1. Odometry simulated from the drive poses (stated noise, :class:`OdometryNoise`): per step the travelled
   distance ``d (1 + n_d)``, ``n_d ~ N(0, distance_fraction^2)``, and the heading change ``+ n_psi``,
   ``n_psi ~ N(0, (yaw_rad_per_m d)^2 + yaw_rad^2)``; a fixed seed makes it reproducible.
2. EKF (filterpy's ``ExtendedKalmanFilter``) on ``[east, north, yaw]``, unicycle prediction
   ``east += d cos(yaw + dpsi / 2)``, ``north += d sin(...)``, ``yaw += dpsi`` with the process noise of step 1
   mapped through the Jacobian, as robot_localization's differential odometry input does. It starts at the
   first published fix (yaw from the pose plus ``initial_yaw_sigma_rad``, as from an IMU, which navsat_transform
   needs anyway).
3. Update with every STATUS_FIX fix: position measurement, the fix's covariance as ``R``; optionally rejected
   when the Mahalanobis distance of the innovation exceeds ``rejection_threshold`` (robot_localization's
   ``pose_rejection_threshold``).
4. Consistency: at every frame after the start, the position NEES ``e^T P^-1 e`` (``e``: fused minus true
   east/north, ``P``: the fused position covariance). For a consistent filter it is chi-square with 2 degrees of
   freedom and about 95 % of the frames have NEES <= 5.99. Consecutive NEES values are correlated (one drive,
   one error carried along), so the mean over K frames is compared with the two-sided 95 % interval
   ``[chi2_{0.025}(2 K_eff), chi2_{0.975}(2 K_eff)] / K_eff`` of ``K_eff = K / tau`` independent values, ``tau``
   the integrated autocorrelation time of the NEES series (``1 + 2 sum rho_k`` up to the first lag with
   ``rho_k < 0.05``). The innovations of fused fixes are independent when the filter is consistent, so their
   NIS ``v^T (P + R)^-1 v`` gets the plain interval with K = the number of fused fixes. The fused track error is
   compared with the raw fixes' error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from filterpy.kalman import ExtendedKalmanFilter
from scipy.stats import chi2

CHI2_2DOF_95 = float(chi2.ppf(0.95, 2))


@dataclass(frozen=True)
class OdometryNoise:
    """Step 1: 1-sigma noise of the simulated wheel odometry."""

    distance_fraction: float = 0.02
    yaw_rad_per_m: float = 0.002
    yaw_rad: float = 0.002
    initial_yaw_sigma_rad: float = 0.05
    seed: int = 0


DEFAULT_ODOMETRY = OdometryNoise()


def simulate_odometry(east_north: np.ndarray, yaw: np.ndarray, noise: OdometryNoise) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: (N,) measured distances and heading changes from pose i-1 to pose i (first entries 0)."""
    rng = np.random.default_rng(noise.seed)
    steps = np.diff(np.asarray(east_north, float), axis=0)
    distance = np.hypot(steps[:, 0], steps[:, 1])
    turn = np.angle(np.exp(1j * np.diff(np.asarray(yaw, float))))
    measured_distance = distance * (1.0 + noise.distance_fraction * rng.standard_normal(len(distance)))
    turn_sigma = np.hypot(noise.yaw_rad_per_m * distance, noise.yaw_rad)
    measured_turn = turn + turn_sigma * rng.standard_normal(len(turn))
    return np.r_[0.0, measured_distance], np.r_[0.0, measured_turn]


class _Unicycle(ExtendedKalmanFilter):
    """Step 2's prediction: the state moves by the measured distance and turn (``u = [d, dpsi]``)."""

    def predict_x(self, u=0) -> None:
        distance, turn = float(u[0]), float(u[1])
        heading = float(self.x[2, 0]) + 0.5 * turn
        self.x = self.x + np.array([[distance * math.cos(heading)], [distance * math.sin(heading)], [turn]])


def _prediction(ekf: _Unicycle, distance: float, turn: float, noise: OdometryNoise) -> None:
    heading = float(ekf.x[2, 0]) + 0.5 * turn
    cos_h, sin_h = math.cos(heading), math.sin(heading)
    ekf.F = np.array([[1.0, 0.0, -distance * sin_h], [0.0, 1.0, distance * cos_h], [0.0, 0.0, 1.0]])
    control = np.array([[cos_h, -0.5 * distance * sin_h], [sin_h, 0.5 * distance * cos_h], [0.0, 1.0]])
    sigma_d = noise.distance_fraction * abs(distance)
    sigma_turn = math.hypot(noise.yaw_rad_per_m * abs(distance), noise.yaw_rad)
    ekf.Q = control @ np.diag([sigma_d**2, sigma_turn**2]) @ control.T + 1e-9 * np.eye(3)
    ekf.predict(u=np.array([distance, turn]))


_H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def fuse(
    truth_en: np.ndarray, truth_yaw: np.ndarray, fixes_en: np.ndarray, covariances: np.ndarray, is_fix: np.ndarray,
    noise: OdometryNoise = DEFAULT_ODOMETRY, rejection_threshold: float | None = None,
) -> dict[str, Any]:
    """Steps 1-4 over one drive; per-frame fused east/north and NEES (NaN before the first fix) and a summary."""
    count = len(truth_en)
    distance, turn = simulate_odometry(truth_en, truth_yaw, noise)
    rng = np.random.default_rng(noise.seed + 1)
    fused = np.full((count, 2), np.nan)
    nees = np.full(count, np.nan)
    ekf: _Unicycle | None = None
    rejected = 0
    nis = []
    for i in range(count):
        usable = bool(is_fix[i]) and np.isfinite(fixes_en[i]).all() and np.isfinite(covariances[i]).all()
        if ekf is None:
            if not usable:
                continue
            ekf = _Unicycle(dim_x=3, dim_z=2)
            yaw0 = float(truth_yaw[i]) + noise.initial_yaw_sigma_rad * float(rng.standard_normal())
            ekf.x = np.array([[fixes_en[i, 0]], [fixes_en[i, 1]], [yaw0]])
            ekf.P = np.zeros((3, 3))
            ekf.P[:2, :2] = covariances[i]
            ekf.P[2, 2] = noise.initial_yaw_sigma_rad**2
        else:
            _prediction(ekf, distance[i], turn[i], noise)
            if usable:
                innovation = fixes_en[i] - ekf.x[:2, 0]
                squared = float(innovation @ np.linalg.solve(ekf.P[:2, :2] + covariances[i], innovation))
                if rejection_threshold is not None and squared > rejection_threshold**2:
                    rejected += 1
                else:
                    nis.append(squared)
                    ekf.update(fixes_en[i].reshape(2, 1), lambda x: _H, lambda x: _H @ x, R=covariances[i])
        fused[i] = ekf.x[:2, 0]
        error = fused[i] - truth_en[i]
        nees[i] = float(error @ np.linalg.solve(ekf.P[:2, :2], error))
    summary = nees_summary(nees, fused, truth_en, fixes_en, is_fix, rejected)
    summary.update(chi_square_mean(np.array(nis), "nis", independent=True))
    return {"fused_en": fused, "nees": nees, "summary": summary}


def autocorrelation_time(values: np.ndarray, cutoff: float = 0.05) -> float:
    """``1 + 2 sum rho_k`` over the lags before the first ``rho_k < cutoff`` (1 for independent values)."""
    x = np.asarray(values, float) - np.mean(values)
    n = len(x)
    if n < 3 or not np.any(x):
        return 1.0
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    rho = acf / acf[0]
    below = np.flatnonzero(rho[1:] < cutoff)
    lags = below[0] if len(below) else n - 1
    return float(max(1.0, 1.0 + 2.0 * rho[1 : lags + 1].sum()))


def chi_square_mean(values: np.ndarray, name: str, independent: bool) -> dict[str, Any]:
    """Mean of 2-dof chi-square values and its 95 % interval (step 4), with the effective count."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    k = len(values)
    if not k:
        return {f"mean_{name}": math.nan, f"{name}_bounds_95": None, f"{name}_effective_n": 0.0}
    effective = k if independent else k / autocorrelation_time(values)
    return {
        f"mean_{name}": float(values.mean()),
        f"{name}_bounds_95": [float(chi2.ppf(0.025, 2 * effective) / effective),
                              float(chi2.ppf(0.975, 2 * effective) / effective)],
        f"{name}_effective_n": float(effective),
    }


def nees_summary(
    nees: np.ndarray, fused_en: np.ndarray, truth_en: np.ndarray, fixes_en: np.ndarray, is_fix: np.ndarray,
    rejected: int = 0,
) -> dict[str, Any]:
    """Step 4: mean NEES with its chi-square 95 % interval, share within the 95 % bound, fused vs fix error."""
    defined = np.isfinite(nees)
    k = int(defined.sum())
    fused_error = np.hypot(*(fused_en[defined] - truth_en[defined]).T) if k else np.zeros(0)
    fix_mask = np.asarray(is_fix, bool) & np.isfinite(fixes_en).all(axis=1)
    fix_error = np.hypot(*(fixes_en[fix_mask] - truth_en[fix_mask]).T)
    return {
        "n_frames": k,
        **chi_square_mean(nees, "nees", independent=False),
        "share_nees_within_95": float(np.mean(nees[defined] <= CHI2_2DOF_95)) if k else math.nan,
        "fused_error_median_m": float(np.median(fused_error)) if k else math.nan,
        "fused_error_p95_m": float(np.percentile(fused_error, 95)) if k else math.nan,
        "fix_error_median_m": float(np.median(fix_error)) if len(fix_error) else math.nan,
        "fix_error_p95_m": float(np.percentile(fix_error, 95)) if len(fix_error) else math.nan,
        "n_fixes": int(fix_mask.sum()),
        "n_rejected": rejected,
    }


def consistent(summary: dict[str, Any], name: str = "nees") -> bool:
    """Whether the mean NEES (or NIS) lies within its chi-square 95 % interval."""
    bounds = summary[f"{name}_bounds_95"]
    return bounds is not None and bounds[0] <= summary[f"mean_{name}"] <= bounds[1]
