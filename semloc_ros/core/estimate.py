"""A position estimate and the maths shared by the single-frame localizer and the sequence filter.

Both end the same way: a set of places (the localizer's consensus inliers, the filter's places near its MAP
place), each with a weight (softmax weight, posterior belief), and a confidence ``c`` become an estimate:

1. Weights normalised to sum 1; position = the weighted mean east/north, converted back to latitude/longitude.
2. Altitude (and the ENU up used for the conversion) = the weighted mean of the places' known values (NaN if
   none is known).
3. East/north covariance = the weighted spread of the places plus ``position_sigma_floor_m**2``, divided by
   ``max(c, 0.01)`` (a less confident estimate gets a proportionally wider uncertainty, at most 100 times);
   up gets ``altitude_sigma_m**2``, uncorrelated with east/north.
4. Track direction: the weighted axis of the places' known database headings
   (:func:`semloc_ros.core.uncertainty.track_direction`; None without headings), the frame of the
   heading-aligned covariance model.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.uncertainty import track_direction

MIN_CONFIDENCE_FOR_INFLATION = 0.01


class FixStatus(enum.Enum):
    """Whether a position estimate should be used."""

    FIX = "fix"
    LOW_CONFIDENCE = "low_confidence"
    NO_MATCH = "no_match"


@dataclass
class Match:
    """One retrieved database entry: its similarity, place, softmax weight and consensus membership."""

    index: int
    similarity: float
    lat: float
    lon: float
    alt: float
    east: float
    north: float
    weight: float
    inlier: bool
    alignment: float = math.nan  # label-image agreement when re-ranked (semloc_ros.core.reranking), else NaN


@dataclass(frozen=True)
class LateralCorrection:
    """A cross-track correction (:mod:`semloc_ros.core.lateral`): the measured shear slope, the unit east/north
    normal (left) of the matched place's heading and the offset along it in metres."""

    slope: float
    normal: np.ndarray
    offset_m: float

    @property
    def shift_en(self) -> np.ndarray:
        return self.offset_m * np.asarray(self.normal, dtype=np.float64)


@dataclass
class PositionEstimate:
    """A WGS84 position (east/north in the database ENU frame) with ENU covariance in m^2."""

    lat: float
    lon: float
    alt: float
    east: float
    north: float
    covariance_enu: np.ndarray
    confidence: float
    status: FixStatus
    matches: list[Match] = field(default_factory=list)
    base_covariance_en: np.ndarray | None = None  # (2, 2) before the covariance model (localizer step 6)
    direction: np.ndarray | None = None  # unit east/north track axis of the estimate's places, None if unknown
    cues: dict[str, float] = field(default_factory=dict)  # integrity cues (localizer step 8)
    integrity: float = math.nan
    lateral: LateralCorrection | None = None  # the cross-track correction applied (localizer step 6b)
    warming_up: bool = False  # not a FIX only because the sequence filter warms up (sequence_filter step 8)


@dataclass(frozen=True)
class EstimateSettings:
    """How places become an estimate: the cluster radius and the uncertainty floors (module docstring)."""

    radius_m: float = 25.0
    position_sigma_floor_m: float = 3.0
    altitude_sigma_m: float = 10.0
    min_confidence: float = 0.3


def weighted_mean_of_known(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean over the finite values (NaN if there is none)."""
    known = np.isfinite(values)
    if not known.any():
        return math.nan
    return float(weights[known] @ values[known] / weights[known].sum())


def cluster_estimate(
    frame: LocalENU,
    enu: np.ndarray,
    altitudes: np.ndarray,
    weights: np.ndarray,
    confidence: float,
    status: FixStatus,
    settings: EstimateSettings,
    headings: np.ndarray | None = None,
) -> PositionEstimate:
    """Steps 1-4 of the module docstring for places at (M, 3) ``enu`` with (M,) ``altitudes``, ``weights`` and
    database ``headings`` (None: no direction)."""
    weights = weights / weights.sum()  # step 1
    east_north = enu[:, :2]
    centre = weights @ east_north
    offsets = east_north - centre
    spread = (weights[:, np.newaxis] * offsets).T @ offsets

    covariance = np.zeros((3, 3))  # step 3
    covariance[:2, :2] = (spread + settings.position_sigma_floor_m**2 * np.eye(2)) / max(
        confidence, MIN_CONFIDENCE_FOR_INFLATION
    )
    covariance[:2, :2] = 0.5 * (covariance[:2, :2] + covariance[:2, :2].T)
    covariance[2, 2] = settings.altitude_sigma_m**2

    alt = weighted_mean_of_known(altitudes, weights)  # step 2
    up = weighted_mean_of_known(enu[:, 2], weights)
    lat, lon, _ = frame.to_geodetic(float(centre[0]), float(centre[1]), up)  # NaN up: origin altitude
    return PositionEstimate(
        lat=float(lat),
        lon=float(lon),
        alt=alt,
        east=float(centre[0]),
        north=float(centre[1]),
        covariance_enu=covariance,
        confidence=float(confidence),
        status=status,
        direction=None if headings is None else track_direction(headings, weights),  # step 4
    )


def empty_estimate() -> PositionEstimate:
    """NO_MATCH without any retrieved entry (an approximate index found nothing)."""
    return PositionEstimate(
        lat=math.nan,
        lon=math.nan,
        alt=math.nan,
        east=math.nan,
        north=math.nan,
        covariance_enu=np.full((3, 3), math.nan),
        confidence=0.0,
        status=FixStatus.NO_MATCH,
        matches=[],
    )


def laterally_moved(estimate: PositionEstimate, lateral: LateralCorrection | None,
                    frame: LocalENU) -> PositionEstimate:
    """The estimate moved by a cross-track correction (localizer step 6b; None or no position: unchanged)."""
    if lateral is None or not (math.isfinite(estimate.east) and math.isfinite(estimate.north)):
        return estimate
    shift = lateral.shift_en
    estimate.east += float(shift[0])
    estimate.north += float(shift[1])
    estimate.lat, estimate.lon, _ = (float(v) for v in frame.to_geodetic(estimate.east, estimate.north))
    estimate.lateral = lateral
    return estimate


def softmax(logits: np.ndarray) -> np.ndarray:
    """Weights of the logits (summing to 1)."""
    exponentials = np.exp(logits - logits.max())
    return exponentials / exponentials.sum()


def consensus(east_north: np.ndarray, weights: np.ndarray, radius_m: float) -> np.ndarray:
    """Inlier mask: the matches within ``radius_m`` of the seed whose neighbours weigh the most."""
    differences = east_north[:, np.newaxis, :] - east_north[np.newaxis, :, :]
    neighbours = np.hypot(differences[..., 0], differences[..., 1]) <= radius_m
    support = neighbours @ weights
    seed = int(np.argmax(support))
    return neighbours[seed]
