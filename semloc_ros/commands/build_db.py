"""``semloc build-db SRC [SRC ...] --out DB.semdb --method M``: a geotagged descriptor database from sources.

Each SRC (or each line of ``--manifest FILE``) is anything :func:`semloc_ros.io.datasets.load_drive` reads:
``semloc-sim:ROOT:DRIVE``, a semloc-sim drive folder, a folder with a ``filename,lat,lon`` CSV, a folder of VPR
``@utm@`` images or a ROS 2 bag
(``--image-topic`` / ``--gps-topic``). Frames with bad GPS are skipped and every skip is counted and printed
(for bags: fixes with NO_FIX status or NaN position, images outside the fix span or in a fix gap); GPS positions
that imply a speed above ``--max-speed-mps`` (a GPS jump) are skipped and counted too.
``--min-distance-m`` keeps a frame only once the vehicle has moved that far from the last kept frame (a
stopped vehicle does not fill the database with copies of one place). ``--append`` adds the frames to an
existing database made with the same model (checked by model id) instead of writing a new one: run it once
per bag or drive to build a multi-drive database. Writing the file (load, add, atomic replace for ``--append``)
holds the file's exclusive lock: concurrent runs on one file wait for each other (``--lock-timeout-s``) and
every run's entries land. Several sources go into one map in the order given. ``--ray auto`` (a loopback Ray
cluster for the run) or ``--ray ADDRESS`` (an existing cluster) describes the frames on Ray workers
(:mod:`semloc_ros.distributed`, docs/scale.md); the map is the same as without it. ``--tile-size-m`` writes a
tiled map folder (:mod:`semloc_ros.core.tiles`) that the localizer loads around the vehicle.

The map records its pipeline: the descriptor, and for label methods the segmenter (``--segmenter``, default the
shipped one) with its ``--label-mapping`` (:mod:`semloc_ros.core.pipeline_id`); the localizer refuses descriptors
of another pipeline. A map file also records the frame_id of the GPS antenna its positions come from
(``--gps-frame-id``, default the bags' NavSatFix frame_id, else ``gps``): the localizer's fixes are stamped with it.
And the yaw of its camera relative to the vehicle (``--camera-yaw-deg``, default the drive.json of rendered drives,
else 0; 180 for a rear camera): the cross-track correction moves the fix sideways in that camera's frame.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from semloc_ros.commands.common import (
    DEFAULT_THREADS,
    add_label_mapping_arguments,
    add_trust_model_code_argument,
    add_views_argument,
)
from semloc_ros.core.database import DatabaseError, GeoDatabase
from semloc_ros.core.map_file import camera_yaw_mismatch, checked_camera_yaw
from semloc_ros.core.tiles import DEFAULT_TILE_SIZE_M, MANIFEST, TiledMap, is_tiled_map
from semloc_ros.core.views import format_views
from semloc_ros.distributed import (
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_MAX_RETRIES,
    DESCRIBE_CHUNK,
    DistributedError,
    PipelineSpec,
    build_on_ray,
    chunk_problem,
    connect,
    read_source_list,
)
from semloc_ros.io.bags import BagError
from semloc_ros.io.datasets import DatasetError, Drive, load_drive, subsample_by_distance
from semloc_ros.io.gps_track import DEFAULT_MAX_SPEED_MPS, drop_implausible_speed
from semloc_ros.models.pipeline import METHODS

DEFAULT_GPS_FRAME_ID = "gps"


# One torch thread per core, at most 4: more threads than cores made building 1.6x slower on 2 cores
# (`semloc benchmark build`, docs/benchmarks.md).
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc build-db",
        description="Build (or extend) a geotagged descriptor database from a drive, image folder or rosbag.",
    )
    parser.add_argument("sources", nargs="*", metavar="SRC",
                        help="semloc-sim:ROOT:DRIVE, a drive/image folder, or a ROS 2 bag (several: one map)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="file listing the sources, one per line (# comments; paths relative to the file)")
    parser.add_argument("--out", required=True, type=Path, help="database file to write (e.g. map.semdb)")
    parser.add_argument("--method", default="semantic", choices=METHODS, help="descriptor method")
    parser.add_argument("--append", action="store_true", help="add to the existing --out database")
    add_views_argument(
        parser,
        "--views",
        "also store each frame shifted sideways by these fractions of the width (the place as seen from the next "
        "lane or by a turned camera; README); 0 = the frame itself; default: 0, or the map's views with --append",
        default=None,
    )
    parser.add_argument(
        "--mask-dynamic",
        action="store_true",
        help="label methods: ignore dynamic classes (set mask_dynamic on the descriptor node too)",
    )
    parser.add_argument(
        "--descriptor",
        default=None,
        help="descriptor weights (e.g. from `semloc train --source`) instead of the shipped one of the method's kind; "
        "give the descriptor node the same file (model parameter)",
    )
    parser.add_argument(
        "--segmenter",
        default=None,
        help="label methods: segmenter weights (TorchScript, ONNX, checkpoint) instead of the shipped one; give the "
        "segmentation node the same file (model parameter). The map records it: queries from another segmenter "
        "are refused",
    )
    add_label_mapping_arguments(parser, "--segmenter")
    add_trust_model_code_argument(parser)
    parser.add_argument(
        "--gps-frame-id",
        default=None,
        help="frame_id of the GPS antenna the positions come from, stored in the map (the localizer's fixes default "
        "to it); default: the NavSatFix frame_id of the bags, else 'gps'",
    )
    parser.add_argument(
        "--camera-yaw-deg", type=float, default=None,
        help="yaw of the camera relative to the vehicle's forward axis, degrees counter-clockwise (180: a rear "
        "camera), stored in the map; default: the sources' drive.json (rendered drives), else 0",
    )
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch")
    parser.add_argument(
        "--index-type",
        default="auto",
        choices=("auto", "flat", "hnsw", "ivfpq"),
        help="search index of a new database (auto: exact below 50k entries, IVF-PQ above; docs/benchmarks.md)",
    )
    parser.add_argument(
        "--tile-size-m", type=float, default=None,
        help=f"write a tiled map: --out is a folder of square tiles this wide (e.g. {DEFAULT_TILE_SIZE_M:g}) that the "
        "localizer loads around the vehicle (docs/scale.md); an existing tiled --out keeps its own size",
    )
    parser.add_argument("--image-topic", default=None, help="bag image topic (Image or CompressedImage)")
    parser.add_argument("--gps-topic", default=None, help="bag NavSatFix topic")
    parser.add_argument(
        "--max-gap-s",
        type=float,
        default=1.0,
        help="bag: largest time from an image to each bracketing GPS fix",
    )
    parser.add_argument(
        "--max-speed-mps",
        type=float,
        default=DEFAULT_MAX_SPEED_MPS,
        help="skip GPS positions implying a faster speed (m/s) from the last good one: GPS jumps",
    )
    parser.add_argument(
        "--lock-timeout-s",
        type=float,
        default=120.0,
        help="wait this long for another build-db writing the same --out to finish",
    )
    parser.add_argument(
        "--min-distance-m",
        type=float,
        default=0.0,
        help="keep a frame only this far (m) from the last kept one; 0 keeps every frame",
    )
    parser.add_argument(
        "--no-thumbnails",
        action="store_true",
        help="label methods: do not store the 60x80 label thumbnails used for re-ranking (4.8 kB per entry); "
        "with --append, the existing database decides",
    )
    parser.add_argument(
        "--untrained-ok",
        action="store_true",
        help="use randomly initialised networks when trained weights are missing (smoke tests)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    cluster = parser.add_argument_group("Ray cluster (docs/scale.md)")
    cluster.add_argument("--ray", default=None, metavar="ADDRESS",
                         help="describe on Ray: 'auto' starts a loopback cluster for the run, else a cluster address")
    cluster.add_argument("--workers", type=int, default=None,
                         help="--ray auto: worker processes (default: all cores)")
    cluster.add_argument("--chunk-frames", type=int, default=DEFAULT_CHUNK_FRAMES,
                         help=f"frames per Ray task (a multiple of {DESCRIBE_CHUNK}, or of --batch-size if it divides "
                         f"{DESCRIBE_CHUNK})")
    cluster.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES,
                         help="runs of a task whose worker died before the build fails")
    return parser


def _source_specs(args: argparse.Namespace) -> list[str]:
    """The sources to build from: the SRC arguments, then the manifest's lines."""
    return [*args.sources, *(read_source_list(args.manifest) if args.manifest is not None else [])]


def _load_source(args: argparse.Namespace, spec: str) -> Drive | int:
    """One source's frames with valid GPS (and ``--min-distance-m`` apart), or the exit code of a failure."""
    try:
        drive = load_drive(spec, args.image_topic, args.gps_topic, max_gap_s=args.max_gap_s)
    except (DatasetError, BagError, OSError) as error:
        print(f"semloc build-db: {error}", file=sys.stderr)
        return 2
    with_gps = drop_implausible_speed(drive.drop_invalid_gps(), args.max_speed_mps)
    valid = subsample_by_distance(with_gps, args.min_distance_m)
    print(
        f"source {drive.source}: {len(drive)} frames with a position, {len(with_gps)} with valid GPS, "
        f"{len(valid)} kept"
        + (f" (>= {args.min_distance_m:g} m apart)" if args.min_distance_m > 0 else "")
    )
    print("skipped: " + (", ".join(f"{reason}={count}" for reason, count in valid.skipped.items()) or "none"))
    return valid


def _bad_options(args: argparse.Namespace) -> str:
    """The first invalid option or combination, or ''."""
    if args.threads < 1 or args.batch_size < 1:
        return "--threads and --batch-size must be >= 1"
    if not (math.isfinite(args.min_distance_m) and args.min_distance_m >= 0.0):
        return "--min-distance-m must be finite and >= 0"
    if not (math.isfinite(args.max_speed_mps) and args.max_speed_mps > 0.0) or not args.lock_timeout_s >= 0.0:
        return "--max-speed-mps must be finite and > 0, --lock-timeout-s >= 0"
    if not args.sources and args.manifest is None:
        return "give at least one SRC or --manifest FILE"
    if args.workers is not None and (args.workers < 1 or args.ray != "auto"):
        return "--workers must be >= 1 and goes with --ray auto"
    if args.max_retries < 0:
        return "--max-retries must be >= 0"
    if chunk_problem(args.chunk_frames, args.batch_size):
        return f"--chunk-frames: {chunk_problem(args.chunk_frames, args.batch_size)}"
    if args.tile_size_m is not None and not (math.isfinite(args.tile_size_m) and args.tile_size_m > 0):
        return "--tile-size-m must be a positive number of metres"
    if args.mask_dynamic and args.method == "rgb":
        return "--mask-dynamic needs a label method; 'rgb' sees no classes"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.models import WeightsError, set_torch_threads

    problem = _bad_options(args)
    if problem:
        print(f"semloc build-db: {problem}", file=sys.stderr)
        return 2
    try:
        specs = _source_specs(args)
    except (OSError, UnicodeDecodeError) as error:
        print(f"semloc build-db: cannot read the manifest: {error}", file=sys.stderr)
        return 2
    drives = []
    for spec in specs:
        loaded = _load_source(args, spec)
        if isinstance(loaded, int):
            return loaded
        drives.append(loaded)
    if not sum(map(len, drives)):
        print("semloc build-db: no frame with valid GPS, nothing to add", file=sys.stderr)
        return 1
    set_torch_threads(args.threads)
    try:
        pipeline = _pipeline_spec(args).build("cpu" if args.ray else args.device)
        gps_frame_id = _gps_frame_id(args, drives)
        camera_yaw_deg = _camera_yaw_deg(args, drives)
    except (WeightsError, ValueError, OSError) as error:
        print(f"semloc build-db: {error}", file=sys.stderr)
        return 2
    tiled = args.tile_size_m is not None or is_tiled_map(args.out)
    existing = _existing_tiled(args, pipeline, camera_yaw_deg) if tiled else _existing_database(
        args, pipeline, gps_frame_id, camera_yaw_deg)
    if isinstance(existing, int):
        return existing
    start = time.perf_counter()
    # Appending: describe into a new container; the file is read again under its lock to add to it.
    thumbnails = (existing.thumbnails is not None) if len(existing) else (False if args.no_thumbnails else None)
    entries = GeoDatabase(pipeline.dimension, pipeline.model_id, "flat" if tiled else args.index_type,
                          views=existing.views, gps_frame_id=gps_frame_id, camera_yaw_deg=camera_yaw_deg)
    try:
        _describe(args, pipeline, drives, entries, thumbnails)
    except DistributedError as error:
        print(f"semloc build-db: {error}", file=sys.stderr)
        return 1
    if tiled:
        database, what = entries, _write_tiled(args, entries)
    else:
        database, what = _write(args, entries), ""
    if isinstance(database, int) or isinstance(what, int):
        return 1
    before = len(database) - len(entries)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.out}: {len(database)} entries (+{len(database) - before}){what}, method {args.method}, "
        f"pipeline {pipeline.model_id}, GPS frame '{gps_frame_id}', camera yaw {camera_yaw_deg:g} deg, "
        f"{'with' if database.thumbnails is not None else 'no'} label thumbnails, "
        f"{elapsed:.1f} s"
    )
    return 0


def _existing_database(args: argparse.Namespace, pipeline, gps_frame_id: str,
                       camera_yaw_deg: float) -> GeoDatabase | int:
    """The database ``--append`` adds to (checked early: pipeline id, dimension, views, GPS frame, camera yaw), an
    empty one otherwise; an exit code when it cannot be appended to."""
    from semloc_ros.core.database import DatabaseError, GeoDatabase

    database = GeoDatabase(pipeline.dimension, pipeline.model_id, args.index_type, gps_frame_id=gps_frame_id,
                           camera_yaw_deg=camera_yaw_deg)
    if args.append and args.out.exists():
        try:
            database = GeoDatabase.load(args.out, expected_model_id=pipeline.model_id)
            database.check_query(pipeline.dimension)
        except DatabaseError as error:
            print(f"semloc build-db: cannot append: {error}", file=sys.stderr)
            return 1
        if args.views is not None and tuple(args.views) != database.views:
            print(f"semloc build-db: cannot append: the map holds views {format_views(database.views)}, not "
                  f"--views {format_views(args.views)} (leave --views out to use the map's)", file=sys.stderr)
            return 1
        if gps_frame_id != database.gps_frame_id:
            print(f"semloc build-db: cannot append: the map's GPS positions are in frame "
                  f"'{database.gps_frame_id}', these in '{gps_frame_id}' (another antenna: build another map)",
                  file=sys.stderr)
            return 1
        if mismatch := camera_yaw_mismatch(database.camera_yaw_deg, camera_yaw_deg):
            print(f"semloc build-db: cannot append: {mismatch}", file=sys.stderr)
            return 1
        print(f"appending to {args.out} ({len(database)} entries, model {database.model_id})")
    elif args.out.exists():
        print(f"overwriting {args.out} (use --append to extend it)")
    return database


def _pipeline_spec(args: argparse.Namespace) -> PipelineSpec:
    """The pipeline the options name (built here, and on every Ray worker)."""
    return PipelineSpec(args.method, args.untrained_ok, args.mask_dynamic, args.batch_size, args.descriptor,
                        args.segmenter, args.label_mapping, args.segmenter_arch, args.trust_model_code)


def _gps_frame_id(args: argparse.Namespace, drives: list[Drive]) -> str:
    """The frame_id the map's positions are in: ``--gps-frame-id``, else the bags' NavSatFix frame_id, else gps.
    ValueError when bags of one map name different frames."""
    if args.gps_frame_id:
        return args.gps_frame_id
    found = sorted({d.metadata.get("gps_frame_id", "") for d in drives} - {""})
    if len(found) > 1:
        raise ValueError(f"the sources' GPS fixes are in different frames {found}: one map holds one antenna's "
                         "positions (give --gps-frame-id if they are the same antenna)")
    return found[0] if found else DEFAULT_GPS_FRAME_ID


def _camera_yaw_deg(args: argparse.Namespace, drives: list[Drive]) -> float:
    """The yaw of the map's camera relative to the vehicle: ``--camera-yaw-deg``, else the one the sources record,
    else 0. ValueError when the sources of one map disagree (or only some record one), or for a yaw that is not a
    finite number."""
    if args.camera_yaw_deg is not None:
        return checked_camera_yaw(args.camera_yaw_deg)
    recorded = [d.camera_yaw_deg for d in drives]
    found = sorted({checked_camera_yaw(yaw) for yaw in recorded if yaw is not None})
    if len(found) > 1 or (found and None in recorded):
        raise ValueError(f"the sources' cameras look in different directions ({', '.join(f'{y:g}' for y in found)} "
                         "degrees, or not recorded): one map holds one camera's views (give --camera-yaw-deg if "
                         "they are the same camera)")
    return found[0] if found else 0.0


def _write(args: argparse.Namespace, entries: GeoDatabase) -> GeoDatabase | int:
    """Save (or append) ``entries`` to ``--out`` under the file's lock; the saved database or an exit code."""
    from semloc_ros.core.database import DatabaseError
    from semloc_ros.core.file_lock import LockTimeoutError
    from semloc_ros.core.map_updates import append_to_file, save_locked

    def waiting() -> None:
        print(f"waiting for another process writing {args.out} ...", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.append:
            return append_to_file(args.out, entries, args.lock_timeout_s, on_wait=waiting)
        save_locked(entries, args.out, args.lock_timeout_s, on_wait=waiting)
        return entries
    except (DatabaseError, ValueError, LockTimeoutError) as error:
        print(f"semloc build-db: cannot {'append' if args.append else 'write'}: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. the disk is full: the atomic write left the previous file as it was
        print(f"semloc build-db: cannot write {args.out}: {error.strerror or error}; "
              f"{'the previous file is unchanged' if args.out.exists() else 'nothing was written'}", file=sys.stderr)
        return 1


def _existing_tiled(args: argparse.Namespace, pipeline, camera_yaw_deg: float) -> GeoDatabase | int:
    """For a tiled --out: an empty stand-in carrying the map's views and thumbnail choice (checked against the
    pipeline and the camera yaw with --append); an exit code when it cannot be written to."""
    stand_in = GeoDatabase(pipeline.dimension, pipeline.model_id, "flat")
    try:
        if args.out.exists() and not is_tiled_map(args.out):
            raise DatabaseError(f"{args.out} exists and is not a tiled map folder (give a new --out)")
        if args.append and is_tiled_map(args.out):
            existing = TiledMap.open(args.out, expected_model_id=pipeline.model_id)
            stand_in.check_query(existing.dimension)
            if args.views is not None and tuple(args.views) != existing.views:
                raise DatabaseError(f"the map holds views {format_views(existing.views)}, not --views "
                                    f"{format_views(args.views)} (leave --views out to use the map's)")
            stand_in.views = existing.views
            if mismatch := camera_yaw_mismatch(existing.camera_yaw_deg, camera_yaw_deg):
                raise DatabaseError(mismatch)
            args.no_thumbnails = not existing.manifest["thumbnails"]
            print(f"appending to the tiled map {args.out} ({existing.count} entries in {len(existing.keys)} tiles)")
        elif is_tiled_map(args.out):
            print(f"overwriting {args.out} (use --append to extend it)")
    except DatabaseError as error:
        print(f"semloc build-db: cannot {'append' if args.append else 'write'}: {error}", file=sys.stderr)
        return 1
    return stand_in


def _describe(args: argparse.Namespace, pipeline, drives: list[Drive], entries: GeoDatabase,
              thumbnails: bool | None) -> None:
    """Describe every source into ``entries``: here, or on the Ray cluster of ``--ray``."""
    from semloc_ros.mapping import build_database

    if not args.ray:
        for drive in drives:
            build_database(pipeline, drive, batch_size=args.batch_size, progress=not args.quiet, database=entries,
                           views=args.views, thumbnails=thumbnails)
        return
    spec = _pipeline_spec(args)
    with connect(args.ray, args.workers) as ray:
        report = build_on_ray(ray, spec, pipeline, drives, entries, args.views, thumbnails, args.chunk_frames,
                              args.max_retries, progress=not args.quiet)
    print(f"ray: {report.frames} frames in {report.chunks} tasks on {len(report.workers)} worker processes "
          f"(torch threads {sorted(report.torch_threads)})")


def _write_tiled(args: argparse.Namespace, entries: GeoDatabase) -> str | int:
    """Write ``entries`` into the tiled map at --out, holding its manifest's lock; what to add to the summary, or an
    exit code."""
    from semloc_ros.core.file_lock import LockTimeoutError, exclusive_lock

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(args.out / MANIFEST, args.lock_timeout_s,
                            lambda: print(f"waiting for another process writing {args.out} ...", flush=True)):
            if args.append and is_tiled_map(args.out):
                tiled = TiledMap.open(args.out)
                written = tiled.append(entries)
            else:
                tiled = TiledMap.create(args.out, entries, args.tile_size_m or DEFAULT_TILE_SIZE_M)
                written = tiled.keys
    except (DatabaseError, ValueError, LockTimeoutError, OSError) as error:
        print(f"semloc build-db: cannot write the tiled map {args.out}: {error}", file=sys.stderr)
        return 1
    return (f" in {len(written)} of {len(tiled.keys)} tiles written ({tiled.grid.size_m:g} m, "
            f"{tiled.manifest['index']['type']}; map {tiled.count} entries)")


if __name__ == "__main__":
    sys.exit(main())
