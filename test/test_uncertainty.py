"""Tests of the heading-aligned covariance (semloc_ros.core.uncertainty) and its fit (evaluation.uncertainty_fit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.core.calibration import covariance_coverage, mahalanobis_squared
from semloc_ros.core.uncertainty import (
    LaneEvidence,
    TrackCovarianceModel,
    aligned_covariance,
    along_cross,
    smoothed_alignments,
    track_direction,
)
from semloc_ros.evaluation.uncertainty_fit import fit_track_model, model_covariances


def test_track_direction_is_an_axis_and_needs_a_dominant_one():
    north_east = track_direction(np.array([math.pi / 4, math.pi / 4 + math.pi]))  # one road, both directions
    assert abs(abs(north_east @ [1.0, 1.0]) / math.sqrt(2) - 1.0) < 1e-9
    assert track_direction(np.array([0.0, math.pi / 2])) is None  # a crossing: no axis
    assert track_direction(np.array([np.nan, np.nan])) is None
    known_only = track_direction(np.array([0.3, np.nan]), np.array([1.0, 5.0]))
    assert known_only == pytest.approx([math.cos(0.3), math.sin(0.3)])


def test_aligned_covariance_puts_each_sigma_on_its_axis():
    direction = np.array([0.0, 1.0])  # road heading north: along = north, cross = west
    base = np.diag([1.0, 1.0])
    model = TrackCovarianceModel(along_scale=4.0, cross_scale=1.0, along_sigma_m=0.0, cross_sigma_m=3.0)
    covariance = aligned_covariance(base, direction, model)
    assert covariance == pytest.approx(np.diag([1.0 + 9.0, 4.0]))  # east = cross, north = along
    assert aligned_covariance(base, direction, TrackCovarianceModel()) == pytest.approx(base)
    assert aligned_covariance(base, None, model) == pytest.approx(np.diag([13.0, 13.0]))  # no axis: the larger
    rng = np.random.default_rng(0)
    for _ in range(50):  # positive definite for any base and axis
        a = rng.standard_normal((2, 2))
        axis = rng.standard_normal(2)
        result = aligned_covariance(a @ a.T, axis / np.linalg.norm(axis), model)
        assert np.all(np.linalg.eigvalsh(result) > 0)
    assert along_cross(np.array([0.0, 2.0]), direction) == pytest.approx([2.0, 0.0])


def test_fit_recovers_an_along_spread_and_a_lane_offset():
    """Errors along the road follow the base spread x 2; across it a 3 m spread that the geometry does not see."""
    rng = np.random.default_rng(1)
    count = 1500
    headings = rng.uniform(-math.pi, math.pi, count)
    directions = np.column_stack([np.cos(headings), np.sin(headings)])
    base_sigma = rng.uniform(0.5, 8.0, count)
    bases = base_sigma[:, None, None] ** 2 * np.eye(2)
    along = 2.0 * base_sigma * rng.standard_normal(count)
    cross = 3.0 * rng.standard_normal(count)
    errors = along[:, None] * directions + cross[:, None] * np.column_stack([-directions[:, 1], directions[:, 0]])

    model, record = fit_track_model(errors, bases, directions, np.full(count, np.nan))
    assert 2.5 < model.along_scale < 6.0 and model.along_sigma_m < 1.5
    assert 2.5 < model.cross_sigma_m < 3.5 and model.cross_scale < 0.1
    nan = np.full(count, np.nan)
    coverage = covariance_coverage(mahalanobis_squared(errors, model_covariances(bases, directions, model, nan)))
    assert abs(coverage["within_1sigma"] - 0.393) < 0.05 and abs(coverage["within_2sigma"] - 0.865) < 0.05
    isotropic = covariance_coverage(mahalanobis_squared(errors, bases))
    assert abs(isotropic["within_2sigma"] - 0.865) > 0.1  # the base alone is far off
    assert record["n_with_direction"] == count


def test_lane_offset_term_follows_the_alignment():
    """Queries a lane aside (alignment ~0.90) sit 3.5 m across the track; same-lane ones (~0.97) do not."""
    rng = np.random.default_rng(2)
    count = 1200
    other_lane = rng.random(count) < 0.5
    alignments = np.where(other_lane, rng.normal(0.90, 0.015, count), rng.normal(0.97, 0.01, count))
    directions = np.tile([1.0, 0.0], (count, 1))
    bases = np.tile(np.eye(2), (count, 1, 1))
    cross = np.where(other_lane, 3.5 * rng.choice([-1.0, 1.0], count), 0.0) + 0.3 * rng.standard_normal(count)
    errors = np.column_stack([1.0 * rng.standard_normal(count), cross])
    model, _ = fit_track_model(errors, bases, directions, alignments)
    assert 0.91 < model.lane_alignment < 0.96 and 2.5 < model.cross_sigma_m < 5.0
    covariances = model_covariances(bases, directions, model, alignments)
    assert np.median(covariances[other_lane, 1, 1]) > 10 * np.median(covariances[~other_lane, 1, 1])
    for group in (other_lane, ~other_lane):  # each lane group is covered, not only the pool
        d2 = mahalanobis_squared(errors[group], covariances[group])
        assert np.mean(d2 <= 4.0) > 0.75


def test_vectorised_model_covariances_equal_the_localizers():
    rng = np.random.default_rng(3)
    count = 200
    a = rng.standard_normal((count, 2, 2))
    bases = a @ a.transpose(0, 2, 1)
    directions = rng.standard_normal((count, 2))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions[::7] = np.nan  # no heading known
    alignments = rng.uniform(0.85, 1.0, count)
    alignments[::5] = np.nan  # not re-ranked
    model = TrackCovarianceModel(0.3, 2.0, 1.0, 3.0, 0.93, 0.02)
    expected = [aligned_covariance(b, d if np.isfinite(d).all() else None, model, float(x))
                for b, d, x in zip(bases, directions, alignments, strict=True)]
    np.testing.assert_allclose(model_covariances(bases, directions, model, alignments), expected, atol=1e-12)


def test_lane_evidence_smooths_consecutive_frames_and_restarts_after_a_gap():
    second = 1_000_000_000
    evidence = LaneEvidence(time_constant_s=2.0, max_gap_s=1.0)
    assert evidence.update(0, 0.90) == pytest.approx(0.90)  # the first frame as it is
    assert evidence.update(second // 2, 0.98) == pytest.approx(0.90 + 0.25 * 0.08)  # dt / tau = 1/4
    assert evidence.update(second, math.nan) == pytest.approx(0.92)  # not re-ranked: kept
    assert evidence.update(second + second // 2, 0.0) == pytest.approx(0.92)
    assert evidence.update(3 * second, 0.97) == pytest.approx(0.97)  # a 1.5 s gap: a new sequence
    assert evidence.update(2 * second, 0.91) == pytest.approx(0.91)  # backwards: a new sequence
    assert evidence.update(None, 0.95) == pytest.approx(0.95)  # an independent query
    evidence.reset()
    assert evidence.update(0, math.nan) == 0.0  # nothing known yet: the cautious side
    assert LaneEvidence(0.0, 1.0).update(0, 0.9) == pytest.approx(0.9)
    stamps = np.arange(6) * (second // 2)
    values = np.array([0.9, 0.98, np.nan, 0.0, 0.97, 0.93])
    loop = LaneEvidence(2.0, 1.0)
    np.testing.assert_allclose(smoothed_alignments(stamps, values, 2.0, 1.0),
                               [loop.update(int(s), float(v)) for s, v in zip(stamps, values, strict=True)])


def test_lane_time_constant_is_chosen_where_one_frame_cannot_tell_the_lane():
    """A drive a lane aside and one in the mapped lane, with per-frame alignments that overlap: smoothed over
    a few seconds they separate, and the fit picks a time constant > 0."""
    from semloc_ros.evaluation.fix_records import FixRecords
    from semloc_ros.evaluation.uncertainty_fit import fit_lane_time_constant

    rng = np.random.default_rng(6)
    count = 400

    def drive(name: str, aside: bool) -> FixRecords:
        cross = (3.5 if aside else 0.0) + 0.3 * rng.standard_normal(count)
        errors = np.column_stack([rng.standard_normal(count), cross])
        alignment = rng.normal(0.90 if aside else 0.95, 0.03, count)
        zeros2 = np.zeros((count, 2))
        return FixRecords(name, "db", "single", True, np.arange(count) * 200_000_000, zeros2, np.zeros(count),
                          errors, errors, np.tile(np.eye(2), (count, 1, 1)), np.tile([1.0, 0.0], (count, 1)),
                          np.ones(count, bool), {"alignment": alignment}, np.arange(count) * 2.0)

    records = [drive("aside", True), drive("mapped", False)]
    keep = [np.ones(count, bool)] * 2
    model, record = fit_lane_time_constant(records, keep, max_gap_s=1.0, time_constants_s=(0.0, 4.0))
    losses = {row["lane_time_constant_s"]: row["joint_loss"] for row in record["lane_time_constants"]}
    assert set(losses) == {0.0, 4.0} and losses[4.0] < losses[0.0]
    assert model.lane_time_constant_s == 4.0 and record["joint_loss"] == losses[4.0]
