"""PNG figures of evaluation results (matplotlib, Agg backend).

- :func:`plot_top1_recall_at_distances` and :func:`plot_recall_at_n`: one line per method and condition
  (colour = method, line style = condition), like Fig. 3 of the usual VPR papers;
- :func:`plot_route_map`: database route, query ground truth and the localizer's fixes coloured by error.

Every function takes the per-query-drive result dicts of :func:`semloc_ros.evaluation.evaluate_method` and
writes one PNG; the method names in them (``semantic-oracle`` ...) become the legend labels.
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

from semloc_ros.geodesy import LocalENU

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


def _curve(mapping: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    xs = np.array([float(k) for k in mapping], dtype=float)
    ys = np.array([np.nan if v is None else float(v) for v in mapping.values()], dtype=float)
    order = np.argsort(xs)
    return xs[order], ys[order]


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
        points = ax.scatter(
            e_e,
            e_n,
            c=np.minimum(error[has], max_error_m),
            cmap="viridis",
            vmin=0,
            vmax=max_error_m,
            s=10,
            label="estimated fixes",
            zorder=3,
        )
        fig.colorbar(points, ax=ax, label=f"position error (m, clipped at {max_error_m:g})")
    n_none = int((~has).sum())
    ax.set_title(
        f"{result['method']} / {result['condition']} ({result['query_drive']}): "
        f"{int(has.sum())} fixes, {n_none} without estimate",
        fontsize=9,
    )
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
