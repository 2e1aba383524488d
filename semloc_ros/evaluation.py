"""Retrieval and localization metrics: Recall@N, Top-1 Recall@D and position error statistics.

Rates are percentages (0-100), as in the VPR literature. A query is a positive match for a database entry
when they are at most ``threshold_m`` apart (horizontal distance in a local metric frame). Queries without any
database entry within the threshold can never be correct: they are counted (``n_queries_without_positive``)
and recall is reported both over all queries and over the queries that have a positive.

Localization (the :class:`Localizer`'s estimate, not the top-1 entry) is scored single-frame and, with
``LocalizerConfig.sequence_filter``, through the sequence filter over each query drive in stamp order
(``filtered``): Recall@1 = percentage of queries whose estimate is within ``threshold_m``, error statistics,
and the coverage of the reported covariances (errors inside the 1- and 2-sigma ellipses).
No-match rejection and calibration (:func:`calibrate_method`): out-of-database frames (:func:`rejection_scores`)
are negatives, query frames with a database positive are positives; thresholds and the covariance model are
fitted on one query drive plus part of the negatives (one map's drives, or the first half of each drive) and
reported on the other query drives and the other negatives (:func:`split_negatives`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from semloc_ros.calibration import (
    calibrated_covariance,
    covariance_coverage,
    covariance_scale,
    fit_covariance_model,
    fit_temperature,
    mahalanobis_squared,
    operating_point,
    precision_recall_curve,
    threshold_at_precision,
)
from semloc_ros.database import GeoDatabase, PlaceRecord
from semloc_ros.datasets import Drive, Frame, load_label_images, load_rgbs
from semloc_ros.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.labels import SEMLOC_SIM
from semloc_ros.localizer import FixStatus, Localizer, LocalizerConfig, PositionEstimate
from semloc_ros.reranking import THUMBNAIL_SHAPE, label_thumbnail, rerank, shift_view

DEFAULT_NS = (1, 5, 10, 20)
DEFAULT_DISTANCES_M = tuple(range(5, 105, 5))
DEFAULT_THRESHOLD_M = 25.0
DEFAULT_TARGET_PRECISION = 0.99
DEFAULT_NEGATIVE_MIN_ROUTE_M = 200.0
_MAX_CURVE_POINTS = 200
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


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else math.nan


def place_records(frames: Sequence[Frame]) -> list[PlaceRecord]:
    """Database metadata of frames; an infinite altitude or heading is stored as unknown (NaN)."""
    return [
        PlaceRecord(
            lat=f.lat,
            lon=f.lon,
            alt=_finite_or_nan(f.alt),
            heading=_finite_or_nan(f.heading),
            stamp_ns=f.stamp_ns,
            image_id=f.image_id,
        )
        for f in frames
    ]


class PredictedLabels:
    """Segmenter outputs kept per (segmenter model id, image file), so methods sharing a segmenter (semantic,
    hybrid, label-histogram, masked variants) segment each frame once per run. Only frames read from image files
    are kept (in-memory and bag frames have no stable key); least recently used entries go beyond ``max_items``
    (a 320x240 label image is 77 KB)."""

    def __init__(self, max_items: int = 20000):
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def labels(self, segmenter, frames: Sequence[Frame], rgbs: Sequence[np.ndarray], batch_size: int) -> list:
        """Labels of ``frames`` (their ``rgbs`` loaded), segmenting only those not kept yet."""
        keys = [
            (segmenter.model_id, str(f.rgb_path)) if f.rgb_path is not None and f.rgb is None else None
            for f in frames
        ]
        missing = [i for i, key in enumerate(keys) if key is None or key not in self._items]
        fresh: dict[int, np.ndarray] = {}
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            images = [np.asarray(rgbs[i]) for i in batch]
            if all(im.shape == images[0].shape for im in images):
                predicted = list(segmenter.predict_batch(np.stack(images)))
            else:
                predicted = [segmenter.predict(im) for im in images]
            for i, label in zip(batch, predicted, strict=True):
                fresh[i] = label
                if keys[i] is not None:
                    self._items[keys[i]] = label
        out = []
        for i, key in enumerate(keys):
            if i in fresh:
                out.append(fresh[i])
            else:
                self._items.move_to_end(key)
                out.append(self._items[key])
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return out


PREDICTED_LABELS = PredictedLabels()


def describe_drive_frames(
    pipeline,
    frames: Sequence[Frame],
    oracle: bool = False,
    batch_size: int = 16,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str = "describe",
    label_cache: PredictedLabels | None = PREDICTED_LABELS,
    shift: float = 0.0,
    thumbnails_out: np.ndarray | None = None,
) -> np.ndarray:
    """(N, D) descriptors of frames, reading only ``chunk_size`` images at a time.

    Labels come from the pipeline's segmenter on the RGB (through ``label_cache`` unless None), or with
    ``oracle`` from the frames' ground truth. ``thumbnails_out``: an (N, h, w) ``uint8`` array (label methods)
    that receives the label thumbnails of the frames as described (:mod:`semloc_ros.reranking`).
    """
    from tqdm import tqdm

    segmenter = getattr(pipeline, "segmenter", None)
    cached = label_cache is not None and not oracle and getattr(pipeline, "needs_labels", False) \
        and segmenter is not None
    descriptors = np.zeros((len(frames), pipeline.dimension), dtype=np.float32)
    with tqdm(total=len(frames), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            rgbs = load_rgbs(chunk)
            labels = load_label_images(chunk) if oracle else None
            if cached:
                labels = label_cache.labels(segmenter, chunk, rgbs, batch_size)
            if thumbnails_out is not None:
                if labels is None:
                    labels = [pipeline.segment(rgb) for rgb in rgbs]
                thumbnails_out[start : start + len(chunk)] = [
                    label_thumbnail(shift_view(np.asarray(lab)[None], shift)[0], thumbnails_out.shape[1:])
                    for lab in labels
                ]
            views = {"shift": shift} if shift else {}  # only pipelines that support views get asked for one
            descriptors[start : start + len(chunk)] = pipeline.describe_frames(
                rgbs, labels=labels, batch_size=batch_size, **views
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
    views: Sequence[float] = (0.0,),
    thumbnails: bool | None = None,
) -> GeoDatabase:
    """Describe every frame of ``drive`` and add it to ``database`` (a new one for the pipeline if None).

    ``views``: each frame is also stored as seen shifted sideways by these fractions of the image width
    (:func:`semloc_ros.pipeline.shift_view`), same position, image id ``<id>#view<shift>``; 0 = the image itself.
    ``thumbnails``: store label thumbnails for re-ranking (None: for label methods, or as the given database).
    """
    if database is None:
        database = GeoDatabase(pipeline.dimension, pipeline.model_id)
    labels_method = bool(getattr(pipeline, "needs_labels", False))
    if thumbnails is None:
        thumbnails = database.thumbnails is not None if len(database) else labels_method
    if thumbnails and not labels_method:
        raise ValueError("label thumbnails need a label method (semantic, hybrid, label-histogram)")
    for shift in views:
        small = np.zeros((len(drive.frames), *THUMBNAIL_SHAPE), dtype=np.uint8) if thumbnails else None
        descriptors = describe_drive_frames(
            pipeline,
            drive.frames,
            oracle=oracle,
            batch_size=batch_size,
            progress=progress,
            desc=f"db {drive.name}" + (f" view {shift:+g}" if shift else ""),
            shift=shift,
            thumbnails_out=small,
        )
        records = place_records(drive.frames)
        if shift:
            records = [dataclasses.replace(r, image_id=f"{r.image_id}{VIEW_SEPARATOR}{shift:+g}") for r in records]
        database.add(descriptors, records, small)
    return database


VIEW_SEPARATOR = "#view"


def distinct_places(similarities: np.ndarray, retrieved: np.ndarray, image_ids: np.ndarray, n: int):
    """The first ``n`` retrieved entries of each row that are distinct places: the views of one frame
    (``<id>#view<shift>``, :func:`build_database`) count once. Rows are padded with -1 / NaN."""
    place = np.array([str(i).split(VIEW_SEPARATOR)[0] for i in image_ids])
    out_idx = np.full((len(retrieved), n), -1, dtype=np.int64)
    out_sim = np.full((len(retrieved), n), np.nan, dtype=np.float32)
    for row, (sims, idx) in enumerate(zip(similarities, retrieved, strict=True)):
        seen: set[str] = set()
        k = 0
        for sim, entry in zip(sims, idx, strict=True):
            if entry < 0 or place[entry] in seen:
                continue
            seen.add(place[entry])
            out_idx[row, k], out_sim[row, k] = entry, sim
            k += 1
            if k == n:
                break
    return out_sim, out_idx


def cache_key(pipeline, oracle: bool) -> str:
    """What a database's descriptors depend on: the descriptor model id, plus the segmenter's unless oracle.

    ``pipeline.model_id`` names the descriptor only, so a retrained segmenter must change the key too.
    """
    key = pipeline.model_id
    segmenter = getattr(pipeline, "segmenter", None)
    if getattr(pipeline, "needs_labels", False) and segmenter is not None and not oracle:
        key += f"|segmenter:{segmenter.model_id}"
    return key


def cache_name(method: str, oracle: bool, drive: Drive, pipeline, views: Sequence[float] = (0.0,)) -> str:
    """File name of a cached database: method, oracle flag, drive, size, a digest of :func:`cache_key` and the
    database views (:func:`build_database`) when there is more than the frame itself."""
    digest = hashlib.sha1(cache_key(pipeline, oracle).encode("utf-8")).hexdigest()[:12]
    views_tag = "" if tuple(views) == (0.0,) else "_views" + "_".join(f"{v:+g}" for v in views)
    return f"{method_label(method, oracle)}_{drive.name}_{len(drive)}_{digest}{views_tag}.semdb"


# ------------------------------------------------------------------------------------------ evaluation


def database_views(database: GeoDatabase) -> int:
    """How many views per place a database holds (1 without ``views`` in :func:`build_database`)."""
    ids = database.image_ids
    shifted = sum(VIEW_SEPARATOR in str(i) for i in ids)
    return 1 if not shifted else round(len(ids) / max(1, len(ids) - shifted))


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
    query_thumbnails: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one query drive whose descriptors are already computed (JSON-ready dict).

    With ``query_thumbnails``, a database with thumbnails and ``rerank_top_k`` > 0 in the localizer config, the
    retrieval is re-ranked (:mod:`semloc_ros.reranking`) for Recall@N and for the localizer alike.
    """
    q_lat, q_lon = query_drive.lat, query_drive.lon
    localizer = Localizer(database, localizer_config)
    rerank_config = localizer.config.rerank_config()
    reranking = localizer.reranks and query_thumbnails is not None
    depth = max(max(ns), rerank_config.top_k) if reranking else max(ns)
    views = database_views(database)
    similarities, retrieved = database.search(query_descriptors, depth * views)
    if views > 1:  # Recall@N over N distinct places, not N views of one
        similarities, retrieved = distinct_places(similarities, retrieved, database.image_ids, depth)
    if reranking:
        for row in range(len(retrieved)):
            _, similarities[row], retrieved[row], _ = rerank(
                similarities[row], retrieved[row], query_thumbnails[row], database.thumbnails, rerank_config
            )
    similarities, retrieved = similarities[:, : max(ns)], retrieved[:, : max(ns)]
    positives = positives_within(q_lat, q_lon, database.lat, database.lon, threshold_m)
    recalls = recall_report(retrieved, positives, ns)

    top1 = retrieved[:, 0]
    top1_error = np.full(len(top1), np.nan)
    found = top1 >= 0
    top1_error[found] = geodesic_distance_m(
        q_lat[found], q_lon[found], database.lat[top1[found]], database.lon[top1[found]]
    )

    thumbnails = query_thumbnails if reranking else None
    estimates = localizer.localize_batch(query_descriptors, thumbnails=thumbnails)
    single = localization_metrics(estimates, database, q_lat, q_lon, threshold_m)
    filtered = None
    if localizer.sequence_filter is not None:
        localizer.reset()
        filtered = localization_metrics(
            localizer.localize_sequence(query_descriptors, query_drive.stamps_ns.tolist(), thumbnails=thumbnails),
            database,
            q_lat,
            q_lon,
            threshold_m,
        )
        filtered["filter_resets"] = localizer.sequence_filter.resets - 1  # the reset before the drive
        filtered["filter_temperature"] = localizer.config.filter_temperature
        filtered["filter_kidnap_probability"] = localizer.config.filter_kidnap_probability
    best_similarity = similarities[:, 0].astype(float) if len(similarities) else np.zeros(0)

    result = {
        "query_drive": query_drive.name,
        "condition": query_drive.condition,
        "threshold_m": threshold_m,
        "n_database": len(database),
        "reranked": bool(reranking),
        "n_queries": recalls["n_queries"],
        "n_queries_without_positive": recalls["n_queries_without_positive"],
        "recall_at_n_all_queries": {str(n): r for n, r in recalls["recall_at_n_all_queries"].items()},
        "recall_at_n_queries_with_positive": {
            str(n): r for n, r in recalls["recall_at_n_queries_with_positive"].items()
        },
        "top1_recall_at_distance_m": {str(d): r for d, r in top1_recall_at_distances(top1_error, distances).items()},
        "top1_error_m": position_error_stats(top1_error),
        "localization_recall_at_1": single["localization_recall_at_1"],
        "localization_error_m": single["localization_error_m"],
        "localization_error_m_fix_only": single["localization_error_m_fix_only"],
        "covariance_coverage": single["covariance_coverage"],
        "status_counts": single["status_counts"],
        "skipped_frames": dict(query_drive.skipped),
        "per_query": {
            "image_id": [f.image_id for f in query_drive.frames],
            "lat": q_lat.tolist(),
            "lon": q_lon.tolist(),
            "has_positive": [bool(len(p)) for p in positives],
            "top1_index": top1.astype(int).tolist(),
            "top1_error_m": _nan_to_none(top1_error),
            "best_similarity": _nan_to_none(best_similarity),
            **single["per_query"],
        },
    }
    if filtered is not None:
        result["filtered"] = filtered
    return result


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
            "estimate_lat": _nan_to_none(np.where(has_estimate, est_lat, np.nan)),
            "estimate_lon": _nan_to_none(np.where(has_estimate, est_lon, np.nan)),
            "error_m": _nan_to_none(error),
            "confidence": [float(e.confidence) for e in estimates],
            "status": [s.value for s in statuses],
            "mahalanobis_sq": _nan_to_none(distances),
            "error_east_m": _nan_to_none(errors_en[:, 0]),
            "error_north_m": _nan_to_none(errors_en[:, 1]),
            "covariance_en_m2": [  # [ee, en, nn] of the reported east/north covariance
                None if not np.isfinite(c).all() else [float(c[0, 0]), float(c[0, 1]), float(c[1, 1])]
                for c in covariances
            ],
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
    fit_filter_on: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Results per query drive name for one method.

    The database is built from ``database_drive`` unless given. Query labels come from the segmenter on the
    query RGB; with ``oracle`` both database and queries use the ground-truth labels (perfect segmentation),
    and every result is named ``<method>-oracle``. With the sequence filter enabled and ``fit_filter_on``
    naming one of the query drives, ``filter_temperature`` and ``filter_kidnap_probability`` are first fitted on
    that drive (:func:`fit_filter_parameters`) and used for every drive (``filtered.filter_fit``).
    """
    if database is None:
        database = build_database(pipeline, database_drive, oracle=oracle, batch_size=batch_size, progress=progress)
    label = method_label(method or getattr(pipeline, "method", "method"), oracle)
    described = []
    config = localizer_config if localizer_config is not None else LocalizerConfig()
    with_thumbnails = config.rerank_top_k > 0 and database.thumbnails is not None
    for drive in query_drives:
        valid = drive.drop_invalid_gps()
        small = np.zeros((len(valid.frames), *database.thumbnails.shape[1:]), np.uint8) if with_thumbnails else None
        descriptors = describe_drive_frames(
            pipeline,
            valid.frames,
            oracle=oracle,
            batch_size=batch_size,
            progress=progress,
            desc=f"{label} {drive.name}",
            thumbnails_out=small,
        )
        described.append((drive.name, valid, descriptors, small))
    fit = None
    if config.sequence_filter and fit_filter_on is not None:
        matching = [(valid, d) for name, valid, d, _ in described if name == fit_filter_on]
        if not matching:
            raise ValueError(f"fit_filter_on: {fit_filter_on!r} is not a query drive")
        config, fit = fit_filter_parameters(database, *matching[0], config, threshold_m)
    results = {}
    for name, valid, descriptors, small in described:
        result = evaluate_query_descriptors(database, valid, descriptors, threshold_m, ns, distances, config, small)
        if "filtered" in result:
            result["filtered"]["filter_fit"] = fit
        results[name] = {
            "method": label,
            "oracle": oracle,
            "model_id": pipeline.model_id,
            "database_drive": database_drive.name,
            **result,
        }
    return results


# ------------------------------------------------------------------------------ rejection and calibration

TEMPERATURE_POSITIVE_RADIUS_M = 10.0


def fit_filter_temperature(
    database: GeoDatabase,
    drive: Drive,
    descriptors: np.ndarray,
    top_k: int = 50,
    radius_m: float = TEMPERATURE_POSITIVE_RADIUS_M,
) -> float:
    """Maximum-likelihood ``filter_temperature`` on one calibration drive (see :func:`fit_temperature`).

    The true places of a query are the database entries within ``radius_m`` of its position.
    """
    similarities, indices = database.search(descriptors, top_k)
    positives = positives_within(drive.lat, drive.lon, database.lat, database.lon, radius_m)
    return fit_temperature(similarities, indices, positives, len(database))


FILTER_TEMPERATURE_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
FILTER_KIDNAP_PROBABILITIES = (1e-2, 1e-3, 1e-4)


def fit_filter_parameters(
    database: GeoDatabase,
    drive: Drive,
    descriptors: np.ndarray,
    config: LocalizerConfig,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    temperature_factors: Sequence[float] = FILTER_TEMPERATURE_FACTORS,
    kidnap_probabilities: Sequence[float] = FILTER_KIDNAP_PROBABILITIES,
) -> tuple[LocalizerConfig, dict[str, Any]]:
    """``filter_temperature`` and ``filter_kidnap_probability`` for one descriptor, fitted on one drive.

    1. ``T0`` = the single-frame maximum-likelihood temperature (:func:`fit_filter_temperature`): it puts the
       temperature on the descriptor's similarity scale.
    2. Consecutive frames make correlated errors (an aliased stretch looks alike for several frames), so
       ``T0`` is too sharp for the filter: the drive is run through the filter for every ``T0 x factor`` and
       kidnap probability, and the pair with the smallest mean of ``min(error, 4 x threshold_m)`` wins
       (failures count as a capped error, accuracy as the rest; ties: the earlier, sharper candidate).

    Returns the config with both set and a JSON-ready record of the fit.
    """
    base = fit_filter_temperature(database, drive, descriptors, top_k=config.filter_top_k)
    stamps = drive.stamps_ns.tolist()
    cap = 4.0 * threshold_m
    grid = []
    for factor in temperature_factors:
        for kidnap in kidnap_probabilities:
            candidate = dataclasses.replace(
                config, filter_temperature=base * factor, filter_kidnap_probability=kidnap
            ).validate()
            estimates = Localizer(database, candidate).localize_sequence(descriptors, stamps)
            error = localization_metrics(estimates, database, drive.lat, drive.lon, threshold_m)["per_query"]
            capped = np.minimum(np.nan_to_num(_float_array(error["error_m"]), nan=cap), cap)
            grid.append(
                {
                    "temperature": base * factor,
                    "kidnap_probability": kidnap,
                    "mean_capped_error_m": float(np.mean(capped)) if len(capped) else math.nan,
                }
            )
    best = min(grid, key=lambda row: row["mean_capped_error_m"])
    fitted = dataclasses.replace(
        config, filter_temperature=best["temperature"], filter_kidnap_probability=best["kidnap_probability"]
    )
    return fitted, {"fitted_on": drive.name, "ml_temperature": base, "capped_error_m": cap, "grid": grid}


def route_distance_m(drive: Drive) -> np.ndarray:
    """(N,) metres travelled along the drive from its first frame (sum of horizontal steps)."""
    if len(drive) == 0:
        return np.zeros(0)
    east_north = drive.positions_enu()[:, :2]
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(east_north, axis=0).T))])


def rejection_scores(
    database: GeoDatabase,
    drive: Drive,
    descriptors: np.ndarray,
    localizer_config: LocalizerConfig | None = None,
    min_route_m: float = DEFAULT_NEGATIVE_MIN_ROUTE_M,
) -> dict[str, Any]:
    """Scores of the out-of-database frames of ``drive`` (a drive of another map than the database).

    Every map of a simulator may share its first road stretch with the database map, so only the frames
    farther than ``min_route_m`` along the drive's route from its start are negatives. The whole drive runs
    through the sequence filter (if enabled) so that its state is that of a real drive.
    """
    similarities, _ = database.search(descriptors, 1)
    localizer = Localizer(database, localizer_config)
    single = localizer.localize_batch(descriptors)
    negative = route_distance_m(drive) > min_route_m
    scores = {
        "best_similarity": similarities[:, 0].astype(float)[negative].tolist(),
        "confidence": [float(e.confidence) for e, keep in zip(single, negative, strict=True) if keep],
    }
    if localizer.sequence_filter is not None:
        localizer.reset()
        filtered = localizer.localize_sequence(descriptors, drive.stamps_ns.tolist())
        scores["filtered_confidence"] = [
            float(e.confidence) for e, keep in zip(filtered, negative, strict=True) if keep
        ]
    return {
        "drive": drive.name,
        "map": drive.metadata.get("seed"),
        "condition": drive.condition,
        "n_frames": len(drive),
        "n_negatives": int(negative.sum()),
        "min_route_m": min_route_m,
        "scores": scores,
    }


def evaluate_rejection_drives(
    pipeline,
    database: GeoDatabase,
    drives: Sequence[Drive],
    oracle: bool = False,
    localizer_config: LocalizerConfig | None = None,
    min_route_m: float = DEFAULT_NEGATIVE_MIN_ROUTE_M,
    batch_size: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """:func:`rejection_scores` of each drive, described with ``pipeline`` (labels: ground truth if oracle)."""
    results = []
    for drive in drives:
        valid = drive.drop_invalid_gps()
        descriptors = describe_drive_frames(
            pipeline, valid.frames, oracle=oracle, batch_size=batch_size, progress=progress, desc=f"neg {drive.name}"
        )
        results.append(rejection_scores(database, valid, descriptors, localizer_config, min_route_m))
    return results


# Which estimate's errors and which LocalizerConfig parameter each rejection score belongs to.
REJECTION_SCORES = {
    "best_similarity": ("single", "min_similarity"),
    "confidence": ("single", "min_confidence"),
    "filtered_confidence": ("filtered", "min_confidence"),
}


def _halves(values: Sequence[float]) -> tuple[list[float], list[float]]:
    middle = (len(values) + 1) // 2
    return list(values[:middle]), list(values[middle:])


def split_negatives(negatives: Sequence[dict[str, Any]], score: str) -> tuple[list[float], list[float], str]:
    """Calibration and report negatives of one score, and the rule used.

    Negatives of two or more maps: the first map's drives calibrate, the other maps' drives report (held-out
    places, the honest test of a threshold). One map: the first half of each drive (route order) calibrates,
    the second half reports.
    """
    maps = list(dict.fromkeys(n.get("map") for n in negatives))
    if len(maps) >= 2 and None not in maps:
        fit = [v for n in negatives if n["map"] == maps[0] for v in n["scores"][score]]
        report = [v for n in negatives if n["map"] != maps[0] for v in n["scores"][score]]
        return fit, report, f"map {maps[0]} calibrates, map(s) {', '.join(str(m) for m in maps[1:])} report"
    fit, report = [], []
    for n in negatives:
        first, second = _halves(n["scores"][score])
        fit += first
        report += second
    return fit, report, "first half in route order calibrates, second half reports"


def _subsampled_curve(scores: np.ndarray, labels: np.ndarray) -> dict[str, list]:
    curve = precision_recall_curve(scores, labels)
    keep = np.unique(np.linspace(0, len(curve.thresholds) - 1, min(len(curve.thresholds), _MAX_CURVE_POINTS)).round())
    keep = keep.astype(int)
    return {
        "threshold": _nan_to_none(curve.thresholds[keep]),
        "precision": _nan_to_none(curve.precision[keep]),
        "recall": _nan_to_none(curve.recall[keep]),
        "false_positive_rate": _nan_to_none(curve.false_positive_rate[keep]),
    }


def _point_dict(point) -> dict[str, Any]:
    return {
        "threshold": point.threshold,
        "precision": point.precision,
        "recall": point.recall,
        "false_positive_rate": point.false_positive_rate,
        "n_accepted": point.n_accepted,
        "n_positive": point.n_positive,
        "n_negative": point.n_negative,
    }


def _mode_per_query(result: dict[str, Any], mode: str) -> dict[str, Any] | None:
    if mode == "single":
        return result["per_query"]
    return result["filtered"]["per_query"] if "filtered" in result else None


def _errors_and_covariances(result: dict[str, Any], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) east/north errors and (N, 2, 2) covariances of one drive's estimates (NaN where none)."""
    per_query = _mode_per_query(result, mode)
    errors = np.column_stack([_float_array(per_query["error_east_m"]), _float_array(per_query["error_north_m"])])
    covariances = np.full((len(errors), 2, 2), np.nan)
    for i, c in enumerate(per_query["covariance_en_m2"]):
        if c is not None:
            covariances[i] = [[c[0], c[1]], [c[1], c[2]]]
    return errors, covariances


def _float_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _positive_scores(
    result: dict[str, Any], score: str, mode: str, threshold_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a query drive's frames that have a database positive, and whether each is localized right."""
    per_query = _mode_per_query(result, mode)
    has_positive = np.array(result["per_query"]["has_positive"], dtype=bool)
    values = result["per_query"]["best_similarity"] if score == "best_similarity" else per_query["confidence"]
    correct = _float_array(per_query["error_m"]) <= threshold_m
    return _float_array(values)[has_positive], correct[has_positive]


def calibrate_method(
    results: Sequence[dict[str, Any]],
    negatives: Sequence[dict[str, Any]],
    calibration_drive: str,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> dict[str, Any]:
    """No-match thresholds and covariance scales of one method, fitted on held-out data and reported.

    Fitted on: the query drive named ``calibration_drive`` (its frames with a database positive are the
    positives) and the calibration part of the negatives (:func:`split_negatives`: the first map's drives when
    they come from several maps, else the first half of each drive). Reported on: every other query drive and
    the rest of the negatives. Query frames without a database positive
    within the evaluation threshold are neither positives nor negatives and are left out.

    For each score (:data:`REJECTION_SCORES`) the threshold is the one with the largest recall at precision
    >= ``target_precision``; ``fix_precision`` is the share of accepted queries that are positives localized
    within the evaluation threshold (``fix_precision_filtered``: the same best-similarity gate in front of the
    filtered estimates, as the Localizer applies ``min_similarity`` with the filter). For each mode
    (single-frame, filtered) the covariance scale makes 86.5 % of the calibration drive's errors fall inside
    their 2-sigma ellipses (``scale``), and ``model`` (:func:`fit_covariance_model`: ``covariance_scale`` and
    ``position_sigma_extra_m`` of the localizer) matches both the 1- and 2-sigma coverages; ``calibrated`` is
    that model's coverage on each held-out drive.
    """
    by_drive = {r["query_drive"]: r for r in results}
    if calibration_drive not in by_drive:
        raise ValueError(f"calibration drive {calibration_drive!r} is not among the results {sorted(by_drive)}")
    held_out = [name for name in by_drive if name != calibration_drive]
    threshold_m = by_drive[calibration_drive]["threshold_m"]
    modes = ["single"] + (["filtered"] if "filtered" in by_drive[calibration_drive] else [])

    covariance: dict[str, Any] = {}
    for mode in modes:
        fit = _float_array(_mode_per_query(by_drive[calibration_drive], mode)["mahalanobis_sq"])
        scale = covariance_scale(fit)
        model = fit_covariance_model(*_errors_and_covariances(by_drive[calibration_drive], mode))
        covariance[mode] = {
            "scale": scale,
            "model": model,
            "calibration_coverage": covariance_coverage(fit),
            "per_drive": {},
        }
        for name in held_out:
            distances = _float_array(_mode_per_query(by_drive[name], mode)["mahalanobis_sq"])
            errors, covariances = _errors_and_covariances(by_drive[name], mode)
            calibrated = None
            if math.isfinite(model["scale"]):
                covariances = calibrated_covariance(covariances, model["scale"], model["extra_sigma_m"])
                calibrated = covariance_coverage(mahalanobis_squared(errors, covariances))
            covariance[mode]["per_drive"][name] = {
                "raw": covariance_coverage(distances),
                "scaled": covariance_coverage(distances, scale) if math.isfinite(scale) else None,
                "calibrated": calibrated,
            }

    rejection: dict[str, Any] = {}
    for score, (mode, parameter) in REJECTION_SCORES.items():
        if not negatives or mode not in modes or any(score not in n["scores"] for n in negatives):
            continue
        fit_negatives, report_negatives, _ = split_negatives(negatives, score)

        fit_scores, _ = _positive_scores(by_drive[calibration_drive], score, mode, threshold_m)
        choice = threshold_at_precision(
            np.concatenate([fit_scores, fit_negatives]),
            np.r_[np.ones(len(fit_scores), bool), np.zeros(len(fit_negatives), bool)],
            target_precision,
        )
        threshold = choice.point.threshold
        entry = {
            "mode": mode,
            "config_parameter": parameter,
            "target_precision": target_precision,
            "achieved_on_calibration": choice.achieved,
            "calibration": _point_dict(choice.point),
            "per_drive": {},
        }
        for name in held_out:
            drive_scores, correct = _positive_scores(by_drive[name], score, mode, threshold_m)
            all_scores = np.concatenate([drive_scores, report_negatives])
            labels = np.r_[np.ones(len(drive_scores), bool), np.zeros(len(report_negatives), bool)]
            point = operating_point(all_scores, labels, threshold)
            accepted = np.nan_to_num(drive_scores, nan=-np.inf) >= threshold
            entry["per_drive"][name] = {
                **_point_dict(point),
                "fix_precision": int(np.sum(correct & accepted)) / point.n_accepted if point.n_accepted else math.nan,
                "curve": _subsampled_curve(all_scores, labels),
            }
            if score == "best_similarity" and "filtered" in modes:  # the same gate on the filtered estimates
                _, correct_filtered = _positive_scores(by_drive[name], score, "filtered", threshold_m)
                entry["per_drive"][name]["fix_precision_filtered"] = (
                    int(np.sum(correct_filtered & accepted)) / point.n_accepted if point.n_accepted else math.nan
                )
        rejection[score] = entry

    split = split_negatives(negatives, "best_similarity") if negatives else ([], [], "no negatives")
    return {
        "method": by_drive[calibration_drive]["method"],
        "calibration_query_drive": calibration_drive,
        "calibration_condition": by_drive[calibration_drive]["condition"],
        "held_out_query_drives": held_out,
        "threshold_m": threshold_m,
        "negatives": {
            "drives": [n["drive"] for n in negatives],
            "rule": f"frames farther than {negatives[0]['min_route_m'] if negatives else math.nan:g} m along "
            f"their route from the start (maps share their first road stretch); {split[2]}",
            "n_calibration": len(split[0]),
            "n_report": len(split[1]),
        },
        "covariance": covariance,
        "rejection": rejection,
    }


# ----------------------------------------------------------------------------------------- segmentation


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


def evaluate_segmentation(segmenter, drives: Sequence[Drive], stride: int = 5, batch_size: int = 16,
                          progress: bool = False) -> dict[str, dict[str, Any]]:
    """Segmenter scores against the ground-truth labels of every ``stride``-th frame of each drive."""
    from tqdm import tqdm

    names = list(SEMLOC_SIM.names)  # the segmenter's output ids are semloc ids (after any label mapping)
    scores: dict[str, dict[str, Any]] = {}
    for drive in drives:
        frames = drive.frames[::stride]
        confusion = np.zeros((len(names), len(names)), dtype=np.int64)
        for start in tqdm(range(0, len(frames), batch_size), desc=f"segmentation {drive.name}",
                          disable=not progress):
            chunk = frames[start : start + batch_size]
            predicted = segmenter.predict_batch(np.stack(load_rgbs(chunk)))
            for prediction, truth in zip(predicted, load_label_images(chunk), strict=True):
                confusion += confusion_matrix(prediction, truth, len(names))
        scores[drive.name] = {"condition": drive.condition, "n_frames": len(frames), "stride": stride,
                              **segmentation_scores(confusion, names)}
    return scores
