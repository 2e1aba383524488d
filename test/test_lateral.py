"""Cross-track correction: the shear of label images, its sign for front and rear cameras, the localizer's move."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.lateral import fit_shear, heading_normal, view_shift_px
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.views import shift_view
from semloc_ros.evaluation.lateral_fit import LateralSamples, fit_gain, held_out_errors, held_out_splits

LANE_LINE, ROAD, SIDEWALK, SKY, TERRAIN = 7, 10, 11, 12, 13
HEIGHT_M = 1.5
FOCAL_PX = 69.3  # 58-60 degree lens at 80 px wide


def road_labels(left_m: float, yaw_px: float = 0.0, rear: bool = False, shape=(60, 80)) -> np.ndarray:
    """Label thumbnail of a flat road seen from a camera ``left_m`` left of the lane line at 0 (lanes 3.5 m wide,
    road edges at -5.25 / +8.75 m, sidewalks 2 m beyond), turned by ``yaw_px`` columns; ``rear``: looking back."""
    rows, cols = shape
    cy, cx = (rows - 1) / 2.0, (cols - 1) / 2.0
    labels = np.full(shape, SKY, np.uint8)
    for r in range(int(cy) + 1, rows):
        depth = FOCAL_PX * HEIGHT_M / (r - cy)
        right_m = (np.arange(cols) - cx - yaw_px) * depth / FOCAL_PX  # camera right, metres
        lateral = left_m + right_m if rear else left_m - right_m  # vehicle left of the lane line
        row = np.full(cols, TERRAIN, np.uint8)
        row[(lateral > -7.25) & (lateral < 10.75)] = SIDEWALK
        row[(lateral > -5.25) & (lateral < 8.75)] = ROAD
        for line in (-1.75 - 3.5, 0.0, 3.5, 8.75):
            row[np.abs(lateral - line) < 0.15 * depth / 10 + 0.1] = LANE_LINE
        labels[r] = row
    return labels


@pytest.mark.parametrize("offset_m", [-3.5, 3.5])
def test_shear_measures_a_sideways_move_as_its_slope(offset_m: float) -> None:
    database = road_labels(0.0)
    shear = fit_shear(road_labels(offset_m), database)
    assert shear.slope == pytest.approx(offset_m / HEIGHT_M, abs=0.2)  # ground rows: d (r - r_h) / h
    assert fit_shear(database, database).slope == 0.0


def test_shear_tells_a_turn_from_a_sideways_move() -> None:
    database = road_labels(0.0)
    turned = fit_shear(road_labels(0.0, yaw_px=8.0), database)
    assert turned.slope == pytest.approx(0.0, abs=0.15) and turned.intercept == pytest.approx(8.0, abs=1.5)
    both = fit_shear(road_labels(3.5, yaw_px=-8.0), database)
    assert both.slope == pytest.approx(3.5 / HEIGHT_M, abs=0.2)


def test_shear_leaves_out_the_repeated_border_of_a_database_view() -> None:
    query = road_labels(-3.5)
    view = shift_view(road_labels(0.0)[None], 0.2)[0]  # stored shifted: columns 0..15 repeat column 0
    assert view_shift_px("map/000001#view+0.2", 80) == 16 and view_shift_px("map/000001", 80) == 0
    assert view_shift_px("map/000001#view+x", 80) == 0
    truth = -3.5 / HEIGHT_M
    left_out = fit_shear(query, view, view_px=16).slope
    assert left_out == pytest.approx(truth, abs=0.75)
    assert abs(left_out - truth) < abs(fit_shear(query, view).slope - truth) - 1.0  # the repeated border misleads
    with pytest.raises(ValueError, match="do not match"):
        fit_shear(query, view[:, :40])


def test_a_rear_camera_sees_the_move_with_the_opposite_sign_and_the_front_gain_fits_it_in_its_own_frame() -> None:
    # A vehicle 3.5 m LEFT of the mapped lane: the front camera's slope is positive, the rear camera's negative
    # (left of the vehicle is right of a camera looking back). Measured along the CAMERA's left, as the localizer
    # moves the fix of a map that records a rear camera, the rear drives fit the front gain.
    front = fit_shear(road_labels(3.5), road_labels(0.0)).slope
    rear = fit_shear(road_labels(3.5, rear=True), road_labels(0.0, rear=True)).slope
    assert front > 1.5 and rear < -1.5
    vehicle_left = np.array([-3.5, 0.0, 3.5])
    slopes = [fit_shear(road_labels(d, rear=True), road_labels(0.0, rear=True)).slope for d in vehicle_left]
    gain, sigma = fit_gain([LateralSamples("rear", np.array(slopes), -vehicle_left)])  # the rear camera's left
    assert gain == pytest.approx(HEIGHT_M, rel=0.15) and sigma < 0.5


def test_fit_gain_and_held_out_errors() -> None:
    samples = [LateralSamples("a", np.array([2.0, -2.0, 0.0]), np.array([3.0, -3.0, 0.0]))]
    gain, sigma = fit_gain(samples)
    assert gain == pytest.approx(1.5) and sigma == pytest.approx(0.0, abs=1e-12)
    errors = held_out_errors(samples, gain)
    assert errors["a"]["rms_before_m"] == pytest.approx(math.sqrt(6.0)) and errors["all"]["rms_after_m"] < 1e-12
    with pytest.raises(ValueError, match="no training fix"):
        fit_gain([LateralSamples("b", np.zeros(2), np.ones(2))])
    assert heading_normal(math.nan) is None
    np.testing.assert_allclose(heading_normal(0.0), [0.0, 1.0], atol=1e-12)


FRAME = LocalENU(48.0, 11.0, 500.0)


def road_map(heading: float, rear: bool = False, camera_yaw_deg: float = 0.0) -> GeoDatabase:
    """Two places 100 m apart heading ``heading`` (ENU yaw), each stored with the road's label thumbnail (seen by
    a ``rear`` camera), the map recording ``camera_yaw_deg``."""
    database = GeoDatabase(8, "m", camera_yaw_deg=camera_yaw_deg)
    records = []
    for i in range(2):
        lat, lon, _ = FRAME.to_geodetic(100.0 * i, 0.0, 0.0)
        records.append(PlaceRecord(float(lat), float(lon), heading=heading, image_id=f"p{i}"))
    descriptors = np.eye(8, dtype=np.float32)[:2]
    database.add(descriptors, records, np.stack([road_labels(0.0, rear=rear)] * 2))
    return database


@pytest.mark.parametrize("sequence_filter", [False, True])
def test_localizer_moves_the_fix_across_the_track_by_the_measured_offset(sequence_filter: bool) -> None:
    database = road_map(heading=0.0)  # heading east: left is north
    query = database.descriptors[0]
    thumbnail = road_labels(3.5)  # the query drives 3.5 m left of the mapped lane
    settings = dict(rerank_top_k=2, top_k=2, sequence_filter=sequence_filter, integrity_threshold=0.0)
    plain = Localizer(database, LocalizerConfig().with_parameters(lateral_gain_m=0.0, **settings))
    corrected = Localizer(database, LocalizerConfig().with_parameters(lateral_gain_m=HEIGHT_M, **settings))
    before = plain.localize(query, thumbnail=thumbnail, stamp_ns=0)
    after = corrected.localize(query, thumbnail=thumbnail, stamp_ns=0)
    assert before.lateral is None
    assert after.north - before.north == pytest.approx(3.5, abs=0.3)  # moved north, the heading's left
    assert after.east == pytest.approx(before.east, abs=1e-6)
    assert [m.index for m in after.matches] == [m.index for m in before.matches]  # retrieval unchanged
    east, north, _ = database.frame.to_enu(after.lat, after.lon)
    assert float(north) == pytest.approx(after.north, abs=1e-3) and float(east) == pytest.approx(after.east, abs=1e-3)
    assert corrected.localize(query, stamp_ns=0).lateral is None  # no thumbnail: nothing to measure
    west = Localizer(road_map(heading=math.pi), LocalizerConfig().with_parameters(lateral_gain_m=HEIGHT_M, **settings))
    assert west.localize(query, thumbnail=thumbnail, stamp_ns=0).north == pytest.approx(before.north - 3.5, abs=0.3)


@pytest.mark.parametrize("sequence_filter", [False, True])
def test_a_rear_cameras_map_turns_the_correction_to_the_vehicles_side(sequence_filter: bool) -> None:
    settings = dict(rerank_top_k=2, top_k=2, sequence_filter=sequence_filter, integrity_threshold=0.0,
                    lateral_gain_m=HEIGHT_M)
    thumbnail = road_labels(3.5, rear=True)  # the vehicle drives 3.5 m left (north) of the mapped lane, looking back
    rear = road_map(heading=0.0, rear=True, camera_yaw_deg=180.0)
    query = rear.descriptors[0]
    plain = Localizer(rear, LocalizerConfig().with_parameters(**{**settings, "lateral_gain_m": 0.0}))
    before = plain.localize(query, thumbnail=thumbnail, stamp_ns=0)
    after = Localizer(rear, LocalizerConfig().with_parameters(**settings)).localize(query, thumbnail=thumbnail,
                                                                                    stamp_ns=0)
    assert after.north - before.north == pytest.approx(3.5, abs=0.3)  # the vehicle's left, with the front gain
    np.testing.assert_allclose(after.lateral.normal, [0.0, -1.0], atol=1e-12)  # the camera's left is south
    unrecorded = road_map(heading=0.0, rear=True)  # a map without the camera's yaw: corrected the wrong way
    wrong = Localizer(unrecorded, LocalizerConfig().with_parameters(**settings)).localize(query, thumbnail=thumbnail,
                                                                                         stamp_ns=0)
    assert wrong.north - before.north == pytest.approx(-3.5, abs=0.3)


def test_held_out_checks_leave_out_a_seed_with_both_its_cameras_and_check_the_tuning_maps() -> None:
    from types import SimpleNamespace as Role

    maps = [Role(name="map1", world="1"), Role(name="map3", world="3"), Role(name="map3-rear", world="3")]
    assert held_out_splits(maps, [Role(name="v2:tuning", world="t")]) == [
        (["map1"], ["map3", "map3-rear"]), (["map3", "map3-rear"], ["map1"]),
        (["v2:tuning"], ["map1", "map3", "map3-rear"])]
    assert held_out_splits(maps[1:], []) == []  # one seed: nothing to hold out


def test_fit_lateral_script_rejects_a_malformed_map_in_one_line(tmp_path, capsys, load_script) -> None:
    script = load_script("fit_lateral.py")
    assert script.main(["--dataset", str(tmp_path), "--map", "only_a_database"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "DB:Q1,Q2" in error
