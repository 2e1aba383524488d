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


def per_segmenter_table(summary: dict[str, Any]) -> str:
    """Day-only protocol: a row per segmenter, per condition its mIoU and the semantic / label-histogram R@1 and
    R@5 with its labels (methods named ``<method>@<segmenter>``; the RGB baseline, which has no segmenter, in a
    last row)."""
    segmentation = summary.get("segmentation") or {}
    conditions: list[str] = []
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in summary["results"]:
        method, _, segmenter = r["method"].partition("@")
        if r["condition"] not in conditions:
            conditions.append(r["condition"])
        recall = r["recall_at_n_all_queries"]
        cells.setdefault((segmenter or method, r["condition"]), {})[method] = f"{fmt(recall['1'])}/{fmt(recall['5'])}"
    query_drives = {r["query_drive"] for r in summary["results"]}
    extra: list[str] = []  # drives scored for segmentation only (a condition without a query drive)
    for name, scores in segmentation.items():
        for drive_name, drive in scores["drives"].items():
            if drive_name in query_drives:
                cells.setdefault((name, drive["condition"]), {})["mIoU"] = fmt(drive["mean_iou"])
            elif drive_name != summary["database_drive"]:
                if drive_name not in extra:
                    extra.append(drive_name)
                cells.setdefault((name, drive_name), {})["mIoU"] = fmt(drive["mean_iou"])
    rows = list(dict.fromkeys(key[0] for key in cells))
    header = ["segmenter", *(f"{c}: mIoU · sem R@1/5 · hist R@1/5" for c in conditions),
              *(f"{d}: mIoU" for d in extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out = []
        for condition in conditions:
            c = cells.get((row, condition), {})
            if set(c) == {"rgb"}:
                out.append(f"rgb {c['rgb']}")
            else:
                out.append(" · ".join((c.get("mIoU", "-"), c.get("semantic", "-"), c.get("label-histogram", "-"))))
        out += [cells.get((row, d), {}).get("mIoU", "-") for d in extra]
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of semloc evaluate")
    args = parser.parse_args(argv)
    for path in args.results:
        summary = json.loads(path.read_text())
        protocol = summary.get("protocol", {}).get("name", "standard")
        print(f"### {protocol} ({path})\n")
        if protocol == "day-only":
            print(per_segmenter_table(summary) + "\n")
        print(results_table(summary))
        table = segmentation_table(summary)
        if table:
            print("\n" + table)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
