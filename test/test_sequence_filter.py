"""Tests of semloc_ros.core.sequence_filter and the Localizer's sequence path on a synthetic route."""

from __future__ import annotations

import dataclasses
import math
import time

import faiss
import numpy as np
import pytest

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.estimate import EstimateSettings, FixStatus
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.sequence_filter import FilterConfig, SequenceFilter, contrast_normalised, neighbour_graph

faiss.omp_set_num_threads(1)

MODEL = "test-model@1"
DIM = 64
KNOT_M = 10.0
FRAME = LocalENU(51.752, -1.2577)
SPACING_M = 2.0
N_PLACES = 400  # an 800 m straight route, east along y = 0
PERIOD_NS = 200_000_000  # 0.2 s between queries at 10 m/s: one query every 2 m
START_NS = 1_700_000_000_000_000_000


def smooth_descriptors(x_m: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit descriptors that vary smoothly along the route: random unit vectors every 10 m, blended between.

    Places more than 10 m apart have unrelated descriptors (similarity about 0 +- 1/sqrt(DIM)).
    """
    rng = np.random.default_rng(seed)
    knots = rng.standard_normal((int(np.max(x_m) // KNOT_M) + 2, DIM))
    position = np.asarray(x_m, dtype=float) / KNOT_M
    left = np.floor(position).astype(int)
    blend = 0.5 - 0.5 * np.cos(np.pi * (position - left))[:, np.newaxis]
    values = (1.0 - blend) * knots[left] + blend * knots[left + 1]
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def noisy(descriptors: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = descriptors + sigma * rng.standard_normal(descriptors.shape) / math.sqrt(DIM)
    return (values / np.linalg.norm(values, axis=1, keepdims=True)).astype(np.float32)


def route_database(descriptors: np.ndarray, heading: float = 0.0) -> GeoDatabase:
    """Places every 2 m east along y = 0, mapped driving east (``heading`` 0) unless told otherwise."""
    east = np.arange(len(descriptors)) * SPACING_M
    lat, lon, _ = FRAME.to_geodetic(east, np.zeros_like(east))
    records = [
        PlaceRecord(float(a), float(o), 60.0, heading, i, f"{i:06d}")
        for i, (a, o) in enumerate(zip(lat, lon, strict=True))
    ]
    database = GeoDatabase(DIM, MODEL)
    database.add(descriptors.astype(np.float32), records)
    return database


def east_of(database: GeoDatabase, estimate) -> float:
    """Estimate east in route metres (the database frame is centred on the route)."""
    return estimate.east - database.enu[0, 0]


def filter_config(**overrides) -> LocalizerConfig:
    """The filter on its own: no off-map state, no integrity gate (tested below and in test_localizer)."""
    values = {"sequence_filter": True, "filter_kidnap_probability": 0.01, "filter_temperature": 1.0,
              "filter_evidence_spacing_m": SPACING_M,
              "filter_exit_probability": 0.0, "integrity_threshold": 0.0}
    values.update(overrides)
    return LocalizerConfig.from_parameters(values)


# ----------------------------------------------------------------------------------------- graph
def test_neighbour_graph_equals_brute_force():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, size=(300, 2))
    points[10] = points[11]  # a duplicate position
    graph = neighbour_graph(points, 12.0)
    distances = np.hypot(*(points[:, np.newaxis] - points[np.newaxis]).transpose(2, 0, 1))
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(distances <= 12.0), strict=True)}
    sources = graph.sources()
    assert {(int(i), int(j)) for i, j in zip(sources, graph.targets, strict=True)} == expected
    assert np.allclose(graph.distances, distances[sources, graph.targets], atol=1e-4)
    near = graph.within(5.0)
    assert {(int(i), int(j)) for i, j in zip(near.sources(), near.targets, strict=True)} == {
        (i, j) for i, j in expected if distances[i, j] <= 5.0
    }


def test_neighbour_graph_size_is_linear_in_the_number_of_places():
    """A road network of N places 2 m apart has O(N) edges (no N x N anything), built quickly."""
    rng = np.random.default_rng(2)

    def roads(n: int) -> np.ndarray:  # straight roads of 200 places on a 2 km grid
        starts = rng.uniform(0, 2000 * math.sqrt(n / 1000), size=(n // 200, 2))
        directions = rng.choice([[1.0, 0.0], [0.0, 1.0]], size=n // 200)
        steps = np.arange(200)[:, np.newaxis, np.newaxis] * SPACING_M * directions
        return (starts + steps).reshape(-1, 2)

    small = neighbour_graph(roads(4000), 35.0)
    start = time.perf_counter()
    large = neighbour_graph(roads(40000), 35.0)
    elapsed = time.perf_counter() - start
    per_place_small = small.n_edges / small.n_places
    per_place_large = large.n_edges / large.n_places
    assert per_place_large < 1.5 * per_place_small
    assert per_place_large <= 2 * 35.0 / SPACING_M * 2 + 1  # at most two crossing roads per place, on average
    assert elapsed < 5.0


def dense_motion(east_north: np.ndarray, headings: np.ndarray, travel: float, sigma: float, reverse: float,
                 radius_m: float) -> np.ndarray:
    """Step 1c written out for every pair of entries (N x N rows, normalised): the reference of the filter."""
    offsets = east_north[None, :, :] - east_north[:, None, :]
    distance = np.hypot(offsets[..., 0], offsets[..., 1])
    along = offsets[..., 0] * np.cos(headings)[:, None] + offsets[..., 1] * np.sin(headings)[:, None]
    signed = np.where(np.nan_to_num(along, nan=0.0) < -0.5, -distance, distance)
    weights = np.exp(-0.5 * ((signed - travel) / sigma) ** 2)
    weights += reverse * np.exp(-0.5 * ((signed + travel) / sigma) ** 2)
    weights[distance > radius_m] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


def test_views_of_one_place_move_and_weigh_as_every_entry_would():
    """Step 1c runs over the distinct places; the belief it gives equals moving every entry (a dense reference),
    with views listed out of order and a place of unknown heading; step 3's mass counts every entry."""
    rng = np.random.default_rng(3)
    order = rng.permutation(36)
    east = (np.repeat(np.arange(12) * 3.0, 3))[order]  # 12 places x 3 views, 33 m of route
    headings = np.repeat(np.where(np.arange(12) == 5, np.nan, 0.0), 3)[order]
    lat, lon, _ = FRAME.to_geodetic(east, np.zeros_like(east))
    database = GeoDatabase(DIM, MODEL)
    database.add(noisy(smooth_descriptors(east), 0.1, seed=1),
                 [PlaceRecord(float(a), float(o), 60.0, float(h), i, f"{i}")
                  for i, (a, o, h) in enumerate(zip(lat, lon, headings, strict=True))])
    config = FilterConfig(exit_probability=0.0, kidnap_probability=0.001)
    sequence = SequenceFilter(database, config, EstimateSettings(radius_m=10.0, min_confidence=0.0))
    assert sequence.graph.n_places == 12
    sequence.update(rng.uniform(0.5, 1.0, 36), np.arange(36))
    before = sequence.belief
    assert sequence.predict(0.2)
    step = 10.0 * 0.2 / config.evidence_spacing_m  # step 1a: w from the prior speed
    sigma = math.sqrt(step * config.position_sigma_m**2 + (config.speed_sigma_mps * 0.2) ** 2)
    reverse = 1.0 - (1.0 - config.reverse_weight) ** step  # per metre, as the noise
    moved = before @ dense_motion(database.enu[:, :2], headings, 2.0, sigma, reverse, 34.0)
    kidnap = 1.0 - (1.0 - config.kidnap_probability) ** step
    np.testing.assert_allclose(sequence.belief, (1.0 - kidnap) * moved / moved.sum() + kidnap / 36,
                               rtol=1e-6)  # the graph keeps distances in float32

    near = np.abs(east[:, None] - east[None, :]) <= 10.0
    assert sequence.estimate().confidence == pytest.approx((near @ sequence.belief).max(), rel=1e-6)


# --------------------------------------------------------------------------------- filter core
def peaked_and_moved(reverse_weight: float, travel_m: float = 20.0,
                     **config_values) -> tuple[GeoDatabase, np.ndarray, int]:
    """The belief of a filter peaked at place 200 (heading east), then moved by ``travel_m`` of odometry."""
    database = route_database(smooth_descriptors(np.arange(N_PLACES) * SPACING_M))
    values = {"kidnap_probability": 1e-6, "exit_probability": 0.0, "temperature": 0.05,
              "reverse_weight": reverse_weight, **config_values}
    config = FilterConfig(**values)
    sequence_filter = SequenceFilter(database, config)
    start = 200
    sequence_filter.update(np.array([1.0, 0.0]), np.array([start, start + 100]))  # peaked at place 200
    assert sequence_filter.estimate().east == pytest.approx(database.enu[start, 0], abs=0.5)
    sequence_filter.predict(None, displacement_m=travel_m)
    return database, sequence_filter.belief, start


def test_displacement_moves_the_belief_ahead_along_the_map_heading():
    database, belief, start = peaked_and_moved(reverse_weight=0.0)
    ahead = database.enu[:, 0] - database.enu[start, 0]  # the route's heading is east
    sigma = math.hypot(3.0, 0.1 * 20.0)  # position_sigma_m (+) odometry_sigma_fraction x travel
    assert belief[np.abs(ahead - 20.0) <= 2.5 * sigma].sum() > 0.95
    _, reversing, _ = peaked_and_moved(reverse_weight=0.1)
    assert 0.85 < reversing[np.abs(ahead - 20.0) <= 2.5 * sigma].sum() < 0.95  # 1 : 0.1 ahead : behind
    assert reversing[np.abs(ahead + 20.0) <= 2.5 * sigma].sum() > 0.05


def test_a_short_forward_travel_keeps_its_symmetric_spread():
    """Step 1: 1 m of travel with a 3 m spread moves the belief's mean 1 m ahead: the spread reaches the places
    just behind as much as those just ahead (cutting it off behind would move the mean about 3 m)."""
    database, belief, start = peaked_and_moved(reverse_weight=0.0, travel_m=1.0, evidence_spacing_m=0.0)
    ahead = database.enu[:, 0] - database.enu[start, 0]
    assert belief @ ahead == pytest.approx(1.0, abs=0.3)
    assert belief[(ahead < 0) & (ahead >= -4.0)].sum() > 0.15


def test_motion_noise_and_kidnap_mass_are_per_metre_of_travel():
    """Step 1: a measured standstill holds the belief (no blur, no kidnap mass); 1 m of travel with a 6 m
    spacing spreads it by a sixth of the position variance."""
    _, before, start = peaked_and_moved(reverse_weight=0.1, travel_m=0.0, kidnap_probability=0.01)
    assert before[start] > 0.99
    database, belief, start = peaked_and_moved(reverse_weight=0.0, travel_m=1.0, evidence_spacing_m=6.0)
    ahead = database.enu[:, 0] - database.enu[start, 0]
    spread = math.sqrt(belief @ (ahead - belief @ ahead) ** 2)
    assert spread == pytest.approx(math.sqrt(9.0 / 6.0 + 0.1**2), abs=0.35)  # not the full 3 m


def test_short_steps_do_not_drag_the_belief_behind_the_travel():
    """Step 1c: the reverse weight is per metre, so twelve 1 m steps (a sixth of the evidence spacing each)
    move the belief about 12 m; at the full weight per step each kept (1 - 0.1) / (1 + 0.1) of its travel
    (9.8 m in all), since their reverse branches lie within the noise of the forward ones."""
    database, _, start = peaked_and_moved(reverse_weight=0.1, travel_m=0.0)
    sequence = SequenceFilter(database, FilterConfig(kidnap_probability=1e-6, exit_probability=0.0,
                                                     temperature=0.05, reverse_weight=0.1))
    sequence.update(np.array([1.0, 0.0]), np.array([start, start + 100]))
    for _ in range(12):
        sequence.predict(None, displacement_m=1.0)
    ahead = database.enu[:, 0] - database.enu[start, 0]
    assert 11.0 < sequence.belief @ ahead < 12.5


def test_without_direction_the_belief_moves_both_ways_by_the_travelled_distance():
    database, belief, start = peaked_and_moved(reverse_weight=1.0)
    travelled = np.abs(database.enu[:, 0] - database.enu[start, 0])
    assert belief @ np.abs(travelled - 20.0) < 3.0  # half forward, half backward, both 20 m away
    sigma = math.hypot(3.0, 0.1 * 20.0)
    assert belief[np.abs(travelled - 20.0) <= 2.5 * sigma].sum() > 0.95
    behind = database.enu[:, 0] < database.enu[start, 0]
    assert belief[behind].sum() == pytest.approx(0.5, abs=0.05)


def test_unknown_headings_move_the_belief_both_ways():
    database = route_database(smooth_descriptors(np.arange(N_PLACES) * SPACING_M), heading=math.nan)
    sequence_filter = SequenceFilter(database, FilterConfig(kidnap_probability=1e-6, exit_probability=0.0,
                                                            temperature=0.05, reverse_weight=0.0))
    sequence_filter.update(np.array([1.0, 0.0]), np.array([200, 300]))
    sequence_filter.predict(None, displacement_m=20.0)
    behind = database.enu[:, 0] < database.enu[200, 0]
    assert sequence_filter.belief[behind].sum() == pytest.approx(0.5, abs=0.05)


def test_likelihood_is_contrast_normalised():
    """The update depends on how the query's scores differ from each other, not on their scale or offset."""
    database = route_database(smooth_descriptors(np.arange(50) * SPACING_M))
    scores, entries = np.array([0.9, 0.85, 0.6, 0.5]), np.array([3, 10, 20, 30])
    beliefs = []
    for scale, offset in ((1.0, 0.0), (10.0, -3.0), (0.01, 2.0)):
        sequence_filter = SequenceFilter(database, FilterConfig(exit_probability=0.0))
        sequence_filter.update(scale * scores + offset, entries)
        beliefs.append(sequence_filter.belief)
    assert np.allclose(beliefs[0], beliefs[1]) and np.allclose(beliefs[0], beliefs[2])
    assert beliefs[0][3] > beliefs[0][10] > beliefs[0][20] > beliefs[0][40]  # ranked, floor for the rest
    flat = SequenceFilter(database, FilterConfig(exit_probability=0.0))
    flat.update(np.full(4, 0.9), entries)  # candidates that all look alike carry no evidence
    assert np.allclose(flat.belief, 1.0 / len(database))


def test_prediction_without_motion_information_is_refused_and_long_gaps_reset():
    database = route_database(smooth_descriptors(np.arange(50) * SPACING_M))
    sequence_filter = SequenceFilter(database, FilterConfig(max_gap_s=1.0))
    sequence_filter.update(np.array([1.0]), np.array([10]))
    with pytest.raises(ValueError, match="dt_s"):
        sequence_filter.predict(None)
    with pytest.raises(ValueError, match="displacement_m"):
        sequence_filter.predict(0.2, displacement_m=-1.0)
    assert sequence_filter.predict(0.2)
    assert not sequence_filter.predict(1.5) and not sequence_filter.initialised
    sequence_filter.update(np.array([1.0]), np.array([10]))
    assert not sequence_filter.predict(None, displacement_m=500.0)  # beyond the graph: cannot be modelled
    assert sequence_filter.resets == 2


def test_config_validation_names_the_filter_parameter():
    with pytest.raises(ValueError, match=r"^filter_temperature must"):
        LocalizerConfig().with_parameters(filter_temperature=0.0).validate()
    with pytest.raises(ValueError, match=r"^filter_kidnap_probability must"):
        LocalizerConfig().with_parameters(filter_kidnap_probability=1.0).validate()
    with pytest.raises(ValueError, match=r"^filter_top_k must"):
        LocalizerConfig().with_parameters(filter_top_k=0).validate()
    with pytest.raises(ValueError, match=r"^sequence_filter must"):
        LocalizerConfig().with_parameters(sequence_filter="yes").validate()
    assert LocalizerConfig().with_parameters(sequence_filter=True).validate().estimate_settings().radius_m == 25.0


# ------------------------------------------------------------------------- synthetic route runs
def route_run(query_x_m: np.ndarray, database_descriptors: np.ndarray, query_descriptors: np.ndarray, **config):
    """Single-frame and filtered errors (metres) of queries at ``query_x_m`` on the route."""
    database = route_database(database_descriptors)
    stamps = [START_NS + i * PERIOD_NS for i in range(len(query_x_m))]
    single = Localizer(database, LocalizerConfig()).localize_batch(query_descriptors)
    filtered = Localizer(database, filter_config(**config)).localize_sequence(query_descriptors, stamps)
    single_error = np.array([abs(east_of(database, e) - x) for e, x in zip(single, query_x_m, strict=True)])
    filtered_error = np.array([abs(east_of(database, e) - x) for e, x in zip(filtered, query_x_m, strict=True)])
    return single_error, filtered_error, filtered


def test_aliased_places_fool_single_frame_but_not_the_filter():
    """Places 300-309 look like places 100-109, slightly MORE like the queries there than the true places."""
    place_x = np.arange(N_PLACES) * SPACING_M
    database_descriptors = smooth_descriptors(place_x)
    query_x = np.arange(0, 240) * SPACING_M + 1.0  # drives the first 480 m, between the places
    queries = noisy(smooth_descriptors(query_x), 0.3, seed=3)
    aliased = np.arange(100, 110)
    mixed = database_descriptors[aliased] + 0.3 * (queries[aliased] - database_descriptors[aliased])
    database_descriptors[aliased + 200] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)

    single_error, filtered_error, estimates = route_run(query_x, database_descriptors, queries)
    assert np.sum(single_error[aliased] > 300.0) >= 8  # single frame: the wrong place, 400 m away
    assert np.all(filtered_error[aliased] < 6.0)
    assert all(estimates[i].status is FixStatus.FIX for i in aliased)
    assert np.median(filtered_error[20:]) < 3.0
    assert np.percentile(filtered_error[20:], 95) <= np.percentile(single_error[20:], 95) + 1.0


def test_kidnapped_filter_recovers_within_a_few_frames():
    place_x = np.arange(N_PLACES) * SPACING_M
    database_descriptors = smooth_descriptors(place_x)
    query_x = np.concatenate([np.arange(0, 100), np.arange(300, 360)]) * SPACING_M + 1.0  # teleport at query 100
    queries = noisy(smooth_descriptors(query_x), 0.3, seed=4)

    _, filtered_error, _ = route_run(query_x, database_descriptors, queries)
    assert np.all(filtered_error[30:100] < 6.0)
    frames_to_recover = int(np.argmax(filtered_error[100:] < 6.0))
    assert frames_to_recover <= 3
    assert np.all(filtered_error[100 + frames_to_recover :] < 6.0)

    # With (almost) no kidnap mass the old place wins for longer: the mixing is what recovers quickly.
    _, stubborn_error, _ = route_run(query_x, database_descriptors, queries, filter_kidnap_probability=1e-15)
    assert int(np.argmax(stubborn_error[100:] < 6.0)) > frames_to_recover


def test_stamp_going_backwards_or_a_long_gap_resets_the_filter():
    place_x = np.arange(N_PLACES) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    queries = noisy(smooth_descriptors(place_x[:30] + 1.0), 0.3, seed=5)
    localizer = Localizer(database, filter_config(filter_max_gap_s=1.0))
    sequence_filter = localizer.sequence_filter
    assert sequence_filter is not None
    for i in range(10):
        localizer.localize(queries[i], stamp_ns=START_NS + i * PERIOD_NS)
    assert sequence_filter.resets == 0
    localizer.localize(queries[10], stamp_ns=START_NS)  # backwards: a replayed bag
    assert sequence_filter.resets == 1
    localizer.localize(queries[11], stamp_ns=START_NS + 5 * 10**9)  # 5 s gap > filter_max_gap_s
    assert sequence_filter.resets == 2
    localizer.localize(queries[12], stamp_ns=START_NS + 5 * 10**9 + PERIOD_NS)  # normal step
    assert sequence_filter.resets == 2
    localizer.localize(queries[13], displacement_m=2.0)  # odometry only, no stamp: still predicts
    assert sequence_filter.resets == 2
    with pytest.raises(ValueError, match="stamp_ns or displacement_m"):
        localizer.localize(queries[14])

    # Right after a reset the belief is the normalised likelihood of that one query.
    localizer.reset()
    localizer.localize(queries[20], stamp_ns=START_NS)
    similarities, indices = database.search(queries[20], localizer.config.filter.top_k)
    contrast = (similarities[0] - similarities[0].mean()) / similarities[0].std()  # step 2, temperature 1
    expected = np.full(len(database), math.exp(contrast[-1] - contrast[0]))
    expected[indices[0]] = np.exp(contrast - contrast[0])
    assert np.allclose(sequence_filter.belief, expected / expected.sum())


def test_disabled_filter_keeps_the_single_frame_path():
    place_x = np.arange(60) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    queries = noisy(smooth_descriptors(place_x + 1.0), 0.3, seed=6)
    localizer = Localizer(database, LocalizerConfig(sequence_filter=False))
    assert localizer.sequence_filter is None
    batch = localizer.localize_batch(queries)
    for i in range(5):
        single = localizer.localize(queries[i], stamp_ns=START_NS + i * PERIOD_NS)
        assert (single.lat, single.lon, single.confidence) == (batch[i].lat, batch[i].lon, batch[i].confidence)
    with pytest.raises(RuntimeError, match="sequence_filter"):
        localizer.localize_sequence(queries, [START_NS] * len(queries))


def test_no_match_queries_do_not_update_the_belief():
    place_x = np.arange(80) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    queries = noisy(smooth_descriptors(place_x + 1.0), 0.3, seed=7)
    localizer = Localizer(database, filter_config(min_similarity=0.5))
    twin = Localizer(database, filter_config(min_similarity=0.5))
    for i in range(20):
        localizer.localize(queries[i], stamp_ns=START_NS + i * PERIOD_NS)
        twin.localize(queries[i], stamp_ns=START_NS + i * PERIOD_NS)
    stranger = -queries[20]  # similarity far below min_similarity everywhere
    estimate = localizer.localize(stranger, stamp_ns=START_NS + 20 * PERIOD_NS)
    assert estimate.status is FixStatus.NO_MATCH and estimate.confidence == 0.0
    # Only the motion step of 0.2 s happened, exactly as a bare prediction of the same belief.
    twin.sequence_filter.predict(0.2)
    assert np.allclose(localizer.sequence_filter.belief, twin.sequence_filter.belief)
    uniform = Localizer(database, filter_config()).sequence_filter.belief
    assert not np.allclose(localizer.sequence_filter.belief, uniform)


# ----------------------------------------------------------------------------------------- off-map state
def _in_out_in_run(config: FilterConfig, score_offset: float = 0.0, pass_cosine: bool = False):
    """A drive on the map (60 frames), off it (40 frames of another map), back on it (60 frames) at 2 m/frame.

    ``score_offset`` is added to the similarities the filter weighs (as re-ranking adds label agreement);
    ``pass_cosine`` gives the filter the best cosine as well."""
    place_x = np.arange(N_PLACES) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    query_x = np.concatenate([np.arange(0, 60), np.arange(200, 260)]) * SPACING_M + 1.0
    on_map = noisy(smooth_descriptors(query_x), 0.3, seed=11)
    off_map = noisy(smooth_descriptors(np.arange(40) * SPACING_M, seed=99), 0.3, seed=12)  # another map
    queries = np.concatenate([on_map[:60], off_map, on_map[60:]])
    truth = np.concatenate([query_x[:60], np.full(40, np.nan), query_x[60:]])
    similarities, indices = database.search(queries, 50)
    sequence = SequenceFilter(database, config)
    off, fixed, error = [], [], []
    for row in range(len(queries)):
        sequence.predict(None, SPACING_M)
        sequence.update(similarities[row] + score_offset, indices[row],
                        float(similarities[row].max()) if pass_cosine else None)
        estimate = sequence.estimate()
        off.append(sequence.off_map_probability)
        fixed.append(estimate.status is FixStatus.FIX)
        error.append(abs(east_of(database, estimate) - truth[row]))
    return np.array(off), np.array(fixed), np.array(error), sequence.resets


def test_off_map_state_leaves_and_reenters_the_map_without_resets():
    config = FilterConfig(temperature=0.05, kidnap_probability=0.01, exit_probability=0.02,
                          entry_probability=0.1, offmap_similarity=0.6)
    off, fixed, error, resets = _in_out_in_run(config)
    assert resets == 0
    assert np.all(off[10:60] < 0.05) and np.all(error[10:60] < 6.0)  # on the map: located, nearly no off mass
    assert np.all(off[63:100] > 0.95) and not fixed[63:100].any()  # off the map: it says so, no fix
    back = int(np.argmax(error[100:] < 6.0))
    assert back <= 5 and np.all(error[100 + back + 2 :] < 6.0) and np.all(off[100 + back + 2 :] < 0.05)
    assert fixed[110:].all()

    # Without the off-map state the filter keeps fixing a place while it is off the map.
    _, fixed_without, _, _ = _in_out_in_run(dataclasses.replace(config, exit_probability=0.0))
    assert fixed_without[63:100].mean() > 0.5


def test_off_map_state_reads_the_best_cosine_when_the_scores_are_re_ranked():
    config = FilterConfig(temperature=0.05, kidnap_probability=0.01, exit_probability=0.02,
                          entry_probability=0.1, offmap_similarity=0.6)
    off, _, _, _ = _in_out_in_run(config)
    shifted, _, _, _ = _in_out_in_run(config, score_offset=2.0, pass_cosine=True)
    np.testing.assert_allclose(shifted, off, atol=1e-6)  # the place likelihoods are relative: same belief
    blind, _, _, _ = _in_out_in_run(config, score_offset=2.0)  # scores against a cosine threshold: never off
    assert np.all(blind[63:100] < 0.05)


def test_off_map_parameters_are_checked():
    with pytest.raises(ValueError, match="exit_probability"):
        FilterConfig(exit_probability=1.5).validate()
    with pytest.raises(ValueError, match="offmap_similarity"):
        FilterConfig(offmap_similarity=2.0).validate()
    assert FilterConfig(exit_probability=0.0).off_map_prior == 0.0
    assert FilterConfig(exit_probability=0.01, entry_probability=0.09).off_map_prior == pytest.approx(0.1)


def test_frames_that_look_unmapped_lower_confidence_but_keep_the_track():
    """Fog lowers every similarity: the off-map mass rises, yet the place belief is the one a filter without the
    off-map state has (step 4: it keeps following the motion), and the fix is no longer confident."""
    place_x = np.arange(N_PLACES) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    query_x = np.arange(0, 60) * SPACING_M + 1.0
    similarities, indices = database.search(noisy(smooth_descriptors(query_x), 0.3, seed=13), 50)
    with_off_map = SequenceFilter(database, FilterConfig(exit_probability=0.02, offmap_similarity=0.6))
    without = SequenceFilter(database, FilterConfig(exit_probability=0.0))
    for row in range(len(query_x)):
        foggy = row >= 30  # the ranking stays, but the best cosine looks like an unmapped view
        for sequence in (with_off_map, without):
            sequence.predict(None, SPACING_M)
            sequence.update(similarities[row], indices[row], 0.3 if foggy else None)
        assert np.allclose(with_off_map.belief, without.belief)
    assert with_off_map.off_map_probability > 0.9 and with_off_map.estimate().status is FixStatus.LOW_CONFIDENCE
    assert abs(east_of(database, with_off_map.estimate()) - query_x[-1]) < 6.0


def test_frames_closer_than_the_evidence_spacing_weigh_less():
    """After 1 m of travel with a 6 m spacing an observation's exponents are one sixth; a stopped vehicle (no
    travel) adds no evidence; 6 m or more, or spacing 0, weigh fully."""
    database = route_database(smooth_descriptors(np.arange(50) * SPACING_M))
    scores, entries = np.array([0.9, 0.85, 0.6, 0.5]), np.array([3, 10, 20, 30])
    contrast = contrast_normalised(scores)
    likelihood = np.full(len(database), math.exp(contrast[-1] - contrast[0]))
    likelihood[entries] = np.exp(contrast - contrast[0])  # temperature 1

    def moved_and_updated(travel_m: float, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
        sequence = SequenceFilter(database, FilterConfig(exit_probability=0.0, evidence_spacing_m=spacing_m,
                                                         temperature=1.0, position_sigma_m=1.0))
        sequence.update(np.array([1.0, 0.0]), np.array([25, 40]))  # a first, fully weighted observation
        sequence.predict(None, displacement_m=travel_m)
        moved = sequence.belief
        sequence.update(scores, entries)
        return moved, sequence.belief

    for travel, spacing, weight in ((1.0, 6.0, 1 / 6), (0.0, 6.0, 0.0), (6.0, 6.0, 1.0), (1.0, 0.0, 1.0)):
        moved, updated = moved_and_updated(travel, spacing)
        expected = moved * likelihood**weight
        assert np.allclose(updated, expected / expected.sum())


def test_predicted_interval_is_what_the_filter_will_predict_over():
    """What a measured displacement must cover: the stamps since the previous query, unless the filter will not
    predict (no filter, no previous query, a stamp going backwards or a gap beyond filter_max_gap_s)."""
    database = route_database(smooth_descriptors(np.arange(50) * SPACING_M))
    query = smooth_descriptors(np.array([21.0]))[0].astype(np.float32)
    assert Localizer(database, LocalizerConfig(sequence_filter=False)).predicted_interval(START_NS) is None
    localizer = Localizer(database, filter_config())
    assert localizer.predicted_interval(START_NS) is None  # nothing before
    localizer.localize(query, stamp_ns=START_NS)
    assert localizer.predicted_interval(START_NS + PERIOD_NS) == (START_NS, START_NS + PERIOD_NS)
    assert localizer.predicted_interval(START_NS - 1) is None  # backwards: a reset
    assert localizer.predicted_interval(START_NS + 1_000_000_001) is None  # beyond filter_max_gap_s 1 s: a reset
    localizer.reset()
    assert localizer.predicted_interval(START_NS + PERIOD_NS) is None


def test_a_reconfigured_localizer_continues_the_sequence_unless_the_filter_changed():
    """The node rebuilds its localizer when a parameter changes: min_confidence keeps the belief and the warm-up
    (it only turns the belief into an estimate), a filter parameter restarts the filter."""
    place_x = np.arange(N_PLACES) * SPACING_M
    database = route_database(smooth_descriptors(place_x))
    query_x = np.arange(0, 30) * SPACING_M + 1.0
    queries = noisy(smooth_descriptors(query_x), 0.3, seed=5)
    stamps = [START_NS + i * PERIOD_NS for i in range(len(query_x))]
    localizer = Localizer(database, filter_config(filter_warmup_m=20.0))
    first = localizer.localize_sequence(queries[:20], stamps[:20])
    assert first[-1].status is FixStatus.FIX and first[0].status is FixStatus.LOW_CONFIDENCE
    belief = localizer.sequence_filter.belief

    stricter = localizer.reconfigured(localizer.config.with_parameters(min_confidence=0.35))
    np.testing.assert_allclose(stricter.sequence_filter.belief, belief)
    assert stricter.sequence_filter.warmup_left_m == 0.0 and stricter.sequence_filter.resets == 0
    assert stricter.localize(queries[20], stamp_ns=stamps[20]).status is FixStatus.FIX

    hotter = stricter.reconfigured(stricter.config.with_parameters(filter_temperature=2.0))
    assert hotter.sequence_filter.resets == 1 and hotter.sequence_filter.warmup_left_m == 20.0
    assert hotter.localize(queries[21], stamp_ns=stamps[21]).status is FixStatus.LOW_CONFIDENCE
