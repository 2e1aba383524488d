"""semloc demo: localize the embedded night drive against the embedded day database, over real DDS.

1. builds the GeoDatabase of the day drive with the shipped segmenter + semantic descriptor;
2. starts segmentation_node, descriptor_node and localizer_node as separate processes (`semloc run`);
3. publishes the night query frames as a camera stream at their recorded rate;
4. prints each fix with its error against the ground truth, then the summary.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from semloc_ros.core.geodesy import geodesic_distance_m
from semloc_ros.evaluation.metrics import position_error_stats
from semloc_ros.io.datasets import Drive, load_semloc_sim_split
from semloc_ros.mapping import build_database
from semloc_ros.models import set_torch_threads
from semloc_ros.models.pipeline import Pipeline
from semloc_ros.ros.runner import PipelineRunner, apply_ros_defaults

DEMO_DATA = Path(__file__).resolve().parent.parent / "data" / "demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semloc demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEMO_DATA,
                        help="semloc-sim style root with splits.json (default: the embedded demo drive)")
    parser.add_argument("--query", help="query drive name (default: the first query of splits.json)")
    parser.add_argument("--out", type=Path, default=Path("semloc-demo"), help="output folder")
    parser.add_argument("--speed", type=float, default=1.0, help="playback speed factor vs. recorded rate")
    parser.add_argument("--max-frames", type=int, default=0, help="publish only the first N query frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while building the database")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: a random free-looking id in 100..200)")
    parser.add_argument("--threshold-m", type=float, default=25.0, help="a fix within this is correct")
    return parser


def fix_error_m(frame, fix) -> float:
    """Distance in metres between a frame's ground truth and a NavSatFix position."""
    return float(geodesic_distance_m(frame.lat, frame.lon, fix.latitude, fix.longitude))


def play_and_collect(client, query: Drive, speed: float, threshold_m: float) -> dict[int, object]:
    """Publish the query frames at their recorded rate; print each fix as it arrives."""
    truth = {frame.stamp_ns: frame for frame in query}
    printed: set[int] = set()

    def report_new_fixes() -> None:
        for stamp, fix in list(client.fixes.items()):
            if stamp in printed or stamp not in truth:
                continue
            printed.add(stamp)
            frame = truth[stamp]
            status = "FIX   " if fix.status.status >= 0 else "NO_FIX"
            if np.isfinite(fix.latitude):
                error = fix_error_m(frame, fix)
                sigma = float(np.sqrt(max(fix.position_covariance[0], fix.position_covariance[4])))
                mark = "ok " if error <= threshold_m else "BAD"
                print(f"  {frame.image_id:>12}  {status}  error {error:7.1f} m  (1-sigma {sigma:5.1f} m) {mark}")
            else:
                print(f"  {frame.image_id:>12}  {status}  no position (not in the database)")

    start_wall = time.monotonic()
    first_stamp = query.frames[0].stamp_ns
    for frame in query:
        due = start_wall + (frame.stamp_ns - first_stamp) / 1e9 / speed
        while (wait := due - time.monotonic()) > 0:
            client.spin_for(min(wait, 0.05))
            report_new_fixes()
        client.publish_frame(frame.load_rgb(), frame.stamp_ns)
    client.wait_for_fixes([f.stamp_ns for f in query], timeout_s=10.0)
    report_new_fixes()
    return client.fixes


def summarize(query: Drive, fixes: dict, threshold_m: float) -> dict:
    errors, fixed = [], 0
    for frame in query:
        fix = fixes.get(frame.stamp_ns)
        if fix is None or not np.isfinite(fix.latitude):
            continue
        fixed += fix.status.status >= 0
        errors.append(fix_error_m(frame, fix))
    errors_m = np.asarray(errors)
    stats = position_error_stats(errors_m) if len(errors_m) else {}
    return {"published": len(query), "answered": len(errors_m), "status_fix": int(fixed),
            "recall_at_threshold": float(np.sum(errors_m <= threshold_m)) / max(1, len(query)),
            "errors": stats}


def demo_figure(query: Drive, fixes: dict, database_drive: Drive, pipeline: Pipeline, path: Path) -> Path:
    """Night frame, its predicted labels, the database frame at the fix, and the route with fixes by error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semloc_ros.core.geodesy import LocalENU
    from semloc_ros.core.labels import overlay

    frame = query.frames[len(query) // 2]
    fix = fixes.get(frame.stamp_ns)
    rgb = frame.load_rgb()
    enu = LocalENU.centred_on(database_drive.lat, database_drive.lon)
    db_e, db_n, _ = enu.to_enu(database_drive.lat, database_drive.lon)
    answered = [(f, fixes[f.stamp_ns]) for f in query if f.stamp_ns in fixes
                and np.isfinite(fixes[f.stamp_ns].latitude)]

    figure, axes = plt.subplots(1, 4, figsize=(17, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.15]})
    axes[0].imshow(rgb)
    axes[0].set_title(f"night query {frame.image_id}", fontsize=9)
    axes[1].imshow(overlay(rgb, pipeline.segment(rgb), alpha=0.6))
    axes[1].set_title("segmentation (shipped LR-ASPP)", fontsize=9)
    if fix is not None and np.isfinite(fix.latitude):
        f_e, f_n, _ = enu.to_enu(fix.latitude, fix.longitude)
        nearest = int(np.argmin(np.hypot(db_e - f_e, db_n - f_n)))
        error = fix_error_m(frame, fix)
        axes[2].imshow(database_drive.frames[nearest].load_rgb())
        axes[2].set_title(f"day database at the fix (error {error:.1f} m)", fontsize=9)
    for axis in axes[:3]:
        axis.axis("off")
    axes[3].plot(db_e, db_n, color="0.7", linewidth=5, label="day database route")
    if answered:
        q_e, q_n, _ = enu.to_enu(np.array([f.lat for f, _ in answered]), np.array([f.lon for f, _ in answered]))
        e_e, e_n, _ = enu.to_enu(np.array([x.latitude for _, x in answered]),
                                 np.array([x.longitude for _, x in answered]))
        errors = np.hypot(e_e - q_e, e_n - q_n)
        axes[3].plot(q_e, q_n, color="k", linewidth=1, label="night drive (truth)")
        points = axes[3].scatter(e_e, e_n, c=np.minimum(errors, 25.0), cmap="viridis", vmin=0, vmax=25, s=12,
                                 zorder=3, label="/semloc/fix")
        figure.colorbar(points, ax=axes[3], label="error (m)")
    axes[3].set_aspect("equal", adjustable="datalim")
    axes[3].set_xlabel("east (m)")
    axes[3].set_ylabel("north (m)")
    axes[3].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    domain_id = args.domain_id if args.domain_id is not None else random.randint(100, 200)
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    apply_ros_defaults()  # before rclpy.init: this process publishes the camera frames
    set_torch_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    database_drive, queries = load_semloc_sim_split(args.data)
    query = next((q for q in queries if q.name == args.query), queries[0]) if args.query else queries[0]
    if args.max_frames:
        query = query.subset(slice(0, args.max_frames))
    print(f"[demo] database: {database_drive.name} ({len(database_drive)} frames); "
          f"query: {query.name} ({len(query)} frames); ROS_DOMAIN_ID={domain_id}")

    pipeline = Pipeline.from_method("semantic")
    started = time.perf_counter()
    database = build_database(pipeline, database_drive, progress=True)
    database_path = args.out / "demo.semdb"
    database.save(database_path)
    print(f"[demo] database {database_path}: {len(database)} places in {time.perf_counter() - started:.1f} s")

    import rclpy

    from semloc_ros.ros.stream_client import StreamClient

    runner = PipelineRunner(overrides={"localizer_node": {"database_path": str(database_path.resolve())}},
                            remaps={"image_raw": "/camera/image_raw"}, domain_id=domain_id,
                            log_dir=args.out / "logs")
    rclpy.init()
    try:
        with runner:
            client = StreamClient()
            print("[demo] starting the three nodes (logs in "
                  f"{args.out / 'logs'}) and waiting for DDS discovery ...")
            if not client.wait_for_pipeline(timeout_s=90.0, ready=lambda: not runner.exited()):
                print(f"[demo] the nodes did not come up: exited {runner.exited()}; see the logs",
                      file=sys.stderr)
                return 1
            if not client.warm_up(query.frames[0].load_rgb(), timeout_s=60.0):
                print("[demo] no fix for the warm-up frames; see the logs", file=sys.stderr)
                return 1
            print(f"[demo] publishing {len(query)} frames on /camera/image_raw at {args.speed:g}x "
                  "recorded rate; fixes from /semloc/fix:")
            fixes = play_and_collect(client, query, args.speed, args.threshold_m)
            client.destroy_node()
    finally:
        rclpy.try_shutdown()

    summary = summarize(query, fixes, args.threshold_m)
    print(f"[demo] figure: {demo_figure(query, fixes, database_drive, pipeline, args.out / 'demo.png')}")
    errors = summary["errors"]
    print(f"\n[demo] {summary['answered']}/{summary['published']} frames answered, "
          f"{summary['status_fix']} with STATUS_FIX")
    if errors:
        print(f"[demo] position error: median {errors['median']:.1f} m, 95th percentile {errors['p95']:.1f} m")
    print(f"[demo] recall (fix within {args.threshold_m:g} m of the truth): "
          f"{100 * summary['recall_at_threshold']:.1f} %")
    return 0 if summary["answered"] else 1
