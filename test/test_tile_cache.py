"""The sequence filter on a tiled map (core/tile_cache.py steps 2 and 4, sequence_filter step 9): it continues
across tile swaps, and a filter warming up is not lost."""

from __future__ import annotations

import numpy as np
import pytest
from test_reranking import database_with_thumbnails
from test_tiles import SPACING_M, UNGATED, error_m, query, route_database

from semloc_ros.core.estimate import FixStatus
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.localizer import Localizer, LocalizerConfig
from semloc_ros.core.sequence_filter import FilterConfig, SequenceFilter
from semloc_ros.core.tile_cache import TileCacheConfig, TiledLocalizer
from semloc_ros.core.tiles import TiledMap, TileView

PERIOD_NS = 10**9  # one query per place: 10 m in 1 s, the filter's prior speed
WARMUP_M = 100.0
FILTERED = UNGATED.with_parameters(sequence_filter=True, filter_warmup_m=WARMUP_M, filter_max_gap_s=2.0,
                                   filter_offmap_similarity=0.9)  # the test queries' cosines: 0.94-0.97, all mapped
FOLLOW = TileCacheConfig(radius_m=300.0, keep_radius_m=450.0)


@pytest.fixture(scope="module")
def road():
    return route_database(np.arange(0.0, 3000.0, SPACING_M))


@pytest.fixture(scope="module")
def tiled(road, tmp_path_factory) -> TiledMap:
    return TiledMap.create(tmp_path_factory.mktemp("tiles") / "map", road, tile_size_m=500.0)


def started(tiled: TiledMap, road, config=FILTERED, cache: TileCacheConfig = FOLLOW, row: int = 0) -> TiledLocalizer:
    """A localizer holding the tiles around ``row`` (its prior), the prior cleared at once."""
    located = TiledLocalizer(tiled, config, cache)
    located.set_prior(float(road.lat[row]), float(road.lon[row]))
    assert located.cache.wait_idle()
    located.clear_prior()
    return located


def drive(located: TiledLocalizer, road, rows, seed: int = 1, first_stamp: int | None = None) -> list:
    """Query each row, waiting for the tiles each query asks for; stamped at the row's place (one period per
    place) or one period apart from ``first_stamp`` periods."""
    estimates = []
    for step, row in enumerate(rows):
        stamp = (row if first_stamp is None else first_stamp + step) * PERIOD_NS
        estimates.append(located.localize(query(road, row, seed=seed + step), stamp_ns=stamp))
        assert located.cache.wait_idle()
    return estimates


def current_filter(located: TiledLocalizer) -> SequenceFilter:
    return located.cache.current.localizer.sequence_filter


# ------------------------------------------------------------------------------------ step 4: continuation


def test_fixes_continue_across_tile_swaps_after_the_first_warmup(road, tiled) -> None:
    located = started(tiled, road)
    try:
        rows = range(0, 160)  # 1.6 km: four tile borders
        estimates = drive(located, road, rows)
        first_fix = next(i for i, e in enumerate(estimates) if e.status is FixStatus.FIX)
        assert first_fix * SPACING_M == pytest.approx(WARMUP_M, abs=SPACING_M)
        after = estimates[first_fix:]
        assert all(e.status is FixStatus.FIX for e in after)  # a fresh filter would warm up after every swap
        assert max(error_m(e, road, row) for e, row in zip(after, rows[first_fix:], strict=True)) < SPACING_M
        assert all(e.cues["jump"] == 0.0 for e in after)  # the integrity monitor continued, in the new frame
        assert located.cache.stats.switches >= 4 and located.cache.stats.searches == 0
        assert current_filter(located).resets == 0 and current_filter(located).warmup_left_m == 0.0
    finally:
        located.close()


def test_the_query_after_a_swap_predicts_across_it(road, tiled) -> None:
    located = started(tiled, road)
    try:
        row = 0
        while located.cache.stats.switches < 2:  # the first switch is the prior's
            drive(located, road, [row])
            row += 1
        swapped = located.cache.current.localizer
        assert not swapped.sequence_filter.initialised  # built fresh by the loader thread
        stamp = row * PERIOD_NS
        assert located.predicted_interval(stamp) == (stamp - PERIOD_NS, stamp)  # continued: it will predict
        assert swapped.sequence_filter.initialised and swapped.sequence_filter.resets == 0
        estimate = drive(located, road, [row])[0]
        assert located.cache.current.localizer is swapped and swapped.sequence_filter.resets == 0
        assert estimate.status is FixStatus.FIX and error_m(estimate, road, row) < SPACING_M
    finally:
        located.close()


def views(tiled: TiledMap, *keys) -> TileView:
    return TileView({key: tiled.load_tile(key) for key in keys}, tiled.model_id, tiled.dimension)


def test_the_belief_keeps_its_places_on_shared_tiles_and_drops_the_evicted(tiled) -> None:
    first, second, third, far = tiled.keys[:3] + tiled.keys[-1:]
    old, new, elsewhere = views(tiled, first, second), views(tiled, second, third), views(tiled, far)
    old_indices, new_indices = old.shared_places(new)
    assert len(old_indices) == len(tiled.load_tile(second))
    np.testing.assert_array_equal(old.lat[old_indices], new.lat[new_indices])  # the same places
    np.testing.assert_array_equal(old.lon[old_indices], new.lon[new_indices])

    config = FilterConfig(exit_probability=0.01, warmup_m=WARMUP_M)
    previous = SequenceFilter(old, config)
    evicted, shared = np.setdiff1d(np.arange(len(old)), old_indices)[:3], old_indices[:4]
    previous.update(np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.concatenate([evicted, shared]))
    previous.predict(1.0)
    before = previous.belief

    adopted = SequenceFilter(new, config)
    assert adopted.adopt(previous, old_indices, new_indices)
    belief = adopted.belief
    expected = before[old_indices] / before[old_indices].sum()  # evicted mass dropped, the rest renormalised
    np.testing.assert_allclose(belief[new_indices], expected)
    assert belief.sum() == pytest.approx(1.0)
    assert np.all(belief[np.setdiff1d(np.arange(len(new)), new_indices)] == 0.0)  # the new tile starts at 0
    assert adopted.off_map_probability == previous.off_map_probability
    assert adopted.warmup_left_m == pytest.approx(previous.warmup_left_m) and previous.warmup_left_m < WARMUP_M
    assert adopted.speed_mps == previous.speed_mps and adopted.resets == previous.resets

    none, nowhere = old.shared_places(elsewhere)
    assert len(none) == len(nowhere) == 0
    restarted = SequenceFilter(elsewhere, config)
    assert not restarted.adopt(previous, none, nowhere)  # nothing overlaps: a real restart
    assert not restarted.initialised and restarted.warmup_left_m == WARMUP_M
    assert restarted.resets == previous.resets + 1
    other = SequenceFilter(new, FilterConfig(exit_probability=0.01, warmup_m=WARMUP_M, temperature=2.0))
    assert not other.adopt(previous, old_indices, new_indices)  # another filter's belief is not this one's
    assert not other.initialised


def test_a_rebuild_continues_unless_the_filter_parameters_changed(road, tiled) -> None:
    located = started(tiled, road)
    try:
        drive(located, road, range(0, 12))
        located.set_config(FILTERED.with_parameters(top_k=8))  # not a filter parameter: same belief
        assert located.cache.wait_idle()
        assert drive(located, road, [12])[0].status is FixStatus.FIX
        assert current_filter(located).warmup_left_m == 0.0
        located.set_config(FILTERED.with_parameters(filter_temperature=2.0))
        assert located.cache.wait_idle()
        assert drive(located, road, [13])[0].status is FixStatus.LOW_CONFIDENCE  # a restart, warm-up included
        assert current_filter(located).warmup_left_m == WARMUP_M and current_filter(located).resets == 1
    finally:
        located.close()


def test_a_continued_localizer_keeps_the_smoothed_lane_evidence() -> None:
    """Four frames a lane aside, then one well aligned: the lane term stays wide on the successor as it would
    on the same localizer (a fresh one measures the last frame alone)."""
    database, thumbnails = database_with_thumbnails()
    rng = np.random.default_rng(5)
    aside = thumbnails[4].copy()
    noise = rng.random(aside.shape) < 0.4
    aside[noise] = rng.integers(0, aside.max() + 1, int(noise.sum()))
    query_descriptor = database.descriptors[4][None]
    config = LocalizerConfig().with_parameters(rerank_top_k=5, integrity_threshold=0.0, lane_alignment=0.9,
                                               lane_alignment_width=0.01, position_sigma_cross_m=5.0,
                                               lane_alignment_time_constant_s=10.0)
    previous = Localizer(database, config)
    previous.localize_batch(np.repeat(query_descriptor, 4, 0), thumbnails=np.stack([aside] * 4),
                            stamps_ns=[i * 100_000_000 for i in range(4)])

    def last_cross_variance(localizer: Localizer) -> float:
        (estimate,) = localizer.localize_batch(query_descriptor, thumbnails=thumbnails[4:5], stamps_ns=[400_000_000])
        return float(estimate.covariance_enu[0, 0])

    successor, everything = Localizer(database, config), np.arange(len(database))
    successor.continue_from(previous, everything, everything)
    assert last_cross_variance(successor) > 24.0 > 20.0 > last_cross_variance(Localizer(database, config))


def test_a_frame_change_keeps_the_geodetic_position() -> None:
    old, new = LocalENU(48.137, 11.575, 500.0), LocalENU(48.140, 11.590, 520.0)
    east, north = new.east_north_from(old, 120.0, -40.0)
    lat, lon, _ = old.to_geodetic(120.0, -40.0)
    back_lat, back_lon, _ = new.to_geodetic(east, north)
    assert geodesic_distance_m(back_lat, back_lon, lat, lon) < 0.01  # horizontal: each frame at its own altitude
    assert old.east_north_from(old, 1.5, 2.5) == (1.5, 2.5)


# ------------------------------------------------------------------------------ step 2: warming is not lost


def test_a_warming_filter_does_not_search_the_map_a_lost_one_does(road, tiled) -> None:
    lost_after = TileCacheConfig(radius_m=300.0, keep_radius_m=450.0, lost_after=2)
    warming = started(tiled, road, FILTERED.with_parameters(filter_warmup_m=1e6), lost_after)
    try:
        estimates = drive(warming, road, range(0, 20))
        assert all(e.status is FixStatus.LOW_CONFIDENCE for e in estimates)
        assert sum(e.warming_up for e in estimates) >= 15
        assert warming.cache.stats.searches == 0  # 20 queries without a FIX, lost_after 2
    finally:
        warming.close()
    located = started(tiled, road, FILTERED.with_parameters(filter_warmup_m=20.0), lost_after)
    try:
        assert drive(located, road, range(0, 4))[-1].status is FixStatus.FIX
        assert current_filter(located).warmup_left_m == 0.0
        far = 280  # kidnapped (stamps go on) to a place outside the loaded tiles: no FIX
        statuses = [e.status for e in drive(located, road, [far] * lost_after.lost_after, 5, first_stamp=4)]
        assert FixStatus.FIX not in statuses and located.cache.stats.searches == 1
        again = drive(located, road, range(far, far + 5), first_stamp=6)  # found: a restart on other tiles
        assert current_filter(located).resets == 1
        assert again[-1].status is FixStatus.FIX and error_m(again[-1], road, far + 4) < SPACING_M
    finally:
        located.close()


def test_only_an_estimate_withheld_by_the_warmup_is_marked_warming_up(road) -> None:
    """Sequence filter step 8 marks the confident estimates it withholds; the integrity gate clears the mark of
    one it would refuse; a filter that has warmed up marks nothing."""

    def localized(config: LocalizerConfig) -> list:
        localizer = Localizer(road, config)
        return [localizer.localize(query(road, row, seed=1 + row), stamp_ns=row * PERIOD_NS) for row in range(8)]

    warming = localized(FILTERED.with_parameters(filter_warmup_m=1e6))
    assert all(e.status is FixStatus.LOW_CONFIDENCE for e in warming)
    assert [e.warming_up for e in warming] == [e.confidence >= FILTERED.min_confidence for e in warming]
    assert sum(e.warming_up for e in warming) >= 5
    refusing = localized(FILTERED.with_parameters(filter_warmup_m=1e6, integrity_weights=(1.0, 0, 0, 0, 0, 0),
                                                  integrity_bias=-10.0, integrity_threshold=0.5))
    assert not any(e.warming_up for e in refusing)
    warmed = localized(FILTERED.with_parameters(filter_warmup_m=0.0))
    assert not any(e.warming_up for e in warmed) and warmed[-1].status is FixStatus.FIX
