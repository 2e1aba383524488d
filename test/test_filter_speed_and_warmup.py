"""The sequence filter's speed estimate (step 7) and warm-up (step 8) on a synthetic route."""

from __future__ import annotations

import numpy as np
import pytest
from test_sequence_filter import (
    N_PLACES,
    PERIOD_NS,
    SPACING_M,
    START_NS,
    east_of,
    filter_config,
    noisy,
    route_database,
    smooth_descriptors,
)

from semloc_ros.core.estimate import EstimateSettings, FixStatus
from semloc_ros.core.localizer import Localizer
from semloc_ros.core.sequence_filter import FilterConfig, SequenceFilter


def _slow_run(time_constant_s: float) -> tuple[np.ndarray, float]:
    """Queries at 5 m/s (the prior is 10 m/s), one every 0.2 s along the route: signed filtered errors (m) and the
    filter's final speed."""
    place_x = np.arange(N_PLACES) * SPACING_M
    query_x = np.arange(0, 300) * 5.0 * PERIOD_NS / 1e9 + 1.0
    queries = noisy(smooth_descriptors(query_x), 0.3, seed=5)
    database = route_database(smooth_descriptors(place_x))
    localizer = Localizer(database, filter_config(filter_speed_time_constant_s=time_constant_s))
    stamps = [START_NS + i * PERIOD_NS for i in range(len(query_x))]
    estimates = localizer.localize_sequence(queries, stamps)
    signed = np.array([east_of(database, e) - x for e, x in zip(estimates, query_x, strict=True)])
    return signed, localizer.sequence_filter.speed_mps


def test_online_speed_estimate_follows_a_vehicle_slower_than_the_prior():
    """Step 7: at 5 m/s against a 10 m/s prior the estimate runs ahead of the vehicle; the speed estimate
    converges to the vehicle's speed and the lead goes."""
    fixed, fixed_speed = _slow_run(0.0)
    adapted, adapted_speed = _slow_run(10.0)
    assert fixed_speed == pytest.approx(10.0)
    assert adapted_speed == pytest.approx(5.0, abs=1.0)
    assert np.median(fixed[100:]) > 0.4
    assert abs(np.median(adapted[100:])) < 0.5 * np.median(fixed[100:])


def test_speed_estimate_learns_from_fixes_only_and_a_reset_restores_the_prior():
    database = route_database(smooth_descriptors(np.arange(N_PLACES) * SPACING_M))
    sequence = SequenceFilter(database, FilterConfig(exit_probability=0.0, speed_time_constant_s=1.0, warmup_m=0.0),
                              EstimateSettings(min_confidence=0.0))
    others = np.arange(100, 150)

    def observe(place: int) -> None:
        sequence.update(np.concatenate([[1.0], np.zeros(len(others))]), np.concatenate([[place], others]))
        sequence.estimate()

    observe(10)
    for place in (11, 12, 13):  # 2 m per 0.5 s: 4 m/s against the 10 m/s prior
        sequence.predict(0.5)
        observe(place)
    learned = sequence.speed_mps
    assert learned < 8.0
    sequence.predict(None, displacement_m=2.0)  # a measured distance: no speed sample
    observe(14)
    assert sequence.speed_mps == learned
    sequence.reset()
    assert sequence.speed_mps == pytest.approx(10.0)

    unsure = SequenceFilter(database, FilterConfig(exit_probability=0.0, speed_time_constant_s=1.0),
                            EstimateSettings(min_confidence=1.1))  # no estimate is a FIX: nothing to learn from
    sequence = unsure
    observe(10)
    sequence.predict(0.5)
    observe(11)
    assert sequence.speed_mps == pytest.approx(10.0)


def test_no_fix_before_the_warmup_travel_and_again_after_a_reset():
    """Step 8: a confident young belief is not a FIX until warmup_m travelled; a reset starts the warm-up again,
    a measured standstill does not advance it."""
    database = route_database(smooth_descriptors(np.arange(N_PLACES) * SPACING_M))
    sequence = SequenceFilter(database, FilterConfig(exit_probability=0.0, warmup_m=12.0),
                              EstimateSettings(min_confidence=0.0))
    others = np.arange(200, 250)

    def status(place: int) -> FixStatus:
        sequence.update(np.concatenate([[1.0], np.zeros(len(others))]), np.concatenate([[place], others]))
        return sequence.estimate().status

    statuses = [status(10)]
    assert sequence.warmup_left_m == pytest.approx(12.0)
    for place in (12, 14, 16):  # 0.5 s at the 10 m/s prior: 5 m per step
        sequence.predict(0.5)
        statuses.append(status(place))
    assert statuses == [FixStatus.LOW_CONFIDENCE] * 3 + [FixStatus.FIX]
    assert sequence.warmup_left_m == 0.0

    sequence.reset()
    assert sequence.warmup_left_m == pytest.approx(12.0)
    assert status(20) is FixStatus.LOW_CONFIDENCE
    sequence.predict(None, displacement_m=0.0)  # standing still: no travel, no warm-up
    assert status(20) is FixStatus.LOW_CONFIDENCE
    assert sequence.warmup_left_m == pytest.approx(12.0)
    sequence.predict(None, displacement_m=12.0)
    assert status(26) is FixStatus.FIX

    without = SequenceFilter(database, FilterConfig(exit_probability=0.0, warmup_m=0.0),
                             EstimateSettings(min_confidence=0.0))
    sequence = without
    assert status(10) is FixStatus.FIX  # warmup_m 0: the first estimate may be a FIX
