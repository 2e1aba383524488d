"""Fit the fix uncertainty and integrity on training maps, report them on the evaluation map and off the map.

Maps and roles (from the ``splits.json`` of one or more dataset roots; nothing of an evaluation map, a tuning
map or a rear set is ever fitted on):

1. Training maps: the ``train`` drives of every root grouped by map (``seed`` in drive.json) and camera (its yaw
   relative to the vehicle: a rear camera's drives form a map of their own, since a rear query does not match a
   front camera's places). Per map the database is its first ``day`` drive (v1: trainA_day_l0, trainB_day_l1),
   the other drives are its in-map queries; its drives queried against the database of a map of ANOTHER seed
   are out-of-map frames (beyond ``min_route_m``: every map starts on the same road). Seeds and drive names must
   be distinct across roots (ValueError), as for training (:func:`semloc_ros.training.data.load_train_sets`).
2. The first training map (of the first root) *learns* (filter parameters, off-map similarity, the integrity
   score); the others *calibrate* (the Learn-then-Test gate: split conformal, on frames the score never saw).
   The covariance model is fitted on the published fixes of all training maps.
3. Report, per root: every query of its evaluation map (and of its ``rear`` pair and its ``tuning`` map, held
   out) against that map's database, and out-of-map drives (the root's calibration maps' drives against the
   evaluation database, the reported queries against the learning map's database).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.core.views import RECOMMENDED_VIEWS
from semloc_ros.evaluation.described import DescribedDrive, database_cached, describe_cached
from semloc_ros.evaluation.fix_records import FixRecords, correct_mask, fix_records
from semloc_ros.evaluation.metrics import DEFAULT_THRESHOLD_M
from semloc_ros.io.datasets import Drive, load_semloc_sim_drive


@dataclass
class MapRole:
    """One map of the study: its database drive and its query drives; ``world`` names the map they are on (root
    and seed: out-of-map pairs never share one), ``root`` the dataset they come from."""

    name: str
    database: Drive
    queries: list[Drive]
    world: str = ""
    root: str = ""


def _splits(root: Path) -> dict:
    return json.loads((Path(root) / "splits.json").read_text())


def _camera_tag(drive: Drive) -> str:
    yaw = drive.camera_yaw_deg or 0.0
    return "" if yaw == 0.0 else ("-rear" if abs(yaw) == 180.0 else f"-yaw{yaw:g}")


def _root_training_maps(root: Path) -> list[MapRole]:
    """Step 1 for one root: its train drives grouped by seed and camera, in split order."""
    by_map: dict[tuple[str, str], list[Drive]] = {}
    for name in _splits(root).get("train", []):
        drive = load_semloc_sim_drive(root, name)
        by_map.setdefault((str(drive.metadata.get("seed", name)), _camera_tag(drive)), []).append(drive)
    maps = []
    for (seed, camera), drives in by_map.items():
        day = [d for d in drives if d.condition == "day"]
        database = day[0] if day else drives[0]
        maps.append(MapRole(f"map{seed}{camera}", database, [d for d in drives if d is not database],
                            f"{seed}", str(root)))
    return maps


def training_maps(roots: Sequence[Path]) -> list[MapRole]:
    """Step 1: the training maps of one or more semloc-sim roots, in root and split order (ValueError when two
    roots share a map seed or a drive name, or when there are fewer than two maps)."""
    maps: list[MapRole] = []
    for root in roots:
        found = _root_training_maps(root)
        if clash := {m.world for m in found} & {m.world for m in maps}:
            raise ValueError(f"{root}: map seeds {sorted(clash)} also in another dataset (maps must be distinct)")
        maps += found
    check_distinct_drives(maps)
    if len(maps) < 2:
        raise ValueError(f"{', '.join(map(str, roots))}: the study needs at least two training maps, found {len(maps)}")
    return maps


def check_distinct_drives(roles: Sequence[MapRole]) -> None:
    """ValueError when drives of different folders share a name and frame count: the cache would mix their
    descriptions (its files are named by drive, frame count and models)."""
    drives = {d.source: (d.name, len(d)) for role in roles for d in [role.database, *role.queries]}
    keys = list(drives.values())
    if clash := sorted({name for name, count in keys if keys.count((name, count)) > 1}):
        raise ValueError(f"drives {clash} of more than one dataset root have the same name and frame count: their "
                         "cached descriptions would mix (give each root its own --cache-dir run)")


def held_out_maps(root: Path) -> list[MapRole]:
    """Step 3: the maps of a root that are reported only: its evaluation map, its ``rear`` pair and its
    ``tuning`` map (held out for choices), those splits.json has."""
    splits, tag = _splits(root), Path(root).name
    roles = [MapRole(f"{tag}:evaluation", load_semloc_sim_drive(root, splits["database"]),
                     [load_semloc_sim_drive(root, n) for n in splits["queries"]], f"{tag}:evaluation", str(root))]
    for name in ("rear", "tuning"):
        held = splits.get(name)
        if isinstance(held, dict) and held.get("database"):
            roles.append(MapRole(f"{tag}:{name}", load_semloc_sim_drive(root, held["database"]),
                                 [load_semloc_sim_drive(root, n) for n in held.get("queries", [])],
                                 f"{tag}:{'evaluation' if name == 'rear' else name}", str(root)))
    return roles


def tuning_maps(root: Path) -> list[MapRole]:
    """The ``tuning`` map of a root (a list of at most one): held out for choices, never fitted on."""
    return [role for role in held_out_maps(root) if role.name.endswith(":tuning")]


class Described:
    """Descriptions and databases of one pipeline, cached on disk (:mod:`semloc_ros.evaluation.described`)."""

    def __init__(self, pipeline, method: str, cache_dir: Path, views: Sequence[float], progress: bool = False):
        self.pipeline, self.method, self.cache_dir, self.views, self.progress = (
            pipeline, method, Path(cache_dir), tuple(views), progress)
        self._databases: dict[str, GeoDatabase] = {}
        self._records: dict[tuple[str, str, str], FixRecords] = {}

    def drive(self, drive: Drive) -> DescribedDrive:
        return describe_cached(self.pipeline, drive, self.cache_dir, self.method, progress=self.progress)

    def records(self, database_drive: Drive, drive: Drive, config: LocalizerConfig, mode: str,
                in_map: bool) -> FixRecords:
        """:func:`fix_records` of ``drive`` against ``database_drive``'s database (kept: one config per run; drives
        are told apart by their folder, since two roots may hold drives of one name), with the landmark rule of
        ``config`` (localizer step 7b)."""
        key = (database_drive.source, drive.source, mode)
        if key not in self._records:
            self._records[key] = fix_records(self.database(database_drive), self.drive(drive), config, mode, in_map,
                                             database_drive.name)
        return self._records[key].featureless_withheld(config.min_landmark_share)

    def database(self, drive: Drive) -> GeoDatabase:
        if drive.source not in self._databases:
            self._databases[drive.source] = database_cached(self.pipeline, drive, self.cache_dir, self.method,
                                                            views=self.views, progress=self.progress)
        return self._databases[drive.source]


def map_records(
    described: Described, role: MapRole, others: Sequence[MapRole], config: LocalizerConfig, mode: str,
) -> list[FixRecords]:
    """In-map records of ``role``'s queries and out-of-map records of its drives against the databases of
    ``others`` on another map (another world)."""
    records = [described.records(role.database, q, config, mode, True) for q in role.queries]
    for other in [o for o in others if o.world != role.world]:
        records += [described.records(other.database, d, config, mode, False)
                    for d in [role.database, *role.queries]]
    return records


def fit_offmap_similarity(records: Sequence[FixRecords], threshold_m: float, min_route_m: float) -> float:
    """The best cosine that separates right in-map frames from out-of-map frames best (largest
    true-positive minus false-positive rate): what an unmapped view reaches at best."""
    inside = np.concatenate([r.cues["best_cosine"][correct_mask(r, threshold_m)] for r in records if r.in_map])
    outside = np.concatenate([r.cues["best_cosine"][r.route_m > min_route_m] for r in records if not r.in_map])
    candidates = np.unique(np.concatenate([inside, outside]))
    youden = [np.mean(inside >= c) - np.mean(outside >= c) for c in candidates]
    return float(candidates[int(np.argmax(youden))])


LANDMARK_SHARES = (0.0, 0.0025, 0.005, 0.01, 0.02)  # min_landmark_share candidates (localizer step 7b)


def fit_min_landmark_share(records: Sequence[FixRecords], threshold_m: float,
                           min_route_m: float) -> tuple[float, dict[str, float]]:
    """The :data:`LANDMARK_SHARES` value whose rule keeps the most right fixes of the in-map frames less the fixes
    of the out-of-map frames (shares of the frames, Youden as :func:`fit_offmap_similarity`; ties: the smaller),
    and that difference per value."""
    def fixes(frames: list[FixRecords], share: float) -> int:
        return sum(int(r.featureless_withheld(share).fix.sum()) for r in frames)

    right = [r.select(correct_mask(r, threshold_m)) for r in records if r.in_map]
    outside = [r.select(r.route_m > min_route_m) for r in records if not r.in_map]
    in_frames = max(1, sum(len(r) for r in records if r.in_map))
    out_frames = max(1, sum(len(r) for r in outside))
    scores = {share: fixes(right, share) / in_frames - fixes(outside, share) / out_frames for share in LANDMARK_SHARES}
    best = max(LANDMARK_SHARES, key=lambda share: (round(scores[share], 12), -share))
    return best, {str(share): round(score, 6) for share, score in scores.items()}


# ------------------------------------------------------------------------------------------ fit and report

def add_described_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the scripts that describe training maps (scripts/fit_uncertainty.py, scripts/fit_lateral.py):
    where the described drives are cached, the method and the database views (default: the recommended ones)."""
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("SEMLOC_CACHE", "/tmp/semloc_eval_cache")))
    parser.add_argument("--method", default="semantic")
    parser.add_argument("--database-views", type=float, nargs="+", default=list(RECOMMENDED_VIEWS))


def add_fit_arguments(parser: argparse.ArgumentParser, config: Path) -> None:
    """The options every fit script shares (scripts/fit_uncertainty.py, fit_lateral.py, fit_sequence_filter.py):
    the dataset roots, the parameter file read (default ``config``) and written, the results folder, the
    :func:`add_described_arguments`, the distance of a wrong fix and the torch threads."""
    parser.add_argument("--dataset", type=Path, action="append", required=True,
                        help="semloc-sim root (splits.json with train maps); repeat to fit on several roots")
    parser.add_argument("--config", type=Path, default=config,
                        help="parameter file whose localizer_node settings are used")
    parser.add_argument("--write-config", type=Path, default=None, help="write the fitted values into this file")
    parser.add_argument("--out", type=Path, default=None, help="folder for the results (JSON)")
    add_described_arguments(parser)
    parser.add_argument("--threshold-m", type=float, default=DEFAULT_THRESHOLD_M,
                        help="a fix farther than this is wrong (metres)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def timed_study(script: str, run: Callable[[], dict], out: Path | None) -> dict | None:
    """``run()`` of a fit script, its ``seconds`` and ``out/results.json`` (if ``out``); None after one line on
    stderr when the datasets do not fit (a root without splits.json, drives of one name in two roots, ...)."""
    start = time.perf_counter()
    try:
        study = run()
    except (OSError, ValueError, KeyError) as error:
        print(f"{script}: {error}", file=sys.stderr)
        return None
    study["seconds"] = round(time.perf_counter() - start)
    if out is not None:
        from semloc_ros.core.files import write_json_atomic

        write_json_atomic(study, out / "results.json")
        print(f"results: {out / 'results.json'}")
    return study


FILTER_EXIT_PROBABILITY = 0.01  # per step; a drive leaves the map rarely
FILTER_ENTRY_PROBABILITY = 0.1


def read_localizer_config(path: Path) -> LocalizerConfig:
    """The ``localizer_node`` parameters of a ROS 2 parameter file as a :class:`LocalizerConfig`."""
    import yaml

    params = yaml.safe_load(Path(path).read_text())["localizer_node"]["ros__parameters"]
    names = set(LocalizerConfig().parameters())  # the node's other parameters (database_path, ...) do not apply
    return LocalizerConfig.from_parameters({k: v for k, v in params.items() if k in names}).validate()


def _fit_mode(described, maps, config, mode, args) -> tuple[dict, dict]:
    """Step 2-3 of the script for one mode: integrity score, gate, covariance model; their records."""
    from semloc_ros.evaluation.integrity_fit import calibrate_gate, fit_integrity_score
    from semloc_ros.evaluation.uncertainty_fit import fit_lane_time_constant

    learn, calibrate = maps[0], maps[1:]
    learn_records = map_records(described, learn, calibrate, config, mode)
    calibration_records = [r for role in calibrate
                           for r in map_records(described, role, [learn], config, mode)]
    score = fit_integrity_score(learn_records, args.threshold_m, args.min_route_m, max_gap_s=config.filter.max_gap_s)
    gate, choice = calibrate_gate(calibration_records, score, args.threshold_m, args.min_route_m,
                                  args.false_fix_rate, args.delta)
    from semloc_ros.evaluation.fix_quality import published

    in_map = [r for r in learn_records + calibration_records if r.in_map]
    track_model, track_record = fit_lane_time_constant(in_map, [published(r, gate) for r in in_map],
                                                       config.filter.max_gap_s, max_error_m=args.threshold_m)
    fitted = {"track_model": track_model, "integrity": gate}
    record = {"learning_map": learn.name, "calibration_maps": [m.name for m in calibrate],
              "integrity": dataclasses.asdict(gate), "ltt": dataclasses.asdict(choice),
              "covariance": {**dataclasses.asdict(track_model), **track_record}}
    return fitted, record


def _report_mode(described, maps, reported, config, mode, fitted, args) -> list[dict]:
    """Step 4 of the script for one mode: per held-out drive and per out-of-map drive."""
    from semloc_ros.evaluation.fix_quality import drive_report

    records = []
    for role in reported:
        records += [described.records(role.database, q, config, mode, True) for q in role.queries]
        records += [described.records(maps[0].database, q, config, mode, False) for q in role.queries]
        if not role.name.endswith(":evaluation"):
            continue
        for other in [m for m in maps[1:] if m.root == role.root]:  # that root's other maps against it
            records += [described.records(role.database, d, config, mode, False)
                        for d in [other.database, *other.queries]]
    return [drive_report(r, fitted["track_model"], fitted["integrity"], args.threshold_m, args.min_route_m)
            for r in records]


def _fit_offmap_temperature(described, learn: MapRole, config: LocalizerConfig) -> tuple[LocalizerConfig, dict]:
    """Step 2 of the script: the off-map likelihood's cosine temperature, the maximum-likelihood temperature of the
    single-frame cosines (no re-ranking) on the learning map's first query. The filter's own values are the
    parameter file's (scripts/fit_sequence_filter.py)."""
    from semloc_ros.evaluation.calibration import fit_filter_temperature

    first = described.drive(learn.queries[0])
    temperature = fit_filter_temperature(described.database(learn.database), first.drive, first.descriptors,
                                         config.with_parameters(rerank_top_k=0))
    return config.with_parameters(filter_offmap_temperature=temperature), {"fitted_on": first.drive.name}


def _fit_learning_map(described: Described, maps: list[MapRole], config: LocalizerConfig,
                      args) -> tuple[LocalizerConfig, dict]:
    """Step 2 of scripts/fit_uncertainty.py: the off-map likelihood and the landmark rule (localizer step 7b) on
    the learning map's single-frame records (in the map and against the other training maps)."""
    config, filter_fit = _fit_offmap_temperature(described, maps[0], config)
    records = map_records(described, maps[0], maps[1:], config.with_parameters(min_landmark_share=0.0), "single")
    landmarks, shares = fit_min_landmark_share(records, args.threshold_m, args.min_route_m)
    config = config.with_parameters(filter_exit_probability=FILTER_EXIT_PROBABILITY,
                                    filter_entry_probability=FILTER_ENTRY_PROBABILITY,
                                    filter_offmap_similarity=fit_offmap_similarity(records, args.threshold_m,
                                                                                   args.min_route_m),
                                    min_landmark_share=landmarks)
    return config, {**filter_fit, "landmark_shares": shares}


def run_study(args, pipeline, config: LocalizerConfig) -> dict:
    """Steps 2-4 of scripts/fit_uncertainty.py for both modes; the parameters of ``args.fit_mode``'s fit. With
    ``args.report_only`` nothing is fitted: the parameter file's values are reported as they are."""
    described = Described(pipeline, args.method, args.cache_dir, args.database_views)
    maps = training_maps(args.dataset)
    reported = [role for root in args.dataset for role in held_out_maps(root)]
    check_distinct_drives([*maps, *reported])
    config, step2 = (config, {"fitted_on": None, "landmark_shares": {}}) if args.report_only else _fit_learning_map(
        described, maps, config, args)
    study: dict = {"dataset": [str(root) for root in args.dataset], "threshold_m": args.threshold_m,
                   "min_route_m": args.min_route_m, "false_fix_rate": args.false_fix_rate, "delta": args.delta,
                   "views": list(args.database_views), "lateral_gain_m": config.lateral_gain_m,
                   "min_landmark_share": config.min_landmark_share, "landmark_shares": step2["landmark_shares"],
                   "report_only": bool(args.report_only),
                   "maps": {m.name: {"database": m.database.name, "queries": [q.name for q in m.queries]}
                            for m in [*maps, *reported]},
                   "filter": {"fitted_on": step2["fitted_on"], "temperature": config.filter.temperature,
                              "kidnap_probability": config.filter.kidnap_probability,
                              "reverse_weight": config.filter.reverse_weight,
                              "offmap_similarity": config.filter.offmap_similarity,
                              "offmap_temperature": config.filter.offmap_temperature,
                              "exit_probability": config.filter.exit_probability,
                              "entry_probability": config.filter.entry_probability},
                   "modes": {}}
    for mode in ("single", "filtered"):
        if args.report_only:
            fitted = {"track_model": config.track_model(), "integrity": config.integrity_model()}
            record = {"learning_map": None, "calibration_maps": [],
                      "integrity": dataclasses.asdict(fitted["integrity"]),
                      "covariance": dataclasses.asdict(fitted["track_model"])}
        else:
            fitted, record = _fit_mode(described, maps, config, mode, args)
        record["report"] = [] if args.no_report else _report_mode(
            described, maps, reported, config, mode, fitted, args)
        study["modes"][mode] = {**record, "parameters": parameters_of(fitted, study["filter"],
                                                                       config.min_landmark_share)}
    study["shipped"] = {"mode": "filtered" if config.sequence_filter else "single",  # the mode the file runs
                        "fit": args.fit_mode, "parameters": study["modes"][args.fit_mode]["parameters"]}
    return study


def parameters_of(fitted: dict, filter_values: dict, min_landmark_share: float) -> dict[str, float | list[float]]:
    """The localizer_node parameters of a fitted mode (flat names, as in config/semloc.yaml)."""
    from semloc_ros.core.integrity import CUES

    model, gate = fitted["track_model"], fitted["integrity"]
    return {
        "covariance_along_scale": round(model.along_scale, 4),
        "covariance_cross_scale": round(model.cross_scale, 4),
        "position_sigma_along_m": round(model.along_sigma_m, 3),
        "position_sigma_cross_m": round(model.cross_sigma_m, 3),
        "lane_alignment": round(model.lane_alignment, 4),
        "lane_alignment_width": round(model.lane_alignment_width, 4),
        "lane_alignment_time_constant_s": model.lane_time_constant_s,
        "integrity_weights": [round(float(gate.weights.get(c, 0.0)), 4) for c in CUES],
        "integrity_bias": round(gate.bias, 4),
        "integrity_threshold": round(gate.threshold, 6),
        "filter_exit_probability": filter_values["exit_probability"],
        "filter_entry_probability": filter_values["entry_probability"],
        "filter_offmap_similarity": round(filter_values["offmap_similarity"], 4),
        "filter_offmap_temperature": round(filter_values["offmap_temperature"], 6),
        "min_landmark_share": min_landmark_share,
    }


def _pct(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def format_report(study: dict) -> str:
    """Plain-text table per mode: one row per reported drive."""
    lines = []
    for mode, entry in study["modes"].items():
        lines.append(f"{mode}: gate threshold {entry['integrity']['threshold']:.4g} (Learn-then-Test alpha "
                     f"{study['false_fix_rate']:g}, delta {study['delta']:g}); covariance {entry['covariance']}")
        lines.append(f"{'drive':28s} {'database':16s} fix%  1s%   2s%  >3s%  maxerr  FFR%  kept%  NEES [95%]      NIS")
        for r in entry["report"]:
            nav = r.get("navigation") or {}
            bounds = nav.get("nees_bounds_95") or [np.nan, np.nan]
            lines.append(
                f"{r['drive']:28s} {r['database']:16s} {_pct(r.get('fix_rate', np.nan)):>4s} "
                f"{_pct(r.get('within_1sigma', np.nan)):>5s} {_pct(r.get('within_2sigma', np.nan)):>5s} "
                f"{_pct(r.get('beyond_3sigma', np.nan)):>5s} {_num(r.get('max_fix_error_m', np.nan)):>7s} "
                f"{_pct(r['false_fix_rate']):>5s} {_pct(r.get('kept_fix_rate', np.nan)):>5s} "
                f"{_num(nav.get('mean_nees', np.nan), 2):>5s} [{_num(bounds[0], 2)}, {_num(bounds[1], 2)}] "
                f"{_num(nav.get('mean_nis', np.nan), 2):>5s}")
    return "\n".join(lines)


def _yaml_float(value: float) -> str:
    """A float as YAML that ROS reads as a double (``1.0``, never ``1``)."""
    text = f"{float(value):.6g}"
    return text if any(c in text for c in ".en") else text + ".0"


def write_config_values(path: Path, values: dict) -> None:
    """Replace the values of ``localizer_node`` parameters in a parameter file, keeping its comments and layout.

    Every key must already be in the file (a missing one is a ValueError; nothing is written then).
    """
    import re

    text = Path(path).read_text()
    for key, value in values.items():
        rendered = "[" + ", ".join(map(_yaml_float, value)) + "]" if isinstance(value, list) else _yaml_float(value)
        pattern = re.compile(rf"^(\s+{re.escape(key)}:[ \t]*)([^#\n]*?)([ \t]*#.*)?$", re.MULTILINE)
        if not pattern.search(text):
            raise ValueError(f"{path}: no parameter {key!r} to write")
        text = pattern.sub(lambda m, r=rendered: f"{m.group(1)}{r}{m.group(3) or ''}", text, count=1)
    Path(path).write_text(text)
