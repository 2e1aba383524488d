"""Geo-tiled maps: one map cut into square tiles of a UTM grid, stored as a folder with a manifest.

1. Keys: a place's tile is ``(floor(easting / size), floor(northing / size))`` in the map's UTM zone (chosen by
   the first build and kept in the manifest, so keys never move), named ``e<column>_n<row>``.
2. Index: below ``ivfpq_min_entries`` entries (whole map) every tile is searched exactly (on its stored
   descriptors: no second copy in a FAISS flat index). From there one IVF-PQ
   quantizer is trained on a sample of the whole map (its own file) and every tile encodes its entries with a
   copy of it (:meth:`GeoDatabase.use_trained_index`): a tile of a few thousand entries searches with lists
   trained on the whole map. Crossing the threshold, or growing past 4x the training size, trains a new
   quantizer and rewrites every tile.
3. Writing: new entries go to their tiles in map order; only the tiles that receive entries are written again.
   Each tile is a standard ``.semdb`` file whose name carries a version; the manifest (``tiles.json``) is
   replaced last and atomically, then the files it no longer names are removed: a reader sees the old map or
   the new one.
4. Reading: :class:`TiledMap` opens the manifest and loads tiles by key; :class:`TileView` presents loaded
   tiles with the search API of a :class:`GeoDatabase` that :class:`semloc_ros.core.localizer.Localizer` needs
   (search merges the tiles' top-k by their exact similarities). A place of a view is its tile and its row in
   the tile, so two views of partly the same tiles share those places (:meth:`TileView.shared_places`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from semloc_ros.core.database import (
    AUTO_IVFPQ_MIN_ENTRIES,
    IVFPQ_RETRAIN_GROWTH,
    DatabaseError,
    DatabaseFormatError,
    DescriptorMismatchError,
    GeoDatabase,
)
from semloc_ros.core.geodesy import LocalENU, UTMProjection
from semloc_ros.core.ivfpq import ivfpq_training_rows, untrained_ivfpq, without_precomputed_table
from semloc_ros.core.map_file import camera_yaw_mismatch, checked_camera_yaw
from semloc_ros.core.views import SINGLE_VIEW, check_views, format_views

MANIFEST = "tiles.json"
FORMAT_NAME = "semloc-tiled-map"
FORMAT_VERSION = 1
DEFAULT_TILE_SIZE_M = 1000.0
TileKey = tuple[int, int]


class TiledMapError(DatabaseFormatError):
    """A tiled map folder is missing, malformed or does not fit what is added to it."""


def tile_name(key: TileKey) -> str:
    return f"e{key[0]}_n{key[1]}"


def parse_tile_name(name: str) -> TileKey:
    east, _, north = name.partition("_")
    if not (east.startswith("e") and north.startswith("n")):
        raise ValueError(f"{name!r} is not a tile name e<column>_n<row>")
    return int(east[1:]), int(north[1:])


@dataclass(frozen=True)
class TileGrid:
    """Step 1: square tiles of ``size_m`` metres in one UTM zone."""

    projection: UTMProjection
    size_m: float

    def keys(self, lat: np.ndarray, lon: np.ndarray) -> list[TileKey]:
        """The tile of each place."""
        easting, northing = self.projection.forward(np.asarray(lat, float), np.asarray(lon, float))
        columns = np.floor(np.atleast_1d(easting) / self.size_m).astype(np.int64)
        rows = np.floor(np.atleast_1d(northing) / self.size_m).astype(np.int64)
        return list(zip(columns.tolist(), rows.tolist(), strict=True))

    def keys_within(self, lat: float, lon: float, radius_m: float) -> set[TileKey]:
        """Every tile with a point within ``radius_m`` of a position (present in the map or not)."""
        easting, northing = (float(v) for v in self.projection.forward(lat, lon))
        size = self.size_m
        found = set()
        for column in range(math.floor((easting - radius_m) / size), math.floor((easting + radius_m) / size) + 1):
            for row in range(math.floor((northing - radius_m) / size), math.floor((northing + radius_m) / size) + 1):
                dx = max(column * size - easting, 0.0, easting - (column + 1) * size)
                dy = max(row * size - northing, 0.0, northing - (row + 1) * size)
                if math.hypot(dx, dy) <= radius_m:
                    found.add((column, row))
        return found


def _atomic_write(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def is_tiled_map(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a tiled map folder (holds a manifest)."""
    return (Path(path) / MANIFEST).is_file()


class TiledMap:
    """A tiled map folder: its manifest, and its tiles loaded on demand (steps 3 and 4)."""

    def __init__(self, folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        utm = manifest["utm"]
        self.grid = TileGrid(UTMProjection(int(utm["zone"]), bool(utm["north"])), float(manifest["tile_size_m"]))

    # -------------------------------------------------------------------------------- reading
    @classmethod
    def open(cls, folder: str | os.PathLike[str], expected_model_id: str | None = None) -> TiledMap:
        """Read the manifest of a tiled map (TiledMapError if it is missing or malformed)."""
        path = Path(folder) / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TiledMapError(f"{folder}: no readable tiled-map manifest ({error})") from error
        _check_manifest(manifest, path)
        if expected_model_id is not None and manifest["model_id"] != expected_model_id:
            raise DescriptorMismatchError(f"{folder}: map model_id {manifest['model_id']!r} is not "
                                          f"{expected_model_id!r}")
        return cls(folder, manifest)

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def __len__(self) -> int:
        return self.count

    @property
    def views(self) -> tuple[float, ...]:
        """The sideways shifts every place is stored at (:mod:`semloc_ros.core.views`)."""
        return check_views(self.manifest.get("views", list(SINGLE_VIEW)))

    @property
    def gps_frame_id(self) -> str:
        """The frame_id of the GPS fixes the map was built from ("" when not stored)."""
        frame_id = self.manifest.get("gps_frame_id", "")
        return frame_id if isinstance(frame_id, str) else ""

    @property
    def camera_yaw_deg(self) -> float:
        """The yaw of the map's camera relative to the vehicle (GeoDatabase.camera_yaw_deg; 0 when not stored)."""
        try:
            return checked_camera_yaw(self.manifest.get("camera_yaw_deg", 0.0))
        except ValueError as error:
            raise TiledMapError(f"{self.folder}: {error}") from error

    def centre(self) -> tuple[float, float]:
        """(lat, lon) of the middle of the map's tiles: a fixed origin for map coordinates."""
        keys = np.array(self.keys, dtype=np.float64)
        middle = (keys.min(axis=0) + keys.max(axis=0) + 1.0) / 2.0 * self.grid.size_m
        lat, lon = self.grid.projection.inverse(middle[0], middle[1])
        return float(lat), float(lon)

    @property
    def keys(self) -> list[TileKey]:
        """The map's tiles, in name order."""
        return [parse_tile_name(name) for name in sorted(self.manifest["tiles"])]

    def tile_count(self, key: TileKey) -> int:
        entry = self.manifest["tiles"].get(tile_name(key))
        return 0 if entry is None else int(entry["count"])

    def load_tile(self, key: TileKey) -> GeoDatabase:
        """One tile's database (DatabaseError if it is not in the map or its file does not load)."""
        entry = self.manifest["tiles"].get(tile_name(key))
        if entry is None:
            raise TiledMapError(f"{self.folder}: no tile {tile_name(key)}")
        tile = GeoDatabase.load(self.folder / entry["file"], expected_model_id=self.model_id)
        if len(tile) != entry["count"]:
            raise TiledMapError(f"{self.folder}: tile {tile_name(key)} holds {len(tile)} entries, the manifest "
                                f"says {entry['count']}")
        return tile

    def load_all(self) -> GeoDatabase:
        """The whole map as one database (tiles in name order; for tools and tests, not for the vehicle)."""
        whole = GeoDatabase(self.dimension, self.model_id, "flat", views=self.views,
                            camera_yaw_deg=self.camera_yaw_deg)
        for key in self.keys:
            tile = self.load_tile(key)
            whole.add(tile.descriptors, [tile.record(i) for i in range(len(tile))], tile.thumbnails)
        return whole

    # -------------------------------------------------------------------------------- writing
    @classmethod
    def create(cls, folder: str | os.PathLike[str], entries: GeoDatabase, tile_size_m: float = DEFAULT_TILE_SIZE_M,
               ivfpq_min_entries: int = AUTO_IVFPQ_MIN_ENTRIES) -> TiledMap:
        """Write ``entries`` as a new tiled map into ``folder`` (replacing a tiled map there)."""
        if not (math.isfinite(tile_size_m) and tile_size_m > 0):
            raise ValueError(f"tile size must be a positive number of metres, got {tile_size_m}")
        if len(entries) == 0:
            raise TiledMapError("a tiled map needs at least one entry")
        projection = UTMProjection.from_points(entries.lat, entries.lon)
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        old = cls.open(target) if is_tiled_map(target) else None
        manifest = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model_id": entries.model_id,
            "dimension": entries.dimension, "tile_size_m": float(tile_size_m),
            "utm": {"zone": projection.zone, "north": projection.north},
            "thumbnails": entries.thumbnails is not None, "views": list(entries.views),
            "gps_frame_id": entries.gps_frame_id, "camera_yaw_deg": entries.camera_yaw_deg,
            "ivfpq_min_entries": int(ivfpq_min_entries),
            "count": 0, "index": {"type": "flat"}, "tiles": {}, "version": (old.manifest["version"] + 1) if old else 1,
        }
        tiled = cls(target, manifest)
        tiled._write(entries)
        return tiled

    def append(self, entries: GeoDatabase) -> list[TileKey]:
        """Add ``entries`` to the map; only the tiles they fall in are written (every tile when the quantizer is
        trained anew). Returns the keys of the tiles written."""
        if entries.model_id != self.model_id or entries.dimension != self.dimension:
            raise DescriptorMismatchError(f"entries of model {entries.model_id!r} ({entries.dimension}-d) do not "
                                          f"fit the map's {self.model_id!r} ({self.dimension}-d)")
        if (entries.thumbnails is not None) != bool(self.manifest["thumbnails"]):
            raise TiledMapError("the map stores label thumbnails for all entries or for none: add entries alike")
        if tuple(entries.views) != self.views:
            raise TiledMapError(f"the map holds views {format_views(self.views)}, not {format_views(entries.views)}")
        if mismatch := camera_yaw_mismatch(self.camera_yaw_deg, entries.camera_yaw_deg):
            raise TiledMapError(mismatch)
        self.manifest["version"] += 1
        return self._write(entries)

    def _write(self, entries: GeoDatabase) -> list[TileKey]:
        """Steps 2-3: group the entries by tile, (re)train the quantizer when due, write tiles and manifest."""
        groups: dict[TileKey, list[int]] = {}
        for row, key in enumerate(self.grid.keys(entries.lat, entries.lon)):
            groups.setdefault(key, []).append(row)
        total = self.count + len(entries)
        index = self.manifest["index"]
        retrain = total >= self.manifest["ivfpq_min_entries"] and (
            index["type"] == "flat" or total > IVFPQ_RETRAIN_GROWTH * index["trained_count"])
        existing = set(self.keys)
        touched = set(groups) | (existing if retrain else set())
        template = None
        if retrain:
            template = self._train_quantizer(entries, total)
        elif index["type"] == "ivfpq":
            template = self._read_quantizer()
        version = self.manifest["version"]
        for key in sorted(touched):
            tile = self.load_tile(key) if key in existing else None
            tile = self._extended_tile(tile, entries, groups.get(key, []), template)
            name = f"{tile_name(key)}.v{version}.semdb"
            tile.save(self.folder / name)
            self.manifest["tiles"][tile_name(key)] = {"file": name, "count": len(tile)}
        self.manifest["count"] = sum(int(t["count"]) for t in self.manifest["tiles"].values())
        self.manifest["created_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _atomic_write(self.folder / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True).encode())
        self._remove_unnamed_files()
        return sorted(touched)

    def _extended_tile(self, tile: GeoDatabase | None, entries: GeoDatabase, rows: Sequence[int],
                       template: faiss.Index | None) -> GeoDatabase:
        """A tile's database with its new rows, indexed with the shared quantizer (or exactly)."""
        index_type = "auto" if template is None else "ivfpq"  # auto below its threshold: exact, no second copy
        fresh = GeoDatabase(self.dimension, self.model_id, index_type, views=self.views,
                            camera_yaw_deg=self.camera_yaw_deg)
        if template is not None:
            fresh.use_trained_index(template, int(self.manifest["index"]["trained_count"]))
        for source, selected in ((tile, range(len(tile) if tile is not None else 0)), (entries, rows)):
            if source is None or not len(selected):
                continue
            selected = np.asarray(selected, dtype=np.int64)
            thumbnails = None if source.thumbnails is None else source.thumbnails[selected]
            fresh.add(source.descriptors[selected], [source.record(int(i)) for i in selected], thumbnails)
        return fresh

    def _train_quantizer(self, entries: GeoDatabase, total: int) -> faiss.Index:
        """Step 2: an IVF-PQ quantizer trained on a sample of the whole map (present tiles and new entries)."""
        picked = np.sort(np.random.default_rng(0).choice(total, size=ivfpq_training_rows(self.dimension, total),
                                                         replace=False))
        sample, start = [], 0
        for rows in [*(self.load_tile(key).descriptors for key in self.keys), entries.descriptors]:
            chosen = picked[(picked >= start) & (picked < start + len(rows))] - start
            sample.append(rows[chosen])
            start += len(rows)
        template = untrained_ivfpq(self.dimension, total)
        template.train(np.ascontiguousarray(np.concatenate(sample)))
        blob = faiss.serialize_index(template)
        name = f"quantizer.v{self.manifest['version']}.faiss"
        _atomic_write(self.folder / name, blob.tobytes())
        self.manifest["index"] = {"type": "ivfpq", "file": name, "trained_count": int(total),
                                  "sha256": hashlib.sha256(blob.tobytes()).hexdigest()}
        return template

    def _read_quantizer(self) -> faiss.Index:
        index = self.manifest["index"]
        data = (self.folder / index["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != index["sha256"]:
            raise TiledMapError(f"{self.folder}: {index['file']} does not match its SHA-256")
        blob = np.frombuffer(data, dtype=np.uint8)
        return without_precomputed_table(faiss.deserialize_index(blob, faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE))

    def _remove_unnamed_files(self) -> None:
        """Step 3: tile and quantizer files of earlier versions (after the manifest stopped naming them)."""
        named = {t["file"] for t in self.manifest["tiles"].values()}
        named.add(self.manifest["index"].get("file", ""))
        for path in [*self.folder.glob("e*_n*.v*.semdb"), *self.folder.glob("quantizer.v*.faiss")]:
            if path.name not in named:
                with contextlib.suppress(OSError):
                    path.unlink()


def _check_manifest(manifest: Any, path: Path) -> None:
    """DatabaseFormatError (TiledMapError: not a manifest) unless ``manifest`` is one this version reads."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise TiledMapError(f"{path}: not a {FORMAT_NAME} manifest")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > FORMAT_VERSION:
        raise TiledMapError(f"{path}: unsupported format_version {manifest.get('format_version')!r}")
    try:
        problems = [
            not (isinstance(manifest["model_id"], str) and manifest["model_id"]) and "model_id",
            not int(manifest["dimension"]) > 0 and "dimension",
            not float(manifest["tile_size_m"]) > 0 and "tile_size_m",
            not (1 <= int(manifest["utm"]["zone"]) <= 60 and isinstance(manifest["utm"]["north"], bool)) and "utm",
            manifest["index"]["type"] not in ("flat", "ivfpq") and "index",
        ]
        for name, entry in manifest["tiles"].items():
            parse_tile_name(name)
            if not isinstance(entry["file"], str) or "/" in entry["file"] or int(entry["count"]) < 0:
                problems.append(f"tile {name}")
    except (KeyError, TypeError, ValueError) as error:
        raise DatabaseFormatError(f"{path}: malformed tiled-map manifest ({error})") from error
    bad = [problem for problem in problems if problem]
    if bad:
        raise DatabaseFormatError(f"{path}: malformed tiled-map manifest: {', '.join(bad)}")


class TileView:
    """Step 4: loaded tiles as one read-only database for the :class:`Localizer` (entries tile after tile)."""

    def __init__(self, tiles: dict[TileKey, GeoDatabase], model_id: str, dimension: int,
                 camera_yaw_deg: float = 0.0) -> None:
        self.tiles = dict(sorted(tiles.items()))
        self.model_id, self.dimension, self.camera_yaw_deg = model_id, dimension, camera_yaw_deg
        parts = list(self.tiles.values())
        self._offsets = np.cumsum([0, *map(len, parts)])
        self._parts = parts

        def joined(name: str, dtype) -> np.ndarray:
            array = np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, dtype)
            array.flags.writeable = False
            return array

        self.lat, self.lon = joined("lat", np.float64), joined("lon", np.float64)
        self.alt, self.heading = joined("alt", np.float64), joined("heading", np.float64)
        self.stamp_ns = joined("stamp_ns", np.int64)
        has_thumbnails = bool(parts) and all(p.thumbnails is not None for p in parts)
        self.thumbnails = _JoinedRows([p.thumbnails for p in parts]) if has_thumbnails else None
        self._frame_and_enu: tuple[LocalENU, np.ndarray] | None = None
        if parts:
            frame = LocalENU.centred_on(self.lat, self.lon, self.alt)
            east, north, up = frame.to_enu(self.lat, self.lon, self.alt)
            enu = np.column_stack([east, north, np.where(np.isnan(self.alt), np.nan, up)])
            enu.flags.writeable = False
            self._frame_and_enu = (frame, enu)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def keys(self) -> list[TileKey]:
        return list(self.tiles)

    def tile_of(self, index: int) -> TileKey:
        """The tile holding entry ``index`` of the view."""
        return self.keys[int(np.searchsorted(self._offsets, index, side="right")) - 1]

    def shared_places(self, other: TileView) -> tuple[np.ndarray, np.ndarray]:
        """(entries of this view, the same places' entries in ``other``) for the tiles both views hold: a place is
        its tile and its row in the tile (a tile of another size in ``other`` is another version of it)."""
        starts = dict(zip(other.tiles, other._offsets[:-1].tolist(), strict=True))
        mine, theirs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for (key, tile), start in zip(self.tiles.items(), self._offsets[:-1].tolist(), strict=True):
            if key in other.tiles and len(other.tiles[key]) == len(tile):
                mine.append(np.arange(start, start + len(tile), dtype=np.int64))
                theirs.append(np.arange(starts[key], starts[key] + len(tile), dtype=np.int64))
        return np.concatenate(mine), np.concatenate(theirs)

    def check_query(self, dimension: int, model_id: str | None = None) -> None:
        if model_id is not None and model_id != self.model_id:
            raise DescriptorMismatchError(f"descriptor model_id {model_id!r} does not match the map model_id "
                                          f"{self.model_id!r}")
        if dimension != self.dimension:
            raise DescriptorMismatchError(f"descriptor dimension {dimension} does not match the map dimension "
                                          f"{self.dimension}")

    def frame_and_enu(self) -> tuple[LocalENU, np.ndarray]:
        if self._frame_and_enu is None:
            raise DatabaseError("no tile is loaded: the view has no ENU frame")
        return self._frame_and_enu

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the loaded tiles: each tile's top-k, merged by (exact) similarity, ties in tile order."""
        if not self._parts:
            raise DatabaseError("cannot search: no tile is loaded")
        found = [part.search(queries, min(k, len(part))) for part in self._parts]
        similarities = np.concatenate([s for s, _ in found], axis=1)
        indices = np.concatenate([np.where(i >= 0, i + offset, -1)
                                  for (_, i), offset in zip(found, self._offsets[:-1], strict=True)], axis=1)
        best = np.argsort(-similarities, axis=1, kind="stable")[:, : min(k, len(self))]
        return np.take_along_axis(similarities, best, axis=1), np.take_along_axis(indices, best, axis=1)


class _JoinedRows:
    """Row-indexable concatenation of arrays without copying them (label thumbnails of a :class:`TileView`)."""

    def __init__(self, parts: Iterable[np.ndarray]) -> None:
        self._parts = list(parts)
        self._offsets = np.cumsum([0, *map(len, self._parts)])
        self.shape = (int(self._offsets[-1]), *self._parts[0].shape[1:])
        self.dtype = self._parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        part = np.searchsorted(self._offsets, rows, side="right") - 1
        out = np.empty((*rows.shape, *self.shape[1:]), dtype=self.dtype)
        for p in np.unique(part):
            mask = part == p
            out[mask] = self._parts[p][rows[mask] - self._offsets[p]]
        return out
