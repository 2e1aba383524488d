#!/usr/bin/env python3
"""Make the embedded demo data ``semloc_ros/data/demo/`` from the semloc-sim-v1 dataset.

A stretch of the day database drive and the matching, shorter stretch of the night query drive of the same
lane, in the semloc-sim layout (``drives/<name>/{rgb/, label/, poses.csv, drive.json}`` + ``splits.json``)
so that ``semloc_ros.io.datasets.load_semloc_sim_split`` reads it. RGB is re-encoded as JPEG (``--quality``) and
only downscaled when the RGB total would exceed ``--max-mb``; labels are copied unchanged (lossless PNG)
unless ``--no-labels``. Frames are renumbered from 0; stamps, poses and source frame numbers are kept.

    python scripts/make_demo_data.py --dataset /work/shared/datasets/semloc-sim-v1
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "semloc_ros" / "data" / "demo"
README = """# semloc_ros demo data

A small excerpt of the semloc-sim-v1 dataset (simulated MetaDrive drives, see the dataset's README for how it
was rendered, its pose convention and geo anchoring) used by `semloc demo`, the tests and quick
`semloc evaluate` runs. Same layout as semloc-sim (`drives/<drive>/{{rgb/, label/, poses.csv, drive.json}}`,
`splits.json`), read by `semloc_ros.io.datasets.load_semloc_sim_split`.

| drive | role | condition | source drive | source frames | frames |
|---|---|---|---|---|---|
{rows}

- RGB: JPEG quality {quality}, {width}x{height}{scaled}; labels: the dataset's lossless class-id PNGs{labels}.
- poses.csv has the dataset's columns plus `source_frame` (frame number in the source drive); frames are
  renumbered from 0. drive.json is the source drive.json with `n_frames`, `source_drive` and `source_frames`
  updated. The database and query stretches are on the same lane (0), so every query frame has database frames
  within a few metres; the query stretch starts {margin_before} and ends {margin_after} database frames inside
  the database stretch.
- Total size: {size_mb:.2f} MB.

Remake it (from the repository root, with the project venv):

```
{command}
```
"""


def _encode_rgb(src: Path, dst: Path, scale: float, quality: int) -> int:
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"cannot read {src}")
    if scale != 1.0:
        size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"cannot encode {src}")
    dst.write_bytes(data.tobytes())
    return len(data)


def _rgb_bytes(drive_dir: Path, frames: list[int], scale: float, quality: int) -> int:
    """Total JPEG bytes of the frames at this scale and quality (encoded in memory)."""
    total = 0
    for i in frames:
        bgr = cv2.imread(str(drive_dir / "rgb" / f"{i:06d}.jpg"), cv2.IMREAD_COLOR)
        if scale != 1.0:
            bgr = cv2.resize(
                bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA
            )
        total += len(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1])
    return total


def copy_stretch(
    src_root: Path, name: str, first: int, count: int, out: Path, scale: float, quality: int, labels: bool
) -> int:
    """Copy frames ``first .. first+count-1`` of drive ``name``; returns the bytes written."""
    src = src_root / "drives" / name
    dst = out / "drives" / name
    (dst / "rgb").mkdir(parents=True)
    if labels:
        (dst / "label").mkdir()
    with open(src / "poses.csv", newline="") as f:
        reader = csv.DictReader(f)
        fieldnames = list(reader.fieldnames or [])
        rows = [row for row in reader if first <= int(row["frame"]) < first + count]
    if len(rows) != count:
        raise RuntimeError(f"{name}: asked for {count} frames from {first}, found {len(rows)}")
    written = 0
    with open(dst / "poses.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*fieldnames, "source_frame"], lineterminator="\n")
        writer.writeheader()
        for new, row in enumerate(rows):
            old = int(row["frame"])
            written += _encode_rgb(src / "rgb" / f"{old:06d}.jpg", dst / "rgb" / f"{new:06d}.jpg", scale, quality)
            if labels:
                shutil.copyfile(src / "label" / f"{old:06d}.png", dst / "label" / f"{new:06d}.png")
                written += (dst / "label" / f"{new:06d}.png").stat().st_size
            writer.writerow({**row, "frame": new, "source_frame": old})
    info = json.loads((src / "drive.json").read_text())
    info.update(n_frames=count, source_drive=name, source_frames=[first, first + count - 1])
    if scale != 1.0:
        info["image_size"] = [round(info["image_size"][0] * scale), round(info["image_size"][1] * scale)]
    (dst / "drive.json").write_text(json.dumps(info, indent=1) + "\n")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True, help="semloc-sim-v1 root")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--database", default="eval_day_l0")
    parser.add_argument("--database-first", type=int, default=100)
    parser.add_argument("--database-count", type=int, default=300)
    parser.add_argument("--query", default="eval_night_l0")
    parser.add_argument("--query-first", type=int, default=190)
    parser.add_argument("--query-count", type=int, default=120)
    parser.add_argument("--quality", type=int, default=85)
    parser.add_argument("--max-mb", type=float, default=6.0, help="RGB budget before downscaling")
    parser.add_argument("--no-labels", action="store_true")
    args = parser.parse_args()

    db_frames = list(range(args.database_first, args.database_first + args.database_count))
    q_frames = list(range(args.query_first, args.query_first + args.query_count))
    if not (db_frames[0] <= q_frames[0] and q_frames[-1] <= db_frames[-1]):
        parser.error("the query stretch must lie inside the database stretch (same lane, same frame numbers)")

    scale = 1.0
    while True:
        total = _rgb_bytes(args.dataset / "drives" / args.database, db_frames, scale, args.quality)
        total += _rgb_bytes(args.dataset / "drives" / args.query, q_frames, scale, args.quality)
        if total <= args.max_mb * 1e6 or scale < 0.3:
            break
        scale *= 0.75

    if args.out.exists():
        if not (args.out / "splits.json").is_file():
            parser.error(f"{args.out} exists and is not a previous demo folder (no splits.json); not removing it")
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    labels = not args.no_labels
    size = copy_stretch(
        args.dataset,
        args.database,
        args.database_first,
        args.database_count,
        args.out,
        scale,
        args.quality,
        labels,
    )
    size += copy_stretch(
        args.dataset, args.query, args.query_first, args.query_count, args.out, scale, args.quality, labels
    )
    splits = {"train": [], "database": args.database, "queries": [args.query]}
    (args.out / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    shutil.copyfile(args.dataset / "classes.json", args.out / "classes.json")

    def row(name: str, first: int, count: int) -> str:
        info = json.loads((args.out / "drives" / name / "drive.json").read_text())
        role = "database" if name == args.database else "query"
        source = f"{first}-{first + count - 1}"
        return f"| {name} | {role} | {info['condition']} | semloc-sim-v1 {name} | {source} | {count} |"

    width, height = json.loads((args.out / "drives" / args.database / "drive.json").read_text())["image_size"]
    command = (
        f"python scripts/make_demo_data.py --dataset {args.dataset} --database {args.database} "
        f"--database-first {args.database_first} --database-count {args.database_count} --query {args.query} "
        f"--query-first {args.query_first} --query-count {args.query_count} --quality {args.quality} "
        f"--max-mb {args.max_mb:g}" + (" --no-labels" if args.no_labels else "")
    )
    size_mb = (size + sum(p.stat().st_size for p in args.out.rglob("*") if p.suffix in (".csv", ".json"))) / 1e6
    readme = README.format(
        rows="\n".join(
            [
                row(args.database, args.database_first, args.database_count),
                row(args.query, args.query_first, args.query_count),
            ]
        ),
        quality=args.quality,
        width=width,
        height=height,
        scaled="" if scale == 1.0 else f" (downscaled x{scale:.3f} to fit {args.max_mb:g} MB)",
        labels=" (copied unchanged)" if labels else " (not included)",
        margin_before=args.query_first - args.database_first,
        margin_after=db_frames[-1] - q_frames[-1],
        size_mb=size_mb,
        command=command,
    )
    (args.out / "README.md").write_text(readme)
    print(f"wrote {args.out}: {args.database_count} + {args.query_count} frames, scale {scale:.3f}, {size_mb:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
