"""Calibration of the localizer's outputs on held-out data: no-match thresholds and covariance scale.

No-match rejection: a query is *accepted* when its score (best retrieval similarity, or confidence) is at
least a threshold; ``labels`` say which queries are really in the database (positives). Precision =
accepted positives / accepted queries, recall = accepted positives / positives, false-positive rate =
accepted negatives / negatives. :func:`threshold_at_precision` picks the threshold with the largest recall
whose precision reaches a target; it maps to ``LocalizerConfig.min_similarity`` (score = best similarity)
or ``min_confidence`` (score = confidence), which both accept ``score >= threshold``.

Covariance: for a 2-D Gaussian error with covariance ``S``, the squared Mahalanobis distance
``d^2 = e^T S^-1 e`` is chi-square with 2 degrees of freedom, so ``P(d^2 <= k^2) = 1 - exp(-k^2 / 2)``:
39.3 % of the errors lie inside the 1-sigma ellipse (k = 1) and 86.5 % inside the 2-sigma ellipse (k = 2).
:func:`covariance_coverage` measures these fractions; :func:`covariance_scale` finds the single factor ``s``
such that the covariances ``s * S`` put exactly the expected 86.5 % of the errors inside their 2-sigma
ellipses (``s > 1``: the reported covariances were too small); :func:`fit_covariance_model` fits ``s`` and an
added isotropic sigma ``x`` (``s * S + x^2 * I``) to match the coverages from 0.5 to 3 sigma (the isotropic
analysis ``semloc evaluate`` reports; the localizer applies the heading-aligned model of
:mod:`semloc_ros.core.uncertainty`).

Observation temperature: the sequence filter's likelihood ``exp(s / T)`` only means something on the scale
of the descriptor's similarities (a coarse histogram descriptor has every similarity within 0.01 of 1, a
learned one spreads them over 0.5). :func:`fit_temperature` picks the ``T`` that maximises the probability
the likelihood alone (uniform prior) gives to the true places of calibration queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def gaussian_2d_coverage(k: float) -> float:
    """Probability that a 2-D Gaussian sample lies inside its k-sigma ellipse: ``1 - exp(-k^2 / 2)``."""
    return -math.expm1(-0.5 * k * k)


# ------------------------------------------------------------------------------------------ rejection


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Operating points for every distinct score used as threshold (descending; accept ``score >= t``)."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    false_positive_rate: np.ndarray
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class OperatingPoint:
    """Precision, recall and false-positive rate of accepting ``score >= threshold``.

    ``precision`` is NaN when nothing is accepted, ``recall`` / ``false_positive_rate`` when there are no
    positives / negatives.
    """

    threshold: float
    precision: float
    recall: float
    false_positive_rate: float
    n_accepted: int
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold picked for a target precision; ``achieved`` is False when no threshold reaches it
    (then ``threshold`` is +inf: reject everything)."""

    target_precision: float
    achieved: bool
    point: OperatingPoint


def _scores_and_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float scores (NaN -> -inf: never accepted) and boolean labels of equal length."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be booleans (True = the query place is in the database)")
        labels = labels.astype(bool)
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    return np.where(np.isnan(scores), -np.inf, scores), labels


def _ratio(numerator: float | np.ndarray, denominator: float | np.ndarray) -> float | np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.asarray(denominator) > 0, np.asarray(numerator) / np.asarray(denominator), np.nan)


def precision_recall_curve(scores: np.ndarray, labels: np.ndarray) -> PrecisionRecallCurve:
    """Precision, recall and false-positive rate at every distinct finite score as threshold."""
    scores, labels = _scores_and_labels(scores, labels)
    n_positive, n_negative = int(labels.sum()), int((~labels).sum())
    finite = np.isfinite(scores)
    order = np.argsort(-scores[finite], kind="stable")
    ranked_scores, ranked_labels = scores[finite][order], labels[finite][order]
    true_positives = np.cumsum(ranked_labels)
    false_positives = np.cumsum(~ranked_labels)
    # The operating point of threshold t includes every query with score >= t: the last of each tie group.
    last_of_group = np.r_[ranked_scores[1:] != ranked_scores[:-1], True] if len(ranked_scores) else np.zeros(0, bool)
    tp, fp = true_positives[last_of_group], false_positives[last_of_group]
    return PrecisionRecallCurve(
        thresholds=ranked_scores[last_of_group],
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, n_positive),
        false_positive_rate=_ratio(fp, n_negative),
        n_positive=n_positive,
        n_negative=n_negative,
    )


def operating_point(scores: np.ndarray, labels: np.ndarray, threshold: float) -> OperatingPoint:
    """Precision / recall / false-positive rate of accepting ``score >= threshold``."""
    scores, labels = _scores_and_labels(scores, labels)
    accepted = scores >= threshold
    tp, fp = int(np.sum(accepted & labels)), int(np.sum(accepted & ~labels))
    n_positive, n_negative = int(labels.sum()), int((~labels).sum())
    return OperatingPoint(
        threshold=float(threshold),
        precision=float(_ratio(tp, tp + fp)),
        recall=float(_ratio(tp, n_positive)),
        false_positive_rate=float(_ratio(fp, n_negative)),
        n_accepted=tp + fp,
        n_positive=n_positive,
        n_negative=n_negative,
    )


def threshold_at_precision(scores: np.ndarray, labels: np.ndarray, target_precision: float) -> ThresholdChoice:
    """The threshold with the largest recall among those whose precision is at least ``target_precision``.

    Among thresholds of equal recall the highest is taken (fewest false positives).
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision!r}")
    curve = precision_recall_curve(scores, labels)
    good = np.flatnonzero(np.nan_to_num(curve.precision, nan=0.0) >= target_precision)
    if len(good) == 0 or curve.n_positive == 0:
        return ThresholdChoice(target_precision, False, operating_point(scores, labels, math.inf))
    best_recall = curve.recall[good].max()
    chosen = good[curve.recall[good] >= best_recall][0]  # thresholds descend: the first is the highest
    return ThresholdChoice(target_precision, True, operating_point(scores, labels, float(curve.thresholds[chosen])))


# ----------------------------------------------------------------------------------------- covariance


def mahalanobis_squared(errors_en: np.ndarray, covariances_en: np.ndarray) -> np.ndarray:
    """(N,) ``e^T S^-1 e`` of (N, 2) east/north errors and (N, 2, 2) covariances (NaN where undefined)."""
    errors = np.asarray(errors_en, dtype=np.float64)
    covariances = np.asarray(covariances_en, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[1] != 2 or covariances.shape != (len(errors), 2, 2):
        raise ValueError(f"need (N, 2) errors and (N, 2, 2) covariances, got {errors.shape} and {covariances.shape}")
    result = np.full(len(errors), np.nan)
    finite = np.isfinite(errors).all(axis=1) & np.isfinite(covariances).all(axis=(1, 2))
    determinant = covariances[:, 0, 0] * covariances[:, 1, 1] - covariances[:, 0, 1] * covariances[:, 1, 0]
    usable = finite & (determinant > 0) & (covariances[:, 0, 0] > 0)
    e, s = errors[usable], covariances[usable]
    # Inverse of [[a, b], [b, d]] is [[d, -b], [-b, a]] / det.
    result[usable] = (
        e[:, 0] ** 2 * s[:, 1, 1] - e[:, 0] * e[:, 1] * (s[:, 0, 1] + s[:, 1, 0]) + e[:, 1] ** 2 * s[:, 0, 0]
    ) / determinant[usable]
    return result


def covariance_coverage(mahalanobis_sq: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """Fractions of errors inside the 1- and 2-sigma ellipses of ``scale`` x the covariances.

    NaN distances (no estimate or no covariance) are left out and counted in ``n_undefined``. The expected
    fractions for Gaussian errors and a correct covariance are in ``expected_1sigma`` / ``expected_2sigma``.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    values = np.asarray(mahalanobis_sq, dtype=np.float64).reshape(-1)
    defined = values[np.isfinite(values)] / scale
    n = len(defined)
    return {
        "n": n,
        "n_undefined": int(len(values) - n),
        "scale": float(scale),
        "within_1sigma": float(np.mean(defined <= 1.0)) if n else math.nan,
        "within_2sigma": float(np.mean(defined <= 4.0)) if n else math.nan,
        "expected_1sigma": gaussian_2d_coverage(1.0),
        "expected_2sigma": gaussian_2d_coverage(2.0),
    }


def covariance_scale(mahalanobis_sq: np.ndarray, k: float = 2.0) -> float:
    """The factor ``s`` for the covariances so that the fraction of ``d^2 / s <= k^2`` is the Gaussian one.

    ``s`` is the empirical ``1 - exp(-k^2/2)`` quantile of ``d^2`` divided by ``k^2`` (the smallest ``s``
    reaching at least that fraction). NaN when no distance is defined.
    """
    values = np.asarray(mahalanobis_sq, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan
    quantile = float(np.quantile(values, gaussian_2d_coverage(k), method="inverted_cdf"))
    return max(quantile, np.finfo(float).tiny) / (k * k)


def calibrated_covariance(covariances_en: np.ndarray, scale: float, extra_sigma_m: float) -> np.ndarray:
    """``scale * S + extra_sigma_m**2 * I`` of (..., 2, 2) east/north covariances (see :func:`fit_covariance_model`)."""
    covariances = np.asarray(covariances_en, dtype=np.float64)
    return scale * covariances + extra_sigma_m**2 * np.eye(2)


DEFAULT_COVARIANCE_SCALES = tuple(float(s) for s in np.geomspace(0.05, 20.0, 53))
DEFAULT_EXTRA_SIGMAS_M = tuple(float(x) for x in np.arange(0.0, 8.01, 0.25))
COVARIANCE_FIT_SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def fit_covariance_model(
    errors_en: np.ndarray,
    covariances_en: np.ndarray,
    scales: Sequence[float] = DEFAULT_COVARIANCE_SCALES,
    extra_sigmas_m: Sequence[float] = DEFAULT_EXTRA_SIGMAS_M,
) -> dict[str, float]:
    """Scale ``s`` and added isotropic sigma ``x`` of ``S' = s * S + x^2 * I`` whose coverages of the (N, 2)
    errors at 0.5, 1, 1.5, 2, 2.5 and 3 sigma are closest to the Gaussian ones (sum of squared differences: the
    whole distribution of ``d^2``, as two coverages alone leave a family of equally good pairs; on ties the
    smaller ``x``, then ``s`` nearer 1).

    ``x`` models an error the localizer's covariance does not see and that does not shrink with confidence: the
    camera a lane (3.5 m) beside the mapped one, the database's own pose error. A scale alone cannot give both
    coverages when errors sit at a near-constant offset (all at ~1.5 sigma: 1-sigma coverage ~0, 2-sigma ~1).
    """
    errors = np.asarray(errors_en, dtype=np.float64)
    covariances = np.asarray(covariances_en, dtype=np.float64)
    usable = np.isfinite(errors).all(axis=1) & np.isfinite(covariances).all(axis=(1, 2))
    errors, covariances = errors[usable], covariances[usable]
    if not len(errors):
        return {"scale": math.nan, "extra_sigma_m": math.nan, "n": 0, "loss": math.nan}
    levels = np.array(COVARIANCE_FIT_SIGMAS) ** 2
    target = np.array([gaussian_2d_coverage(k) for k in COVARIANCE_FIT_SIGMAS])
    best: tuple[tuple[float, float, float], float, float] | None = None
    for extra in extra_sigmas_m:
        for scale in scales:
            d2 = mahalanobis_squared(errors, calibrated_covariance(covariances, scale, extra))
            coverage = np.mean(d2[:, np.newaxis] <= levels, axis=0)
            key = (float(np.sum((coverage - target) ** 2)), float(extra), abs(math.log(scale)))
            if best is None or key < best[0]:
                best = (key, float(scale), float(extra))
    assert best is not None
    return {"scale": best[1], "extra_sigma_m": best[2], "n": len(errors), "loss": best[0][0]}


# ----------------------------------------------------------------------------------------- temperature

DEFAULT_TEMPERATURES = tuple(float(t) for t in np.geomspace(1e-4, 1.0, 81))


def temperature_log_likelihood(
    similarities: np.ndarray,
    indices: np.ndarray,
    positives: list[np.ndarray],
    n_places: int,
    temperature: float,
) -> float:
    """Mean log probability of the true places under the sequence filter's observation model.

    Per query (rows of ``similarities``/``indices``, the top-K retrieval, descending): a retrieved place has
    weight ``exp((s - s_1) / T)``, each of the ``n_places - K`` others the floor ``exp((s_K - s_1) / T)``;
    the probability of the query's ``positives`` (database indices near its true position) is their share
    of the total weight. Queries without positives are skipped (NaN if none is left).
    """
    values = []
    for row_similarities, row_indices, row_positives in zip(similarities, indices, positives, strict=True):
        found = row_indices >= 0
        sims, idx = np.asarray(row_similarities, float)[found], np.asarray(row_indices)[found]
        if not len(row_positives) or not len(idx):
            continue
        weights = np.exp((sims - sims[0]) / temperature)
        floor = float(np.exp((sims[-1] - sims[0]) / temperature)) if len(idx) < n_places else 0.0
        retrieved = np.isin(idx, row_positives)
        n_unretrieved_positives = len(row_positives) - int(retrieved.sum())
        numerator = weights[retrieved].sum() + n_unretrieved_positives * floor
        denominator = weights.sum() + (n_places - len(idx)) * floor
        values.append(math.log(max(numerator / denominator, 1e-300)))
    return float(np.mean(values)) if values else math.nan


def fit_temperature(
    similarities: np.ndarray,
    indices: np.ndarray,
    positives: list[np.ndarray],
    n_places: int,
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
) -> float:
    """The temperature (from ``temperatures``) with the largest :func:`temperature_log_likelihood`."""
    scores = [temperature_log_likelihood(similarities, indices, positives, n_places, t) for t in temperatures]
    if all(math.isnan(v) for v in scores):
        raise ValueError("no calibration query has a positive: cannot fit the temperature")
    return float(temperatures[int(np.nanargmax(scores))])
