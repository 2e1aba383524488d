"""Text tables and notes of a ``semloc evaluate`` run (what the command prints; results.json holds the numbers).

- :func:`format_table`: retrieval, one row per method x condition;
- :func:`format_localization_table`: the localizer's estimates, single-frame and through the sequence filter;
- :func:`format_rejection_table`: no-match rejection thresholds and their precision / recall per drive;
- :func:`format_segmentation_table`: pixel accuracy and IoU of one segmenter per drive;
- :func:`format_report`: all of them with the notes that explain them, as printed after a run;
- :func:`format_drive_line`, :func:`format_negatives_line`, :func:`format_segmentation_line`: the progress line
  printed as each drive finishes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from semloc_ros.evaluation.metrics import DEFAULT_NS


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per method x condition: recall (all queries), top-1 within D, localizer error, #no positive."""
    ns = [str(n) for n in DEFAULT_NS]
    header = [
        "method",
        "condition",
        *(f"R@{n}" for n in ns),
        "top1<=2m",
        "top1<=5m",
        "top1<=10m",
        "loc_med_m",
        "loc_p95_m",
        "no_pos",
    ]
    rows = [header]
    for r in results:
        recall = r["recall_at_n_all_queries"]
        top1, loc = r["top1_error_m"], r["localization_error_m"]
        rows.append(
            [
                r["method"],
                r["condition"],
                *(_fmt(recall.get(n)) for n in ns),
                _fmt(top1["within_2m"]),
                _fmt(top1["within_5m"]),
                _fmt(top1["within_10m"]),
                _fmt(loc["median"], 2),
                _fmt(loc["p95"], 2),
                f"{r['n_queries_without_positive']}/{r['n_queries']}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _aligned(rows: list[list[str]], left: int = 2) -> str:
    """Rows as text columns: the first ``left`` columns left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None or not math.isfinite(fraction) else f"{100 * fraction:.1f}"


def format_segmentation_table(segmentation: dict[str, Any], name: str = "") -> str:
    """Pixel accuracy and mIoU of one segmenter per drive, plus the IoU of the classes that drive retrieval."""
    classes = ("ROAD", "SKY", "BUILDING", "TERRAIN", "VEGETATION", "LANE_LINE", "POLE")
    rows = [["drive", "condition", "frames", "pix_acc", "mIoU", *[c.lower() for c in classes]]]
    for drive, scores in segmentation["drives"].items():
        per_class = scores["iou_per_class"]
        rows.append([drive, scores["condition"], str(scores["n_frames"]), _fmt(scores["pixel_accuracy"]),
                     _fmt(scores["mean_iou"]), *[_fmt(per_class.get(c)) for c in classes]])
    title = f"{name} = {segmentation['segmenter']}" if name else segmentation["segmenter"]
    return f"segmentation ({title}), percent:\n" + _aligned(rows)


def format_drive_line(label: str, result: dict[str, Any], seconds: float) -> str:
    """Progress: one finished query drive of one method (Recall@1/5 over all queries)."""
    recall = result["recall_at_n_all_queries"]
    return (f"{label} {result['query_drive']}: R@1 {_fmt(recall.get('1'))} R@5 {_fmt(recall.get('5'))}, "
            f"{result['n_queries']} frames, {seconds:.1f} s")


def format_negatives_line(label: str, negatives: dict[str, Any], seconds: float) -> str:
    """Progress: one finished rejection drive (out-of-database negatives) of one method."""
    return (f"{label} {negatives['drive']} (negatives): {negatives['n_negatives']} negatives, "
            f"{negatives['n_frames']} frames, {seconds:.1f} s")


def format_segmentation_line(name: str, drive: str, scores: dict[str, Any], seconds: float) -> str:
    """Progress: one finished segmentation drive of one segmenter ('' = the shipped one)."""
    return (f"segmentation{'@' + name if name else ''} {drive}: mIoU {_fmt(scores['mean_iou'])}, "
            f"{scores['n_frames']} frames, {seconds:.1f} s")


def format_localization_table(results: list[dict[str, Any]], calibrations: dict[str, dict[str, Any]]) -> str:
    """One row per method x condition x mode: R@1 of the estimate, the share within 2/5/10 m, error median/p95,
    covariance coverage.

    ``cov1s*`` / ``cov2s*`` are the 1-/2-sigma coverages after the covariance model (scale and added sigma)
    fitted on the calibration drive (only for the other drives; the calibration drive's row is marked
    ``(calib)``).
    """
    rows = [["method", "condition", "mode", "R@1", "<=2m", "<=5m", "<=10m", "med_m", "p95_m", "fix%", "cov1s%",
             "cov2s%", "cov1s*%", "cov2s*%"]]
    for r in results:
        calibration = calibrations.get(r["method"])
        modes = [("single", r)] + ([("filtered", r["filtered"])] if "filtered" in r else [])
        for mode, metrics in modes:
            n = sum(metrics["status_counts"].values())
            coverage = metrics["covariance_coverage"]
            calibrated: dict[str, Any] = {}
            condition = r["condition"]
            if calibration is not None and mode in calibration["covariance"]:
                if r["query_drive"] == calibration["calibration_query_drive"]:
                    condition += " (calib)"
                else:
                    drive = calibration["covariance"][mode]["per_drive"].get(r["query_drive"])
                    calibrated = (drive or {}).get("calibrated") or {}
            error = metrics["localization_error_m"]
            rows.append(
                [
                    r["method"],
                    condition,
                    mode,
                    _fmt(metrics["localization_recall_at_1"]),
                    _fmt(error["within_2m"]),
                    _fmt(error["within_5m"]),
                    _fmt(error["within_10m"]),
                    _fmt(error["median"], 2),
                    _fmt(error["p95"], 2),
                    _fmt(100 * metrics["status_counts"]["fix"] / n if n else math.nan),
                    _pct(coverage["within_1sigma"]),
                    _pct(coverage["within_2sigma"]),
                    _pct(calibrated.get("within_1sigma")),
                    _pct(calibrated.get("within_2sigma")),
                ]
            )
    return _aligned(rows, left=3)


def format_rejection_table(calibrations: dict[str, dict[str, Any]]) -> str:
    """Per method and score: the calibrated threshold, then precision / recall / FPR on each held-out drive."""
    rows = [["method", "score", "threshold", "drive", "precision%", "recall%", "FPR%", "fix_prec%", "fix_prec_filt%"]]
    for method, calibration in calibrations.items():
        for score, entry in calibration["rejection"].items():
            fit = entry["calibration"]
            rows.append(
                [
                    method,
                    score,
                    _fmt(fit["threshold"], 3),
                    f"{calibration['calibration_query_drive']} (calib)",
                    _pct(fit["precision"]),
                    _pct(fit["recall"]),
                    _pct(fit["false_positive_rate"]),
                    "",
                    "",
                ]
            )
            for drive, point in entry["per_drive"].items():
                rows.append(
                    [
                        method,
                        score,
                        _fmt(point["threshold"], 3),
                        drive,
                        _pct(point["precision"]),
                        _pct(point["recall"]),
                        _pct(point["false_positive_rate"]),
                        _pct(point["fix_precision"]),
                        _pct(point.get("fix_precision_filtered")),
                    ]
                )
    return _aligned(rows, left=2)


def _fitted_notes(calibrations: dict[str, dict[str, Any]]) -> list[str]:
    """The isotropic covariance analysis per method (reported, not applied: the scored configuration's
    covariance model is fitted on training maps by scripts/fit_uncertainty.py)."""
    lines = []
    for method, calibration in calibrations.items():
        models = ", ".join(f"{mode}: scale {c['model']['scale']:.3g}, extra sigma {c['model']['extra_sigma_m']:g} m"
                           for mode, c in calibration["covariance"].items())
        lines.append(f"{method}: isotropic covariance analysis on {calibration['calibration_query_drive']} (not "
                     f"applied; the shipped model is fitted on training maps by scripts/fit_uncertainty.py): {models}")
    return lines


def _rejection_note(calibrations: dict[str, dict[str, Any]], threshold_m: float, target_precision: float) -> str:
    first = next(iter(calibrations.values()))
    negatives = first["negatives"]
    return (
        f"\nRejection: accept a query when score >= threshold (best_similarity -> min_similarity, "
        f"confidence -> min_confidence), threshold = largest recall at precision >= {target_precision:g} "
        f"on {first['calibration_query_drive']} + {negatives['n_calibration']} negatives; reported "
        f"on the other drives + {negatives['n_report']} other negatives. Negatives: "
        f"{', '.join(negatives['drives'])}, {negatives['rule']}. fix_prec = accepted queries "
        f"that are in the database AND localized within {threshold_m:g} m (fix_prec_filt: same gate, "
        "filtered estimates)."
    )


def format_report(summary: dict[str, Any], results_path: Path, elapsed_s: float, target_precision: float,
                  calibration_query: str | None, rejection: bool) -> str:
    """Everything printed after a run: segmentation, retrieval, localization and rejection tables with notes."""
    results, threshold_m = summary["results"], summary["threshold_m"]
    calibrations = summary.get("calibration", {})
    parts = [format_segmentation_table(scores, name) + "\n" for name, scores in summary.get("segmentation", {}).items()]
    parts += [
        format_table(results),
        f"\nR@N over all queries (queries without a database entry within {threshold_m:g} m count as "
        f"failures; 'no_pos' = how many). {elapsed_s:.0f} s. Results: {results_path}\n",
        format_localization_table(results, calibrations),
        f"\nR@1 = estimate within {threshold_m:g} m, <=Dm = within D m (percent of all queries); med/p95 "
        "over queries with an estimate; cov1s/cov2s = errors inside the 1-/2-sigma ellipses (Gaussian: 39.3 / "
        "86.5 %) of the published covariance; cov1s*/cov2s* = the isotropic analysis fitted on the '(calib)' drive.",
    ]
    resets = {f"{r['method']}/{r['query_drive']}": r["filtered"]["filter_resets"] for r in results if "filtered" in r}
    if any(resets.values()):
        parts.append("sequence filter resets (stamp gaps > filter_max_gap_s, e.g. a large --query-stride): "
                     + ", ".join(f"{name} {count}" for name, count in resets.items() if count))
    if calibrations and rejection:
        parts += ["", format_rejection_table(calibrations), _rejection_note(calibrations, threshold_m,
                                                                            target_precision)]
    parts += _fitted_notes(calibrations)
    return "\n".join(parts)
