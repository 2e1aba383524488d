#!/usr/bin/env python3
"""Choose the sequence filter's temperature, kidnap probability, reverse weight, speed time constant and warm-up on
TRAINING maps; report them.

    python scripts/fit_sequence_filter.py --dataset ROOT [--dataset ROOT2 ...] [--out DIR]
                                          [--write-config config/semloc.yaml]

1. Read the shipped localizer configuration (``localizer_node`` of ``--config``; its re-ranking and views).
   Training maps: the ``train`` drives of every ``--dataset`` root, grouped by map seed and camera
   (semloc_ros.evaluation.uncertainty_study); evaluation and tuning maps are never fitted on.
2. Every ``--query-stride``-th frame of every training query drive (as ``semloc evaluate`` queries) runs through
   the filter for each candidate (:func:`semloc_ros.evaluation.calibration.fit_filter_parameters`): the
   smallest mean capped error wins.
3. The speed estimate's time constant (:func:`semloc_ros.evaluation.calibration.fit_speed_time_constant`), on
   every frame of the training drives replayed at the stamp scales ``--stamp-scales`` (slower and faster
   vehicles; every frame, since a scaled gap of every ``--query-stride``-th frame may exceed
   ``filter_max_gap_s``).
4. The warm-up (:func:`semloc_ros.evaluation.calibration.fit_filter_warmup`): every frame of the training drives
   with the values of steps 2-3 and the shipped integrity gate; the fewest STATUS_FIX estimates beyond
   ``--threshold-m``, then the shortest.
5. Report, per drive of the training maps and of the tuning maps (held out: the figures to decide on), Recall@1
   at ``--threshold-m`` of the single frame, of the filter with the chosen values and of the same filter without
   direction (reverse weight 1). ``DIR/results.json``; the table in docs via scripts/results_tables.py.
6. ``--write-config``: the chosen values replace those in the parameter file. Copy them into the ``setting(...)``
   defaults of ``FilterConfig`` (core/sequence_filter.py) too, then run ``python scripts/parameter_table.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semloc_ros.core.localizer import LocalizerConfig  # noqa: E402
from semloc_ros.evaluation.calibration import (  # noqa: E402
    FILTER_STAMP_SCALES,
    FilterDrive,
    fit_filter_parameters,
    fit_filter_warmup,
    fit_speed_time_constant,
)
from semloc_ros.evaluation.uncertainty_study import (  # noqa: E402
    Described,
    MapRole,
    add_fit_arguments,
    read_localizer_config,
    timed_study,
    training_maps,
    tuning_maps,
    write_config_values,
)

FITTED = ("filter_temperature", "filter_kidnap_probability", "filter_reverse_weight", "filter_speed_time_constant_s",
          "filter_warmup_m")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fit_arguments(parser, ROOT / "config" / "semloc.yaml")
    parser.add_argument("--query-stride", type=int, default=3, help="every Nth query frame (as semloc evaluate)")
    parser.add_argument("--stamp-scales", type=float, nargs="+", default=list(FILTER_STAMP_SCALES),
                        help="step 3: the training drives replayed with their stamp differences times these")
    return parser


def filter_drives(described: Described, roles: list[MapRole], stride: int) -> list[FilterDrive]:
    """Step 2: every ``stride``-th frame of each query drive of ``roles``, with its map's database."""
    drives = []
    for role in roles:
        database = described.database(role.database)
        for query in role.queries:
            frames = described.drive(query).subset(slice(None, None, stride))
            drives.append(FilterDrive(database, frames.drive, frames.descriptors, frames.thumbnails))
    return drives


def recall_rows(drives: list[FilterDrive], configs: dict[str, LocalizerConfig], threshold_m: float) -> list[dict]:
    """Step 5: Recall@1 (%) per drive of the single frame and of each filter configuration."""
    single = configs["chosen"].with_parameters(sequence_filter=False)  # no filter graph for frame-by-frame runs
    rows = []
    for case in drives:
        row = {"drive": case.drive.name, "queries": len(case.drive)}
        for name, config in {"single": single, **configs}.items():
            row[name] = case.metrics(config, threshold_m)["localization_recall_at_1"]
        rows.append(row)
        print(" | ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    return rows


def run(args: argparse.Namespace) -> dict:
    """Steps 1-5."""
    from semloc_ros.models.pipeline import Pipeline

    shipped = read_localizer_config(args.config).with_parameters(sequence_filter=True)  # step 1
    maps = training_maps(args.dataset)
    described = Described(Pipeline.from_method(args.method, device="cpu"), args.method, args.cache_dir,
                          args.database_views)
    training = filter_drives(described, maps, args.query_stride)
    chosen, fit = fit_filter_parameters(training, shipped, args.threshold_m)  # step 2
    every_frame = filter_drives(described, maps, 1)
    chosen, fit["speed_time_constants"] = fit_speed_time_constant(  # step 3
        every_frame, chosen, args.threshold_m, args.stamp_scales)
    chosen, fit["warmups"] = fit_filter_warmup(every_frame, chosen, args.threshold_m)  # step 4
    fit["stamp_scales"] = list(args.stamp_scales)
    configs = {"chosen": chosen, "undirected": chosen.with_parameters(filter_reverse_weight=1.0)}
    tuning = filter_drives(described, [r for root in args.dataset for r in tuning_maps(root)], args.query_stride)
    rows = [{**row, "method": "training map (fitted on)"} for row in recall_rows(training, configs, args.threshold_m)]
    rows += [{**row, "method": "tuning map (held out)"} for row in recall_rows(tuning, configs, args.threshold_m)]
    return {"experiment": "sequence-filter", "dataset": [str(root) for root in args.dataset],
            "database": "each drive's own map", "threshold_m": args.threshold_m, "query_stride": args.query_stride,
            "fit": fit, "chosen": {name: chosen.parameters()[name] for name in FITTED},
            "columns": ["single", *configs], "rows": rows}  # step 5


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not all(scale > 0 for scale in args.stamp_scales):  # a stamp scale of 0 or less has no speed
        print(f"fit_sequence_filter: --stamp-scales must be > 0, got {args.stamp_scales}", file=sys.stderr)
        return 2
    from semloc_ros.models import set_torch_threads

    set_torch_threads(args.threads)
    study = timed_study("fit_sequence_filter", lambda: run(args), args.out)
    if study is None:
        return 2
    print("chosen: " + ", ".join(f"{k} {v:g}" for k, v in study["chosen"].items()))
    if args.write_config is not None:  # step 6
        write_config_values(args.write_config, study["chosen"])
        print(f"chosen values written to {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
