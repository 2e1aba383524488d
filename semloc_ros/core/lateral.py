"""Cross-track offset of a query from its matched database place, measured on their label images.

A query driving a lane beside the mapped one is a few metres across the track from every place it matches: a
bias, not a spread. It shows in the images: the road surface is a plane, so a camera moved sideways by ``d``
sees a ground point ``r - r_h`` rows below the horizon moved sideways by ``d (r - r_h) / h`` pixels (``h``: the
camera height, same units on both axes), while a turned camera (another heading, a database view) moves every
row by the same amount. So, on the label thumbnails (:mod:`semloc_ros.core.reranking`) of the query and of its
best agreeing database match:

1. Rows below the horizon (the lower half of a level camera, :data:`FIRST_ROW_FRACTION`): for every row and
   every horizontal shift up to :data:`MAX_SHIFT_PX`, the pixels that both images code (dynamic classes and
   unknown left out, as in re-ranking) and the pixels that agree. A database view (an entry stored shifted,
   :mod:`semloc_ros.core.views`) has its repeated border columns left out.
2. Shear fit: the row shifts follow ``a + b (r - r_0)`` (``r_0`` the image centre row); the pair ``(a, b)`` on
   the grids :data:`INTERCEPTS_PX` x :data:`SLOPES_PX` that maximises the agreement summed over the rows wins,
   among the pairs that compare at least :data:`MIN_OVERLAP` of the most pixels any pair compares (a pair that
   shifts most of the image out of view would agree on a sliver). ``a`` is the turn (and the view), ``b`` the
   sideways move; a tie keeps the slope nearest 0.
3. Offset ``c = gain x b`` metres, positive to the LEFT of the matched place's database heading. ``gain``
   (``lateral_gain_m``) is fitted by least squares on training maps (:mod:`semloc_ros.evaluation.lateral_fit`):
   about the camera height. Left and right are the map CAMERA's: the map stores the vehicle's heading and its
   camera's yaw relative to it (``GeoDatabase.camera_yaw_deg``), so a rear camera (yaw 180) looks against the
   database heading and the same image shear means the opposite sideways move; one gain serves both mounts.
4. The published position moves by ``c`` along the normal ``(-sin yaw, cos yaw)`` of the camera's heading
   (database heading + camera yaw). What the correction leaves is covered by the covariance model
   (:mod:`semloc_ros.core.uncertainty`), fitted on corrected fixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semloc_ros.core.reranking import ignored_ids
from semloc_ros.core.views import VIEW_SEPARATOR

FIRST_ROW_FRACTION = 0.5
MAX_SHIFT_PX = 60
INTERCEPTS_PX = np.arange(-40, 41)
SLOPES_PX = np.arange(-4.0, 4.0 + 1e-9, 0.125)
MIN_OVERLAP = 0.5


@dataclass(frozen=True)
class LateralShear:
    """Step 2: the fitted slope ``b`` (pixels per row), intercept ``a`` (pixels) and the agreement reached."""

    slope: float
    intercept: float
    agreement: float


def view_shift_px(image_id: str, width: int) -> int:
    """The shift in pixels of a database view entry (0 for the image itself), read from its image id."""
    _, separator, tag = str(image_id).partition(VIEW_SEPARATOR)
    try:
        return round(float(tag) * width) if separator else 0
    except ValueError:
        return 0


def row_agreement(query: np.ndarray, candidate: np.ndarray, view_px: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Step 1: ``(agreeing, compared)`` pixel counts, ``(rows, 2 MAX_SHIFT_PX + 1)``, of the rows below the horizon
    at each shift (positive: the candidate's content moved right)."""
    height, width = query.shape
    rows = np.arange(int(height * FIRST_ROW_FRACTION) + 1, height)
    ignored = ignored_ids()
    q, c = query[rows].astype(np.int64), candidate[rows].astype(np.int64)
    q_valid = ~np.isin(q, ignored)
    c_valid = ~np.isin(c, ignored)
    columns = np.arange(width)
    c_valid[:, (columns < view_px) | (columns >= width + view_px)] = False  # step 1: a view's repeated border
    shifts = np.arange(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1)
    source = columns[np.newaxis, :] - shifts[:, np.newaxis]
    inside = (source >= 0) & (source < width)
    source = np.clip(source, 0, width - 1)
    valid = inside[np.newaxis] & q_valid[:, np.newaxis, :] & c_valid[:, source]
    agree = (c[:, source] == q[:, np.newaxis, :]) & valid
    return agree.sum(axis=2), valid.sum(axis=2)


def fit_shear(query: np.ndarray, candidate: np.ndarray, view_px: int = 0) -> LateralShear:
    """Steps 1-2 for two ``h x w`` label thumbnails of the same shape."""
    query, candidate = np.asarray(query), np.asarray(candidate)
    if query.shape != candidate.shape or query.ndim != 2:
        raise ValueError(f"thumbnails {query.shape} and {candidate.shape} do not match")
    agree, compared = row_agreement(query, candidate, view_px)
    height = query.shape[0]
    below = np.arange(int(height * FIRST_ROW_FRACTION) + 1, height) - (height - 1) / 2.0
    shift = np.rint(INTERCEPTS_PX[np.newaxis, :, np.newaxis] + SLOPES_PX[:, np.newaxis, np.newaxis] * below)
    shift = shift.astype(np.int64)
    usable = np.abs(shift) <= MAX_SHIFT_PX
    column = np.clip(shift + MAX_SHIFT_PX, 0, 2 * MAX_SHIFT_PX)
    row = np.broadcast_to(np.arange(len(below)), column.shape)
    agreeing = np.where(usable, agree[row, column], 0).sum(axis=2)
    total = np.where(usable, compared[row, column], 0).sum(axis=2)
    score = np.where(total >= MIN_OVERLAP * total.max(), agreeing / np.maximum(total, 1), -1.0)
    order = np.argsort(np.abs(SLOPES_PX), kind="stable")  # ties: the slope nearest 0 first
    flat = int(np.argmax(score[order].reshape(-1)))
    i, j = divmod(flat, len(INTERCEPTS_PX))
    return LateralShear(float(SLOPES_PX[order[i]]), float(INTERCEPTS_PX[j]), float(score[order[i], j]))


def lateral_offset_m(slope: float, gain_m: float) -> float:
    """Step 3: the cross-track offset (m, left of the database heading positive) of a shear slope."""
    return gain_m * slope


def heading_normal(yaw: float) -> np.ndarray | None:
    """Step 4: the unit east/north normal (left) of an ENU yaw; None when the heading is unknown."""
    if not math.isfinite(yaw):
        return None
    return np.array([-math.sin(yaw), math.cos(yaw)])
