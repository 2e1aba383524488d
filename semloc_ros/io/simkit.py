"""Convert simkit captures (MetaDrive ``frames.npz`` + ``meta.json``) into the semloc-sim dataset layout.

Pure Python (numpy, pyproj, Pillow), ROS-free and independent of the rest of ``semloc_ros`` so that
``scripts/render_sim_v2.sh`` can run a copy of this file while the package changes. The layout is semloc-sim-v1's
(``shared/datasets/semloc-sim-v1/README.md``), with WGS84 geo anchoring instead of v1's sphere.

Algorithm (``convert``):
  1. Read ``meta.json`` and ``frames.npz`` (rgb N x H x W x 3 RGB, label N x H x W kit class ids, pose N x 5 =
     step, x, y, heading, speed km/h). Skip when the output drive exists and was made from the same
     ``meta.json`` (its SHA-256 is stored in ``drive.json``), unless forced.
  2. Renumber class ids: the kit's ids index its alphabetical class list; semloc-sim puts UNLABELED at 0 and the
     other classes after it in alphabetical order (a lookup table, applied to every label image).
  3. Stamps: ``stamp_ns = 1.7e18 + drive_index * 1e12 + (step + 1) * 1e8`` (one env step = 0.1 s), so frames
     of a drive are ``0.1 * every`` s apart, strictly increasing, and unique across drives with unique indices.
  4. Geo anchoring: x = east, y = north (MetaDrive world frame, ENU-like) in metres, rounded to 0.1 mm as
     written, mapped to lat/lon by the inverse of a WGS84 transverse Mercator centred on (51.752, -1.2577) with
     scale 1, so WGS84 geodesic distances (pyproj.Geod) equal x/y distances. Altitude is a constant 60 m.
  5. Geo check: geodesic vs planar distance over frame pairs at least 5 m apart (max relative error, from the
     rounded values as written) and the axis directions (+x -> east, +y -> north); fails above 0.01 %.
  6. Write ``rgb/NNNNNN.jpg`` (JPEG q90), ``label/NNNNNN.png`` (8-bit ids), ``poses.csv`` and ``drive.json``
     (map, lane, condition, camera, scenery change, phase, traffic, route, geo check, class pixel counts) into
     ``OUT.partial``, then rename it to ``OUT``: a half-written drive is never mistaken for a complete one.

Dataset files (``readme``):
  7. ``splits.json`` from the drives' roles: v1's ``train`` / ``database`` / ``queries`` keep their meaning;
     ``tuning`` and ``rear`` are further database/query sets ({"database", "queries"}), ``city`` lists the
     confuser day drives. Each further set also gets a loadable root ``sets/NAME/`` (splits.json + a
     ``drives`` link). ``classes.json`` from step 2's table.
  8. ``README.md``: a generated table (seed, blocks, lane, condition, camera, change, traffic, frames, route
     length, arrived), the splits, the route checks, class pixel shares and the exact capture arguments.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

ORIGIN_LAT = 51.752
ORIGIN_LON = -1.2577
ALT_M = 60.0
TMERC = f"+proj=tmerc +lat_0={ORIGIN_LAT} +lon_0={ORIGIN_LON} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
STAMP_BASE_NS = 1_700_000_000_000_000_000
DRIVE_STRIDE_NS = 10**12
STEP_NS = 10**8  # one env step = 5 physics steps x 0.02 s
JPEG_QUALITY = 90
GEO_MAX_REL_ERR = 1e-4  # 0.01 %
GEO_MIN_PAIR_M = 5.0
POSE_COLUMNS = ("frame", "stamp_ns", "x_m", "y_m", "heading_rad", "speed_mps", "lat", "lon", "alt_m")
ROLES = ("database", "query", "train", "tuning_database", "tuning_query", "rear_database", "rear_query", "city")
SIMULATOR = "MetaDrive 0.4.3 (+ simkit patches: md_cpu_patch, graft_assets, scenery, conditions)"


class ConvertError(ValueError):
    """A kit output is missing, malformed or fails a check."""


# ------------------------------------------------------------------------------------- steps 1-5: pieces


def read_capture(raw: Path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Step 1: ``meta.json`` and the ``rgb``, ``label``, ``pose`` arrays of ``frames.npz``."""
    meta_path, npz_path = raw / "meta.json", raw / "frames.npz"
    if not meta_path.is_file() or not npz_path.is_file():
        raise ConvertError(f"{raw} has no meta.json + frames.npz")
    meta = json.loads(meta_path.read_text())
    with np.load(npz_path) as npz:
        rgb, label, pose = npz["rgb"], npz["label"], npz["pose"]
    if not (len(rgb) == len(label) == len(pose) > 0) or rgb.shape[-1] != 3 or pose.shape[1] != 5:
        raise ConvertError(f"{npz_path}: inconsistent arrays {rgb.shape} {label.shape} {pose.shape}")
    return meta, rgb, label, pose


def class_table(kit_names: Sequence[str], kit_colors: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[dict]]:
    """Step 2: lookup table kit id -> semloc id (UNLABELED = 0, then alphabetical) and the classes.json list."""
    if "UNLABELED" not in kit_names:
        raise ConvertError("kit class list has no UNLABELED")
    order = ["UNLABELED", *sorted(n for n in kit_names if n != "UNLABELED")]
    lut = np.zeros(256, np.uint8)
    for kit_id, name in enumerate(kit_names):
        lut[kit_id] = order.index(name)
    classes = [
        {"id": i, "name": n, "color": list(kit_colors[list(kit_names).index(n)]), "kit_id": list(kit_names).index(n)}
        for i, n in enumerate(order)
    ]
    return lut, classes


def stamps_ns(steps: np.ndarray, drive_index: int) -> np.ndarray:
    """Step 3: simulated-time stamps of the frames captured after env steps ``steps`` (0-based)."""
    stamps = STAMP_BASE_NS + drive_index * DRIVE_STRIDE_NS + (steps.astype(np.int64) + 1) * STEP_NS
    if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
        raise ConvertError("stamps are not strictly increasing (steps out of order)")
    return stamps


def xy_to_latlon(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: local east/north metres -> WGS84 lat/lon degrees (inverse transverse Mercator, k = 1)."""
    from pyproj import Transformer

    to_geo = Transformer.from_crs(TMERC, "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform(np.asarray(x, float), np.asarray(y, float))
    return np.asarray(lat), np.asarray(lon)


def geo_check(x: np.ndarray, y: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> dict:
    """Step 5: max relative error of WGS84 geodesic vs x/y distance over pairs >= 5 m apart, and the axes."""
    from pyproj import Geod

    n = len(x)
    offsets = sorted({k for k in (1, 5, 25, n // 2) if 0 < k < n})
    i = np.concatenate([np.arange(n - k) for k in offsets]).astype(int)
    j = np.concatenate([np.arange(k, n) for k in offsets]).astype(int)
    planar = np.hypot(x[j] - x[i], y[j] - y[i])
    keep = planar >= GEO_MIN_PAIR_M
    geod = Geod(ellps="WGS84")
    _, _, dist = geod.inv(lon[i[keep]], lat[i[keep]], lon[j[keep]], lat[j[keep]])
    rel = np.abs(np.asarray(dist) - planar[keep]) / planar[keep]
    e_lat, e_lon = xy_to_latlon(np.array([0.0, 1000.0]), np.array([0.0, 0.0]))
    n_lat, n_lon = xy_to_latlon(np.array([0.0, 0.0]), np.array([0.0, 1000.0]))
    axes_ok = bool(e_lon[1] > e_lon[0] and abs(e_lat[1] - e_lat[0]) < 1e-5 and n_lat[1] > n_lat[0]
                   and abs(n_lon[1] - n_lon[0]) < 1e-9)
    result = {"pairs": int(keep.sum()), "min_pair_m": GEO_MIN_PAIR_M, "axes_east_north_ok": axes_ok,
              "max_rel_err_pct": round(float(rel.max()) * 100, 7) if keep.any() else 0.0}
    if not axes_ok or (keep.any() and rel.max() > GEO_MAX_REL_ERR):
        raise ConvertError(f"geo check failed: {result}")
    return result


def camera_summary(meta: dict) -> str:
    """A short camera description for the README: mount direction, horizontal FOV and offsets from default."""
    yaw = float(meta.get("cam_yaw") or 0.0)
    hfov = float(meta.get("camera", {}).get("hfov_deg") or meta.get("fov") or 60.0)
    parts = ["rear" if abs(abs(yaw) - 180) < 1 else "front", f"fov{hfov:g}"]
    for key, label in (("cam_height", "h"), ("cam_x", "x"), ("cam_pitch", "pitch")):
        value = float(meta.get(key) or 0.0)
        if value:
            parts.append(f"{label}{value:+g}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ step 6: write


def write_images(out: Path, rgb: np.ndarray, labels: np.ndarray) -> None:
    """Step 6: ``rgb/NNNNNN.jpg`` (JPEG q90) and ``label/NNNNNN.png`` (8-bit class ids)."""
    (out / "rgb").mkdir(parents=True)
    (out / "label").mkdir()
    for k, (image, label) in enumerate(zip(rgb, labels, strict=True)):
        Image.fromarray(np.ascontiguousarray(image)).save(out / "rgb" / f"{k:06d}.jpg", quality=JPEG_QUALITY)
        Image.fromarray(np.ascontiguousarray(label), mode="L").save(out / "label" / f"{k:06d}.png")


def write_poses(path: Path, pose: np.ndarray, stamps: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> None:
    """Step 6: ``poses.csv`` with v1's columns and number formats (x/y already rounded, step 4)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(POSE_COLUMNS)
        for k, (row, stamp, la, lo) in enumerate(zip(pose, stamps, lat, lon, strict=True)):
            heading, speed = round(float(row[3]), 6) + 0.0, round(float(row[4]) / 3.6, 4) + 0.0  # no "-0.0"
            writer.writerow([k, int(stamp), f"{row[1]:.4f}", f"{row[2]:.4f}", f"{heading:.6f}",
                             f"{speed:.4f}", f"{la:.10f}", f"{lo:.10f}", f"{ALT_M:.2f}"])


def drive_info(meta: dict, pose: np.ndarray, stamps: np.ndarray, **extra: object) -> dict:
    """Step 6: the ``drive.json`` record (v1 keys plus camera, scenery change, phase, capture arguments)."""
    capture_keys = ("seed", "map", "lane", "condition", "traffic", "random_traffic", "every", "phase", "fov",
                    "cam_height", "cam_x", "cam_pitch", "cam_yaw", "scenery_change", "scenery_change_seed",
                    "no_crash_done", "height_scale", "w", "h")
    return {
        "name": extra.pop("name"), "split": extra.pop("role"), "seed": meta["seed"], "map_blocks": meta["map"],
        "block_sequence": extra.pop("block_sequence") or None, "lane": meta["lane"],
        "condition": meta["condition"], "traffic": float(meta["traffic"]),
        "random_traffic": bool(meta["random_traffic"]), "every": meta["every"],
        "phase": meta.get("phase", 0) % meta["every"], "n_frames": len(pose), "sim_steps": meta["steps"],
        "step_s": STEP_NS / 1e9, "route_len_m": round(float(meta["route_len_m"]), 2),
        "arrived": bool(meta["arrive"]), "crashed": bool(meta["crash"]), "out_of_road": bool(meta["out_of_road"]),
        "origin_lat": ORIGIN_LAT, "origin_lon": ORIGIN_LON, "origin_alt_m": ALT_M, "geo_projection": TMERC,
        "drive_index": extra.pop("drive_index"), "stamp_ns_first": int(stamps[0]), "stamp_ns_last": int(stamps[-1]),
        "image_size": [int(meta["w"]), int(meta["h"])], "camera": {**meta["camera"], "summary": camera_summary(meta)},
        "scenery": meta.get("scenery", {}),
        "scenery_change": {"fraction": float(meta.get("scenery_change") or 0.0),
                           "seed": meta.get("scenery_change_seed", 1)},
        "capture": {k: meta.get(k) for k in capture_keys}, "simulator": SIMULATOR,
        "capture_fps": round(float(meta["fps"]), 2), "capture_s": round(float(meta["t_capture"]), 1),
        **extra,
    }


def convert(raw: str | Path, out: str | Path, *, name: str, role: str, drive_index: int,
            block_sequence: str = "", force: bool = False) -> dict:
    """Convert one kit output folder into one semloc-sim drive folder; returns its ``drive.json`` record."""
    raw, out = Path(raw), Path(out)
    if role not in ROLES:
        raise ConvertError(f"role {role!r} not in {ROLES}")
    if not (raw / "meta.json").is_file():
        raise ConvertError(f"{raw} has no meta.json")
    source_sha = hashlib.sha256((raw / "meta.json").read_bytes()).hexdigest()
    if not force and (out / "drive.json").is_file():  # step 1: done already
        info = json.loads((out / "drive.json").read_text())
        if info.get("source_meta_sha256") == source_sha and info.get("drive_index") == drive_index:
            return {**info, "skipped": True}
    meta, rgb, label, pose = read_capture(raw)
    lut, _ = class_table(meta["class_names"], meta["class_colors"])  # step 2
    labels = lut[label]
    stamps = stamps_ns(pose[:, 0], drive_index)  # step 3
    pose = pose.copy()
    pose[:, 1:3] = np.round(pose[:, 1:3], 4)  # step 4: the x/y as written
    lat, lon = xy_to_latlon(pose[:, 1], pose[:, 2])
    lat, lon = np.round(lat, 10), np.round(lon, 10)
    check = geo_check(pose[:, 1], pose[:, 2], lat, lon)  # step 5
    partial = out.with_name(out.name + ".partial")  # step 6
    shutil.rmtree(partial, ignore_errors=True)
    write_images(partial, rgb, labels)
    write_poses(partial / "poses.csv", pose, stamps, lat, lon)
    counts = np.bincount(labels.ravel(), minlength=len(meta["class_names"]))
    info = drive_info(meta, pose, stamps, name=name, role=role, drive_index=drive_index,
                      block_sequence=block_sequence, geo_check=check, class_pixels=counts.tolist(),
                      source=str(raw), source_meta_sha256=source_sha)
    (partial / "drive.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return info


# ----------------------------------------------------------------------------- steps 7-8: dataset files


def read_drives(root: Path) -> list[dict]:
    """The ``drive.json`` records of ``ROOT/drives/*`` (complete drives only), ordered by drive index."""
    infos = [json.loads(p.read_text()) for p in sorted(root.glob("drives/*/drive.json"))
             if not p.parent.name.endswith(".partial")]
    return sorted(infos, key=lambda info: info["drive_index"])


def build_splits(infos: Sequence[dict]) -> dict:
    """Step 7: splits.json, an extension of v1's (train / database / queries keep their meaning)."""
    by_role: dict[str, list[str]] = {role: [] for role in ROLES}
    for info in infos:
        by_role[info["split"]].append(info["name"])
    for role in ("database", "tuning_database", "rear_database"):
        if len(by_role[role]) > 1:
            raise ConvertError(f"more than one {role} drive: {by_role[role]}")
    splits: dict = {"train": by_role["train"], "database": next(iter(by_role["database"]), None),
                    "queries": by_role["query"]}
    for set_name in ("tuning", "rear"):
        if by_role[f"{set_name}_database"] or by_role[f"{set_name}_query"]:
            splits[set_name] = {"database": next(iter(by_role[f"{set_name}_database"]), None),
                                "queries": by_role[f"{set_name}_query"]}
    splits["city"] = by_role["city"]
    return splits


def write_sets(root: Path, splits: dict) -> list[str]:
    """Step 7: a loadable root ``sets/NAME`` (splits.json + ``drives`` link) per further database/query set."""
    written = []
    for set_name in ("tuning", "rear"):
        if set_name not in splits:
            continue
        folder = root / "sets" / set_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "splits.json").write_text(json.dumps({"train": [], **splits[set_name]}, indent=1) + "\n")
        link = folder / "drives"
        if not link.is_symlink():
            link.symlink_to(Path("..") / ".." / "drives")
        written.append(f"sets/{set_name}")
    return written


def table_row(info: dict) -> str:
    """Step 8: one README table row."""
    change = info.get("scenery_change", {})
    scenery = info.get("scenery", {})
    change_txt = (f"{change['fraction']:g} (seed {change['seed']}, -{scenery.get('removed', '?')} "
                  f"+{scenery.get('added', '?')})" if change.get("fraction") else "-")
    traffic = f"{info['traffic']:g}" + (" (random)" if info["random_traffic"] and info["traffic"] else "")
    blocks = f"{info['map_blocks']}" + (f" ({info['block_sequence']})" if info.get("block_sequence") else "")
    cells = [info["name"], info["split"], info["seed"], blocks, info["lane"], info["condition"],
             info["camera"]["summary"], change_txt, traffic, f"{info['every']}/{info['phase']}", info["n_frames"],
             f"{info['route_len_m']:.0f}", "yes" if info["arrived"] else "no" + (" (crash)" if info["crashed"] else "")]
    return "| " + " | ".join(str(c) for c in cells) + " |"


TABLE_HEADER = (
    "| drive | role | seed | blocks (sequence) | lane | condition | camera | change | traffic | every/phase "
    "| frames | route m | arrived |\n|" + "---|" * 13
)


def class_shares(infos: Sequence[dict], classes: Sequence[dict]) -> list[str]:
    """Step 8: the classes table with each class's pixel share over all drives."""
    total = np.zeros(len(classes), np.int64)
    for info in infos:
        counts = np.asarray(info.get("class_pixels", []), np.int64)[: len(classes)]
        total[: len(counts)] += counts
    share = total / max(int(total.sum()), 1) * 100
    rows = ["| id | name | colour (RGB) | kit id | pixel share |", "|---|---|---|---|---|"]
    rows += [f"| {c['id']} | {c['name']} | {c['color']} | {c['kit_id']} | {share[c['id']]:.3f} % |" for c in classes]
    return rows


def pending_jobs(jobs_file: Path | None, infos: Sequence[dict]) -> list[str]:
    """Job names of the job list that have no complete drive yet."""
    if jobs_file is None or not jobs_file.is_file():
        return []
    done = {info["name"] for info in infos}
    names = [line.split()[0] for line in jobs_file.read_text().splitlines() if line.strip() and line[0] != "#"]
    return [n for n in names if n not in done]


def route_check_lines(path: Path | None) -> list[str]:
    """The ``#@route`` lines (route_check output) recorded in the job list."""
    if path is None or not path.is_file():
        return []
    return [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("#@route")]


def readme_text(infos: Sequence[dict], splits: dict, classes: Sequence[dict], routes: Sequence[str],
                pending: Sequence[str], sets: Sequence[str]) -> str:
    """Step 8: README.md of the dataset root."""
    geo = [i["geo_check"] for i in infos]
    max_err = max((g["max_rel_err_pct"] for g in geo), default=0.0)
    pairs = sum(g["pairs"] for g in geo)
    lines = [
        "# semloc-sim-v2: simulated drives with RGB, semantic labels and poses (generated file)", "",
        "Rendered by `scripts/render_sim_v2.sh` (job list `scripts/sim_v2_jobs.txt`) with the simkit "
        "(`shared/simkit`, MetaDrive 0.4.3 on CPU) and converted by `semloc_ros/io/simkit.py`. Layout, class ids, "
        "stamps and pose conventions are semloc-sim-v1's (see its README); differences are listed below.", "",
        f"## Drives ({len(infos)} complete, {sum(i['n_frames'] for i in infos)} frames)", "",
        "camera: mount direction, horizontal FOV (deg) and offsets from MetaDrive's default mount (h = height m, "
        "x = longitudinal m, pitch deg); change: scenery-change fraction (seed, objects removed/added); "
        "every/phase: frames kept at env steps i with i % every == phase.", "",
        TABLE_HEADER, *(table_row(i) for i in infos), "",
    ]
    if pending:
        lines += [f"Not rendered yet: {', '.join(pending)}.", ""]
    lines += ["## Splits (splits.json)", "", "```", json.dumps(splits, indent=1), "```", "",
              "`train`, `database`, `queries` as in v1 (train only on `train`; the evaluation map's database and "
              "queries are for the final report only). `tuning`: a held-out training map (its own database and "
              "queries) for choosing parameters. `rear`: rear-camera database and queries of the evaluation map. "
              "`city`: day drives of further maps, the confusers of the `confusers` protocol. Loadable roots for "
              f"the further sets: {', '.join(sets) or 'none'} (each with its own splits.json).", ""]
    lines += ["## Route checks (physics only, IDM, from the job list)", "", "```", *routes, "```", ""]
    lines += ["## Classes (classes.json)", "", *class_shares(infos, classes), ""]
    lines += [
        "## Geo anchoring", "",
        f"`{TMERC}` (inverse) maps x = east, y = north metres to WGS84 lat/lon; alt_m = 60. Unlike v1 (sphere), "
        "WGS84 geodesic distances (pyproj.Geod) equal x/y distances: over "
        f"{pairs} frame pairs >= {GEO_MIN_PAIR_M:g} m apart (values as written) the max relative error is "
        f"{max_err:.6f} %. Stamps: 1.7e18 + drive_index x 1e12 + (step + 1) x 1e8 ns; drive indices start at 100 "
        "(v1 uses 0-12).", "",
        "## Exact capture arguments", "",
        "`capture.py --map 12 --scenery --steps 2400 ARGS` (later options win); ARGS per drive:", "",
        *(f"- {i['name']}: `{json.dumps(i['capture'])}`" for i in infos), "",
    ]
    return "\n".join(lines)


def write_dataset_files(root: str | Path, route_checks: str | Path | None = None,
                        jobs_file: str | Path | None = None) -> dict:
    """Steps 7-8: splits.json, sets/*, classes.json and README.md from the complete drives under ROOT."""
    root = Path(root)
    infos = read_drives(root)
    if not infos:
        raise ConvertError(f"no complete drives under {root}/drives")
    meta = json.loads((Path(infos[0]["source"]) / "meta.json").read_text())
    _, classes = class_table(meta["class_names"], meta["class_colors"])
    splits = build_splits(infos)
    (root / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    (root / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
    sets = write_sets(root, splits)
    routes = route_check_lines(Path(route_checks) if route_checks else None)
    pending = pending_jobs(Path(jobs_file) if jobs_file else None, infos)
    (root / "README.md").write_text(readme_text(infos, splits, classes, routes, pending, sets))
    return splits


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """``convert RAW OUT --name --role --drive-index [...]`` and ``readme ROOT [...]``."""
    parser = argparse.ArgumentParser(prog="python -m semloc_ros.io.simkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="one kit output folder (frames.npz + meta.json) -> one drive folder")
    conv.add_argument("raw", type=Path)
    conv.add_argument("out", type=Path)
    conv.add_argument("--drive-index", type=int, required=True, help="unique across roots (stamps, step 3)")
    conv.add_argument("--name", help="drive name (default: OUT's folder name)")
    conv.add_argument("--role", default="train", choices=ROLES)
    conv.add_argument("--block-sequence", default="", help="PG block IDs from route_check (README only)")
    conv.add_argument("--force", action="store_true", help="convert even if OUT is complete for this source")
    readme = sub.add_parser("readme", help="splits.json, classes.json, README.md of a dataset root")
    readme.add_argument("root", type=Path)
    readme.add_argument("--route-checks", type=Path, help="file with '#@route' lines (the job list)")
    readme.add_argument("--jobs-file", type=Path, help="job list, to name drives not rendered yet")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints one JSON summary line."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            info = convert(args.raw, args.out, name=args.name or args.out.name, role=args.role,
                           drive_index=args.drive_index, block_sequence=args.block_sequence, force=args.force)
            keys = ("name", "n_frames", "route_len_m", "arrived", "geo_check", "skipped")
            print(json.dumps({k: info[k] for k in keys if k in info}))
        else:
            splits = write_dataset_files(args.root, args.route_checks, args.jobs_file)
            print(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in splits.items()}))
    except ConvertError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
