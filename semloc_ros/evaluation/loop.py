"""The evaluation loop: describe query drives, retrieve, re-rank and localize them against a database, score.

Localization (the :class:`Localizer`'s estimate, not the top-1 entry) is scored single-frame and, with
``LocalizerConfig.sequence_filter``, through the sequence filter over each query drive in stamp order
(``filtered``): Recall@1 = percentage of queries whose estimate is within ``threshold_m``, error statistics,
and the coverage of the reported covariances (errors inside the 1- and 2-sigma ellipses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.geodesy import geodesic_distance_m
from semloc_ros.core.labels import SEMLOC_SIM
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.reranking import RerankConfig, rerank
from semloc_ros.core.views import SINGLE_VIEW, place_id
from semloc_ros.evaluation.metrics import (
    DEFAULT_DISTANCES_M,
    DEFAULT_NS,
    DEFAULT_THRESHOLD_M,
    confusion_matrix,
    localization_metrics,
    method_label,
    nan_to_none,
    position_error_stats,
    positives_within,
    recall_report,
    segmentation_scores,
    top1_recall_at_distances,
)
from semloc_ros.io.datasets import Drive, load_label_images, load_rgbs
from semloc_ros.mapping import build_database, describe_drive_frames


def distinct_places(similarities: np.ndarray, retrieved: np.ndarray, image_ids: np.ndarray, n: int):
    """The first ``n`` retrieved entries of each row that are distinct places: the views of one frame
    (:func:`semloc_ros.core.views.place_id`) count once. Rows are padded with -1 / NaN."""
    place = np.array([place_id(i) for i in image_ids])
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


def cache_key(pipeline) -> str:
    """What a database's descriptors depend on: the pipeline id (descriptor, and the segmenter of label methods,
    :mod:`semloc_ros.core.pipeline_id`; ground-truth labels are told apart by the cache file's name), and the
    segmenter file itself: a quantized copy shares the pipeline id of the network it was made from (its maps
    answer the other precision) but not its exact labels."""
    segmenter = getattr(pipeline, "segmenter", None)
    if not getattr(pipeline, "needs_labels", False) or segmenter is None:
        return pipeline.model_id
    return f"{pipeline.model_id}|labels:{segmenter.model_id}"


def cache_name(method: str, oracle: bool, drive: Drive, pipeline, views: Sequence[float] = SINGLE_VIEW) -> str:
    """File name of a cached database: method, oracle flag, drive, size, a digest of :func:`cache_key` and the
    database views (:func:`build_database`) when there is more than the frame itself."""
    digest = hashlib.sha1(cache_key(pipeline).encode("utf-8")).hexdigest()[:12]
    views_tag = "" if tuple(views) == SINGLE_VIEW else "_views" + "_".join(f"{v:+g}" for v in views)
    return f"{method_label(method, oracle)}_{drive.name}_{len(drive)}_{digest}{views_tag}.semdb"


def retrieve_places(database: GeoDatabase, query_descriptors: np.ndarray, depth: int,
                    query_thumbnails: np.ndarray | None, rerank_config: RerankConfig) -> tuple[np.ndarray, np.ndarray]:
    """The top ``depth`` distinct places per query (views of one place count once), re-ranked by label
    alignment when ``query_thumbnails`` are given."""
    views = len(database.views)
    similarities, retrieved = database.search(query_descriptors, depth * views)
    if views > 1:  # Recall@N over N distinct places, not N views of one
        similarities, retrieved = distinct_places(similarities, retrieved, database.image_ids, depth)
    if query_thumbnails is not None:
        for row in range(len(retrieved)):
            _, similarities[row], retrieved[row], _ = rerank(
                similarities[row], retrieved[row], query_thumbnails[row], database.thumbnails, rerank_config
            )
    return similarities, retrieved


def filtered_metrics(localizer: Localizer, query_drive: Drive, query_descriptors: np.ndarray,
                     thumbnails: np.ndarray | None, threshold_m: float) -> dict[str, Any]:
    """Localization metrics of the drive run as a sequence through the localizer's sequence filter."""
    localizer.reset()
    estimates = localizer.localize_sequence(query_descriptors, query_drive.stamps_ns.tolist(), thumbnails=thumbnails)
    filtered = localization_metrics(estimates, localizer.database, query_drive.lat, query_drive.lon, threshold_m)
    filtered["filter_resets"] = localizer.sequence_filter.resets - 1  # the reset before the drive
    filtered["filter_temperature"] = localizer.config.filter.temperature
    filtered["filter_kidnap_probability"] = localizer.config.filter.kidnap_probability
    return filtered


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
    retrieval is re-ranked (:mod:`semloc_ros.core.reranking`) for Recall@N and for the localizer alike.
    """
    q_lat, q_lon = query_drive.lat, query_drive.lon
    localizer = Localizer(database, localizer_config)
    rerank_config = localizer.config.rerank
    reranking = localizer.reranks and query_thumbnails is not None
    depth = max(max(ns), rerank_config.top_k) if reranking else max(ns)
    similarities, retrieved = retrieve_places(database, query_descriptors, depth,
                                              query_thumbnails if reranking else None, rerank_config)
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
    stamps = query_drive.stamps_ns.tolist()  # consecutive frames of one camera, as the node sees them
    estimates = localizer.localize_batch(query_descriptors, thumbnails=thumbnails, stamps_ns=stamps)
    single = localization_metrics(estimates, database, q_lat, q_lon, threshold_m)
    filtered = None
    if localizer.sequence_filter is not None:
        filtered = filtered_metrics(localizer, query_drive, query_descriptors, thumbnails, threshold_m)
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
            "top1_error_m": nan_to_none(top1_error),
            "best_similarity": nan_to_none(best_similarity),
            **single["per_query"],
        },
    }
    if filtered is not None:
        result["filtered"] = filtered
    return result




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
    and every result is named ``<method>-oracle``. The localizer runs exactly as configured (nothing is fitted
    on a query drive: the filter, covariance and integrity values come from training maps,
    scripts/fit_uncertainty.py).
    """
    if database is None:
        database = build_database(pipeline, database_drive, oracle=oracle, batch_size=batch_size, progress=progress)
    label = method_label(method or getattr(pipeline, "method", "method"), oracle)
    described = []
    config = localizer_config if localizer_config is not None else LocalizerConfig()
    with_thumbnails = config.rerank.enabled and database.thumbnails is not None
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
    results = {}
    for name, valid, descriptors, small in described:
        result = evaluate_query_descriptors(database, valid, descriptors, threshold_m, ns, distances, config, small)
        results[name] = {
            "method": label,
            "oracle": oracle,
            "model_id": pipeline.model_id,
            "database_drive": database_drive.name,
            **result,
        }
    return results


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
