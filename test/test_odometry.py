"""OdometryTrack: path length between two stamps, coverage, stamps going backwards, bounded memory."""

from __future__ import annotations

import math

import pytest

from semloc_ros.core import odometry
from semloc_ros.core.odometry import OdometryConfig, OdometryTrack

S = 1_000_000_000  # ns per second


def _track(samples: list[tuple[float, float, float]], **config: float) -> OdometryTrack:
    """A track of (seconds, x, y) samples."""
    track = OdometryTrack(OdometryConfig(**config))
    for t, x, y in samples:
        assert track.add(int(t * S), x, y) is None
    return track


def test_end_points_are_interpolated_between_the_samples_around_them():
    track = _track([(0.0, 0.0, 0.0), (1.0, 10.0, 0.0)], max_gap_s=2.0)
    assert track.travel(int(0.25 * S), int(0.75 * S)) == pytest.approx(5.0)  # snapped ends would give 10 or 0
    assert track.travel(0, S) == pytest.approx(10.0)
    assert track.travel(int(0.5 * S), int(0.5 * S)) == 0.0


def test_travel_is_the_path_length_through_the_samples_not_the_chord():
    track = _track([(0.0, 0.0, 0.0), (0.1, 3.0, 0.0), (0.2, 3.0, 4.0), (0.3, 0.0, 4.0)])
    assert track.travel(0, int(0.3 * S)) == pytest.approx(10.0)  # chord: 4 m
    assert track.travel(int(0.05 * S), int(0.25 * S)) == pytest.approx(1.5 + 4.0 + 1.5)


def test_a_stopped_vehicle_travels_nothing():
    track = _track([(0.1 * i, 12.0, -3.0) for i in range(11)])
    assert track.travel(int(0.15 * S), int(0.95 * S)) == 0.0


@pytest.mark.parametrize("a, b, reason", [(0.0, 0.5, "starts at"),   # older than the first sample kept
                                          (0.5, 1.5, "ends at"),     # not yet arrived
                                          (0.5, 0.2, "backwards")])
def test_an_interval_outside_the_track_has_no_travel(a, b, reason):
    track = _track([(0.1, 0.0, 0.0), (1.0, 5.0, 0.0)], max_gap_s=2.0)
    assert track.travel(int(a * S), int(b * S)) is None
    assert reason in track.coverage_problem(int(a * S), int(b * S))
    assert OdometryTrack().travel(0, S) is None and OdometryTrack().coverage_problem(0, S) == "no odometry received"


def test_a_gap_longer_than_the_limit_leaves_the_interval_uncovered():
    track = _track([(0.0, 0.0, 0.0), (0.1, 1.0, 0.0), (0.9, 9.0, 0.0), (1.0, 10.0, 0.0)], max_gap_s=0.5)
    assert track.travel(int(0.05 * S), int(0.95 * S)) is None
    assert "gap of 0.800 s" in track.coverage_problem(int(0.05 * S), int(0.95 * S))
    assert track.travel(0, int(0.1 * S)) == pytest.approx(1.0)  # the dense stretches still answer
    assert track.travel(int(0.9 * S), S) == pytest.approx(1.0)


def test_non_finite_positions_are_refused_and_leave_the_track_unchanged():
    track = _track([(0.0, 0.0, 0.0), (0.1, 1.0, 0.0)])
    for x, y in ((math.nan, 0.0), (0.0, math.inf)):
        notice = track.add(int(0.2 * S), x, y)
        assert notice.refused and notice.kind == "odometry_not_finite" and "not finite" in notice.text
    assert len(track) == 2 and track.newest_ns == int(0.1 * S)


def test_a_stamp_going_backwards_starts_the_track_again():
    track = _track([(5.0, 0.0, 0.0), (5.1, 1.0, 0.0)])
    assert track.add(int(5.1 * S), 7.0, 7.0) is None  # a repeated stamp changes nothing
    assert track.travel(5 * S, int(5.1 * S)) == pytest.approx(1.0)
    notice = track.add(1 * S, 100.0, 0.0)  # a replayed bag
    assert not notice.refused and notice.kind == "odometry_backwards" and "starts again" in notice.text
    assert len(track) == 1 and track.travel(5 * S, int(5.1 * S)) is None
    assert track.add(int(1.1 * S), 102.0, 0.0) is None
    assert track.travel(1 * S, int(1.1 * S)) == pytest.approx(2.0)


def test_samples_beyond_the_horizon_are_dropped(monkeypatch):
    track = _track([(0.01 * i, 0.1 * i, 0.0) for i in range(1000)], horizon_s=2.0)
    assert len(track) == 201  # 9.99 s back to 7.99 s
    assert track.travel(7 * S, 8 * S) is None and track.travel(8 * S, 9 * S) == pytest.approx(10.0)
    monkeypatch.setattr(odometry, "MAX_SAMPLES", 50)  # a source faster than the horizon assumes
    track.add(10 * S, 100.0, 0.0)
    assert len(track) == 50


def test_the_configuration_is_checked():
    with pytest.raises(ValueError, match="max_gap_s"):
        OdometryConfig(max_gap_s=0.0).validate()
    with pytest.raises(ValueError, match="horizon_s"):
        OdometryTrack(OdometryConfig(horizon_s=math.inf))
