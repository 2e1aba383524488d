"""Fitting on calibration drives: no-match rejection thresholds, the covariance model and the sequence
filter's temperature.

Out-of-database frames (:func:`rejection_scores`) are negatives, query frames with a database positive are
positives; thresholds and the covariance model are fitted on one query drive plus part of the negatives (one
map's drives, or the first half of each drive) and reported on the other query drives and the other negatives
(:func:`split_negatives`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semloc_ros.core.calibration import (
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
from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.estimate import FixStatus
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.evaluation.metrics import (
    DEFAULT_NEGATIVE_MIN_ROUTE_M,
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD_M,
    float_array,
    localization_metrics,
    nan_to_none,
    positives_within,
)
from semloc_ros.io.datasets import Drive
from semloc_ros.mapping import describe_drive_frames

MAX_CURVE_POINTS = 200  # points kept of a precision-recall curve in the results

TEMPERATURE_POSITIVE_RADIUS_M = 10.0


def fit_filter_temperature(
    database: GeoDatabase,
    drive: Drive,
    descriptors: np.ndarray,
    config: LocalizerConfig,
    thumbnails: np.ndarray | None = None,
    radius_m: float = TEMPERATURE_POSITIVE_RADIUS_M,
) -> float:
    """Maximum-likelihood ``filter_temperature`` on one calibration drive (see :func:`fit_temperature`), on the
    scale of the scores the filter weighs (:meth:`Localizer.filter_observations`).

    The true places of a query are the database entries within ``radius_m`` of its position.
    """
    scores, indices = Localizer(database, config).filter_observations(descriptors, thumbnails)
    positives = positives_within(drive.lat, drive.lon, database.lat, database.lon, radius_m)
    return fit_temperature(scores, indices, positives, len(database))


FILTER_TEMPERATURES = (0.5, 0.7, 1.0, 1.4, 2.0)  # standard deviations of a query's scores
FILTER_KIDNAP_PROBABILITIES = (1e-2, 1e-3, 1e-4)
FILTER_REVERSE_WEIGHTS = (0.0, 0.1, 0.3, 1.0)
FILTER_STAMP_SCALES = (0.7, 1.0, 1.5)  # training drives replayed faster and slower (stamp differences scaled)
FILTER_SPEED_TIME_CONSTANTS = (0.0, 10.0, 20.0)
FILTER_WARMUPS_M = (0.0, 25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0)


@dataclass(frozen=True)
class FilterDrive:
    """One query drive the sequence filter is fitted on: its map's database, the drive, its descriptors and (for a
    re-ranking configuration) its label thumbnails."""

    database: GeoDatabase
    drive: Drive
    descriptors: np.ndarray
    thumbnails: np.ndarray | None = None

    def metrics(self, config: LocalizerConfig, threshold_m: float) -> dict[str, Any]:
        """:func:`localization_metrics` of the drive localized with ``config``: through the sequence filter when
        the configuration has it, else frame by frame."""
        localizer = Localizer(self.database, config)
        if config.sequence_filter:
            estimates = localizer.localize_sequence(self.descriptors, self.drive.stamps_ns.tolist(),
                                                    thumbnails=self.thumbnails)
        else:
            estimates = localizer.localize_batch(self.descriptors, thumbnails=self.thumbnails)
        return localization_metrics(estimates, self.database, self.drive.lat, self.drive.lon, threshold_m)


def filter_capped_error(drives: Sequence[FilterDrive], config: LocalizerConfig, threshold_m: float) -> float:
    """Mean over ``drives`` of the mean ``min(error, 4 x threshold_m)`` of the filtered estimates (failures count
    as the capped error, accuracy as the rest)."""
    cap = 4.0 * threshold_m
    means = []
    for case in drives:
        error = case.metrics(config, threshold_m)["per_query"]["error_m"]
        means.append(float(np.mean(np.minimum(np.nan_to_num(float_array(error), nan=cap), cap))))
    return float(np.mean(means)) if means else math.nan


def fit_filter_parameters(
    drives: Sequence[FilterDrive],
    config: LocalizerConfig,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    temperatures: Sequence[float] = FILTER_TEMPERATURES,
    kidnap_probabilities: Sequence[float] = FILTER_KIDNAP_PROBABILITIES,
    reverse_weights: Sequence[float] = FILTER_REVERSE_WEIGHTS,
) -> tuple[LocalizerConfig, dict[str, Any]]:
    """``filter_temperature``, ``filter_kidnap_probability`` and ``filter_reverse_weight`` chosen on ``drives``
    (training maps only), by the smallest :func:`filter_capped_error`:

    1. every temperature x kidnap probability, at the configuration's reverse weight;
    2. every reverse weight at the winning pair (ties: the earlier candidate).

    The temperature is in standard deviations of a query's scores (the filter's step 2), so one grid serves every
    descriptor and re-ranking. Returns the config with the three set and a JSON-ready record of both grids.
    """
    config = config.with_parameters(sequence_filter=True)
    pairs = []
    for temperature in temperatures:  # step 1
        for kidnap in kidnap_probabilities:
            candidate = config.with_parameters(filter_temperature=temperature,
                                               filter_kidnap_probability=kidnap).validate()
            pairs.append({"temperature": temperature, "kidnap_probability": kidnap,
                          "mean_capped_error_m": filter_capped_error(drives, candidate, threshold_m)})
    best = min(pairs, key=lambda row: row["mean_capped_error_m"])
    config = config.with_parameters(filter_temperature=best["temperature"],
                                    filter_kidnap_probability=best["kidnap_probability"])
    directions = [{"reverse_weight": weight, "mean_capped_error_m": filter_capped_error(
        drives, config.with_parameters(filter_reverse_weight=weight).validate(), threshold_m)}
        for weight in reverse_weights]  # step 2
    chosen = min(directions, key=lambda row: row["mean_capped_error_m"])
    fitted = config.with_parameters(filter_reverse_weight=chosen["reverse_weight"])
    return fitted, {"fitted_on": [case.drive.name for case in drives], "capped_error_m": 4.0 * threshold_m,
                    "grid": pairs, "reverse_weights": directions}


def at_speed(case: FilterDrive, stamp_scale: float) -> FilterDrive:
    """``case`` replayed with its stamp differences times ``stamp_scale``: the vehicle's speed divided by it."""
    first = int(case.drive.frames[0].stamp_ns) if len(case.drive) else 0
    frames = [dataclasses.replace(frame, stamp_ns=first + round((frame.stamp_ns - first) * stamp_scale))
              for frame in case.drive.frames]
    return dataclasses.replace(case, drive=dataclasses.replace(case.drive, frames=frames))


def fit_speed_time_constant(
    drives: Sequence[FilterDrive],
    config: LocalizerConfig,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    stamp_scales: Sequence[float] = FILTER_STAMP_SCALES,
    time_constants: Sequence[float] = FILTER_SPEED_TIME_CONSTANTS,
) -> tuple[LocalizerConfig, list[dict[str, float]]]:
    """``filter_speed_time_constant_s`` chosen on ``drives`` (training maps only) replayed at every stamp scale,
    by the smallest :func:`filter_capped_error` over all of them (ties: the earlier candidate): the rendered drives
    all keep one speed, a deployment's vehicle does not. Returns the config with it set and the rows."""
    replayed = [at_speed(case, scale) for scale in stamp_scales for case in drives]
    rows = [{"speed_time_constant_s": tau, "mean_capped_error_m": filter_capped_error(
        replayed, config.with_parameters(filter_speed_time_constant_s=tau).validate(), threshold_m)}
        for tau in time_constants]
    chosen = min(rows, key=lambda row: row["mean_capped_error_m"])
    return config.with_parameters(filter_speed_time_constant_s=chosen["speed_time_constant_s"]), rows


def fix_counts(drives: Sequence[FilterDrive], config: LocalizerConfig, threshold_m: float) -> tuple[int, int]:
    """(right, wrong) STATUS_FIX estimates of ``drives`` with ``config``: within ``threshold_m`` of the truth or
    not."""
    right = wrong = 0
    for case in drives:
        per_query = case.metrics(config, threshold_m)["per_query"]
        fix = np.array([status == FixStatus.FIX.value for status in per_query["status"]], bool)
        within = np.nan_to_num(float_array(per_query["error_m"]), nan=np.inf) <= threshold_m
        right, wrong = right + int(np.sum(fix & within)), wrong + int(np.sum(fix & ~within))
    return right, wrong


def fit_filter_warmup(
    drives: Sequence[FilterDrive],
    config: LocalizerConfig,
    threshold_m: float = DEFAULT_THRESHOLD_M,
    warmups_m: Sequence[float] = FILTER_WARMUPS_M,
) -> tuple[LocalizerConfig, list[dict[str, float]]]:
    """``filter_warmup_m`` chosen on ``drives`` (training maps only, every frame): the fewest STATUS_FIX estimates
    farther than ``threshold_m`` (ties: the shorter warm-up). Not a trade against the right fixes it withholds: a
    wrong start is a burst of confident wrong fixes (a navigation filter may take the first one as its datum),
    and no STATUS_FIX beyond the threshold is the target. Returns the config with it set and the rows."""
    rows = []
    for warmup in warmups_m:
        right, wrong = fix_counts(drives, config.with_parameters(filter_warmup_m=warmup).validate(), threshold_m)
        rows.append({"warmup_m": warmup, "right_fixes": right, "wrong_fixes": wrong})
    chosen = min(rows, key=lambda row: (row["wrong_fixes"], row["warmup_m"]))
    return config.with_parameters(filter_warmup_m=chosen["warmup_m"]), rows


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
    keep = np.unique(np.linspace(0, len(curve.thresholds) - 1, min(len(curve.thresholds), MAX_CURVE_POINTS)).round())
    keep = keep.astype(int)
    return {
        "threshold": nan_to_none(curve.thresholds[keep]),
        "precision": nan_to_none(curve.precision[keep]),
        "recall": nan_to_none(curve.recall[keep]),
        "false_positive_rate": nan_to_none(curve.false_positive_rate[keep]),
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
    errors = np.column_stack([float_array(per_query["error_east_m"]), float_array(per_query["error_north_m"])])
    covariances = np.full((len(errors), 2, 2), np.nan)
    for i, c in enumerate(per_query["covariance_en_m2"]):
        if c is not None:
            covariances[i] = [[c[0], c[1]], [c[1], c[2]]]
    return errors, covariances


def _positive_scores(
    result: dict[str, Any], score: str, mode: str, threshold_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a query drive's frames that have a database positive, and whether each is localized right."""
    per_query = _mode_per_query(result, mode)
    has_positive = np.array(result["per_query"]["has_positive"], dtype=bool)
    values = result["per_query"]["best_similarity"] if score == "best_similarity" else per_query["confidence"]
    correct = float_array(per_query["error_m"]) <= threshold_m
    return float_array(values)[has_positive], correct[has_positive]


def _covariance_report(by_drive: dict[str, dict[str, Any]], calibration_drive: str, held_out: list[str],
                       modes: list[str]) -> dict[str, Any]:
    """Per mode: the covariance scale and model fitted on the calibration drive, their coverage on the others."""
    covariance: dict[str, Any] = {}
    for mode in modes:
        fit = float_array(_mode_per_query(by_drive[calibration_drive], mode)["mahalanobis_sq"])
        scale = covariance_scale(fit)
        model = fit_covariance_model(*_errors_and_covariances(by_drive[calibration_drive], mode))
        covariance[mode] = {
            "scale": scale,
            "model": model,
            "calibration_coverage": covariance_coverage(fit),
            "per_drive": {},
        }
        for name in held_out:
            distances = float_array(_mode_per_query(by_drive[name], mode)["mahalanobis_sq"])
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

    return covariance


def _rejection_report(by_drive: dict[str, dict[str, Any]], negatives: Sequence[dict[str, Any]],
                      calibration_drive: str, held_out: list[str], modes: list[str],
                      target_precision: float) -> dict[str, Any]:
    """Per rejection score: the threshold fitted at ``target_precision``, its operating point on the others."""
    threshold_m = by_drive[calibration_drive]["threshold_m"]
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

    return rejection


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
    their 2-sigma ellipses (``scale``), and ``model`` (:func:`fit_covariance_model`: an isotropic scale and added
    sigma; reported, not applied) matches both the 1- and 2-sigma coverages; ``calibrated`` is that model's
    coverage on each held-out drive.
    """
    by_drive = {r["query_drive"]: r for r in results}
    if calibration_drive not in by_drive:
        raise ValueError(f"calibration drive {calibration_drive!r} is not among the results {sorted(by_drive)}")
    held_out = [name for name in by_drive if name != calibration_drive]
    threshold_m = by_drive[calibration_drive]["threshold_m"]
    modes = ["single"] + (["filtered"] if "filtered" in by_drive[calibration_drive] else [])

    covariance = _covariance_report(by_drive, calibration_drive, held_out, modes)
    rejection = _rejection_report(by_drive, negatives, calibration_drive, held_out, modes, target_precision)
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
