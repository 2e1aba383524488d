"""``semloc plot OUTPUT_BAG --truth DRIVE``: the recorded fixes on the ground-truth route, coloured by error.

OUTPUT_BAG is a bag of the localizer's outputs (``semloc record``); its NavSatFix topic (``--fix-topic``) is
read. DRIVE is the ground truth in any form ``semloc build-db`` reads (``semloc-sim:ROOT:DRIVE``, a drive or
image folder, a bag with ``--image-topic``/``--gps-topic``): each fix is compared with the ground-truth
position interpolated at the fix's stamp (the camera image stamp the localizer copies). ``--database``
adds the database places as small grey dots. Example::

    semloc plot run1.mcap --truth semloc-sim:data:night_l0 --database map.semdb --out run1.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semloc_ros.io.bags import header_stamp_ns, open_bag
from semloc_ros.io.datasets import (
    NAVSAT_STATUS_NO_FIX,
    NAVSATFIX_MSGTYPE,
    DatasetError,
    load_drive,
)


@dataclass
class RecordedFixes:
    """The NavSatFix messages of one topic of a bag, as arrays (stamps: header stamps in ns)."""

    stamp_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    confident: np.ndarray

    def __len__(self) -> int:
        return len(self.stamp_ns)


def read_fixes(bag_path: str | Path, topic: str = "/semloc/fix") -> RecordedFixes:
    """All fixes recorded on ``topic``; status NO_FIX is ``confident == False``, no position is NaN."""
    rows = []
    with open_bag(Path(bag_path)) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            found = sorted({c.topic for c in reader.connections})
            raise DatasetError(f"{bag_path}: no topic {topic}; the bag has {found}")
        if any(c.msgtype != NAVSATFIX_MSGTYPE for c in connections):
            raise DatasetError(f"{bag_path}: {topic} is {connections[0].msgtype}, need {NAVSATFIX_MSGTYPE}")
        for connection, log_time, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            rows.append((header_stamp_ns(msg, log_time), msg.latitude, msg.longitude,
                         int(msg.status.status) != NAVSAT_STATUS_NO_FIX))
    return RecordedFixes(
        stamp_ns=np.array([r[0] for r in rows], dtype=np.int64),
        lat=np.array([r[1] for r in rows], dtype=np.float64),
        lon=np.array([r[2] for r in rows], dtype=np.float64),
        confident=np.array([r[3] for r in rows], dtype=bool),
    )


def fix_errors(fixes: RecordedFixes, truth_stamp_ns: np.ndarray, truth_lat: np.ndarray, truth_lon: np.ndarray,
               max_gap_s: float) -> np.ndarray:
    """Distance (m) of each fix to the ground truth interpolated at its stamp; NaN without position or truth."""
    from semloc_ros.core.geodesy import geodesic_distance_m
    from semloc_ros.io.gps_track import interpolate_fixes

    order = np.argsort(truth_stamp_ns, kind="stable")
    lat, lon, _, _ = interpolate_fixes(fixes.stamp_ns, truth_stamp_ns[order], truth_lat[order], truth_lon[order],
                                       np.zeros(len(order)), max_gap_s)
    error = np.full(len(fixes), np.nan)
    ok = np.isfinite(lat) & np.isfinite(fixes.lat) & np.isfinite(fixes.lon)
    if ok.any():
        error[ok] = geodesic_distance_m(lat[ok], lon[ok], fixes.lat[ok], fixes.lon[ok])
    return error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", help="bag recorded with semloc record (directory, .mcap or .db3)")
    parser.add_argument("--truth", required=True, help="ground-truth drive (any semloc build-db source)")
    parser.add_argument("--database", type=Path, help="GeoDatabase file: its places are drawn as grey dots")
    parser.add_argument("--out", type=Path, default=Path("semloc-fixes.png"), help="PNG to write")
    parser.add_argument("--fix-topic", default="/semloc/fix", help="NavSatFix topic in the bag")
    parser.add_argument("--image-topic", default=None, help="image topic when --truth is a bag")
    parser.add_argument("--gps-topic", default=None, help="NavSatFix topic when --truth is a bag")
    parser.add_argument("--max-gap-s", type=float, default=1.0,
                        help="largest time from a fix to each bracketing ground-truth frame (and, for a bag, "
                             "from an image to each bracketing GPS fix)")
    parser.add_argument("--max-error-m", type=float, default=50.0, help="top of the error colour scale")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.evaluation.plots import plot_fix_track

    try:
        fixes = read_fixes(args.bag, args.fix_topic)
        truth = load_drive(args.truth, args.image_topic, args.gps_topic, max_gap_s=args.max_gap_s).drop_invalid_gps()
        database = None
        if args.database is not None:
            from semloc_ros.core.database import GeoDatabase

            database = GeoDatabase.load(args.database)
    except (DatasetError, OSError, RuntimeError) as error:
        print(f"semloc plot: {error}", file=sys.stderr)
        return 2
    if not len(truth):
        print(f"semloc plot: no ground-truth frame with valid GPS in {args.truth}", file=sys.stderr)
        return 2
    positioned = np.isfinite(fixes.lat) & np.isfinite(fixes.lon)
    error = fix_errors(fixes, truth.stamps_ns, truth.lat, truth.lon, args.max_gap_s)
    known = np.isfinite(error)
    good = known & fixes.confident
    summary = (f"{len(fixes)} fixes ({int(fixes.confident.sum())} FIX, "
               f"{int((~fixes.confident & positioned).sum())} NO_FIX with a position, "
               f"{int((~positioned).sum())} without position), {int(known.sum())} compared with the ground truth")
    if good.any():
        summary += (f"; FIX error median {np.median(error[good]):.1f} m, "
                    f"90 % {np.percentile(error[good], 90):.1f} m, max {np.max(error[good]):.1f} m")
    print(summary)
    if positioned.any() and not known.any():
        print("semloc plot: no fix stamp falls within the ground-truth drive's stamps (wrong drive, or "
              "--max-gap-s too small?)", file=sys.stderr)
    title = f"{Path(args.bag).name} vs {truth.name}\n" + summary.replace("; ", "\n")
    out = plot_fix_track(truth.lat, truth.lon, fixes.lat[positioned], fixes.lon[positioned], error[positioned],
                         args.out, confident=fixes.confident[positioned],
                         database_lat=database.lat if database is not None else None,
                         database_lon=database.lon if database is not None else None,
                         title=title, max_error_m=args.max_error_m)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
