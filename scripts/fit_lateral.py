#!/usr/bin/env python3
"""Fit the localizer's cross-track correction (lateral_gain_m) on TRAINING maps; check it on held-out maps.

    python scripts/fit_lateral.py --dataset ROOT [--dataset ROOT2 ...] [--map DB:Q1,Q2 ...] [--tuning DB:Q1,Q2 ...]
                                  [--write-config config/semloc.yaml] [--out DIR]

Steps (semloc_ros.evaluation.lateral_fit):
1. Maps: ``--map`` (repeatable; a database drive and its query drives, looked up in the roots in order), default
   the training maps of every root's splits.json (``train`` grouped by map seed and camera: a rear camera's
   drives are a map of their own; seeds and drive names distinct across roots). Never give an evaluation, rear
   set or tuning drive as a ``--map``.
2. Held out: each map in turn, with the others of its seed (its other camera), is checked with the gain fitted
   on the remaining maps (leave one map out); and each ``--tuning`` map (default: the roots' ``tuning`` sets
   when no ``--map`` is given) with the gain fitted on all maps.
3. The gain and residual sigma fitted on all ``--map`` maps; ``--write-config`` writes the gain into the parameter
   file only when the held-out cross error drops with it (else 0: off), then copy it into the ``setting(...)``
   default of ``lateral_gain_m`` (core/localizer.py) and run ``python scripts/parameter_table.py``.

Descriptions and databases are cached (``--cache-dir``, default $SEMLOC_CACHE or /tmp/semloc_eval_cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semloc_ros.evaluation.uncertainty_study import add_fit_arguments  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fit_arguments(parser, ROOT / "config" / "semloc.yaml")
    parser.add_argument("--map", dest="maps", action="append", default=[], metavar="DB:Q1,Q2",
                        help="a training map: database drive and query drives (repeatable)")
    parser.add_argument("--tuning", action="append", default=[], metavar="DB:Q1,Q2",
                        help="a held-out map to check the fitted gain on (repeatable)")
    return parser


def parse_map(roots: list[Path], text: str):
    """A ``DB:Q1,Q2`` argument as a MapRole of the drives, each from the first root that has it (ValueError when
    malformed, or a drive no root has)."""
    from semloc_ros.evaluation.uncertainty_study import MapRole
    from semloc_ros.io.datasets import load_semloc_sim_drive

    def drive(name: str):
        for root in roots:
            if (root / "drives" / name).is_dir():
                return load_semloc_sim_drive(root, name)
        raise ValueError(f"no drive {name!r} in {', '.join(map(str, roots))}")

    database, separator, queries = text.partition(":")
    names = [q for q in queries.split(",") if q]
    if not separator or not database or not names:
        raise ValueError(f"a map is DB:Q1,Q2 (a database drive and its queries), got {text!r}")
    first = drive(database)
    return MapRole(database, first, [drive(q) for q in names], str(first.metadata.get("seed", database)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.evaluation.uncertainty_study import (
        check_distinct_drives,
        read_localizer_config,
        training_maps,
        tuning_maps,
    )

    try:
        maps = [parse_map(args.dataset, m) for m in args.maps] or training_maps(args.dataset)
        tuning = [parse_map(args.dataset, m) for m in args.tuning]
        if not args.tuning and not args.maps:  # the roots' tuning sets are held out, never fitted on
            tuning = [role for root in args.dataset for role in tuning_maps(root)]
        check_distinct_drives([*maps, *tuning])
        config = read_localizer_config(args.config)
    except (OSError, ValueError, KeyError) as error:
        print(f"fit_lateral: {error}", file=sys.stderr)
        return 2
    from semloc_ros.evaluation.lateral_fit import format_study, run_lateral_study

    study = run_lateral_study(args, maps, tuning, config)
    if args.out is not None:
        from semloc_ros.core.files import write_json_atomic

        write_json_atomic(study, args.out / "lateral.json")
        print(f"results: {args.out / 'lateral.json'}")
    print(format_study(study))
    if args.write_config is not None:
        from semloc_ros.evaluation.uncertainty_study import write_config_values

        write_config_values(args.write_config, {"lateral_gain_m": study["shipped_gain_m"]})
        print(f"lateral_gain_m {study['shipped_gain_m']} written to {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
