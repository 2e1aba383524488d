"""One ``semloc evaluate`` run: drives, databases (cached), metrics, calibration and the results.json summary.

1. Drives: the dataset's database and query drives, narrowed by the protocol (traffic queries), the query
   selection and stride; the other maps' drives joined into the database (confusers protocol); the rejection
   drives (other maps) and the extra segmentation drives (:func:`prepare_drives`).
2. Configuration: the run scores the configuration it is given (the parameter file's, as the node publishes);
   nothing is fitted on a query drive.
3. Per variant (method x segmenter x masking x label source,
   :func:`semloc_ros.evaluation.protocols.protocol_variants`): the pipeline, then every query drive one at a
   time: its metrics are kept in ``OUT/partial`` as soon as they are done (one progress line) and read back
   instead when this same request finished that drive before (:mod:`semloc_ros.evaluation.resume`, key:
   :func:`variant_key` and the drive); the database, only when some drive is computed (from the cache when it was
   built by the same pipeline with the same views and holds the thumbnails re-ranking needs,
   :func:`semloc_ros.evaluation.described.cached_database`); then the no-match threshold analysis (thresholds and
   an isotropic covariance scale, its negatives kept the same way) fitted on the named calibration drive, which
   does not change the scored configuration (:func:`evaluate_variant`).
4. The segmenters scored on the segmentation drives, drive by drive, kept the same way
   (:func:`score_segmenters`); one line says how many drive results were read back; the summary
   (:func:`run_evaluation`), written as results.json by :func:`write_results`. It is the same whether or not the
   run resumed.

Every problem with the request is an :class:`EvaluationError` with a one-line message.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.files import write_json_atomic
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.core.views import SINGLE_VIEW
from semloc_ros.evaluation.calibration import calibrate_method, evaluate_rejection_drives
from semloc_ros.evaluation.described import cached_database
from semloc_ros.evaluation.loop import cache_key, cache_name, evaluate_method, evaluate_segmentation
from semloc_ros.evaluation.metrics import (
    DEFAULT_DISTANCES_M,
    DEFAULT_NEGATIVE_MIN_ROUTE_M,
    DEFAULT_NS,
    DEFAULT_TARGET_PRECISION,
    DEFAULT_THRESHOLD_M,
    method_label,
)
from semloc_ros.evaluation.protocols import (
    CONFUSER_SPACING_M,
    PROTOCOLS,
    Protocol,
    Variant,
    confuser_database,
    find_confuser_drives,
    has_traffic,
    protocol_variants,
)
from semloc_ros.evaluation.report import format_drive_line, format_negatives_line, format_segmentation_line
from semloc_ros.evaluation.resume import RESULT_FORMAT, PartialResults, drive_fingerprint
from semloc_ros.io.datasets import DatasetError, Drive, load_semloc_sim_drive, load_semloc_sim_split
from semloc_ros.mapping import build_database
from semloc_ros.models import WeightsError, set_torch_threads
from semloc_ros.models.pipeline import METHODS, Pipeline

Log = Callable[[str], None]


class EvaluationError(ValueError):
    """A request that cannot be evaluated (one line: what and why)."""


@dataclass(frozen=True)
class EvaluationOptions:
    """What to evaluate (the options of ``semloc evaluate``, :mod:`semloc_ros.commands.evaluate`)."""

    dataset: Path
    out: Path
    protocol: str = "standard"
    methods: Sequence[str] = METHODS
    segmenters: Sequence[Path] | None = None
    confuser_datasets: Sequence[Path] = ()
    oracle: bool = False
    threshold_m: float = DEFAULT_THRESHOLD_M
    cache_dir: Path | None = None  # None: out/cache
    use_cache: bool = True
    queries: Sequence[str] | None = None  # None: every query drive
    query_stride: int = 1
    threads: int = 1
    device: str = "auto"
    batch_size: int = 16
    untrained_ok: bool = False
    rejection_queries: Sequence[str] = ()
    negative_min_route_m: float = DEFAULT_NEGATIVE_MIN_ROUTE_M
    calibration_query: str | None = None
    target_precision: float = DEFAULT_TARGET_PRECISION
    segmentation_stride: int = 5
    segmentation_drives: Sequence[str] = ()
    database_views: Sequence[float] = SINGLE_VIEW
    preset: str | None = None
    progress: bool = True
    trust_model_code: bool = False  # --segmenters may be programs (TorchScript): the user trusts them
    label_mapping: str = "identity"  # output ids of the --segmenters -> semloc classes
    segmenter_arch: str = ""  # architecture of --segmenters that are plain state dicts
    descriptor_file: Path | None = None  # descriptor weights instead of the shipped one of their kind
    resume: bool = True  # reuse the drive results kept in out/partial for this same request


@dataclass
class Drives:
    """The drives of one run (step 1)."""

    database: Drive
    queries: list[Drive]
    confusers: list[Drive] = field(default_factory=list)
    rejection: list[Drive] = field(default_factory=list)
    segmentation: list[Drive] = field(default_factory=list)
    calibration_query: str | None = None
    n_true_database: int = 0  # places of the dataset's own database drive (without confusers)


@dataclass
class Evaluation:
    """The outcome of :func:`run_evaluation`."""

    summary: dict[str, Any]  # results.json
    drives: Drives
    results: list[dict[str, Any]]
    calibrations: dict[str, dict[str, Any]]
    segmentation: dict[str, dict[str, Any]]
    elapsed_s: float


def _load_drive(options: EvaluationOptions, name: str, role: str) -> Drive:
    try:
        return load_semloc_sim_drive(options.dataset, name)
    except (DatasetError, OSError) as error:
        raise EvaluationError(f"cannot read {role} {name}: {error}") from error


def _query_drives(options: EvaluationOptions, protocol: Protocol, queries: list[Drive]) -> list[Drive]:
    if options.queries:
        unknown = sorted(set(options.queries) - {d.name for d in queries})
        if unknown:
            raise EvaluationError(f"unknown query drive(s) {unknown}")
        queries = [d for d in queries if d.name in options.queries]
    if protocol.traffic_queries_only:
        queries = [d for d in queries if has_traffic(d)]
        if not queries:
            raise EvaluationError(f"protocol {protocol.name}: no query drive has traffic")
    if protocol.per_segmenter and not options.segmenters:
        raise EvaluationError(f"protocol {protocol.name} needs --segmenters FILE...")
    return [d.subset(slice(None, None, options.query_stride)) for d in queries]


def _rejection_drives(options: EvaluationOptions, drives: Drives) -> list[Drive]:
    database_seeds = {d.metadata.get("seed") for d in [drives.database, *drives.confusers]}
    taken = {drives.database.name, *(d.name for d in drives.queries)}
    rejection = []
    for name in options.rejection_queries:
        drive = _load_drive(options, name, "rejection drive")
        same_map = "seed" in drive.metadata and drive.metadata.get("seed") in database_seeds
        if name in taken or same_map:
            raise EvaluationError(f"rejection drive {name} is on the database map, not out-of-database")
        rejection.append(drive.subset(slice(None, None, options.query_stride)))
    return rejection


def prepare_drives(options: EvaluationOptions, log: Log = print) -> Drives:
    """The drives of the run (step 1); EvaluationError when the request does not fit the dataset."""
    protocol = PROTOCOLS[options.protocol]
    try:
        database, queries = load_semloc_sim_split(options.dataset)
    except (DatasetError, OSError, KeyError) as error:
        raise EvaluationError(f"cannot read dataset {options.dataset}: {error}") from error
    queries = _query_drives(options, protocol, queries)
    database = database.drop_invalid_gps()
    drives = Drives(database, queries, n_true_database=len(database))
    drives.segmentation = [database, *queries]
    drives.segmentation += [_load_drive(options, name, "segmentation drive") for name in options.segmentation_drives]
    if protocol.confusers:
        drives.confusers = find_confuser_drives([options.dataset, *options.confuser_datasets], database)
        if not drives.confusers:
            raise EvaluationError("protocol confusers: no drive of another map in the database's condition "
                                  f"({database.condition}) found")
        drives.database = confuser_database(database, [d.drop_invalid_gps() for d in drives.confusers])
        log(f"confusers: {drives.database.name}, {len(drives.database)} places: "
            f"{', '.join(f'{d.name} ({len(d)})' for d in drives.confusers)} at {CONFUSER_SPACING_M:g} m offsets")
    drives.rejection = _rejection_drives(options, drives)
    calibration = options.calibration_query
    if drives.rejection and calibration is None:
        raise EvaluationError("--rejection-queries needs --calibration-query DRIVE (the threshold analysis is "
                              "fitted on a drive you name; the scored configuration is the parameter file's)")
    if calibration is not None and not drives.rejection:
        raise EvaluationError("--calibration-query is only used with --rejection-queries")
    if calibration is not None and calibration not in {d.name for d in queries}:
        raise EvaluationError(f"--calibration-query {calibration} is not a query drive")
    drives.calibration_query = calibration
    labelled = drives.database.has_labels and all(d.has_labels for d in queries)
    if (options.oracle or protocol.oracle) and not labelled:
        raise EvaluationError("--oracle needs ground-truth labels for every frame")
    return drives


def variant_database(options: EvaluationOptions, variant: Variant, pipeline: Pipeline, drive: Drive,
                     config: LocalizerConfig, log: Log = print) -> GeoDatabase:
    """The database of one variant: from the cache, else built (and cached)."""
    views = tuple(options.database_views)
    path = (options.cache_dir or options.out / "cache") / cache_name(variant.name, variant.oracle, drive, pipeline,
                                                                     views)
    label = method_label(variant.name, variant.oracle)
    needs_thumbnails = config.rerank.enabled and pipeline.needs_labels
    database = None
    if options.use_cache:
        database = cached_database(path, pipeline, drive, views, needs_thumbnails, lambda line: log(f"{label}: {line}"))
    if database is not None:
        log(f"{label}: database from cache {path}")
        return database
    start = time.perf_counter()
    database = build_database(pipeline, drive, oracle=variant.oracle, batch_size=options.batch_size,
                              progress=options.progress, views=views)
    log(f"{label}: database {drive.name} built, {len(database)} entries, {time.perf_counter() - start:.1f} s")
    if options.use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        database.save(path)
    return database


def variant_pipeline(options: EvaluationOptions, variant: Variant) -> Pipeline:
    try:
        return Pipeline.from_method(variant.method, device=options.device, untrained_ok=options.untrained_ok,
                                    segmenter_file=variant.segmenter, mask_dynamic=variant.mask_dynamic,
                                    label_mapping=options.label_mapping if variant.segmenter else None,
                                    segmenter_arch=options.segmenter_arch, trust_model_code=options.trust_model_code,
                                    descriptor_file=options.descriptor_file)
    except (OSError, WeightsError, ValueError) as error:
        raise EvaluationError(f"{variant.name}: {error}") from error


def variant_key(options: EvaluationOptions, variant: Variant, pipeline: Pipeline, drives: Drives,
                config: LocalizerConfig) -> dict[str, Any]:
    """What every drive result of one variant depends on (the key of its kept results,
    :mod:`semloc_ros.evaluation.resume`)."""
    return {"format": RESULT_FORMAT, "dataset": str(options.dataset.resolve()),
            "method": method_label(variant.name, variant.oracle), "pipeline": cache_key(pipeline),
            "database": drive_fingerprint(drives.database), "database_views": list(options.database_views),
            "localizer": config.parameters(), "query_stride": options.query_stride, "threshold_m": options.threshold_m,
            "ns": list(DEFAULT_NS), "distances_m": list(DEFAULT_DISTANCES_M)}


def evaluate_variant(options: EvaluationOptions, variant: Variant, pipeline: Pipeline, drives: Drives,
                     config: LocalizerConfig, log: Log = print, partial: PartialResults | None = None,
                     ) -> tuple[dict[str, dict[str, Any]], dict | None]:
    """Results per query drive of one variant and, with a calibration drive, its calibration (step 3). Each
    drive's result is kept in ``partial`` as it finishes (a progress line) or read back from it; the database is
    loaded only when some drive is computed."""
    partial = partial or PartialResults(options.out / "partial", options.resume, log)
    label = method_label(variant.name, variant.oracle)
    key = variant_key(options, variant, pipeline, drives, config)
    database = functools.cache(lambda: variant_database(options, variant, pipeline, drives.database, config, log))

    def query_result(drive: Drive) -> dict[str, Any]:
        return evaluate_method(pipeline, drives.database, [drive], method=variant.name, oracle=variant.oracle,
                               threshold_m=options.threshold_m, database=database(), localizer_config=config,
                               batch_size=options.batch_size, progress=options.progress)[drive.name]

    def negatives(drive: Drive) -> dict[str, Any]:
        return evaluate_rejection_drives(pipeline, database(), [drive], oracle=variant.oracle, localizer_config=config,
                                         min_route_m=options.negative_min_route_m, batch_size=options.batch_size,
                                         progress=options.progress)[0]

    per_drive = {}
    for drive in drives.queries:
        per_drive[drive.name], seconds = partial.result(label, key, drive.name, {"query": drive_fingerprint(drive)},
                                                        functools.partial(query_result, drive), database)
        if seconds is not None:
            log(format_drive_line(label, per_drive[drive.name], seconds))
    if drives.calibration_query is None:
        return per_drive, None
    scores = []
    for drive in drives.rejection:
        drive_key = {"negatives": drive_fingerprint(drive), "negative_min_route_m": options.negative_min_route_m}
        scored, seconds = partial.result(label, key, f"{drive.name}.negatives", drive_key,
                                         functools.partial(negatives, drive), database)
        if seconds is not None:
            log(format_negatives_line(label, scored, seconds))
        scores.append(scored)
    calibration = calibrate_method(list(per_drive.values()), scores, drives.calibration_query,
                                   options.target_precision)
    return per_drive, calibration


def _segmentation_scores(options: EvaluationOptions, segmenter: Any, drive: Drive) -> dict[str, Any]:
    return evaluate_segmentation(segmenter, [drive], options.segmentation_stride, options.batch_size,
                                 progress=options.progress)[drive.name]


def score_segmenters(options: EvaluationOptions, segmenters: dict[str, Any], drives: Sequence[Drive],
                     partial: PartialResults, log: Log = print) -> dict[str, dict[str, Any]]:
    """Each segmenter scored on the segmentation drives (step 4), drive by drive, kept in ``partial``."""
    segmentation: dict[str, dict[str, Any]] = {}
    stride = options.segmentation_stride
    for name, segmenter in segmenters.items() if stride > 0 else ():
        key = {"format": RESULT_FORMAT, "dataset": str(options.dataset.resolve()), "segmenter": segmenter.model_id,
               "stride": stride}
        folder = f"segmentation@{name}" if name else "segmentation"
        scores = {}
        for drive in drives:
            compute = functools.partial(_segmentation_scores, options, segmenter, drive)
            scores[drive.name], seconds = partial.result(folder, key, drive.name, {"drive": drive_fingerprint(drive)},
                                                         compute)
            if seconds is not None:
                log(format_segmentation_line(name, drive.name, scores[drive.name], seconds))
        segmentation[name] = {"segmenter": segmenter.model_id, "drives": scores}
    return segmentation


def run_evaluation(options: EvaluationOptions, config: LocalizerConfig, log: Log = print) -> Evaluation:
    """Evaluate every variant of the protocol (steps 1-4); EvaluationError (one line) for a bad request."""
    protocol = PROTOCOLS[options.protocol]
    drives = prepare_drives(options, log)
    set_torch_threads(options.threads)
    partial = PartialResults(options.out / "partial", options.resume, log)
    results: list[dict[str, Any]] = []
    calibrations: dict[str, dict[str, Any]] = {}
    segmenters: dict[str, Any] = {}  # row-name suffix -> segmenter, for the segmentation tables
    start = time.perf_counter()
    oracle = options.oracle or protocol.oracle
    for variant in protocol_variants(list(options.methods), options.segmenters, protocol.mask_variants, oracle):
        pipeline = variant_pipeline(options, variant)
        if pipeline.segmenter is not None and not variant.oracle:
            segmenters.setdefault(variant.segmenter_name, pipeline.segmenter)
        per_drive, calibration = evaluate_variant(options, variant, pipeline, drives, config, log, partial)
        results.extend(per_drive.values())
        if calibration is not None:
            calibrations[method_label(variant.name, variant.oracle)] = calibration
    segmentation = score_segmenters(options, segmenters, drives.segmentation, partial, log)
    if partial.resumed:
        log(f"resumed {partial.resumed} drive result{'s' if partial.resumed != 1 else ''} from {partial.root} "
            "(--no-resume computes them again)")
    summary = results_summary(options, protocol, drives, config, results, calibrations, segmentation)
    return Evaluation(summary, drives, results, calibrations, segmentation, time.perf_counter() - start)


def results_summary(options: EvaluationOptions, protocol: Protocol, drives: Drives, config: LocalizerConfig,
                    results: list[dict[str, Any]], calibrations: dict[str, dict[str, Any]],
                    segmentation: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The content of results.json (step 4)."""
    summary = {
        "dataset": str(options.dataset),
        "protocol": {"name": protocol.name, "description": protocol.description},
        "database_drive": drives.database.name,
        "n_database": len(drives.database),
        "threshold_m": options.threshold_m,
        "query_stride": options.query_stride,
        "database_views": list(options.database_views),
        "preset": options.preset,
        "localizer": config.parameters(),
        "oracle_note": "methods named '<method>-oracle' use ground-truth labels instead of the segmenter",
        "recall_note": "percent; 'all_queries' counts queries without a positive as failures, "
        "'queries_with_positive' leaves them out",
        "localization_note": "localization_recall_at_1: percent of all queries whose estimate is within "
        "threshold_m (NO_MATCH = failure); 'filtered' holds the same through the sequence filter",
        "results": results,
    }
    if drives.confusers:
        summary["confusers"] = {"drives": [d.name for d in drives.confusers], "spacing_m": CONFUSER_SPACING_M,
                                "n_true_database": drives.n_true_database}
    if calibrations:
        summary["calibration"] = calibrations
    if segmentation:
        summary["segmentation"] = segmentation  # segmenter name ('' = shipped) -> scores per drive
    return summary


def write_results(evaluation: Evaluation, out: Path) -> Path:
    """results.json in ``out`` (strict JSON, written atomically)."""
    path = out / "results.json"
    write_json_atomic(evaluation.summary, path)
    return path
