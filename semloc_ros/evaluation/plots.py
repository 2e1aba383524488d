"""PNG figures of evaluation results (matplotlib, Agg backend).

- :func:`plot_top1_recall_at_distances` and :func:`plot_recall_at_n`: one line per method and condition
  (colour = method, line style = condition), like Fig. 3 of the usual VPR papers;
- :func:`plot_route_map`: database route, query ground truth and the localizer's fixes coloured by error;
- :func:`plot_fix_track`: fixes recorded from the running localizer (``semloc plot``) on the ground-truth
  route, coloured by error, over the database places;
- :func:`plot_rejection_curves`: no-match rejection precision/recall curves of ``semloc evaluate``.

The first three take the per-query-drive result dicts of :func:`semloc_ros.evaluation.loop.evaluate_method` and
write one PNG; the method names in them (``semantic-oracle`` ...) become the legend labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from semloc_ros.core.geodesy import LocalENU

_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _styles(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Line style per result: one colour per method, one dash/marker per condition."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    colours = plt.get_cmap("tab10")
    styles = []
    for r in results:
        m, c = methods.index(r["method"]), conditions.index(r["condition"])
        styles.append(
            {
                "color": colours(m % 10),
                "linestyle": _LINESTYLES[c % len(_LINESTYLES)],
                "marker": _MARKERS[c % len(_MARKERS)],
                "markersize": 4,
                "label": f"{r['method']} / {r['condition']}",
            }
        )
    return styles


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _finish_map(fig: plt.Figure, ax: plt.Axes, path: str | os.PathLike) -> Path:
    """Axis labels, equal aspect, grid and legend of a map in local east/north metres; saves the figure."""
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _curve(mapping: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    xs = np.array([float(k) for k in mapping], dtype=float)
    ys = np.array([np.nan if v is None else float(v) for v in mapping.values()], dtype=float)
    order = np.argsort(xs)
    return xs[order], ys[order]


def _error_scatter(ax: plt.Axes, east: np.ndarray, north: np.ndarray, error_m: np.ndarray, max_error_m: float,
                   label: str, marker: str = "o"):
    """Points coloured by position error on a fixed 0..``max_error_m`` scale (larger errors share the top)."""
    return ax.scatter(east, north, c=np.minimum(error_m, max_error_m), cmap="viridis", vmin=0, vmax=max_error_m,
                      s=10 if marker == "o" else 18, marker=marker, label=label, zorder=3)


def _error_colorbar(fig: plt.Figure, ax: plt.Axes, points, max_error_m: float) -> None:
    fig.colorbar(points, ax=ax, label=f"position error (m, clipped at {max_error_m:g})")


def plot_top1_recall_at_distances(
    results: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "Top-1 Recall@D"
) -> Path:
    """Percentage of queries whose top-1 retrieved place is within D metres, against D."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for r, style in zip(results, _styles(results), strict=True):
        xs, ys = _curve(r["top1_recall_at_distance_m"])
        ax.plot(xs, ys, **style)
    ax.set_xlabel("distance threshold D (m)")
    ax.set_ylabel("top-1 recall (%)")
    ax.set_ylim(-2, 102)  # lines at 0 % and 100 % stay visible
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_recall_at_n(
    results: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    key: str = "recall_at_n_all_queries",
    title: str = "Recall@N (all queries)",
) -> Path:
    """Recall@N against N (``key`` picks all queries or queries with a positive)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for r, style in zip(results, _styles(results), strict=True):
        xs, ys = _curve(r[key])
        ax.plot(xs, ys, **style)
    ax.set_xlabel("N (number of retrieved places)")
    ax.set_ylabel("recall@N (%)")
    ax.set_ylim(-2, 102)  # lines at 0 % and 100 % stay visible
    ax.set_xscale("log")
    ax.set_xticks(sorted({float(k) for r in results for k in r[key]}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_route_map(
    result: dict[str, Any],
    database_lat: np.ndarray,
    database_lon: np.ndarray,
    path: str | os.PathLike,
    max_error_m: float = 50.0,
) -> Path:
    """Map in metres (ENU centred on the database): database route, query truth, fixes coloured by error.

    Fixes further than ``max_error_m`` share the top colour; queries without an estimate are not drawn.
    """
    per_query = result["per_query"]
    frame = LocalENU.centred_on(np.asarray(database_lat, float), np.asarray(database_lon, float))
    db_e, db_n, _ = frame.to_enu(np.asarray(database_lat, float), np.asarray(database_lon, float))
    q_e, q_n, _ = frame.to_enu(np.asarray(per_query["lat"], float), np.asarray(per_query["lon"], float))
    est_lat = np.array([np.nan if v is None else v for v in per_query["estimate_lat"]], dtype=float)
    est_lon = np.array([np.nan if v is None else v for v in per_query["estimate_lon"]], dtype=float)
    error = np.array([np.nan if v is None else v for v in per_query["error_m"]], dtype=float)
    has = np.isfinite(est_lat) & np.isfinite(est_lon) & np.isfinite(error)

    fig, ax = plt.subplots(figsize=(7.0, 6.0))
    ax.plot(db_e, db_n, color="0.6", linewidth=4, alpha=0.6, label="database route")
    ax.plot(q_e, q_n, color="k", linewidth=1, label="query ground truth")
    if has.any():
        e_e, e_n, _ = frame.to_enu(est_lat[has], est_lon[has])
        points = _error_scatter(ax, e_e, e_n, error[has], max_error_m, label="estimated fixes")
        _error_colorbar(fig, ax, points, max_error_m)
    n_none = int((~has).sum())
    ax.set_title(
        f"{result['method']} / {result['condition']} ({result['query_drive']}): "
        f"{int(has.sum())} fixes, {n_none} without estimate",
        fontsize=9,
    )
    return _finish_map(fig, ax, path)


def plot_fix_track(
    truth_lat: np.ndarray,
    truth_lon: np.ndarray,
    fix_lat: np.ndarray,
    fix_lon: np.ndarray,
    error_m: np.ndarray,
    path: str | os.PathLike,
    confident: np.ndarray | None = None,
    database_lat: np.ndarray | None = None,
    database_lon: np.ndarray | None = None,
    title: str = "",
    max_error_m: float = 50.0,
) -> Path:
    """Map in metres (ENU centred on the route): database places (grey dots), route, fixes coloured by error.

    ``error_m`` is the distance of each fix to the ground truth at its stamp (NaN: not known, drawn as hollow
    grey circles); ``confident`` (default all) marks status-FIX fixes, the others are drawn as crosses.
    Fixes without a position (NaN) must be left out by the caller.
    """
    truth_lat, truth_lon = np.asarray(truth_lat, float), np.asarray(truth_lon, float)
    fix_lat, fix_lon, error_m = np.asarray(fix_lat, float), np.asarray(fix_lon, float), np.asarray(error_m, float)
    confident = np.ones(len(fix_lat), bool) if confident is None else np.asarray(confident, bool)
    has_db = database_lat is not None and database_lon is not None and len(database_lat) > 0
    all_lat = [truth_lat, fix_lat] + ([np.asarray(database_lat, float)] if has_db else [])
    all_lon = [truth_lon, fix_lon] + ([np.asarray(database_lon, float)] if has_db else [])
    frame = LocalENU.centred_on(np.concatenate(all_lat), np.concatenate(all_lon))

    fig, ax = plt.subplots(figsize=(7.0, 6.0))
    if has_db:
        db_e, db_n, _ = frame.to_enu(np.asarray(database_lat, float), np.asarray(database_lon, float))
        ax.scatter(db_e, db_n, s=3, color="0.65", label="database places", zorder=1)
    t_e, t_n, _ = frame.to_enu(truth_lat, truth_lon)
    ax.plot(t_e, t_n, color="k", linewidth=1, label="ground-truth route", zorder=2)
    f_e, f_n, _ = frame.to_enu(fix_lat, fix_lon)
    known = np.isfinite(error_m)
    points = None
    for mask, marker, label in ((known & confident, "o", "fixes (FIX)"), (known & ~confident, "x", "fixes (NO_FIX)")):
        if mask.any():
            points = _error_scatter(ax, f_e[mask], f_n[mask], error_m[mask], max_error_m, label, marker)
    if (~known).any():
        ax.scatter(f_e[~known], f_n[~known], s=12, facecolors="none", edgecolors="0.4",
                   label="fixes without ground truth", zorder=3)
    if points is not None:
        _error_colorbar(fig, ax, points, max_error_m)
    ax.set_title(title, fontsize=9)
    return _finish_map(fig, ax, path)


def plot_rejection_curves(calibrations: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """No-match rejection: precision against recall on the held-out drives, one panel per score.

    Takes ``calibrations`` of ``semloc evaluate`` (method ->
    :func:`semloc_ros.evaluation.calibration.calibrate_method`);
    colour = method, line style = held-out drive; the dot is the threshold fitted on the calibration drive.
    """
    scores = list(dict.fromkeys(score for c in calibrations.values() for score in c["rejection"]))
    fig, axes = plt.subplots(1, max(1, len(scores)), figsize=(5.0 * max(1, len(scores)), 4.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for panel, score in enumerate(scores):
        ax = axes[0, panel]
        for m, (method, calibration) in enumerate(calibrations.items()):
            entry = calibration["rejection"].get(score)
            if entry is None:
                continue
            for d, (drive, point) in enumerate(entry["per_drive"].items()):
                curve = point["curve"]
                recall = np.array([np.nan if v is None else v for v in curve["recall"]], dtype=float)
                precision = np.array([np.nan if v is None else v for v in curve["precision"]], dtype=float)
                style = {"color": colours(m % 10), "linestyle": _LINESTYLES[d % len(_LINESTYLES)]}
                ax.plot(100 * recall, 100 * precision, label=f"{method} / {drive}", **style)
                if point["recall"] is not None and point["precision"] is not None:
                    ax.plot(100 * point["recall"], 100 * point["precision"], "o", color=style["color"], markersize=5)
        first = next(c for c in calibrations.values() if score in c["rejection"])
        ax.set_title(
            f"{score}: threshold fitted on {first['calibration_query_drive']} "
            f"(precision >= {100 * first['rejection'][score]['target_precision']:g} %)",
            fontsize=8,
        )
        ax.set_xlabel("recall: in-database queries accepted (%)")
        ax.set_ylabel("precision: accepted queries in the database (%)")
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower left")
    return _save(fig, path)


def plot_evaluation(results: Sequence[dict[str, Any]], database_lat: np.ndarray, database_lon: np.ndarray,
                    out: str | os.PathLike, route_maps: bool = True,
                    calibrations: dict[str, dict[str, Any]] | None = None) -> None:
    """The figures of a ``semloc evaluate`` run in ``out``: Top-1 Recall@D, Recall@N (all queries and queries
    with a positive), a route map per method and query drive (also through the sequence filter) and, with
    ``calibrations``, the rejection curves."""
    out = Path(out)
    plot_top1_recall_at_distances(results, out / "top1_recall_at_distance.png")
    plot_recall_at_n(results, out / "recall_at_n.png")
    plot_recall_at_n(results, out / "recall_at_n_queries_with_positive.png", key="recall_at_n_queries_with_positive",
                     title="Recall@N (queries with a positive)")
    for r in results if route_maps else []:
        plot_route_map(r, database_lat, database_lon, out / "routes" / f"route_{r['method']}_{r['query_drive']}.png")
        if "filtered" in r:
            filtered = {**r, "method": f"{r['method']}+filter",
                        "per_query": {**r["per_query"], **r["filtered"]["per_query"]}}
            plot_route_map(filtered, database_lat, database_lon,
                           out / "routes" / f"route_{r['method']}+filter_{r['query_drive']}.png")
    if calibrations:
        plot_rejection_curves(calibrations, out / "rejection_curves.png")
