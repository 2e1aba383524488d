"""``semloc evaluate --dataset ROOT [--protocol NAME] --methods ... --out DIR``: retrieval and localization.

For each method the database drive of ``ROOT/splits.json`` is described once (cached in ``DIR/cache`` by
method, drive and model ids) and every query drive is retrieved against it and localized. Writes
``DIR/results.json``, prints one table row per method x condition (Recall@N at ``--threshold-m``, top-1 within
2/5/10 m, localizer error median/p95) and saves the plots (Top-1 Recall@D, Recall@N, route maps).
``--protocol`` picks a named protocol (:mod:`semloc_ros.evaluation.protocols`): ``standard``, ``confusers`` (a database
of several maps at their own geographic offsets), ``dynamic`` (traffic queries, with and without
``mask_dynamic``) or ``day-only`` (one row set per ``--segmenters`` file, mIoU per segmenter).
``--oracle`` adds, for every label-based method, a run with the ground-truth labels in place of the segmenter
(perfect segmentation, database and queries); those rows, keys and legends are named ``<method>-oracle``.
``--preset`` names a whole evaluation (protocol, methods, views, localizer parameters; see
:data:`semloc_ros.evaluation.protocols.PRESETS`); options given on the command line override it.

The localizer runs the configuration of the nodes: the ``localizer_node`` section of ``--params-file`` (default:
the shipped config/semloc.yaml), then the preset's parameters, then ``--set localizer_node.NAME=VALUE``. What a
run fits is fitted, not taken from the file: with the sequence filter ``filter_temperature`` and
``filter_kidnap_probability``, and with a calibration drive the covariance model, fitted on the uncalibrated
covariances (the run uses ``covariance_scale`` 1 and ``position_sigma_extra_m`` 0).

A second table compares the localizer's estimates, single-frame and (``--sequence-filter``) through the
sequence filter: Recall@1 (estimate within ``--threshold-m``), the share within 2/5/10 m, median / 95th
percentile error and the share of errors inside the reported 1-/2-sigma covariance ellipses.
``--rejection-queries DRIVE...`` (drives of other maps) adds no-match rejection: their frames beyond
``--negative-min-route-m`` along their route are out-of-database negatives; thresholds (at
``--target-precision``) and the covariance model (``covariance_scale``, ``position_sigma_extra_m``) are fitted
on ``--calibration-query`` plus part of the negatives (one map's drives when several maps are given, else the
first half of each drive) and reported on the other query drives and the other negatives (``calibration`` in
results.json, a third table and ``rejection_curves.png``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semloc_ros.commands.common import DEFAULT_THREADS, add_parameter_arguments, add_views_argument, node_parameters
from semloc_ros.core.files import write_json_atomic
from semloc_ros.evaluation.loop import cache_name
from semloc_ros.evaluation.metrics import (
    DEFAULT_NEGATIVE_MIN_ROUTE_M,
    DEFAULT_NS,
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD_M,
    method_label,
)
from semloc_ros.evaluation.protocols import (
    CONFUSER_SPACING_M,
    PRESETS,
    PROTOCOLS,
    confuser_database,
    find_confuser_drives,
    has_traffic,
    protocol_variants,
)
from semloc_ros.io.datasets import DatasetError, load_semloc_sim_drive, load_semloc_sim_split
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
        nargs="+",
        type=Path,
        default=None,
        metavar="FILE",
        help="segmenter weights for the label methods instead of the shipped one, one row set each (day-only)",
    )
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
    parser.add_argument("--out", type=Path, required=True, help="output folder (results.json, plots, cache)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="database cache (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true", help="always rebuild the databases")
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
        "sequence_filter; filter_temperature and filter_kidnap_probability are fitted on --calibration-query)",
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
        help="query drive used to fit thresholds and the covariance scale (default: eval_day_l1 if present, "
        "else the first query drive); the others are reported",
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from semloc_ros.core.database import DatabaseError, GeoDatabase
    from semloc_ros.evaluation.calibration import calibrate_method, evaluate_rejection_drives
    from semloc_ros.evaluation.loop import evaluate_method, evaluate_segmentation
    from semloc_ros.mapping import build_database
    from semloc_ros.models import WeightsError, set_torch_threads
    from semloc_ros.models.pipeline import Pipeline

    try:
        localizer_config = localizer_configuration(args)
    except ValueError as error:
        print(f"semloc evaluate: {error}", file=sys.stderr)
        return 2
    if args.query_stride < 1 or args.threads < 1 or args.batch_size < 1 or args.threshold_m <= 0:
        print(
            "semloc evaluate: --query-stride, --threads, --batch-size and --threshold-m must be positive",
            file=sys.stderr,
        )
        return 2
    if not 0 < args.target_precision <= 1 or not args.negative_min_route_m >= 0:
        print("semloc evaluate: --target-precision must be in (0, 1], --negative-min-route-m >= 0", file=sys.stderr)
        return 2
    try:
        database_drive, query_drives = load_semloc_sim_split(args.dataset)
    except (DatasetError, OSError, KeyError) as error:
        print(f"semloc evaluate: cannot read dataset {args.dataset}: {error}", file=sys.stderr)
        return 2
    if args.queries:
        unknown = sorted(set(args.queries) - {d.name for d in query_drives})
        if unknown:
            print(f"semloc evaluate: unknown query drive(s) {unknown}", file=sys.stderr)
            return 2
        query_drives = [d for d in query_drives if d.name in args.queries]
    protocol = PROTOCOLS[args.protocol]
    if protocol.traffic_queries_only:
        query_drives = [d for d in query_drives if has_traffic(d)]
        if not query_drives:
            print(f"semloc evaluate: protocol {protocol.name}: no query drive has traffic", file=sys.stderr)
            return 2
    if protocol.per_segmenter and not args.segmenters:
        print(f"semloc evaluate: protocol {protocol.name} needs --segmenters FILE...", file=sys.stderr)
        return 2
    query_drives = [d.subset(slice(None, None, args.query_stride)) for d in query_drives]
    database_drive = database_drive.drop_invalid_gps()
    segmentation_drives = [database_drive, *query_drives]
    for name in args.segmentation_drives:
        try:
            segmentation_drives.append(load_semloc_sim_drive(args.dataset, name))
        except (DatasetError, OSError) as error:
            print(f"semloc evaluate: cannot read segmentation drive {name}: {error}", file=sys.stderr)
            return 2
    confusers = []
    if protocol.confusers:
        confusers = find_confuser_drives([args.dataset, *args.confuser_datasets], database_drive)
        if not confusers:
            print("semloc evaluate: protocol confusers: no drive of another map in the database's condition "
                  f"({database_drive.condition}) found", file=sys.stderr)
            return 2
        database_drive = confuser_database(database_drive, [d.drop_invalid_gps() for d in confusers])
        print(f"confusers: {database_drive.name}, {len(database_drive)} places: "
              f"{', '.join(f'{d.name} ({len(d)})' for d in confusers)} at {CONFUSER_SPACING_M:g} m offsets")
    rejection_drives = []
    for name in args.rejection_queries:
        try:
            drive = load_semloc_sim_drive(args.dataset, name)
        except (DatasetError, OSError) as error:
            print(f"semloc evaluate: cannot read rejection drive {name}: {error}", file=sys.stderr)
            return 2
        database_seeds = {d.metadata.get("seed") for d in [database_drive, *confusers]}
        same_map = "seed" in drive.metadata and drive.metadata.get("seed") in database_seeds
        if name == database_drive.name or name in {d.name for d in query_drives} or same_map:
            print(
                f"semloc evaluate: rejection drive {name} is on the database map, not out-of-database", file=sys.stderr
            )
            return 2
        rejection_drives.append(drive.subset(slice(None, None, args.query_stride)))
    calibration_query = args.calibration_query
    if (rejection_drives or localizer_config.sequence_filter) and calibration_query is None:
        names = [d.name for d in query_drives]
        calibration_query = "eval_day_l1" if "eval_day_l1" in names else names[0]
    if calibration_query is not None and calibration_query not in {d.name for d in query_drives}:
        print(f"semloc evaluate: --calibration-query {calibration_query} is not a query drive", file=sys.stderr)
        return 2
    oracle = args.oracle or protocol.oracle
    if oracle and not (database_drive.has_labels and all(d.has_labels for d in query_drives)):
        print("semloc evaluate: --oracle needs ground-truth labels for every frame", file=sys.stderr)
        return 2

    set_torch_threads(args.threads)
    cache_dir = args.cache_dir or args.out / "cache"
    covariance_model = (localizer_config.covariance_scale, localizer_config.position_sigma_extra_m)
    if calibration_query is not None and covariance_model != (1.0, 0.0):  # fitted: start from uncalibrated ones
        localizer_config = localizer_config.with_parameters(covariance_scale=1.0, position_sigma_extra_m=0.0)
        print(f"covariance model fitted on {calibration_query}: the run uses the uncalibrated covariances "
              "(covariance_scale 1, position_sigma_extra_m 0)")
    results: list[dict[str, Any]] = []
    calibrations: dict[str, dict[str, Any]] = {}
    segmenters: dict[str, Any] = {}  # row-name suffix -> segmenter, for the segmentation tables
    start = time.perf_counter()
    for variant in protocol_variants(args.methods, args.segmenters, protocol.mask_variants, oracle):
        try:
            pipeline = Pipeline.from_method(
                variant.method,
                device=args.device,
                untrained_ok=args.untrained_ok,
                segmenter_file=variant.segmenter,
                mask_dynamic=variant.mask_dynamic,
            )
        except (OSError, WeightsError) as error:
            print(f"semloc evaluate: {variant.name}: {error}", file=sys.stderr)
            return 2
        if pipeline.segmenter is not None and not variant.oracle:
            segmenters.setdefault(variant.segmenter_name, pipeline.segmenter)
        method, oracle = variant.name, variant.oracle
        label = method_label(method, oracle)
        views = tuple(args.database_views)
        cache_path = cache_dir / cache_name(method, oracle, database_drive, pipeline, views)
        database = None
        if not args.no_cache and cache_path.is_file():
            try:
                database = GeoDatabase.load(cache_path, expected_model_id=pipeline.model_id)
            except DatabaseError as error:
                print(f"{label}: ignoring cache {cache_path}: {error}")
            if database is not None and (database.views != views or len(database) != len(database_drive) * len(views)):
                database = None
            if (database is not None and localizer_config.rerank.enabled and pipeline.needs_labels
                    and database.thumbnails is None):
                database = None  # cached before label thumbnails were stored
        if database is None:
            database = build_database(
                pipeline,
                database_drive,
                oracle=oracle,
                batch_size=args.batch_size,
                progress=not args.quiet,
                views=views,
            )
            if not args.no_cache:
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                database.save(cache_path)
        else:
            print(f"{label}: database from cache {cache_path}")
        per_drive = evaluate_method(
            pipeline,
            database_drive,
            query_drives,
            method=method,
            oracle=oracle,
            threshold_m=args.threshold_m,
            database=database,
            localizer_config=localizer_config,
            batch_size=args.batch_size,
            progress=not args.quiet,
            fit_filter_on=calibration_query,
        )
        results.extend(per_drive.values())
        if calibration_query is not None:
            fitted_config = localizer_config
            if localizer_config.sequence_filter:
                filtered = per_drive[calibration_query]["filtered"]
                fitted_config = localizer_config.with_parameters(
                    filter_temperature=filtered["filter_temperature"],
                    filter_kidnap_probability=filtered["filter_kidnap_probability"],
                )
            negatives = evaluate_rejection_drives(
                pipeline,
                database,
                rejection_drives,
                oracle=oracle,
                localizer_config=fitted_config,
                min_route_m=args.negative_min_route_m,
                batch_size=args.batch_size,
                progress=not args.quiet,
            )
            calibrations[label] = calibrate_method(
                list(per_drive.values()), negatives, calibration_query, args.target_precision
            )

    segmentation = {}
    if args.segmentation_stride > 0:
        for name, segmenter in segmenters.items():
            segmentation[name] = {
                "segmenter": segmenter.model_id,
                "drives": evaluate_segmentation(segmenter, segmentation_drives, args.segmentation_stride,
                                                args.batch_size, progress=not args.quiet),
            }

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "dataset": str(args.dataset),
        "protocol": {"name": protocol.name, "description": protocol.description},
        "database_drive": database_drive.name,
        "n_database": len(database_drive),
        "threshold_m": args.threshold_m,
        "query_stride": args.query_stride,
        "database_views": list(args.database_views),
        "preset": args.preset,
        "localizer": localizer_config.parameters(),
        "oracle_note": "methods named '<method>-oracle' use ground-truth labels instead of the segmenter",
        "recall_note": "percent; 'all_queries' counts queries without a positive as failures, "
        "'queries_with_positive' leaves them out",
        "localization_note": "localization_recall_at_1: percent of all queries whose estimate is within "
        "threshold_m (NO_MATCH = failure); 'filtered' holds the same through the sequence filter",
        "results": results,
    }
    if confusers:
        summary["confusers"] = {
            "drives": [d.name for d in confusers],
            "spacing_m": CONFUSER_SPACING_M,
            "n_true_database": len(segmentation_drives[0]),
        }
    if calibrations:
        summary["calibration"] = calibrations
    if segmentation:
        summary["segmentation"] = segmentation  # segmenter name ('' = shipped) -> scores per drive
    write_json_atomic(summary, args.out / "results.json")
    for name, scores in segmentation.items():
        print(format_segmentation_table(scores, name))
        print()
    print(format_table(results))
    print(
        f"\nR@N over all queries (queries without a database entry within {args.threshold_m:g} m count as "
        f"failures; 'no_pos' = how many). {time.perf_counter() - start:.0f} s. "
        f"Results: {args.out / 'results.json'}"
    )
    print()
    print(format_localization_table(results, calibrations))
    print(
        f"\nR@1 = estimate within {args.threshold_m:g} m, <=Dm = within D m (percent of all queries); med/p95 "
        "over queries with an estimate; cov1s/cov2s = errors inside the 1-/2-sigma ellipses (Gaussian: 39.3 / "
        "86.5 %); cov1s*/cov2s* = after the covariance model fitted on the '(calib)' drive."
    )
    resets = {f"{r['method']}/{r['query_drive']}": r["filtered"]["filter_resets"] for r in results if "filtered" in r}
    if any(resets.values()):
        print(
            "sequence filter resets (stamp gaps > filter_max_gap_s, e.g. a large --query-stride): "
            + ", ".join(f"{name} {count}" for name, count in resets.items() if count)
        )
    if calibrations and rejection_drives:
        first = next(iter(calibrations.values()))
        print()
        print(format_rejection_table(calibrations))
        print(
            f"\nRejection: accept a query when score >= threshold (best_similarity -> min_similarity, "
            f"confidence -> min_confidence), threshold = largest recall at precision >= {args.target_precision:g} "
            f"on {first['calibration_query_drive']} + {first['negatives']['n_calibration']} negatives; reported "
            f"on the other drives + {first['negatives']['n_report']} other negatives. Negatives: "
            f"{', '.join(first['negatives']['drives'])}, {first['negatives']['rule']}. fix_prec = accepted queries "
            f"that are in the database AND localized within {args.threshold_m:g} m (fix_prec_filt: same gate, "
            "filtered estimates)."
        )
    for method, calibration in calibrations.items():
        models = ", ".join(
            f"{mode}: covariance_scale {c['model']['scale']:.3g}, "
            f"position_sigma_extra_m {c['model']['extra_sigma_m']:g}"
            for mode, c in calibration["covariance"].items()
        )
        print(f"{method}: covariance model fitted on {calibration['calibration_query_drive']}: {models}")
    for r in results:
        if "filtered" in r and r["query_drive"] == calibration_query:
            fit = r["filtered"]["filter_fit"]
            print(
                f"{r['method']}: filter_temperature {r['filtered']['filter_temperature']:.4g}, "
                f"filter_kidnap_probability {r['filtered']['filter_kidnap_probability']:g} fitted on "
                f"{calibration_query} (single-frame maximum-likelihood temperature {fit['ml_temperature']:.4g}, "
                "then the smallest filtered error over a grid); set them on localizer_node for this model"
            )

    if not args.no_plots:
        from semloc_ros.evaluation.plots import (
            plot_recall_at_n,
            plot_rejection_curves,
            plot_route_map,
            plot_top1_recall_at_distances,
        )

        plot_top1_recall_at_distances(results, args.out / "top1_recall_at_distance.png")
        plot_recall_at_n(results, args.out / "recall_at_n.png")
        plot_recall_at_n(
            results,
            args.out / "recall_at_n_queries_with_positive.png",
            key="recall_at_n_queries_with_positive",
            title="Recall@N (queries with a positive)",
        )
        for r in [] if args.no_route_maps else results:
            plot_route_map(
                r,
                database_drive.lat,
                database_drive.lon,
                args.out / "routes" / f"route_{r['method']}_{r['query_drive']}.png",
            )
            if "filtered" in r:
                filtered = {
                    **r,
                    "method": f"{r['method']}+filter",
                    "per_query": {**r["per_query"], **r["filtered"]["per_query"]},
                }
                plot_route_map(
                    filtered,
                    database_drive.lat,
                    database_drive.lon,
                    args.out / "routes" / f"route_{r['method']}+filter_{r['query_drive']}.png",
                )
        if calibrations and rejection_drives:
            plot_rejection_curves(calibrations, args.out / "rejection_curves.png")
        print(f"plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
