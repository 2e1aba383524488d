"""Frame loaders behind one interface: semloc-sim drives, image folders + CSV, VPR ``@utm@`` names, rosbags.

Every loader returns a :class:`Drive`, a list of geotagged :class:`Frame` objects. Frames hold only paths (or
a reference into a bag), never pixels: ``frame.load_rgb()`` / ``frame.load_labels()`` read the image when
called, so a whole drive is never held in memory. Use :func:`load_rgbs` to read many frames at once (one
pass over a bag).

Conventions (docs/architecture.md): WGS84 degrees, altitude in metres (NaN when unknown), heading = ENU yaw in
radians (counter-clockwise from east, NaN when unknown), stamps in integer nanoseconds.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from semloc_ros.core.geodesy import LocalENU, UTMProjection
from semloc_ros.io.bags import bag_topics, header_stamp_ns, open_bag
from semloc_ros.io.gps_track import interpolate_fixes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
BAG_SUFFIXES = (".mcap", ".db3")
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
NAVSATFIX_MSGTYPE = "sensor_msgs/msg/NavSatFix"
NAVSAT_STATUS_NO_FIX = -1


class DatasetError(ValueError):
    """A data source is missing, malformed or ambiguous."""


# ---------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class BagImageRef:
    """Where one image message lives in a ROS 2 bag: decoded only when :meth:`load` is called.

    ``log_time_ns`` is the bag (receive) time used to find the message again; ``occurrence`` tells apart
    messages of the same topic logged at the same nanosecond.
    """

    bag_path: Path
    topic: str
    log_time_ns: int
    occurrence: int = 0

    def load(self) -> np.ndarray:
        """Read and decode the referenced message to HxWx3 uint8 RGB."""
        return _read_bag_images(self.bag_path, self.topic, [self])[0]


@dataclass
class Frame:
    """One geotagged image; pixels come from ``rgb``/``labels`` when set in memory, else from file or bag."""

    image_id: str
    stamp_ns: int
    lat: float
    lon: float
    alt: float = math.nan
    heading: float = math.nan
    rgb_path: Path | None = None
    label_path: Path | None = None
    bag_ref: BagImageRef | None = None
    rgb: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)

    def load_rgb(self) -> np.ndarray:
        """HxWx3 uint8 RGB, read now (never cached on the frame)."""
        if self.rgb is not None:
            return self.rgb
        if self.rgb_path is not None:
            return read_rgb(self.rgb_path)
        if self.bag_ref is not None:
            return self.bag_ref.load()
        raise DatasetError(f"frame {self.image_id!r} has no image source")

    def load_labels(self) -> np.ndarray | None:
        """HxW uint8 ground-truth class ids, or None when the source has no labels."""
        if self.labels is not None:
            return self.labels
        if self.label_path is not None:
            return read_labels(self.label_path)
        return None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None or self.label_path is not None

    @property
    def has_valid_gps(self) -> bool:
        """True when lat/lon are finite and inside WGS84 ranges."""
        return (
            math.isfinite(self.lat)
            and math.isfinite(self.lon)
            and -90.0 <= self.lat <= 90.0
            and -180.0 <= self.lon <= 180.0
        )


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_labels(path: Path) -> np.ndarray:
    """Read a single-channel 8-bit label image (class id per pixel)."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"cannot read label image {path}")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DatasetError(f"label image {path} is not single-channel uint8 (shape {labels.shape})")
    return labels


def load_rgbs(frames: Sequence[Frame]) -> list[np.ndarray]:
    """Read the RGB images of ``frames`` in order; frames from one bag are read in a single pass."""
    images: list[np.ndarray | None] = [None] * len(frames)
    by_bag: dict[tuple[Path, str], list[int]] = {}
    for i, frame in enumerate(frames):
        if frame.rgb is None and frame.rgb_path is None and frame.bag_ref is not None:
            by_bag.setdefault((frame.bag_ref.bag_path, frame.bag_ref.topic), []).append(i)
        else:
            images[i] = frame.load_rgb()
    for (bag_path, topic), indices in by_bag.items():
        refs = [frames[i].bag_ref for i in indices]
        for i, image in zip(indices, _read_bag_images(bag_path, topic, refs), strict=True):
            images[i] = image
    return images  # type: ignore[return-value]


def load_label_images(frames: Sequence[Frame]) -> list[np.ndarray]:
    """Ground-truth labels of ``frames``; raises when a frame has none (oracle evaluation needs all)."""
    labels = []
    for frame in frames:
        label = frame.load_labels()
        if label is None:
            raise DatasetError(f"frame {frame.image_id!r} has no ground-truth labels")
        labels.append(label)
    return labels


# ---------------------------------------------------------------------------------------------- drives


@dataclass
class Drive:
    """An ordered list of frames from one source (a drive, a folder or a bag).

    ``skipped`` counts what the loader dropped and why (e.g. GPS fixes without a fix, images without GPS).
    """

    name: str
    frames: list[Frame]
    condition: str = "unknown"
    source: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def __getitem__(self, index: int) -> Frame:
        return self.frames[index]

    @property
    def lat(self) -> np.ndarray:
        return np.array([f.lat for f in self.frames], dtype=np.float64)

    @property
    def lon(self) -> np.ndarray:
        return np.array([f.lon for f in self.frames], dtype=np.float64)

    @property
    def alt(self) -> np.ndarray:
        return np.array([f.alt for f in self.frames], dtype=np.float64)

    @property
    def stamps_ns(self) -> np.ndarray:
        return np.array([f.stamp_ns for f in self.frames], dtype=np.int64)

    @property
    def camera_yaw_deg(self) -> float | None:
        """The camera's yaw relative to the vehicle in degrees (counter-clockwise, 180: a rear camera), from a
        semloc-sim drive.json (``camera.hpr_deg``); None when the source does not record it."""
        camera = self.metadata.get("camera")
        heading = camera.get("hpr_deg", [None])[0] if isinstance(camera, dict) else None
        return float(heading) if isinstance(heading, int | float) and not isinstance(heading, bool) else None

    @property
    def has_labels(self) -> bool:
        return bool(self.frames) and all(f.has_labels for f in self.frames)

    def positions_enu(self, frame: LocalENU | None = None) -> np.ndarray:
        """(N, 3) east/north/up metres in ``frame`` (default: a local ENU frame centred on this drive).

        Up is NaN where the altitude is unknown. Raises ``GeoError`` if a frame has invalid lat/lon
        (see :meth:`drop_invalid_gps`).
        """
        if not self.frames:
            return np.zeros((0, 3))
        lat, lon, alt = self.lat, self.lon, self.alt
        if frame is None:
            frame = LocalENU.centred_on(lat, lon, alt)
        east, north, up = frame.to_enu(lat, lon, alt)
        up = np.where(np.isfinite(alt), up, np.nan)
        return np.column_stack([east, north, up]).astype(np.float64)

    def subset(self, indices: Sequence[int] | slice, name: str | None = None) -> Drive:
        """A drive with only the selected frames (same condition, source and counts)."""
        frames = self.frames[indices] if isinstance(indices, slice) else [self.frames[i] for i in indices]
        return replace(self, name=name or self.name, frames=frames, skipped=dict(self.skipped))

    def drop_invalid_gps(self) -> Drive:
        """A drive without the frames whose lat/lon are NaN or out of range, counted in ``skipped``."""
        good = [f for f in self.frames if f.has_valid_gps]
        skipped = dict(self.skipped)
        n_bad = len(self.frames) - len(good)
        if n_bad:
            skipped["invalid_gps"] = skipped.get("invalid_gps", 0) + n_bad
        return replace(self, frames=good, skipped=skipped)


def subsample_by_distance(drive: Drive, min_distance_m: float) -> Drive:
    """Keep the first frame, then each frame at least ``min_distance_m`` from the last kept one.

    Distances are straight lines between the frames' positions on the ellipsoid surface (altitude ignored) in
    a local ENU frame centred on the drive: equal to the geodesic distance to well below a millimetre at the
    spacings used here, and far from the origin too. One pass, O(N). ``min_distance_m`` 0 keeps every frame.
    Dropped frames are counted in ``skipped["below_min_distance"]``. Frames must have valid GPS (see
    :meth:`Drive.drop_invalid_gps`), else ``GeoError`` is raised.
    """
    if not math.isfinite(min_distance_m) or min_distance_m < 0.0:
        raise ValueError(f"min_distance_m must be finite and >= 0, got {min_distance_m}")
    if min_distance_m == 0.0 or len(drive) < 2:
        return drive.subset(slice(None))
    lat, lon = drive.lat, drive.lon
    east, north, up = LocalENU.centred_on(lat, lon).to_enu(lat, lon)
    points = list(zip(east.tolist(), north.tolist(), up.tolist(), strict=True))
    keep = [0]
    last_e, last_n, last_u = points[0]
    min_sq = min_distance_m * min_distance_m
    for i, (e, n, u) in enumerate(points[1:], start=1):
        if (e - last_e) ** 2 + (n - last_n) ** 2 + (u - last_u) ** 2 >= min_sq:
            keep.append(i)
            last_e, last_n, last_u = e, n, u
    subsampled = drive.subset(keep)
    subsampled.skipped["below_min_distance"] = drive.skipped.get("below_min_distance", 0) + len(drive) - len(keep)
    return subsampled


# ------------------------------------------------------------------------------------------ semloc-sim


def _semloc_sim_drive_dir(root: Path, drive_name: str) -> Path:
    for candidate in (root / "drives" / drive_name, root / drive_name):
        if (candidate / "poses.csv").is_file():
            return candidate
    raise DatasetError(f"no semloc-sim drive {drive_name!r} under {root} (expected drives/{drive_name}/poses.csv)")


def load_semloc_sim_drive(root: str | Path, drive_name: str) -> Drive:
    """One semloc-sim drive: ``ROOT/drives/NAME/{poses.csv, drive.json, rgb/, label/}``."""
    drive_dir = _semloc_sim_drive_dir(Path(root), drive_name)
    info_path = drive_dir / "drive.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    label_dir = drive_dir / "label"
    frames = []
    with open(drive_dir / "poses.csv", newline="") as f:
        for row in csv.DictReader(f):
            stem = f"{int(row['frame']):06d}"
            label_path = label_dir / f"{stem}.png"
            frames.append(
                Frame(
                    image_id=f"{drive_name}/{stem}",
                    stamp_ns=int(row["stamp_ns"]),
                    lat=float(row["lat"]),
                    lon=float(row["lon"]),
                    alt=float(row.get("alt_m") or math.nan),
                    heading=float(row.get("heading_rad") or math.nan),
                    rgb_path=drive_dir / "rgb" / f"{stem}.jpg",
                    label_path=label_path if label_path.is_file() else None,
                )
            )
    return Drive(
        name=drive_name,
        frames=frames,
        condition=str(info.get("condition", "unknown")),
        source=str(drive_dir),
        metadata=info,
    )


def load_semloc_sim_split(root: str | Path) -> tuple[Drive, list[Drive]]:
    """The database drive and the query drives named in ``ROOT/splits.json``."""
    root = Path(root)
    splits_path = root / "splits.json"
    if not splits_path.is_file():
        raise DatasetError(f"{splits_path} not found")
    splits = json.loads(splits_path.read_text())
    database = load_semloc_sim_drive(root, splits["database"])
    queries = [load_semloc_sim_drive(root, name) for name in splits["queries"]]
    return database, queries


# --------------------------------------------------------------------------------------- image folders


def _float_or_nan(value: str | None) -> float:
    if value is None or value.strip() == "":
        return math.nan
    return float(value)


def load_image_folder(folder: str | Path, csv_path: str | Path | None = None) -> Drive:
    """Images listed in a CSV with header ``filename,lat,lon[,alt,heading,stamp_ns][,label]``.

    ``filename`` (and the optional ``label`` image) are relative to ``folder``. Without ``csv_path`` the
    folder must hold exactly one ``.csv`` file. Empty lat/lon cells become NaN (see
    :meth:`Drive.drop_invalid_gps`).
    """
    folder = Path(folder)
    if csv_path is None:
        csvs = sorted(folder.glob("*.csv"))
        if len(csvs) != 1:
            raise DatasetError(f"{folder}: expected exactly one .csv file, found {len(csvs)}; pass csv_path")
        csv_path = csvs[0]
    frames = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"filename", "lat", "lon"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{csv_path}: missing column(s) {sorted(missing)}")
        for row in reader:
            label = (row.get("label") or "").strip()
            frames.append(
                Frame(
                    image_id=row["filename"],
                    stamp_ns=int(row.get("stamp_ns") or 0),
                    lat=_float_or_nan(row["lat"]),
                    lon=_float_or_nan(row["lon"]),
                    alt=_float_or_nan(row.get("alt")),
                    heading=_float_or_nan(row.get("heading")),
                    rgb_path=folder / row["filename"],
                    label_path=folder / label if label else None,
                )
            )
    return Drive(name=folder.name, frames=frames, source=str(csv_path))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_vpr_filename(name: str, utm_zone: int | None = None, north: bool = True) -> dict:
    """Parse ``@utm_east@utm_north@zone_number@zone_letter@lat@lon@pano_id@tile@heading@pitch@roll@...``.

    Returns ``lat``, ``lon`` (from the lat/lon fields when present, else from UTM) and ``heading`` (the
    file's compass bearing in degrees converted to ENU yaw in radians, NaN when absent). ``utm_zone``
    overrides the zone number field; the hemisphere comes from the zone letter (N..X north) when present,
    else from ``north``.
    """
    fields = Path(name).name.split("@")
    if len(fields) < 4 or fields[0] != "":
        raise DatasetError(f"{name!r} is not a VPR '@utm_east@utm_north@...' file name")

    def get(i: int) -> str:
        return fields[i].strip() if i < len(fields) else ""

    lat, lon = _float_or_nan(get(5)), _float_or_nan(get(6))
    if not (math.isfinite(lat) and math.isfinite(lon)):
        east, northing = _float_or_nan(get(1)), _float_or_nan(get(2))
        zone = utm_zone if utm_zone is not None else (int(get(3)) if get(3) else None)
        if zone is None or not (math.isfinite(east) and math.isfinite(northing)):
            raise DatasetError(f"{name!r}: no lat/lon and no usable UTM coordinates")
        letter = get(4).upper()
        is_north = letter >= "N" if letter else north
        lat, lon = UTMProjection(zone, is_north).inverse(east, northing)
        lat, lon = float(lat), float(lon)
    bearing_deg = _float_or_nan(get(9))
    heading = math.nan
    if math.isfinite(bearing_deg):
        yaw = math.radians(90.0 - bearing_deg)
        heading = math.atan2(math.sin(yaw), math.cos(yaw))
    return {"lat": lat, "lon": lon, "heading": heading}


def load_vpr_filenames(folder: str | Path, utm_zone: int | None = None, north: bool = True) -> Drive:
    """Images (searched recursively) named in the VPR benchmarks' ``@utm@`` format (parse_vpr_filename)."""
    folder = Path(folder)
    frames = []
    for path in _list_images(folder):
        geo = parse_vpr_filename(path.name, utm_zone=utm_zone, north=north)
        frames.append(
            Frame(
                image_id=str(path.relative_to(folder)),
                stamp_ns=0,
                lat=geo["lat"],
                lon=geo["lon"],
                heading=geo["heading"],
                rgb_path=path,
            )
        )
    if not frames:
        raise DatasetError(f"no images under {folder}")
    return Drive(name=folder.name, frames=frames, source=str(folder))


# ------------------------------------------------------------------------------------------ ROS 2 bags


def _decode_image_msg(msg, msgtype: str) -> np.ndarray:
    from semloc_ros.core.image_codec import decode_compressed, image_message_to_array, to_rgb8

    if msgtype.endswith("CompressedImage"):
        array, encoding = decode_compressed(msg.format, bytes(msg.data))
    else:
        encoding = msg.encoding
        array = image_message_to_array(msg)
    return to_rgb8(array, encoding)


def _read_bag_images(bag_path: Path, topic: str, refs: Sequence[BagImageRef]) -> list[np.ndarray]:
    """Decode the referenced messages of one topic in one pass over the time span they cover."""
    if not refs:
        return []
    wanted = {(r.log_time_ns, r.occurrence): i for i, r in enumerate(refs)}
    images: list[np.ndarray | None] = [None] * len(refs)
    start = min(r.log_time_ns for r in refs)
    stop = max(r.log_time_ns for r in refs) + 1
    with open_bag(bag_path) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        seen: dict[int, int] = {}
        for connection, log_time, raw in reader.messages(connections=connections, start=start, stop=stop):
            occurrence = seen.get(log_time, 0)
            seen[log_time] = occurrence + 1
            i = wanted.get((log_time, occurrence))
            if i is not None:
                images[i] = _decode_image_msg(reader.deserialize(raw, connection.msgtype), connection.msgtype)
    missing = [refs[i] for i, image in enumerate(images) if image is None]
    if missing:
        raise DatasetError(f"{bag_path}: {len(missing)} image message(s) on {topic} not found again")
    return images  # type: ignore[return-value]


def _pick_topic(topics: dict[str, str], msgtypes: Sequence[str], what: str, bag_path: Path) -> str:
    candidates = sorted(t for t, m in topics.items() if m in msgtypes)
    if len(candidates) != 1:
        raise DatasetError(f"{bag_path}: cannot pick the {what} topic among {candidates or 'none'}; name it")
    return candidates[0]


def load_rosbag(
    bag_path: str | Path,
    image_topic: str | None = None,
    gps_topic: str | None = None,
    max_gap_s: float = 1.0,
) -> Drive:
    """Images of a ROS 2 bag (directory, .mcap or .db3) geotagged from a NavSatFix topic.

    Image (``sensor_msgs/Image`` or ``CompressedImage``) and fix times are the header stamps (the bag time
    when a header stamp is zero). Each image gets the position interpolated between the bracketing fixes
    (:func:`interpolate_fixes`); fixes with status NO_FIX (-1) or NaN lat/lon are discarded first. Dropped
    messages are counted in ``Drive.skipped``. Topics may be omitted when the bag has exactly one of the kind.
    ``Drive.metadata["gps_frame_id"]``: the header frame_id of the first valid fix (the GPS antenna's frame).

    Pixels stay in the bag: each frame keeps a :class:`BagImageRef` and is decoded on ``load_rgb()`` (or in
    one pass by :func:`load_rgbs`). This keeps memory flat for long bags at the cost of reopening the bag per
    call.
    """
    bag_path = Path(bag_path)
    topics = bag_topics(bag_path)
    image_topic = image_topic or _pick_topic(topics, IMAGE_MSGTYPES, "image", bag_path)
    gps_topic = gps_topic or _pick_topic(topics, (NAVSATFIX_MSGTYPE,), "NavSatFix", bag_path)
    for topic, msgtypes in ((image_topic, IMAGE_MSGTYPES), (gps_topic, (NAVSATFIX_MSGTYPE,))):
        if topics.get(topic) not in msgtypes:
            raise DatasetError(f"{bag_path}: topic {topic!r} is {topics.get(topic, 'absent')}, need {msgtypes}")

    skipped = {"fix_no_fix": 0, "fix_nan": 0, "image_outside_fix_span": 0, "image_fix_gap": 0}
    fixes: list[tuple[int, float, float, float]] = []
    images: list[tuple[int, BagImageRef]] = []
    gps_frame_ids: dict[str, int] = {}  # frame_id of the valid fixes, first seen first
    with open_bag(bag_path) as reader:
        connections = [c for c in reader.connections if c.topic in (image_topic, gps_topic)]
        seen: dict[int, int] = {}
        for connection, log_time, raw in reader.messages(connections=connections):
            if connection.topic == gps_topic:
                msg = reader.deserialize(raw, connection.msgtype)
                if int(msg.status.status) == NAVSAT_STATUS_NO_FIX:
                    skipped["fix_no_fix"] += 1
                elif not (math.isfinite(msg.latitude) and math.isfinite(msg.longitude)):
                    skipped["fix_nan"] += 1
                else:
                    fixes.append((header_stamp_ns(msg, log_time), msg.latitude, msg.longitude, msg.altitude))
                    gps_frame_ids.setdefault(msg.header.frame_id, len(fixes))
            else:
                msg = reader.deserialize(raw, connection.msgtype)
                occurrence = seen.get(log_time, 0)
                seen[log_time] = occurrence + 1
                ref = BagImageRef(bag_path, image_topic, int(log_time), occurrence)
                images.append((header_stamp_ns(msg, log_time), ref))

    fixes.sort(key=lambda x: x[0])
    fix_arr = np.array([f[1:] for f in fixes], dtype=np.float64).reshape(-1, 3)
    fix_stamps = np.array([f[0] for f in fixes], dtype=np.int64)
    image_stamps = np.array([s for s, _ in images], dtype=np.int64)
    lat, lon, alt, reason = interpolate_fixes(
        image_stamps, fix_stamps, fix_arr[:, 0], fix_arr[:, 1], fix_arr[:, 2], max_gap_s
    )
    skipped["image_outside_fix_span"] = int(np.sum(reason == 1))
    skipped["image_fix_gap"] = int(np.sum(reason == 2))
    frames = [Frame(image_id=f"{image_topic}@{stamp}", stamp_ns=int(stamp), lat=float(lat[i]), lon=float(lon[i]),
                    alt=float(alt[i]), bag_ref=ref) for i, (stamp, ref) in enumerate(images) if reason[i] == 0]
    return Drive(
        name=bag_path.stem if bag_path.is_file() else bag_path.name,
        frames=frames,
        source=str(bag_path),
        skipped=skipped,
        metadata={"image_topic": image_topic, "gps_topic": gps_topic, "max_gap_s": max_gap_s,
                  "gps_frame_id": next(iter(gps_frame_ids), "")},
    )


# ------------------------------------------------------------------------------------------ dispatcher


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml) or a single .mcap / .db3 file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix in BAG_SUFFIXES


def load_drive(
    spec: str,
    image_topic: str | None = None,
    gps_topic: str | None = None,
    max_gap_s: float = 1.0,
) -> Drive:
    """Load a drive from a CLI source string.

    - ``semloc-sim:ROOT:DRIVE``: a semloc-sim drive (also: a drive folder holding poses.csv + drive.json);
    - a ROS 2 bag (directory with metadata.yaml, .mcap or .db3) with ``image_topic``/``gps_topic``;
    - a folder with one CSV (``filename,lat,lon,...``), else a folder of VPR ``@utm@``-named images.
    """
    if spec.startswith("semloc-sim:"):
        root, sep, drive_name = spec[len("semloc-sim:") :].rpartition(":")
        if not sep or not root or not drive_name:
            raise DatasetError(f"expected semloc-sim:ROOT:DRIVE, got {spec!r}")
        return load_semloc_sim_drive(root, drive_name)
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"{spec}: no such file or folder")
    if is_bag(path):
        return load_rosbag(path, image_topic, gps_topic, max_gap_s=max_gap_s)
    if path.is_dir():
        if (path / "poses.csv").is_file() and (path / "drive.json").is_file():
            return load_semloc_sim_drive(path.parent, path.name)
        if any(path.glob("*.csv")):
            return load_image_folder(path)
        return load_vpr_filenames(path)
    raise DatasetError(f"{spec}: not a semloc-sim spec, bag or image folder")
