"""GPS tracks (ROS-free; used by the map builders in ``io``): positions at image stamps interpolated between
fixes (:func:`interpolate_fixes`), and GPS jumps, positions that imply an impossible speed.

:func:`implausible_speed` marks them; :func:`drop_implausible_speed` removes them from a drive and counts them in
the skip counts ``build-db`` prints. For a bag the frames are checked after their positions were interpolated
between fixes: every frame a jumping fix pulled off the route is dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from semloc_ros.io.datasets import Drive

DEFAULT_MAX_SPEED_MPS = 70.0  # 252 km/h: faster than any road vehicle a map is built from
GPS_JUMP_ALLOWANCE_M = 5.0  # GPS noise allowed on top of the distance the speed limit allows


def _great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance on a sphere of the mean Earth radius (0.5 % is plenty for a plausibility check)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


def implausible_speed(stamps_ns: np.ndarray, lat: np.ndarray, lon: np.ndarray, max_speed_mps: float) -> np.ndarray:
    """Boolean mask of the positions that imply moving faster than ``max_speed_mps`` (GPS jumps).

    1. Positions are taken in stamp order; with fewer than two distinct stamps nothing can be judged.
    2. The walk starts at the first position consistent with the next one (a first position that is itself a
       jump is dropped).
    3. Each later position farther from the last kept one than ``max_speed_mps`` x elapsed time +
       :data:`GPS_JUMP_ALLOWANCE_M` is a jump; the last kept position stays the reference, so a one-fix jump
       drops that fix only, and after a long gap (or a stop) the route is picked up again.
    """
    if not (math.isfinite(max_speed_mps) and max_speed_mps > 0):
        raise ValueError(f"max_speed_mps must be finite and > 0, got {max_speed_mps}")
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    jumps = np.zeros(len(stamps), dtype=bool)
    if len(np.unique(stamps)) < 2:  # step 1
        return jumps
    order = np.argsort(stamps, kind="stable").tolist()

    def consistent(i: int, j: int) -> bool:
        allowed = max_speed_mps * abs(int(stamps[j]) - int(stamps[i])) / 1e9 + GPS_JUMP_ALLOWANCE_M
        return _great_circle_m(lat[i], lon[i], lat[j], lon[j]) <= allowed

    start = next((k for k in range(len(order) - 1) if consistent(order[k], order[k + 1])), len(order) - 1)  # 2
    jumps[order[:start]] = True
    kept = order[start]
    for j in order[start + 1 :]:  # step 3
        if consistent(kept, j):
            kept = j
        else:
            jumps[j] = True
    return jumps


def drop_implausible_speed(drive: Drive, max_speed_mps: float) -> Drive:
    """``drive`` without the frames whose position implies a speed above ``max_speed_mps``, counted in
    ``skipped["implausible_speed"]``. Needs valid GPS (``Drive.drop_invalid_gps``)."""
    jumps = implausible_speed(drive.stamps_ns, drive.lat, drive.lon, max_speed_mps)
    skipped = dict(drive.skipped)
    if jumps.any():
        skipped["implausible_speed"] = skipped.get("implausible_speed", 0) + int(jumps.sum())
    frames = [frame for frame, jump in zip(drive.frames, jumps, strict=True) if not jump]
    return dataclasses.replace(drive, frames=frames, skipped=skipped)


def interpolate_fixes(
    image_stamps_ns: np.ndarray,
    fix_stamps_ns: np.ndarray,
    fix_lat: np.ndarray,
    fix_lon: np.ndarray,
    fix_alt: np.ndarray,
    max_gap_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Position of each image by linear interpolation between the bracketing valid fixes.

    An image is matched when a fix exists at or before and at or after its stamp, each within ``max_gap_s``
    of it. Returns ``(lat, lon, alt, reason)``: ``reason`` is 0 for a match, 1 when the image is before the
    first or after the last fix, 2 when a bracketing fix is more than ``max_gap_s`` away. Fixes must be sorted
    by stamp.
    Lat/lon are interpolated in degrees, exact enough over the second-scale gaps allowed here.
    """
    n = len(image_stamps_ns)
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    alt = np.full(n, np.nan)
    reason = np.zeros(n, dtype=np.int8)
    max_gap_ns = max_gap_s * 1e9
    for i, t in enumerate(image_stamps_ns):
        after = int(np.searchsorted(fix_stamps_ns, t, side="left"))  # first fix with stamp >= t
        exact = after < len(fix_stamps_ns) and fix_stamps_ns[after] == t
        before = after if exact else after - 1
        if before < 0 or after >= len(fix_stamps_ns):
            reason[i] = 1
            continue
        t0, t1 = int(fix_stamps_ns[before]), int(fix_stamps_ns[after])
        if t - t0 > max_gap_ns or t1 - t > max_gap_ns:
            reason[i] = 2
            continue
        w = 0.0 if t1 == t0 else (int(t) - t0) / (t1 - t0)
        lat[i] = (1.0 - w) * fix_lat[before] + w * fix_lat[after]
        lon[i] = (1.0 - w) * fix_lon[before] + w * fix_lon[after]
        alt[i] = (1.0 - w) * fix_alt[before] + w * fix_alt[after]
    return lat, lon, alt, reason
