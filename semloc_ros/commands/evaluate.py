"""``semloc evaluate --dataset ROOT [--protocol NAME] --methods ... --out DIR``: retrieval and localization.

For each method the database drive of ``ROOT/splits.json`` is described once (cached in ``DIR/cache`` by
method, drive and model ids) and every query drive is retrieved against it and localized. Each finished drive
prints one line (method, drive, R@1/R@5, frames, seconds; mIoU for the segmentation drives), also with
``--quiet``, and its results are written at once to ``DIR/partial``; a run stopped for any reason and started
again with the same request reads those back and goes on with the drives left (``--no-resume`` computes them
all again; a changed request, e.g. other weights, configuration or stride, never reuses them). Writes
``DIR/results.json`` (the same whether or not the run resumed), prints one table row per method x condition
(Recall@N at ``--threshold-m``, top-1 within 2/5/10 m, localizer error median/p95) and saves the plots (Top-1
Recall@D, Recall@N, route maps).
``--protocol`` picks a named protocol (:mod:`semloc_ros.evaluation.protocols`): ``standard``, ``confusers`` (a database
of several maps at their own geographic offsets), ``dynamic`` (traffic queries, with and without
``mask_dynamic``) or ``day-only`` (one row set per ``--segmenters`` file, mIoU per segmenter).
``--oracle`` adds, for every label-based method, a run with the ground-truth labels in place of the segmenter
(perfect segmentation, database and queries); those rows, keys and legends are named ``<method>-oracle``.
``--preset`` names a whole evaluation (protocol, methods, views, localizer parameters; see
:data:`semloc_ros.evaluation.protocols.PRESETS`); options given on the command line override it.

The localizer runs the configuration of the nodes: the ``localizer_node`` section of ``--params-file`` (default:
the shipped config/semloc.yaml), then the preset's parameters, then ``--set localizer_node.NAME=VALUE``. Nothing
is fitted on a query drive: the shipped covariance model, integrity gate and filter values come from training
maps (scripts/fit_uncertainty.py).

A second table compares the localizer's estimates, single-frame and (``--sequence-filter``) through the
sequence filter: Recall@1 (estimate within ``--threshold-m``), the share within 2/5/10 m, median / 95th
percentile error and the share of errors inside the published 1-/2-sigma covariance ellipses.
``--rejection-queries DRIVE...`` (drives of other maps) with ``--calibration-query DRIVE`` (required, no default)
adds an analysis of no-match thresholds: their frames beyond ``--negative-min-route-m`` along their route are
out-of-database negatives; thresholds (at ``--target-precision``) and an isotropic covariance scale are fitted on
the named query drive plus part of the negatives (one map's drives when several maps are given, else the first
half of each drive) and reported on the other query drives and the other negatives (``calibration`` in
results.json, a third table and ``rejection_curves.png``). That analysis does not change the scored
configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from semloc_ros.commands.common import (
    DEFAULT_THREADS,
    add_label_mapping_arguments,
    add_parameter_arguments,
    add_trust_model_code_argument,
    add_views_argument,
    node_parameters,
)
from semloc_ros.evaluation.metrics import (
    DEFAULT_NEGATIVE_MIN_ROUTE_M,
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD_M,
)
from semloc_ros.evaluation.protocols import PRESETS, PROTOCOLS
from semloc_ros.evaluation.report import format_report
from semloc_ros.evaluation.run import EvaluationError, EvaluationOptions, run_evaluation, write_results
from semloc_ros.models.pipeline import METHODS

if TYPE_CHECKING:
    from semloc_ros.core.localizer import LocalizerConfig

DEMO_DATASET = Path(__file__).resolve().parent.parent / "data" / "demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc evaluate",
        description="Score retrieval (Recall@N, Top-1 Recall@D) and localization of the query drives of a "
        "semloc-sim dataset against its database drive.",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=DEMO_DATASET,
        help="semloc-sim root with splits.json (default: the embedded demo data)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="named evaluation (options below override it): "
        + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()).replace("%", "%%"),
    )
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="standard",
        help="named protocol: " + "; ".join(f"{p.name}: {p.description}" for p in PROTOCOLS.values()),
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to score")
    parser.add_argument(
        "--segmenters",
        "--segmenter",
        nargs="+",
        type=Path,
        default=None,
        metavar="FILE",
        help="segmenter weights for the label methods instead of the shipped one, one row set each (day-only)",
    )
    add_label_mapping_arguments(parser, "the --segmenters")
    parser.add_argument("--descriptor", type=Path, default=None,
                        help="descriptor weights (e.g. from `semloc train --source`) instead of the shipped one of "
                        "their kind (semantic or RGB; hybrid replaces its part of that kind)")
    add_trust_model_code_argument(parser)
    parser.add_argument(
        "--confuser-datasets",
        nargs="+",
        type=Path,
        default=[],
        metavar="ROOT",
        help="confusers: more semloc-sim roots whose other-map drives join the database (e.g. rendered with simkit)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score each label-based method with ground-truth labels (rows '<method>-oracle')",
    )
    parser.add_argument(
        "--threshold-m",
        type=float,
        default=DEFAULT_THRESHOLD_M,
        help="a retrieved place is correct within this distance (Recall@N)",
    )
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (results.json, plots, cache, partial: each finished drive's results)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="database cache (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true", help="always rebuild the databases")
    parser.add_argument("--no-resume", action="store_true",
                        help="compute every drive again instead of reusing the results OUT/partial holds for this "
                        "same request (dataset, stride, models, views, localizer configuration, threshold)")
    parser.add_argument("--queries", nargs="+", default=None, help="only these query drives (names)")
    parser.add_argument("--query-stride", type=int, default=1, help="use every k-th query frame")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch")
    parser.add_argument(
        "--untrained-ok",
        action="store_true",
        help="use randomly initialised networks when trained weights are missing (smoke tests)",
    )
    parser.add_argument(
        "--sequence-filter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also localize each query drive through the sequence filter (default: the parameter file's "
        "sequence_filter; nothing is fitted)",
    )
    parser.add_argument(
        "--rejection-queries",
        nargs="+",
        default=[],
        metavar="DRIVE",
        help="drives of ANOTHER map (e.g. trainA_day_l0) whose frames serve as out-of-database negatives",
    )
    parser.add_argument(
        "--negative-min-route-m",
        type=float,
        default=DEFAULT_NEGATIVE_MIN_ROUTE_M,
        help="only rejection-drive frames farther than this along their route are negatives (maps share "
        "their first road stretch)",
    )
    parser.add_argument(
        "--calibration-query",
        default=None,
        help="with --rejection-queries: the query drive the threshold analysis is fitted on (required, no "
        "default); the others are reported",
    )
    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        help="rejection thresholds keep at least this precision on the calibration data",
    )
    parser.add_argument(
        "--segmentation-stride",
        type=int,
        default=5,
        help="score the segmenter (pixel accuracy, mIoU) on every k-th frame of each drive; 0 = skip",
    )
    add_views_argument(
        parser,
        "--database-views",
        "store each database frame also shifted sideways by these fractions of the width (build-db --views); "
        "Recall@N then counts distinct places",
    )
    add_parameter_arguments(
        parser,
        "ROS 2 parameter file whose localizer_node section configures the localizer (default: the shipped "
        "config/semloc.yaml); --set localizer_node.NAME=VALUE overrides one parameter, e.g. rerank_top_k=0",
    )
    parser.add_argument(
        "--segmentation-drives",
        nargs="+",
        default=[],
        metavar="DRIVE",
        help="more drives (with labels) to score the segmenters on, e.g. a condition without a query drive",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-route-maps", action="store_true", help="skip the route map of every method and drive")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (the line per finished drive stays)")
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, with a ``--preset``'s values as defaults (explicit options win)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset is not None:
        parser.set_defaults(**PRESETS[args.preset].arguments())
        args = parser.parse_args(argv)
    return args


def localizer_configuration(args: argparse.Namespace) -> LocalizerConfig:
    """The LocalizerConfig of the parameter file, the preset and ``--set`` (ValueError: one line)."""
    from semloc_ros.core.localizer import LocalizerConfig

    known = set(LocalizerConfig().parameters())
    values = {name: value for name, value in node_parameters(args.params_file, "localizer_node").items()
              if name in known}  # the node's other parameters (database_path, markers, ...) do not apply here
    if args.preset is not None:
        values.update(PRESETS[args.preset].parameters)
    for node, name, value in args.assignments:
        if node != "localizer_node" or name not in known:
            raise ValueError(f"--set {node}.{name}: evaluate takes the localizer_node configuration parameters "
                             f"({', '.join(sorted(known))})")
        values[name] = value
    if args.sequence_filter is not None:
        values["sequence_filter"] = args.sequence_filter
    return LocalizerConfig.from_parameters(values).validate()


def evaluation_options(args: argparse.Namespace) -> EvaluationOptions:
    """The parsed options as the request of :func:`semloc_ros.evaluation.run.run_evaluation`."""
    return EvaluationOptions(
        dataset=args.dataset, out=args.out, protocol=args.protocol, methods=args.methods, segmenters=args.segmenters,
        confuser_datasets=args.confuser_datasets, oracle=args.oracle, threshold_m=args.threshold_m,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, queries=args.queries, query_stride=args.query_stride,
        threads=args.threads, device=args.device, batch_size=args.batch_size, untrained_ok=args.untrained_ok,
        rejection_queries=args.rejection_queries, negative_min_route_m=args.negative_min_route_m,
        calibration_query=args.calibration_query, target_precision=args.target_precision,
        segmentation_stride=args.segmentation_stride, segmentation_drives=args.segmentation_drives,
        database_views=tuple(args.database_views), preset=args.preset, progress=not args.quiet,
        trust_model_code=args.trust_model_code, label_mapping=args.label_mapping,
        segmenter_arch=args.segmenter_arch, descriptor_file=args.descriptor, resume=not args.no_resume,
    )


def option_problem(args: argparse.Namespace) -> str | None:
    """Why the options cannot be used together, or None."""
    if args.query_stride < 1 or args.threads < 1 or args.batch_size < 1 or args.threshold_m <= 0:
        return "--query-stride, --threads, --batch-size and --threshold-m must be positive"
    if not 0 < args.target_precision <= 1 or not args.negative_min_route_m >= 0:
        return "--target-precision must be in (0, 1], --negative-min-route-m >= 0"
    if args.label_mapping != "identity" and not args.segmenters:
        return "--label-mapping maps the output of --segmenters FILE (the shipped segmenter needs none)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        config = localizer_configuration(args)
        problem = option_problem(args)
        if problem is not None:
            raise ValueError(problem)
        evaluation = run_evaluation(evaluation_options(args), config)
    except (ValueError, EvaluationError) as error:
        print(f"semloc evaluate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semloc evaluate: interrupted; the finished drives are kept in {args.out / 'partial'} and the same "
              "command goes on from there", file=sys.stderr)
        return 130
    path = write_results(evaluation, args.out)
    rejection = bool(evaluation.drives.rejection)
    print(format_report(evaluation.summary, path, evaluation.elapsed_s, args.target_precision,
                        evaluation.drives.calibration_query, rejection))
    if not args.no_plots:
        from semloc_ros.evaluation.plots import plot_evaluation

        database = evaluation.drives.database
        plot_evaluation(evaluation.results, database.lat, database.lon, args.out, route_maps=not args.no_route_maps,
                        calibrations=evaluation.calibrations if rejection else None)
        print(f"plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
