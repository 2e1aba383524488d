"""Database views are an attribute of the map: stored in its header, kept by --append, read back from the image
ids of older files, made from the labels already computed (one segmentation per frame whatever the view count)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semloc_ros.core.database import DatabaseFormatError, GeoDatabase, PlaceRecord
from semloc_ros.core.views import (
    RECOMMENDED_VIEWS,
    check_views,
    parse_views,
    place_id,
    view_image_id,
    views_from_ids,
)
from semloc_ros.io.datasets import Drive, Frame
from semloc_ros.mapping import build_database, describe_drive_views


class CountingSegmenter:
    model_id = "counting-segmenter"

    def __init__(self) -> None:
        self.images = 0

    def predict_batch(self, rgbs: np.ndarray) -> np.ndarray:
        self.images += len(rgbs)
        return rgbs[..., 0].astype(np.int64) % 7

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        return self.predict_batch(rgb[None])[0]


class ColumnPipeline:
    """A label pipeline whose descriptor is the label row 0 (so a shifted view describes differently)."""

    model_id = "columns"
    dimension = 16
    needs_labels = True
    needs_rgb = False

    def __init__(self) -> None:
        self.segmenter = CountingSegmenter()

    def describe_frames(self, rgbs, labels=None, batch_size=16, progress=False) -> np.ndarray:
        if labels is None:
            labels = [self.segmenter.predict(rgb) for rgb in rgbs]
        return np.stack([np.asarray(label[0], np.float32) + 1.0 for label in labels])


def drive(count: int = 5) -> Drive:
    rng = np.random.default_rng(0)
    frames = [Frame(f"f{i}", i, 48.0 + 1e-4 * i, 11.0, rgb=rng.integers(0, 255, (12, 16, 3), np.uint8))
              for i in range(count)]
    return Drive("d", frames)


def test_views_are_made_from_one_segmentation_per_frame():
    pipeline = ColumnPipeline()
    descriptors, thumbnails = describe_drive_views(pipeline, drive().frames, (0.0, -0.25, 0.25), label_cache=None,
                                                   thumbnails=True)
    assert pipeline.segmenter.images == 5  # not 15
    assert descriptors.shape == (3, 5, 16) and thumbnails.shape == (3, 5, 60, 80)
    np.testing.assert_array_equal(descriptors[1, :, :-4], descriptors[0, :, 4:])  # left by a quarter of 16 columns
    assert not np.array_equal(thumbnails[2], thumbnails[0])


def test_the_map_stores_its_views_and_append_keeps_them(tmp_path):
    database = build_database(ColumnPipeline(), drive(), views=(0.0, 0.1))
    assert database.views == (0.0, 0.1) and len(database) == 10
    path = database.save(tmp_path / "map.semdb")
    loaded = GeoDatabase.load(path)
    assert loaded.views == (0.0, 0.1) and loaded.header()["views"] == [0.0, 0.1]
    assert len(build_database(ColumnPipeline(), drive(2), database=loaded)) == 14  # the map's views
    with pytest.raises(ValueError, match=r"the map holds views 0 0\.1; cannot add views 0"):
        build_database(ColumnPipeline(), drive(2), database=loaded, views=(0.0,))
    with pytest.raises(ValueError, match="before its first entry"):
        loaded.views = (0.0,)


def rewrite_header(path, change) -> None:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays["header"].tobytes())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)


def test_maps_written_before_views_were_stored_read_them_from_the_image_ids(tmp_path):
    path = build_database(ColumnPipeline(), drive(), views=(0.0, -0.2, 0.2)).save(tmp_path / "old.semdb")
    rewrite_header(path, lambda header: header.pop("views"))
    assert GeoDatabase.load(path).views == (0.0, -0.2, 0.2)
    plain = GeoDatabase(2, "m")
    plain.add(np.eye(2, dtype=np.float32), [PlaceRecord(1.0, 2.0, image_id="a"), PlaceRecord(1.0, 2.0, image_id="b")])
    path = plain.save(tmp_path / "plain.semdb")
    rewrite_header(path, lambda header: header.pop("views"))
    assert GeoDatabase.load(path).views == (0.0,)
    for bad in ([], [0.1, 0.1], [0.7], "0", [True]):
        rewrite_header(path, lambda header, bad=bad: header.update(views=bad))
        with pytest.raises(DatabaseFormatError, match="invalid views"):
            GeoDatabase.load(path)


def test_view_names_and_checks():
    assert view_image_id("a/1", 0.1) == "a/1#view+0.1" and view_image_id("a/1", 0.0) == "a/1"
    assert place_id("a/1#view-0.2") == "a/1" and place_id("a/1") == "a/1"
    assert views_from_ids(["x#view-0.1", "x", "y#view+0.1"]) == (0.0, -0.1, 0.1)
    assert check_views(RECOMMENDED_VIEWS) == RECOMMENDED_VIEWS
    for bad in ([], [0.5], [float("nan")], [0.1, 0.1]):
        with pytest.raises(ValueError):
            check_views(bad)


def test_view_sets_by_name_or_comma_separated_shifts():
    assert parse_views("recommended") == RECOMMENDED_VIEWS and parse_views("single") == (0.0,)
    assert parse_views("0,-0.1,0.25") == (0.0, -0.1, 0.25)
    for bad in ("sideways", "0,,0.1", "0,0.6", "0.1,0.1"):
        with pytest.raises(ValueError):
            parse_views(bad)


def test_build_db_append_refuses_other_views(tmp_path, monkeypatch, capsys):
    from semloc_ros.commands import build_db, common

    parser = build_db.build_parser()
    assert parser.parse_args(["x", "--out", "y", "--views", "recommended"]).views == list(RECOMMENDED_VIEWS)
    assert parser.parse_args(["x", "--out", "y"]).views is None  # new map: 0; --append: the map's views
    assert "recommended" in common.VIEW_PRESETS
    assert parser.parse_args(["x", "--out", "y", "--views", "single"]).views == [0.0]
    out = tmp_path / "map.semdb"
    build_database(ColumnPipeline(), drive(), views=(0.0, 0.1)).save(out)

    class Loaded:
        model_id, dimension = "columns", 16

    monkeypatch.setattr("semloc_ros.models.pipeline.Pipeline.from_method", lambda *a, **k: Loaded())
    monkeypatch.setattr("semloc_ros.commands.build_db.load_drive", lambda *a, **k: drive(2))
    before = out.read_bytes()
    assert build_db.main(["src", "--out", str(out), "--append", "--views", "0", "--quiet", "--threads", "1"]) == 1
    assert "cannot append: the map holds views 0 0.1, not --views 0" in capsys.readouterr().err
    assert out.read_bytes() == before
