#!/usr/bin/env python3
"""Print the README's results tables (markdown) from the results.json files of `semloc evaluate`.

    python scripts/results_tables.py docs/results/semloc-sim-v1/results.json [more results.json ...]

One table per file: a row per method x condition with Recall@N at the file's threshold, the share of top-1
places and of localizer estimates within 2/5/10 m and the estimate's median / 95th percentile error; with a
sequence filter, the filtered estimate's R@1 and median; with segmentation scores, a table of mIoU per
segmenter and condition. The figures are copied from the files, never typed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def results_table(summary: dict[str, Any]) -> str:
    threshold = summary["threshold_m"]
    filtered = any("filtered" in r for r in summary["results"])
    header = ["method", "condition", "R@1", "R@5", "R@10", "top-1 ≤2/5/10 m", "est ≤2/5/10 m", "est med m",
              "est p95 m"]
    if filtered:
        header += ["filtered R@1", "filtered med m"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in summary["results"]:
        recall, top1, est = r["recall_at_n_all_queries"], r["top1_error_m"], r["localization_error_m"]
        row = [
            r["method"],
            r["condition"],
            *(fmt(recall.get(n)) for n in ("1", "5", "10")),
            " / ".join(fmt(top1[f"within_{d}m"]) for d in (2, 5, 10)),
            " / ".join(fmt(est[f"within_{d}m"]) for d in (2, 5, 10)),
            fmt(est["median"], 2),
            fmt(est["p95"], 1),
        ]
        if filtered:
            f = r.get("filtered")
            row += [fmt(f["localization_recall_at_1"]) if f else "-",
                    fmt(f["localization_error_m"]["median"], 2) if f else "-"]
        lines.append("| " + " | ".join(row) + " |")
    note = (f"R@N: a top-N place within {threshold:g} m, % of all queries of the drive; est = the localizer's "
            f"estimate; database {summary['database_drive']} ({summary['n_database']} places).")
    return "\n".join(lines) + "\n\n" + note


def segmentation_table(summary: dict[str, Any]) -> str:
    segmentation = summary.get("segmentation") or {}
    if not segmentation:
        return ""
    conditions: list[str] = []
    for scores in segmentation.values():
        for drive in scores["drives"].values():
            if drive["condition"] not in conditions:
                conditions.append(drive["condition"])
    header = ["segmenter", *(f"{c} mIoU / pix acc" for c in conditions)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, scores in segmentation.items():
        by_condition: dict[str, list[dict[str, Any]]] = {}
        for drive in scores["drives"].values():
            by_condition.setdefault(drive["condition"], []).append(drive)
        cells = []
        for condition in conditions:
            drives = by_condition.get(condition, [])
            cells.append(" / ".join((", ".join(fmt(d["mean_iou"]) for d in drives), ", ".join(
                fmt(d["pixel_accuracy"]) for d in drives))) if drives else "-")
        lines.append(f"| {name or 'shipped'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of semloc evaluate")
    args = parser.parse_args(argv)
    for path in args.results:
        summary = json.loads(path.read_text())
        protocol = summary.get("protocol", {}).get("name", "standard")
        print(f"### {protocol} ({path})\n")
        print(results_table(summary))
        table = segmentation_table(summary)
        if table:
            print("\n" + table)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
