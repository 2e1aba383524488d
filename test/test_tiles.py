"""Geo-tiled maps (core/tiles.py) and localizing on them with only the tiles around the vehicle (core/tile_cache.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import faiss
import numpy as np
import pytest

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.localizer import FixStatus, LocalizerConfig
from semloc_ros.core.tile_cache import TileCacheConfig, TiledLocalizer
from semloc_ros.core.tiles import MANIFEST, TiledMap, TiledMapError, TileGrid, TileView, is_tiled_map

ORIGIN = LocalENU(48.137, 11.575)
SPACING_M = 10.0
DIMENSION = 32

UNGATED = LocalizerConfig(min_similarity=0.8, integrity_threshold=0.0, sequence_filter=False)  # single frames


def route_database(east_m: np.ndarray, seed: int = 0, first_id: int = 0) -> GeoDatabase:
    """Places along a road due east (a slight wiggle north), random descriptors."""
    north = 30.0 * np.sin(east_m / 400.0)
    lat, lon, _ = ORIGIN.to_geodetic(east_m, north)
    database = GeoDatabase(DIMENSION, "synthetic")
    descriptors = np.random.default_rng(seed).normal(size=(len(east_m), DIMENSION))
    database.add(descriptors, [PlaceRecord(float(a), float(o), stamp_ns=i, image_id=f"p{first_id + i}")
                               for i, (a, o) in enumerate(zip(lat, lon, strict=True))])
    return database


@pytest.fixture
def road() -> GeoDatabase:
    return route_database(np.arange(0.0, 3000.0, SPACING_M))


@pytest.fixture
def tiled(road, tmp_path) -> TiledMap:
    return TiledMap.create(tmp_path / "map", road, tile_size_m=500.0)


def query(database: GeoDatabase, row: int, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    return database.descriptors[row] + noise * np.random.default_rng(seed + row).normal(size=DIMENSION)


def error_m(estimate, database: GeoDatabase, row: int) -> float:
    return float(geodesic_distance_m(estimate.lat, estimate.lon, database.lat[row], database.lon[row]))


# ----------------------------------------------------------------------------------------------- the map


def test_a_tiled_map_keeps_its_camera_yaw_and_refuses_another_cameras_entries(road, tmp_path) -> None:
    road.camera_yaw_deg = 180.0
    tiled = TiledMap.create(tmp_path / "rear", road, tile_size_m=500.0)
    reopened = TiledMap.open(tmp_path / "rear")
    assert reopened.camera_yaw_deg == 180.0 and reopened.load_all().camera_yaw_deg == 180.0
    assert reopened.load_tile(reopened.keys[0]).camera_yaw_deg == 180.0
    front = route_database(np.arange(0.0, 50.0, SPACING_M), seed=3, first_id=9000)
    with pytest.raises(TiledMapError, match="camera"):
        tiled.append(front)
    localizer = TiledLocalizer(reopened, UNGATED, TileCacheConfig(radius_m=600.0), [(road.lat[0], road.lon[0])])
    try:
        assert localizer.database.camera_yaw_deg == 180.0  # what step 6b of the localizer turns its normal by
    finally:
        localizer.close()


def test_tiles_within_a_radius_are_the_squares_the_circle_touches(tiled) -> None:
    grid = TileGrid(tiled.grid.projection, 1000.0)
    easting, northing = 500_250.0, 5_300_500.0  # 250 m east of tile column 500's west border, mid-height
    lat, lon = grid.projection.inverse(easting, northing)
    assert grid.keys(np.array([lat]), np.array([lon])) == [(500, 5300)]
    assert grid.keys_within(float(lat), float(lon), 200.0) == {(500, 5300)}
    assert grid.keys_within(float(lat), float(lon), 300.0) == {(500, 5300), (499, 5300)}
    assert grid.keys_within(float(lat), float(lon), 600.0) == {(c, r) for c in (499, 500) for r in (5299, 5300,
                                                                                                       5301)}


def test_a_tiled_map_holds_every_entry_once_in_its_tile(road, tiled) -> None:
    assert is_tiled_map(tiled.folder) and tiled.count == len(road)
    assert len(tiled.keys) >= 6 and tiled.manifest["index"] == {"type": "flat"}
    whole = tiled.load_all()
    assert sorted(whole.image_ids) == sorted(road.image_ids)
    for key in tiled.keys:
        tile = tiled.load_tile(key)
        assert set(tiled.grid.keys(tile.lat, tile.lon)) == {key}
        assert tile.active_index == "exact"  # searched on its stored descriptors: no second copy in FAISS
        assert list(tile.stamp_ns) == sorted(tile.stamp_ns)  # map order kept inside a tile


def test_append_writes_only_the_tiles_it_touches(tmp_path) -> None:
    first = route_database(np.arange(0.0, 2000.0, SPACING_M))
    tiled = TiledMap.create(tmp_path / "map", first, tile_size_m=500.0)
    before = json.loads((tmp_path / "map" / MANIFEST).read_text())["tiles"]
    more = route_database(np.arange(2005.0, 2600.0, SPACING_M), seed=5, first_id=10_000)
    written = tiled.append(more)
    after = TiledMap.open(tmp_path / "map")
    assert set(written) == set(after.grid.keys(more.lat, more.lon))
    for name, entry in after.manifest["tiles"].items():
        untouched = tuple(int(part[1:]) for part in name.split("_")) not in written
        assert (before.get(name) == entry) == untouched
    assert after.count == len(first) + len(more)
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == sorted(
        [MANIFEST, *(entry["file"] for entry in after.manifest["tiles"].values())])  # earlier versions removed


def test_ivfpq_tiles_share_one_quantizer_trained_on_the_whole_map(road, tmp_path) -> None:
    tiled = TiledMap.create(tmp_path / "map", road, tile_size_m=500.0, ivfpq_min_entries=200)
    index = tiled.manifest["index"]
    assert index["type"] == "ivfpq" and index["trained_count"] == len(road)
    quantizer = faiss.deserialize_index(np.frombuffer((tmp_path / "map" / index["file"]).read_bytes(), np.uint8))
    centroids = faiss.vector_to_array(faiss.downcast_index(quantizer.quantizer).codes)
    tiles = {key: tiled.load_tile(key) for key in tiled.keys}
    for tile in tiles.values():
        assert tile.active_index == "ivfpq" and len(tile) < 200  # too few to train an index of its own
        assert tile._index.use_precomputed_table == -1 and tile._index.precomputed_table.size() == 0  # memory
        assert np.array_equal(faiss.vector_to_array(faiss.downcast_index(tile._index.quantizer).codes), centroids)
    view = TileView(tiles, "synthetic", DIMENSION)
    _, indices = view.search(np.stack([query(road, row) for row in range(0, len(road), 7)]), 1)
    assert np.array_equal(view.lat[indices[:, 0]], road.lat[0 : len(road) : 7])  # all 4 lists probed: exact
    written = tiled.append(route_database(np.array([3005.0]), seed=9, first_id=50_000))
    assert len(written) == 1 and tiled.manifest["index"] == index  # below 4x the training size: same quantizer


def test_a_view_of_all_tiles_searches_like_the_whole_database(road, tiled) -> None:
    view = TileView({key: tiled.load_tile(key) for key in tiled.keys}, "synthetic", DIMENSION)
    queries = np.stack([query(road, row, noise=0.5) for row in range(0, len(road), 11)])
    similarities, indices = view.search(queries, 5)
    expected_similarities, expected_indices = road.search(queries, 5)
    np.testing.assert_allclose(similarities, expected_similarities, rtol=0, atol=1e-6)
    assert np.array_equal(view.lat[indices], road.lat[expected_indices])
    assert np.array_equal(view.lon[indices], road.lon[expected_indices])
    best = expected_indices[:, 0]
    assert [view.tile_of(int(i)) for i in indices[:, 0]] == tiled.grid.keys(road.lat[best], road.lon[best])


# ----------------------------------------------------------------------------------------- the localizer


@pytest.fixture
def localizer(tiled):
    # min_similarity: a place outside the loaded tiles is NO_MATCH, not a confident wrong fix (calibrated in practice);
    # no integrity gate: the shipped one is fitted for re-ranked real descriptors, these are synthetic
    located = TiledLocalizer(tiled, UNGATED,
                             TileCacheConfig(radius_m=300.0, keep_radius_m=450.0))
    yield located
    located.close()


def test_a_drive_across_tile_borders_is_localized_without_a_gap(road, tiled, localizer) -> None:
    localizer.set_prior(float(road.lat[0]), float(road.lon[0]))
    assert localizer.cache.wait_idle()
    loaded = []
    for row in range(len(road)):
        estimate = localizer.localize(query(road, row))
        assert estimate.status is FixStatus.FIX and error_m(estimate, road, row) < SPACING_M, row
        if row == 0:
            localizer.clear_prior()
        assert localizer.cache.wait_idle()  # the next tile is asked for while the vehicle is still in this one
        loaded.append(len(localizer.cache.current.view.keys))
    stats = localizer.cache.stats
    assert len(tiled.keys) >= 6 and max(loaded) <= 3  # never more than the tiles around the vehicle
    assert stats.evictions >= len(tiled.keys) - 3 and stats.searches == 0 and not stats.errors


def test_predicted_interval_is_the_loaded_tiles_localizers(road, tiled) -> None:
    filtered = TiledLocalizer(tiled, UNGATED.with_parameters(sequence_filter=True),
                              TileCacheConfig(radius_m=300.0, keep_radius_m=450.0))
    try:
        assert filtered.predicted_interval(10**9) is None  # no tile loaded yet
        filtered.set_prior(float(road.lat[0]), float(road.lon[0]))
        assert filtered.cache.wait_idle()
        filtered.localize(query(road, 0), stamp_ns=10**9)
        assert filtered.predicted_interval(10**9 + 10**8) == (10**9, 10**9 + 10**8)
    finally:
        filtered.close()


def test_cold_start_without_prior_searches_every_tile_and_loads_the_right_one(road, tiled, localizer) -> None:
    row = 233  # 2330 m east: far from the first tiles
    first = localizer.localize(query(road, row))
    assert first.status is FixStatus.NO_MATCH  # nothing loaded yet; the search runs in the background
    assert localizer.cache.wait_idle()
    estimate = localizer.localize(query(road, row, seed=7))
    assert estimate.status is FixStatus.FIX and error_m(estimate, road, row) < SPACING_M
    (key,) = tiled.grid.keys(road.lat[row : row + 1], road.lon[row : row + 1])
    assert key in localizer.cache.current.view.keys and len(localizer.cache.current.view.keys) < len(tiled.keys)
    assert localizer.cache.stats.searches == 1


def test_a_kidnapped_vehicle_is_found_again_after_lost_after_misses(road, localizer) -> None:
    localizer.set_prior(float(road.lat[5]), float(road.lon[5]))
    assert localizer.cache.wait_idle()
    assert localizer.localize(query(road, 5)).status is FixStatus.FIX
    localizer.clear_prior()
    far = 280
    statuses = []
    for attempt in range(localizer.cache.config.lost_after + 1):
        statuses.append(localizer.localize(query(road, far, seed=attempt)).status)
        assert localizer.cache.wait_idle()
    assert FixStatus.FIX not in statuses[: localizer.cache.config.lost_after]
    estimate = localizer.localize(query(road, far, seed=99))
    assert estimate.status is FixStatus.FIX and error_m(estimate, road, far) < SPACING_M


def test_queries_while_tiles_load_are_answered_from_the_loaded_tiles(road, tiled, localizer, monkeypatch) -> None:
    localizer.set_prior(float(road.lat[0]), float(road.lon[0]))
    assert localizer.cache.wait_idle()
    localizer.clear_prior()
    gate, blocked = threading.Event(), threading.Event()
    real_load = tiled.load_tile

    def slow_load(key):
        blocked.set()
        assert gate.wait(30)
        return real_load(key)

    monkeypatch.setattr(tiled, "load_tile", slow_load)
    row = 0
    while not blocked.is_set():  # drive until the loader is fetching the next tile (the circle reached it)
        assert localizer.localize(query(road, row)).status is FixStatus.FIX
        row += 1
        blocked.wait(0.05)
    snapshot = localizer.cache.current
    keys = tiled.grid.keys(road.lat, road.lon)
    ahead = [r for r in range(row, len(road)) if keys[r] in snapshot.view.keys]
    assert len(ahead) >= 5  # the tile was asked for before the vehicle left the loaded ones
    for r in ahead:  # queries go on, from the loaded tiles, while the loader is stuck
        estimate = localizer.localize(query(road, r))
        assert estimate.status is FixStatus.FIX and error_m(estimate, road, r) < SPACING_M
    assert localizer.cache.current is snapshot
    gate.set()
    assert localizer.cache.wait_idle()
    assert localizer.cache.stats.loads >= 1 and not localizer.cache.stats.errors


# --------------------------------------------------------------------------------------------- build-db


def image_folder(folder: Path, east_m: list[float], seed: int) -> Path:
    """A folder of random images with a filename,lat,lon CSV."""
    folder.mkdir(parents=True)
    lat, lon, _ = ORIGIN.to_geodetic(np.array(east_m), np.zeros(len(east_m)))
    rng = np.random.default_rng(seed)
    lines = ["filename,lat,lon"]
    for i, (a, o) in enumerate(zip(lat, lon, strict=True)):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        lines.append(f"{i}.png,{a:.9f},{o:.9f}")
    (folder / "poses.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_build_db_writes_tiles_and_appends_only_to_the_tiles_it_touches(tmp_path, capsys) -> None:
    from semloc_ros.commands import build_db

    common = ["--method", "label-histogram", "--untrained-ok", "--threads", "1", "--device", "cpu", "--quiet"]
    west = image_folder(tmp_path / "west", [10.0, 20.0, 620.0], seed=1)
    out = tmp_path / "map"
    assert build_db.main([str(west), "--out", str(out), "--tile-size-m", "500", *common]) == 0
    first = TiledMap.open(out)
    assert first.count == 3 and len(first.keys) == 2 and first.manifest["thumbnails"]
    east = image_folder(tmp_path / "east", [630.0, 1300.0], seed=2)
    assert build_db.main([str(east), "--out", str(out), "--append", *common]) == 0
    assert "in 2 of 3 tiles written (500 m" in capsys.readouterr().out
    second = TiledMap.open(out)
    assert second.count == 5 and len(second.keys) == 3
    untouched = [name for name in first.manifest["tiles"] if second.manifest["tiles"][name] ==
                 first.manifest["tiles"][name]]
    assert len(untouched) == 1
    single = tmp_path / "single.semdb"
    assert build_db.main([str(west), str(east), "--out", str(single), *common]) == 0
    whole, reference = second.load_all(), GeoDatabase.load(single)
    order = np.argsort(whole.image_ids)
    expected = np.argsort(reference.image_ids)
    # the same labels (thumbnails below); the histograms' float sums may differ in the last bit with the batches
    np.testing.assert_allclose(whole.descriptors[order], reference.descriptors[expected], rtol=0, atol=1e-6)
    assert np.array_equal(whole.thumbnails[order], reference.thumbnails[expected])
    assert build_db.main([str(east), "--out", str(single), "--tile-size-m", "500", *common]) == 1
    assert "not a tiled map folder" in capsys.readouterr().err


def test_tile_cache_settings_are_checked() -> None:
    assert TileCacheConfig().validate().radius_m == 600.0
    with pytest.raises(ValueError, match="keep_radius_m"):
        TileCacheConfig(radius_m=500.0, keep_radius_m=400.0).validate()
    with pytest.raises(ValueError, match="lost_after"):
        TileCacheConfig(lost_after=0).validate()


def test_a_malformed_manifest_is_refused_with_the_field(tiled) -> None:
    from semloc_ros.core.database import DatabaseFormatError

    manifest = json.loads((tiled.folder / MANIFEST).read_text())
    manifest["tiles"][next(iter(manifest["tiles"]))]["file"] = "../elsewhere.semdb"
    (tiled.folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatabaseFormatError, match="tile e"):
        TiledMap.open(tiled.folder)
    (tiled.folder / MANIFEST).write_text("{}")
    with pytest.raises(DatabaseFormatError, match="not a semloc-tiled-map"):
        TiledMap.open(tiled.folder)


def test_a_localizer_replacing_another_starts_with_its_tiles(road, tiled, localizer) -> None:
    localizer.set_prior(float(road.lat[100]), float(road.lon[100]))
    assert localizer.cache.wait_idle()
    assert localizer.localize(query(road, 100)).status is FixStatus.FIX
    assert localizer.cache.wait_idle()
    successor = TiledLocalizer(TiledMap.open(tiled.folder), UNGATED,
                               localizer.cache.config, centres=localizer.centres)
    try:
        assert successor.cache.wait_idle()
        assert successor.cache.current.view.keys == localizer.cache.current.view.keys
        assert successor.localize(query(road, 101)).status is FixStatus.FIX and successor.cache.stats.searches == 0
    finally:
        successor.close()
