#!/usr/bin/env python3
"""Refit the localizer's covariance model, integrity gate and off-map filter on TRAINING maps; report them.

    python scripts/fit_uncertainty.py --dataset ROOT [--dataset ROOT2 ...] [--write-config config/semloc.yaml]
                                      [--out DIR] [--report-only]

Steps (semloc_ros.evaluation.uncertainty_study: which map plays which role):
1. Read the shipped localizer configuration (``localizer_node`` of the parameter file), the cross-track
   correction (``lateral_gain_m``, scripts/fit_lateral.py) included: everything below sees corrected fixes.
   Training maps: the ``train`` drives of every ``--dataset`` root, grouped by map seed and camera (seeds and
   drive names distinct across roots); evaluation maps, rear sets and tuning maps are never fitted on.
2. Learning map (the first training map of the first root): the off-map similarity and the off-map
   likelihood's cosine temperature, the landmark rule (``min_landmark_share``, localizer step 7b: the value that
   keeps the most right fixes less out-of-map fixes, on its drives in the map and against the other training
   maps), the integrity score (logistic regression of a right fix on its cues). The
   filter's temperature, kidnap probability and reverse weight are the parameter file's
   (scripts/fit_sequence_filter.py chooses them on all training maps).
3. Calibration maps (the other training maps): the Learn-then-Test gate at ``--false-fix-rate`` with
   confidence ``1 - --delta``; then the heading-aligned covariance model on the published fixes of all
   training maps. Both modes (single-frame, sequence filter) are fitted; the file gets ``--fit-mode``'s values,
   by default the single-frame fit, for either mode: Learn-then-Test's bound counts the calibration frames as
   independent draws, which single-frame fixes are nearly and a filter's are not (each carries the previous
   frames' belief, so the effective sample is far smaller than the frame count and the gate's guarantee would
   be overstated).
   ``--report-only`` skips steps 2-3: the parameter file's own values are reported (to compare with a fit).
4. Report, per root, on the evaluation map, the rear pair and the tuning map (held out: the figures to decide
   on) and on out-of-map drives (never fitted on): coverage, share beyond 3 sigma, largest STATUS_FIX error,
   false-fix / kept-fix rates, EKF NEES. ``DIR/results.json``; tables via scripts/results_tables.py.
5. ``--write-config``: the fitted values of ``--fit-mode`` replace those in the parameter file (comments
   kept). config/semloc.yaml must equal the nodes' declared defaults (test/test_config_consistency.py): copy
   the same values into the ``setting(...)`` defaults of ``LocalizerConfig`` (core/localizer.py) and
   ``FilterConfig`` (core/sequence_filter.py), then run ``python scripts/parameter_table.py``.

Descriptions and databases are cached (``--cache-dir``, default $SEMLOC_CACHE or /tmp/semloc_eval_cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semloc_ros.evaluation.fix_records import MODES  # noqa: E402
from semloc_ros.evaluation.metrics import DEFAULT_NEGATIVE_MIN_ROUTE_M  # noqa: E402
from semloc_ros.evaluation.uncertainty_study import (  # noqa: E402
    add_fit_arguments,
    format_report,
    read_localizer_config,
    run_study,
    timed_study,
    write_config_values,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fit_arguments(parser, ROOT / "config" / "semloc.yaml")
    parser.add_argument("--false-fix-rate", type=float, default=0.01, help="Learn-then-Test target alpha")
    parser.add_argument("--delta", type=float, default=0.1, help="1 - confidence of the guarantee")
    parser.add_argument("--min-route-m", type=float, default=DEFAULT_NEGATIVE_MIN_ROUTE_M,
                        help="out-of-map frames count beyond this distance along their route")
    parser.add_argument("--fit-mode", choices=MODES, default="single",
                        help="whose fit --write-config writes (step 3: single-frame by default, for both modes)")
    parser.add_argument("--no-report", action="store_true", help="fit only")
    parser.add_argument("--report-only", action="store_true",
                        help="fit nothing: report the parameter file's values (--write-config is refused)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only and (args.write_config is not None or args.no_report):
        print("fit_uncertainty: --report-only fits nothing to write or leave unreported", file=sys.stderr)
        return 2
    from semloc_ros.models import set_torch_threads
    from semloc_ros.models.pipeline import Pipeline

    set_torch_threads(args.threads)
    config = read_localizer_config(args.config)
    pipeline = Pipeline.from_method(args.method, device="cpu")
    study = timed_study("fit_uncertainty", lambda: run_study(args, pipeline, config), args.out)
    if study is None:
        return 2
    print(format_report(study))
    if args.write_config is not None:
        write_config_values(args.write_config, study["shipped"]["parameters"])
        print(f"fitted values written to {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
