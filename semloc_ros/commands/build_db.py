"""``semloc build-db SOURCE --out DB.semdb --method M``: a geotagged descriptor database from one source.

SOURCE is anything :func:`semloc_ros.io.datasets.load_drive` reads: ``semloc-sim:ROOT:DRIVE``, a semloc-sim drive
folder, a folder with a ``filename,lat,lon`` CSV, a folder of VPR ``@utm@`` images or a ROS 2 bag
(``--image-topic`` / ``--gps-topic``). Frames with bad GPS are skipped and every skip is counted and printed
(for bags: fixes with NO_FIX status or NaN position, images outside the fix span or in a fix gap); GPS positions
that imply a speed above ``--max-speed-mps`` (a GPS jump) are skipped and counted too.
``--min-distance-m`` keeps a frame only once the vehicle has moved that far from the last kept frame (a
stopped vehicle does not fill the database with copies of one place). ``--append`` adds the frames to an
existing database made with the same model (checked by model id) instead of writing a new one: run it once
per bag or drive to build a multi-drive database. Writing the file (load, add, atomic replace for ``--append``)
holds the file's exclusive lock: concurrent runs on one file wait for each other (``--lock-timeout-s``) and
every run's entries land.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from semloc_ros.commands.common import DEFAULT_THREADS, add_views_argument
from semloc_ros.core.views import format_views
from semloc_ros.io.bags import BagError
from semloc_ros.io.datasets import DatasetError, load_drive, subsample_by_distance
from semloc_ros.io.gps_jumps import DEFAULT_MAX_SPEED_MPS, drop_implausible_speed
from semloc_ros.models.pipeline import METHODS

if TYPE_CHECKING:
    from semloc_ros.core.database import GeoDatabase


# One torch thread per core, at most 4: more threads than cores made building 1.6x slower on 2 cores
# (`semloc benchmark build`, docs/benchmarks.md).
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc build-db",
        description="Build (or extend) a geotagged descriptor database from a drive, image folder or rosbag.",
    )
    parser.add_argument("source", help="semloc-sim:ROOT:DRIVE, a drive/image folder, or a ROS 2 bag")
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
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network batch")
    parser.add_argument(
        "--index-type",
        default="auto",
        choices=("auto", "flat", "hnsw", "ivfpq"),
        help="search index of a new database (auto: exact below 50k entries, IVF-PQ above; docs/benchmarks.md)",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.core.database import GeoDatabase
    from semloc_ros.mapping import build_database
    from semloc_ros.models import WeightsError, set_torch_threads
    from semloc_ros.models.pipeline import Pipeline

    if args.threads < 1 or args.batch_size < 1:
        print("semloc build-db: --threads and --batch-size must be >= 1", file=sys.stderr)
        return 2
    if not (math.isfinite(args.min_distance_m) and args.min_distance_m >= 0.0):
        print("semloc build-db: --min-distance-m must be finite and >= 0", file=sys.stderr)
        return 2
    if not (math.isfinite(args.max_speed_mps) and args.max_speed_mps > 0.0) or not args.lock_timeout_s >= 0.0:
        print("semloc build-db: --max-speed-mps must be finite and > 0, --lock-timeout-s >= 0", file=sys.stderr)
        return 2
    try:
        drive = load_drive(args.source, args.image_topic, args.gps_topic, max_gap_s=args.max_gap_s)
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
    if not len(valid):
        print("semloc build-db: no frame with valid GPS, nothing to add", file=sys.stderr)
        return 1

    if args.mask_dynamic and args.method == "rgb":
        print("semloc build-db: --mask-dynamic needs a label method; 'rgb' sees no classes", file=sys.stderr)
        return 2
    set_torch_threads(args.threads)
    try:
        pipeline = Pipeline.from_method(args.method, device=args.device, untrained_ok=args.untrained_ok,
                                        mask_dynamic=args.mask_dynamic, descriptor_file=args.descriptor)
    except (WeightsError, ValueError) as error:
        print(f"semloc build-db: {error}", file=sys.stderr)
        return 2
    existing = _existing_database(args, pipeline)
    if isinstance(existing, int):
        return existing
    start = time.perf_counter()
    # Appending: describe into a new container; the file is read again under its lock to add to it.
    thumbnails = (existing.thumbnails is not None) if len(existing) else (False if args.no_thumbnails else None)
    entries = build_database(pipeline, valid, batch_size=args.batch_size, progress=not args.quiet,
                             database=GeoDatabase(pipeline.dimension, pipeline.model_id, args.index_type,
                                                  views=existing.views),
                             views=args.views, thumbnails=thumbnails)
    database = _write(args, entries)
    if isinstance(database, int):
        return database
    before = len(database) - len(entries)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.out}: {len(database)} entries (+{len(database) - before}), method {args.method}, "
        f"model {pipeline.model_id}, {'with' if database.thumbnails is not None else 'no'} label thumbnails, "
        f"{elapsed:.1f} s"
    )
    return 0


def _existing_database(args: argparse.Namespace, pipeline) -> GeoDatabase | int:
    """The database ``--append`` adds to (checked early: model id, dimension), an empty one otherwise; an exit
    code when it cannot be appended to."""
    from semloc_ros.core.database import DatabaseError, GeoDatabase

    database = GeoDatabase(pipeline.dimension, pipeline.model_id, args.index_type)
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
        print(f"appending to {args.out} ({len(database)} entries, model {database.model_id})")
    elif args.out.exists():
        print(f"overwriting {args.out} (use --append to extend it)")
    return database


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


if __name__ == "__main__":
    sys.exit(main())
