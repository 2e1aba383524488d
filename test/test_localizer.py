"""Tests of semloc_ros.core.localizer: consensus position, covariance, confidence and status."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from semloc_ros.core.database import DatabaseError, DescriptorMismatchError, GeoDatabase, PlaceRecord
from semloc_ros.core.estimate import FixStatus, PositionEstimate
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.localizer import Localizer, LocalizerConfig

faiss.omp_set_num_threads(1)

MODEL = "test-model@1"
DIM = 64
FRAME = LocalENU(48.137, 11.575)  # altitude 0, as entries without altitude


SINGLE_FRAME = LocalizerConfig(sequence_filter=False)  # independent queries: each frame on its own
UNCALIBRATED = SINGLE_FRAME.with_parameters(  # raw covariances, no integrity gate
    covariance_along_scale=1.0, covariance_cross_scale=1.0, position_sigma_along_m=0.0, position_sigma_cross_m=0.0,
    integrity_threshold=0.0)


def database_at(
    east_north: np.ndarray, descriptors: np.ndarray, alts: list[float] | None = None, heading: float = math.nan
) -> GeoDatabase:
    """A database with entries at the given east/north metres of FRAME (all with ``heading``, ENU yaw)."""
    east_north = np.asarray(east_north, dtype=np.float64)
    lats, lons, _ = FRAME.to_geodetic(east_north[:, 0], east_north[:, 1])
    alts = alts if alts is not None else [math.nan] * len(east_north)
    places = zip(lats.tolist(), lons.tolist(), alts, strict=True)
    records = [PlaceRecord(lat, lon, alt, heading) for lat, lon, alt in places]
    database = GeoDatabase(descriptors.shape[1], MODEL)
    database.add(descriptors, records)
    return database


def random_unit(rng: np.random.Generator, dimension: int = DIM) -> np.ndarray:
    vector = rng.standard_normal(dimension)
    return vector / np.linalg.norm(vector)


def with_similarity(query: np.ndarray, similarities: list[float], rng: np.random.Generator) -> np.ndarray:
    """Unit rows whose cosine similarity to the unit ``query`` is exactly ``similarities``."""
    rows = []
    for similarity in similarities:
        orthogonal = rng.standard_normal(len(query))
        orthogonal -= (orthogonal @ query) * query
        orthogonal /= np.linalg.norm(orthogonal)
        rows.append(similarity * query + math.sqrt(1.0 - similarity**2) * orthogonal)
    return np.array(rows, dtype=np.float32)


def distance_m(estimate: PositionEstimate, lat: float, lon: float) -> float:
    return float(geodesic_distance_m(estimate.lat, estimate.lon, lat, lon))


def softmax(similarities: list[float], temperature: float) -> np.ndarray:
    logits = np.asarray(similarities) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


# ---------------------------------------------------------------------------------------------- config
def test_default_config_is_valid():
    config = SINGLE_FRAME
    assert config.validate() is config


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("top_k", 0),
        ("top_k", 2.5),
        ("top_k", True),
        ("top_k", 10**6),
        ("consensus_radius_m", 0.0),
        ("consensus_radius_m", math.nan),
        ("temperature", -0.1),
        ("temperature", math.inf),
        ("min_confidence", 1.5),
        ("min_similarity", -2.0),
        ("min_similarity", "0.1"),
        ("position_sigma_floor_m", 0.0),
        ("altitude_sigma_m", -1.0),
        ("covariance_along_scale", 0.0),
        ("covariance_cross_scale", -1.0),
        ("position_sigma_along_m", -1.0),
        ("position_sigma_cross_m", math.nan),
        ("integrity_weights", (1.0, 2.0)),
        ("integrity_threshold", 1.5),
    ],
)
def test_config_validation_names_the_parameter(name, value):
    config = LocalizerConfig.from_parameters({name: value})
    with pytest.raises(ValueError, match=name):
        config.validate()
    rng = np.random.default_rng(0)
    database = database_at(np.zeros((1, 2)), with_similarity(random_unit(rng), [1.0], rng))
    with pytest.raises(ValueError, match=name):
        Localizer(database, config)


# ---------------------------------------------------------------------------------------------- inputs
def test_bad_queries_are_refused():
    rng = np.random.default_rng(1)
    database = database_at(rng.uniform(0, 500, (5, 2)), rng.standard_normal((5, DIM)))
    localizer = Localizer(database, SINGLE_FRAME)
    query = random_unit(rng)
    nan_query = query.copy()
    nan_query[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        localizer.localize(nan_query)
    with pytest.raises(ValueError, match="NaN"):
        localizer.localize_batch(np.stack([query, query * np.inf]))
    with pytest.raises(ValueError):
        localizer.localize(np.stack([query, query]))
    with pytest.raises(DescriptorMismatchError, match=rf"{DIM + 1}.*{DIM}"):
        localizer.localize(np.ones(DIM + 1))
    with pytest.raises(DescriptorMismatchError, match="other-model"):
        localizer.localize(query, model_id="other-model")
    assert localizer.localize(query, model_id=MODEL).matches
    assert localizer.localize_batch(np.zeros((0, DIM))) == []


def test_empty_database_raises():
    with pytest.raises(DatabaseError):
        Localizer(GeoDatabase(DIM, MODEL), SINGLE_FRAME).localize(np.ones(DIM))


# ---------------------------------------------------------------------------------------------- estimates
def test_query_equal_to_stored_descriptor_returns_that_place():
    rng = np.random.default_rng(2)
    grid = np.array([(100.0 * i, 100.0 * j) for i in range(8) for j in range(8)])
    database = database_at(grid, rng.standard_normal((len(grid), DIM)))
    localizer = Localizer(database, UNCALIBRATED)
    for index in (0, 17, 63):
        estimate = localizer.localize(database.descriptors[index])
        assert estimate.status is FixStatus.FIX
        assert estimate.confidence > 0.99
        assert estimate.matches[0].index == index and estimate.matches[0].inlier
        assert estimate.matches[0].similarity == pytest.approx(1.0, abs=1e-5)
        assert distance_m(estimate, database.lat[index], database.lon[index]) < 0.01
        np.testing.assert_allclose([estimate.east, estimate.north], database.enu[index, :2], atol=0.01)
        assert math.isnan(estimate.alt)


def test_far_outliers_are_excluded_from_the_estimate():
    rng = np.random.default_rng(3)
    query = random_unit(rng)
    cluster = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 8.0]])
    cluster_similarities = [0.95, 0.94, 0.93]
    outliers = np.array([[2000.0, 0.0], [-1500.0, 900.0]])
    outlier_similarities = [0.92, 0.91]
    config = SINGLE_FRAME
    all_similarities = cluster_similarities + outlier_similarities
    with_outliers = database_at(np.vstack([cluster, outliers]), with_similarity(query, all_similarities, rng))
    without_outliers = database_at(cluster, with_similarity(query, cluster_similarities, rng))

    estimate = Localizer(with_outliers, config).localize(query)
    reference = Localizer(without_outliers, config).localize(query)

    assert {m.index: m.inlier for m in estimate.matches} == {0: True, 1: True, 2: True, 3: False, 4: False}
    assert distance_m(estimate, reference.lat, reference.lon) < 0.01
    expected_east_north = softmax(cluster_similarities, config.temperature) @ cluster
    east, north, _ = FRAME.to_enu(estimate.lat, estimate.lon)
    np.testing.assert_allclose([east, north], expected_east_north, atol=0.01)

    # confidence = inlier weight share * (1 - exp(-(best inlier - best outlier similarity) / T))
    all_weights = softmax(all_similarities, config.temperature)
    expected_confidence = all_weights[:3].sum() * (1.0 - math.exp(-(0.95 - 0.92) / config.temperature))
    assert estimate.confidence == pytest.approx(expected_confidence, abs=1e-3)
    assert reference.confidence == pytest.approx(1.0)
    assert np.trace(estimate.covariance_enu[:2, :2]) > np.trace(reference.covariance_enu[:2, :2])
    np.testing.assert_allclose([m.weight for m in estimate.matches], all_weights, atol=1e-3)


def test_covariance_is_symmetric_psd_and_grows_when_matches_disagree():
    rng = np.random.default_rng(4)
    query = random_unit(rng)
    config = UNCALIBRATED.with_parameters(position_sigma_floor_m=3.0, altitude_sigma_m=7.0)
    layouts = {
        "agreeing": ([[0.0, 0.0], [2.0, 0.0]], [0.9, 0.9]),
        "spread": ([[0.0, 0.0], [20.0, 0.0]], [0.9, 0.9]),
        "tilted": ([[0.0, 0.0], [12.0, 9.0], [3.0, 1.0]], [0.9, 0.89, 0.88]),
    }
    estimates = [
        Localizer(database_at(places, with_similarity(query, similarities, rng)), config).localize(query)
        for places, similarities in layouts.values()
    ]
    for estimate in estimates:
        covariance = estimate.covariance_enu
        assert covariance.shape == (3, 3)
        np.testing.assert_array_equal(covariance, covariance.T)
        assert np.all(np.linalg.eigvalsh(covariance) > 0)
        assert covariance[2, 2] == pytest.approx(49.0)
        assert covariance[0, 2] == covariance[1, 2] == 0.0
    # Equal weights: the variance along east is (half the separation)^2 + floor^2, north is floor^2.
    np.testing.assert_allclose(np.diag(estimates[0].covariance_enu)[:2], [1.0 + 9.0, 9.0], atol=1e-3)
    np.testing.assert_allclose(np.diag(estimates[1].covariance_enu)[:2], [100.0 + 9.0, 9.0], atol=1e-3)
    assert estimates[1].east == pytest.approx(np.mean([m.east for m in estimates[1].matches]), abs=1e-3)
    assert estimates[2].covariance_enu[0, 1] > 0.0  # the matches spread along north-east


@pytest.mark.parametrize("sequence_filter", [False, True])
def test_covariance_model_is_aligned_with_the_database_heading(sequence_filter):
    rng = np.random.default_rng(4)
    query = random_unit(rng)
    similarities = with_similarity(query, [0.9, 0.9, 0.89], rng)
    places = [[0.0, 0.0], [20.0, 0.0], [12.0, 9.0]]
    database = database_at(places, similarities, heading=math.pi / 2)  # the road runs north
    base = UNCALIBRATED.with_parameters(sequence_filter=sequence_filter)
    calibrated = base.with_parameters(covariance_along_scale=2.5, covariance_cross_scale=0.5,
                                      position_sigma_along_m=1.0, position_sigma_cross_m=4.0)
    raw = Localizer(database, base).localize(query, stamp_ns=1)
    fitted = Localizer(database, calibrated).localize(query, stamp_ns=1)
    s = raw.covariance_enu[:2, :2]  # east = cross-track, north = along-track
    expected = [[0.5 * s[0, 0] + 16.0, math.sqrt(1.25) * s[0, 1]], [math.sqrt(1.25) * s[0, 1], 2.5 * s[1, 1] + 1.0]]
    np.testing.assert_allclose(fitted.covariance_enu[:2, :2], expected, rtol=1e-9)
    np.testing.assert_allclose(fitted.base_covariance_en, s)
    assert fitted.covariance_enu[2, 2] == raw.covariance_enu[2, 2]  # altitude untouched
    assert (fitted.lat, fitted.lon, fitted.confidence) == (raw.lat, raw.lon, raw.confidence)
    # Without database headings there is no axis: the larger scale and sigma on both.
    unknown = Localizer(database_at(places, similarities), calibrated).localize(query, stamp_ns=1)
    np.testing.assert_allclose(unknown.covariance_enu[:2, :2], 2.5 * s + 16.0 * np.eye(2), rtol=1e-9)


def test_integrity_gate_turns_a_fix_that_jumped_into_low_confidence():
    rng = np.random.default_rng(8)
    first, second = random_unit(rng), random_unit(rng)
    database = database_at([[0.0, 0.0], [500.0, 0.0]], np.stack([first, second]).astype(np.float32))
    weights = (0.0, 0.0, 0.0, 0.0, 0.0, -5.0)  # only the jump counts
    gated = Localizer(database, UNCALIBRATED.with_parameters(integrity_weights=weights, integrity_bias=5.0,
                                                             integrity_threshold=0.5))
    estimates = gated.localize_batch(np.stack([first, second]), stamps_ns=[0, 200_000_000])
    assert estimates[0].status is FixStatus.FIX and estimates[0].integrity > 0.5  # first frame: neutral jump
    assert estimates[1].status is FixStatus.LOW_CONFIDENCE and estimates[1].cues["jump"] > 3.0  # 500 m in 0.2 s
    independent = gated.localize_batch(np.stack([first, second]))  # no stamps: no jump is known
    assert [e.status for e in independent] == [FixStatus.FIX, FixStatus.FIX]
    ungated = Localizer(database, UNCALIBRATED.with_parameters(integrity_weights=(0.0,) * 6))
    late = ungated.localize_batch(np.stack([first, second]), stamps_ns=[0, 200_000_000])[1]
    assert math.isnan(late.integrity) and late.status is FixStatus.FIX


def test_a_score_weighing_the_alignment_does_not_gate_estimates_that_were_not_re_ranked():
    rng = np.random.default_rng(9)
    query = random_unit(rng)
    database = database_at([[0.0, 0.0]], query[None].astype(np.float32))  # no thumbnails: no re-ranking
    weights = (0.0, 0.0, 30.0, 0.0, 0.0, 0.0)  # only the alignment counts, as in the shipped fit
    gated = Localizer(database, UNCALIBRATED.with_parameters(integrity_weights=weights, integrity_bias=-20.0,
                                                             integrity_threshold=0.5))
    estimate = gated.localize(query)
    assert estimate.status is FixStatus.FIX and math.isnan(estimate.integrity)
    jump_only = Localizer(database, UNCALIBRATED.with_parameters(integrity_weights=(0.0,) * 5 + (1.0,),
                                                                 integrity_bias=-20.0, integrity_threshold=0.5))
    assert jump_only.localize(query).status is FixStatus.LOW_CONFIDENCE  # a score with all its cues still gates


def test_integrity_weights_come_from_a_parameter_list():
    config = LocalizerConfig.from_parameters({"integrity_weights": [1, 2, 3, 4, 5, 6]})
    assert config.integrity_weights == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    assert config.integrity_model().weights["jump"] == 6.0
    with pytest.raises(ValueError, match="integrity_weights must be 6 numbers"):
        LocalizerConfig.from_parameters({"integrity_weights": [1.0]}).validate()


def test_ambiguous_places_give_low_confidence():
    rng = np.random.default_rng(5)
    query = random_unit(rng)
    database = database_at([[0.0, 0.0], [1000.0, 0.0]], with_similarity(query, [0.9, 0.9], rng))
    estimate = Localizer(database, UNCALIBRATED).localize(query)
    assert estimate.status is FixStatus.LOW_CONFIDENCE
    assert estimate.confidence < 0.3
    assert sum(m.inlier for m in estimate.matches) == 1
    single = Localizer(database_at([[0.0, 0.0]], with_similarity(query, [0.9], rng)), UNCALIBRATED).localize(query)
    assert single.status is FixStatus.FIX
    assert np.trace(estimate.covariance_enu) > 10 * np.trace(single.covariance_enu)


def test_low_similarity_query_is_no_match():
    rng = np.random.default_rng(6)
    stored = rng.standard_normal((20, DIM))
    database = database_at(rng.uniform(0, 300, (20, 2)), stored)
    query = rng.standard_normal(DIM)
    query -= stored.T @ np.linalg.lstsq(stored.T, query, rcond=None)[0]  # orthogonal to every entry
    localizer = Localizer(database, SINGLE_FRAME.with_parameters(min_similarity=0.5))

    estimate = localizer.localize(query)
    assert estimate.status is FixStatus.NO_MATCH
    assert estimate.confidence == 0.0
    assert abs(estimate.matches[0].similarity) < 1e-3

    similar = localizer.localize(with_similarity(database.descriptors[4], [0.6], rng)[0])
    assert similar.status is not FixStatus.NO_MATCH
    assert similar.matches[0].index == 4


def test_altitude_is_weighted_mean_of_known_altitudes():
    rng = np.random.default_rng(7)
    query = random_unit(rng)
    places = [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]
    descriptors = with_similarity(query, [0.9, 0.9, 0.9], rng)
    estimate = Localizer(database_at(places, descriptors, [500.0, 510.0, math.nan]), SINGLE_FRAME).localize(query)
    assert estimate.alt == pytest.approx(505.0, abs=1e-3)
    assert math.isnan(Localizer(database_at(places, descriptors), SINGLE_FRAME).localize(query).alt)


def rbf_descriptors(points: np.ndarray, anchors: np.ndarray, width_m: float) -> np.ndarray:
    """Descriptors that vary smoothly with position: Gaussian responses to a dense grid of anchors."""
    squared = ((points[:, np.newaxis, :] - anchors[np.newaxis, :, :]) ** 2).sum(axis=2)
    return np.exp(-squared / (2.0 * width_m**2))


def test_synthetic_route_estimates_lie_between_neighbours():
    spacing = 10.0
    arc = np.arange(0.0, 300.0 + spacing, spacing)
    route = lambda s: np.column_stack([s, 20.0 * np.sin(np.asarray(s) / 100.0)])  # noqa: E731
    anchors = np.array([(e, n) for e in np.arange(-30.0, 331.0, 4.0) for n in np.arange(-50.0, 51.0, 4.0)])
    database = database_at(route(arc), rbf_descriptors(route(arc), anchors, 8.0))
    localizer = Localizer(database, UNCALIBRATED)

    offsets = np.array([5.0, 2.0, 7.5])
    query_arc = np.concatenate([arc[3:-3] + offset for offset in offsets])
    query_points = route(query_arc)
    estimates = localizer.localize_batch(rbf_descriptors(query_points, anchors, 8.0))

    for s, truth, estimate in zip(query_arc, query_points, estimates, strict=True):
        assert estimate.status is FixStatus.FIX
        previous_place = math.floor(s / spacing) * spacing
        before, after = route([previous_place, previous_place + spacing])
        east, north, _ = FRAME.to_enu(estimate.lat, estimate.lon)
        along = (np.array([east, north]) - before) @ (after - before) / np.sum((after - before) ** 2)
        assert -0.01 <= along <= 1.01, (s, along)
        error = math.hypot(east - truth[0], north - truth[1])
        assert error < (0.5 if s % spacing == 5.0 else spacing / 2), (s, error)


def test_batch_equals_single_queries():
    rng = np.random.default_rng(8)
    database = database_at(rng.uniform(0, 200, (40, 2)), rng.standard_normal((40, DIM)))
    localizer = Localizer(database, SINGLE_FRAME.with_parameters(top_k=5))
    queries = database.descriptors[:6] + 0.3 * rng.standard_normal((6, DIM)).astype(np.float32)
    batch = localizer.localize_batch(queries)
    for query, from_batch in zip(queries, batch, strict=True):
        single = localizer.localize(query)
        assert (single.lat, single.lon, single.status) == (from_batch.lat, from_batch.lon, from_batch.status)
        assert [m.index for m in single.matches] == [m.index for m in from_batch.matches]
        assert len(single.matches) == 5
        assert sum(m.weight for m in single.matches) == pytest.approx(1.0)
        match = single.matches[0]
        assert (match.lat, match.lon) == (database.lat[match.index], database.lon[match.index])
