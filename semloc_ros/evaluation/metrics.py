"""Retrieval, localization and segmentation metrics: Recall@N, Top-1 Recall@D, position error
statistics, confusion matrices and IoU.

Rates are percentages (0-100), as in the VPR literature. A query is a positive match for a database entry
when they are at most ``threshold_m`` apart (horizontal distance in a local metric frame). Queries without any
database entry within the threshold can never be correct: they are counted (``n_queries_without_positive``)
and recall is reported both over all queries and over the queries that have a positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from semloc_ros.core.calibration import covariance_coverage, mahalanobis_squared
from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import FixStatus, PositionEstimate
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m

DEFAULT_NS = (1, 5, 10, 20)


DEFAULT_DISTANCES_M = tuple(range(5, 105, 5))


DEFAULT_THRESHOLD_M = 25.0


DEFAULT_TARGET_PRECISION = 0.99


DEFAULT_NEGATIVE_MIN_ROUTE_M = 200.0




_RANGE_MARGIN_M = 0.01  # candidates from FAISS (float32) are re-checked exactly in float64


def method_label(method: str, oracle: bool) -> str:
    """Name of a method in every output: ``semantic`` or ``semantic-oracle`` (ground-truth labels)."""
    return f"{method}-oracle" if oracle else method


def positives_within(
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    db_lat: np.ndarray,
    db_lon: np.ndarray,
    threshold_m: float,
) -> list[np.ndarray]:
    """For each query, the database indices within ``threshold_m`` metres, sorted by distance.

    Both sets are projected into one local ENU frame (horizontal error far below a millimetre per metre over
    tens of kilometres) and searched with a FAISS range search, then re-checked in float64 (inclusive bound).
    """
    query_lat, query_lon = np.asarray(query_lat, float), np.asarray(query_lon, float)
    db_lat, db_lon = np.asarray(db_lat, float), np.asarray(db_lon, float)
    if len(db_lat) == 0 or len(query_lat) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(query_lat))]
    frame = LocalENU.centred_on(np.concatenate([db_lat, query_lat]), np.concatenate([db_lon, query_lon]))
    db_e, db_n, _ = frame.to_enu(db_lat, db_lon)
    q_e, q_n, _ = frame.to_enu(query_lat, query_lon)
    db_xy = np.column_stack([db_e, db_n]).astype(np.float64)
    q_xy = np.column_stack([q_e, q_n]).astype(np.float64)

    index = faiss.IndexFlatL2(2)
    index.add(db_xy.astype(np.float32))
    radius = (threshold_m + _RANGE_MARGIN_M) ** 2
    lims, _, candidates = index.range_search(q_xy.astype(np.float32), radius)

    positives = []
    for q in range(len(q_xy)):
        found = candidates[lims[q] : lims[q + 1]].astype(np.int64)
        distances = np.hypot(*(db_xy[found] - q_xy[q]).T)
        keep = distances <= threshold_m
        order = np.argsort(distances[keep], kind="stable")
        positives.append(found[keep][order])
    return positives


def recall_at_n(
    retrieved_indices: np.ndarray,
    positives_per_query: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
) -> dict[int, float]:
    """Percentage of queries with at least one positive among their top-N retrieved entries, for each N.

    ``retrieved_indices`` is (Q, K), best first (-1 = nothing retrieved); with K < N the top-N is the top-K.
    """
    retrieved_indices = np.asarray(retrieved_indices)
    if len(retrieved_indices) != len(positives_per_query):
        raise ValueError(f"{len(retrieved_indices)} retrieval rows but {len(positives_per_query)} positive lists")
    ns = sorted(ns)
    if not len(retrieved_indices):
        return {n: math.nan for n in ns}
    correct_at = np.zeros(len(ns))
    for query_index, predictions in enumerate(retrieved_indices):
        for i, n in enumerate(ns):
            if np.any(np.isin(predictions[:n], positives_per_query[query_index])):
                correct_at[i:] += 1
                break
    recalls = correct_at / len(retrieved_indices) * 100
    return {n: float(r) for n, r in zip(ns, recalls, strict=True)}


def recall_report(
    retrieved_indices: np.ndarray,
    positives_per_query: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
) -> dict[str, Any]:
    """Recall@N over all queries and over the queries that have a positive, with the counts of both."""
    retrieved_indices = np.asarray(retrieved_indices)
    has_positive = np.array([len(p) > 0 for p in positives_per_query], dtype=bool)
    with_positive = [p for p in positives_per_query if len(p)]
    return {
        "n_queries": len(positives_per_query),
        "n_queries_without_positive": int(np.sum(~has_positive)),
        "recall_at_n_all_queries": recall_at_n(retrieved_indices, positives_per_query, ns),
        "recall_at_n_queries_with_positive": recall_at_n(retrieved_indices[has_positive], with_positive, ns),
    }


def top1_recall_at_distances(
    top1_error_m: np.ndarray, distances: Sequence[float] = DEFAULT_DISTANCES_M
) -> dict[float, float]:
    """Percentage of queries whose top-1 retrieved entry is at most D metres away, per D (NaN = wrong)."""
    errors = np.asarray(top1_error_m, dtype=float)
    if not len(errors):
        return {d: math.nan for d in distances}
    finite = np.isfinite(errors)
    return {d: float(np.sum(finite & (errors <= d)) / len(errors) * 100) for d in distances}


def position_error_stats(errors_m: np.ndarray) -> dict[str, float]:
    """Median / p95 / mean over queries with an estimate; ``within_Xm`` (percent) over all queries.

    NaN errors mean "no estimate" (NO_MATCH): counted in ``n_no_estimate`` and never within any distance.
    """
    errors = np.asarray(errors_m, dtype=float)
    finite = errors[np.isfinite(errors)]
    n = len(errors)
    stats = {
        "n": n,
        "n_no_estimate": int(n - len(finite)),
        "median": float(np.median(finite)) if len(finite) else math.nan,
        "p95": float(np.percentile(finite, 95)) if len(finite) else math.nan,
        "mean": float(np.mean(finite)) if len(finite) else math.nan,
    }
    for d in (2, 5, 10):
        stats[f"within_{d}m"] = float(np.sum(finite <= d) / n * 100) if n else math.nan
    return stats


def nan_to_none(values: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def float_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def confusion_matrix(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) pixel counts, rows = ground truth, columns = prediction."""
    truth = np.asarray(truth, dtype=np.int64).ravel()
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"label images differ in size: {truth.shape} vs {predicted.shape}")
    valid = (truth >= 0) & (truth < num_classes) & (predicted >= 0) & (predicted < num_classes)
    flat = truth[valid] * num_classes + predicted[valid]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy and IoU per class; mIoU averages the classes present in the ground truth (percent)."""
    true_positive = np.diag(confusion).astype(np.float64)
    in_truth = confusion.sum(axis=1).astype(np.float64)
    in_prediction = confusion.sum(axis=0).astype(np.float64)
    union = in_truth + in_prediction - true_positive
    present = in_truth > 0
    iou = np.divide(true_positive, union, out=np.zeros_like(true_positive), where=union > 0)
    total = confusion.sum()
    return {
        "pixel_accuracy": float(100.0 * true_positive.sum() / total) if total else float("nan"),
        "mean_iou": float(100.0 * iou[present].mean()) if present.any() else float("nan"),
        "iou_per_class": {class_names[c]: float(100.0 * iou[c]) for c in np.flatnonzero(present)},
    }


def localization_metrics(
    estimates: Sequence[PositionEstimate],
    database: GeoDatabase,
    query_lat: np.ndarray,
    query_lon: np.ndarray,
    threshold_m: float = DEFAULT_THRESHOLD_M,
) -> dict[str, Any]:
    """Recall@1 (estimate within ``threshold_m``, percent of all queries), errors, covariance coverage.

    The per-query squared Mahalanobis distance of the east/north error (estimate minus truth, in the
    database ENU frame) under the estimate's covariance is kept (``mahalanobis_sq``) for calibration.
    NO_MATCH estimates (no position) count as failures and have no error or distance.
    """
    est_lat = np.array([e.lat for e in estimates], dtype=float)
    est_lon = np.array([e.lon for e in estimates], dtype=float)
    statuses = [e.status for e in estimates]
    has_estimate = np.isfinite(est_lat) & np.isfinite(est_lon)
    has_estimate &= np.array([s is not FixStatus.NO_MATCH for s in statuses], dtype=bool)
    error = np.full(len(estimates), np.nan)
    error[has_estimate] = geodesic_distance_m(
        query_lat[has_estimate], query_lon[has_estimate], est_lat[has_estimate], est_lon[has_estimate]
    )
    is_fix = np.array([s is FixStatus.FIX for s in statuses], dtype=bool)

    distances = np.full(len(estimates), np.nan)
    errors_en = np.full((len(estimates), 2), np.nan)
    covariances = np.full((len(estimates), 2, 2), np.nan)
    if has_estimate.any():
        frame = database.frame
        true_east, true_north, _ = frame.to_enu(query_lat[has_estimate], query_lon[has_estimate])
        chosen = [e for e, keep in zip(estimates, has_estimate, strict=True) if keep]
        errors_en[has_estimate] = np.column_stack(
            [[e.east for e in chosen] - np.asarray(true_east), [e.north for e in chosen] - np.asarray(true_north)]
        )
        covariances[has_estimate] = np.array([np.asarray(e.covariance_enu)[:2, :2] for e in chosen])
        distances[has_estimate] = mahalanobis_squared(errors_en[has_estimate], covariances[has_estimate])
    within = np.isfinite(error) & (error <= threshold_m)
    return {
        "localization_recall_at_1": float(np.mean(within) * 100) if len(error) else math.nan,
        "localization_error_m": position_error_stats(error),
        "localization_error_m_fix_only": position_error_stats(error[is_fix]),
        "covariance_coverage": covariance_coverage(distances),
        "status_counts": {s.value: sum(1 for x in statuses if x == s) for s in FixStatus},
        "per_query": {
            "estimate_lat": nan_to_none(np.where(has_estimate, est_lat, np.nan)),
            "estimate_lon": nan_to_none(np.where(has_estimate, est_lon, np.nan)),
            "error_m": nan_to_none(error),
            "confidence": [float(e.confidence) for e in estimates],
            "status": [s.value for s in statuses],
            "mahalanobis_sq": nan_to_none(distances),
            "error_east_m": nan_to_none(errors_en[:, 0]),
            "error_north_m": nan_to_none(errors_en[:, 1]),
            "covariance_en_m2": [  # [ee, en, nn] of the reported east/north covariance
                None if not np.isfinite(c).all() else [float(c[0, 0]), float(c[0, 1]), float(c[1, 1])]
                for c in covariances
            ],
        },
    }
