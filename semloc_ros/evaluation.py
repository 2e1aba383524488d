"""Retrieval and localization metrics: Recall@N, Top-1 Recall@D and position error statistics.

Rates are percentages (0-100), as in the VPR literature. A query is a positive match for a database entry
when they are at most ``threshold_m`` apart (horizontal distance in a local metric frame). Queries without any
database entry within the threshold can never be correct: they are counted (``n_queries_without_positive``)
and recall is reported both over all queries and over the queries that have a positive.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from semloc_ros.database import GeoDatabase, PlaceRecord
from semloc_ros.datasets import Drive, Frame, load_label_images, load_rgbs
from semloc_ros.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.localizer import FixStatus, Localizer, LocalizerConfig

DEFAULT_NS = (1, 5, 10, 20)
DEFAULT_DISTANCES_M = tuple(range(5, 105, 5))
DEFAULT_THRESHOLD_M = 25.0
_RANGE_MARGIN_M = 0.01  # candidates from FAISS (float32) are re-checked exactly in float64


def method_label(method: str, oracle: bool) -> str:
    """Name of a method in every output: ``semantic`` or ``semantic-oracle`` (ground-truth labels)."""
    return f"{method}-oracle" if oracle else method


# --------------------------------------------------------------------------------------------- metrics


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


# ----------------------------------------------------------------------------------------- descriptors


def place_records(frames: Sequence[Frame]) -> list[PlaceRecord]:
    """Database metadata of frames."""
    return [
        PlaceRecord(lat=f.lat, lon=f.lon, alt=f.alt, heading=f.heading, stamp_ns=f.stamp_ns, image_id=f.image_id)
        for f in frames
    ]


def describe_drive_frames(
    pipeline,
    frames: Sequence[Frame],
    oracle: bool = False,
    batch_size: int = 16,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "describe",
) -> np.ndarray:
    """(N, D) descriptors of frames, reading only ``chunk_size`` images at a time.

    Labels come from the pipeline's segmenter on the RGB, or with ``oracle`` from the frames' ground truth.
    """
    from tqdm import tqdm

    descriptors = np.zeros((len(frames), pipeline.dimension), dtype=np.float32)
    with tqdm(total=len(frames), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            rgbs = load_rgbs(chunk)
            labels = load_label_images(chunk) if oracle else None
            descriptors[start : start + len(chunk)] = pipeline.describe_frames(
                rgbs, labels=labels, batch_size=batch_size
            )
            bar.update(len(chunk))
    return descriptors


def build_database(
    pipeline,
    drive: Drive,
    oracle: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    database: GeoDatabase | None = None,
) -> GeoDatabase:
    """Describe every frame of ``drive`` and add it to ``database`` (a new one for the pipeline if None)."""
    if database is None:
        database = GeoDatabase(pipeline.dimension, pipeline.model_id)
    descriptors = describe_drive_frames(
        pipeline,
        drive.frames,
        oracle=oracle,
        batch_size=batch_size,
        progress=progress,
        desc=f"db {drive.name}",
    )
    database.add(descriptors, place_records(drive.frames))
    return database


def cache_key(pipeline, oracle: bool) -> str:
    """What a database's descriptors depend on: the descriptor model id, plus the segmenter's unless oracle.

    ``pipeline.model_id`` names the descriptor only, so a retrained segmenter must change the key too.
    """
    key = pipeline.model_id
    segmenter = getattr(pipeline, "segmenter", None)
    if getattr(pipeline, "needs_labels", False) and segmenter is not None and not oracle:
        key += f"|segmenter:{segmenter.model_id}"
    return key


def cache_name(method: str, oracle: bool, drive: Drive, pipeline) -> str:
    """File name of a cached database: method, oracle flag, drive, size and a digest of :func:`cache_key`."""
    digest = hashlib.sha1(cache_key(pipeline, oracle).encode("utf-8")).hexdigest()[:12]
    return f"{method_label(method, oracle)}_{drive.name}_{len(drive)}_{digest}.semdb"


# ------------------------------------------------------------------------------------------ evaluation


def _nan_to_none(values: np.ndarray) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def evaluate_query_descriptors(
    database: GeoDatabase,
    query_drive: Drive,
    query_descriptors: np.ndarray,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    ns: Sequence[int] = DEFAULT_NS,
    distances: Sequence[float] = DEFAULT_DISTANCES_M,
    localizer_config: LocalizerConfig | None = None,
) -> dict[str, Any]:
    """Metrics of one query drive whose descriptors are already computed (JSON-ready dict)."""
    q_lat, q_lon = query_drive.lat, query_drive.lon
    _, retrieved = database.search(query_descriptors, max(ns))
    positives = positives_within(q_lat, q_lon, database.lat, database.lon, threshold_m)
    recalls = recall_report(retrieved, positives, ns)

    top1 = retrieved[:, 0]
    top1_error = np.full(len(top1), np.nan)
    found = top1 >= 0
    top1_error[found] = geodesic_distance_m(
        q_lat[found], q_lon[found], database.lat[top1[found]], database.lon[top1[found]]
    )

    estimates = Localizer(database, localizer_config).localize_batch(query_descriptors)
    est_lat = np.array([e.lat for e in estimates], dtype=float)
    est_lon = np.array([e.lon for e in estimates], dtype=float)
    statuses = [e.status for e in estimates]
    error = np.full(len(estimates), np.nan)
    has_estimate = np.isfinite(est_lat) & np.isfinite(est_lon)
    error[has_estimate] = geodesic_distance_m(
        q_lat[has_estimate], q_lon[has_estimate], est_lat[has_estimate], est_lon[has_estimate]
    )
    is_fix = np.array([s == FixStatus.FIX for s in statuses], dtype=bool)

    return {
        "query_drive": query_drive.name,
        "condition": query_drive.condition,
        "threshold_m": threshold_m,
        "n_database": len(database),
        "n_queries": recalls["n_queries"],
        "n_queries_without_positive": recalls["n_queries_without_positive"],
        "recall_at_n_all_queries": {str(n): r for n, r in recalls["recall_at_n_all_queries"].items()},
        "recall_at_n_queries_with_positive": {
            str(n): r for n, r in recalls["recall_at_n_queries_with_positive"].items()
        },
        "top1_recall_at_distance_m": {str(d): r for d, r in top1_recall_at_distances(top1_error, distances).items()},
        "top1_error_m": position_error_stats(top1_error),
        "localization_error_m": position_error_stats(error),
        "localization_error_m_fix_only": position_error_stats(error[is_fix]),
        "status_counts": {s.value: sum(1 for x in statuses if x == s) for s in FixStatus},
        "skipped_frames": dict(query_drive.skipped),
        "per_query": {
            "image_id": [f.image_id for f in query_drive.frames],
            "lat": q_lat.tolist(),
            "lon": q_lon.tolist(),
            "has_positive": [bool(len(p)) for p in positives],
            "top1_index": top1.astype(int).tolist(),
            "top1_error_m": _nan_to_none(top1_error),
            "estimate_lat": _nan_to_none(est_lat),
            "estimate_lon": _nan_to_none(est_lon),
            "error_m": _nan_to_none(error),
            "confidence": [float(e.confidence) for e in estimates],
            "status": [s.value for s in statuses],
        },
    }


def evaluate_method(
    pipeline,
    database_drive: Drive,
    query_drives: Sequence[Drive],
    method: str = "",
    oracle: bool = False,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    ns: Sequence[int] = DEFAULT_NS,
    distances: Sequence[float] = DEFAULT_DISTANCES_M,
    database: GeoDatabase | None = None,
    localizer_config: LocalizerConfig | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Results per query drive name for one method.

    The database is built from ``database_drive`` unless given. Query labels come from the segmenter on the
    query RGB; with ``oracle`` both database and queries use the ground-truth labels (perfect segmentation),
    and every result is named ``<method>-oracle``.
    """
    if database is None:
        database = build_database(pipeline, database_drive, oracle=oracle, batch_size=batch_size, progress=progress)
    label = method_label(method or getattr(pipeline, "method", "method"), oracle)
    results = {}
    for drive in query_drives:
        valid = drive.drop_invalid_gps()
        descriptors = describe_drive_frames(
            pipeline,
            valid.frames,
            oracle=oracle,
            batch_size=batch_size,
            progress=progress,
            desc=f"{label} {drive.name}",
        )
        result = evaluate_query_descriptors(database, valid, descriptors, threshold_m, ns, distances, localizer_config)
        results[drive.name] = {
            "method": label,
            "oracle": oracle,
            "model_id": pipeline.model_id,
            "database_drive": database_drive.name,
            **result,
        }
    return results
