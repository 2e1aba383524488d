"""Tests of semloc_ros.core.calibration: precision/recall thresholds and covariance coverage/scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semloc_ros.core.calibration import (
    calibrated_covariance,
    covariance_coverage,
    covariance_scale,
    fit_covariance_model,
    gaussian_2d_coverage,
    mahalanobis_squared,
    operating_point,
    precision_recall_curve,
    threshold_at_precision,
)

# Scores with labels (True = in the database), hand-ranked:
# 0.9 T, 0.8 T, 0.7 F, 0.6 T, 0.5 T, 0.4 F, 0.3 F, 0.2 T
SCORES = np.array([0.5, 0.9, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4])
LABELS = np.array([True, True, False, False, True, True, True, False])


def test_precision_recall_curve_by_hand():
    curve = precision_recall_curve(SCORES, LABELS)
    assert curve.n_positive == 5 and curve.n_negative == 3
    assert np.allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert np.allclose(curve.precision, [1, 1, 2 / 3, 3 / 4, 4 / 5, 4 / 6, 4 / 7, 5 / 8])
    assert np.allclose(curve.recall, [1 / 5, 2 / 5, 2 / 5, 3 / 5, 4 / 5, 4 / 5, 4 / 5, 1])
    assert np.allclose(curve.false_positive_rate, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])


def test_ties_share_one_operating_point_and_nan_scores_are_never_accepted():
    curve = precision_recall_curve([0.5, 0.5, 0.5, 0.1, math.nan], [True, False, True, False, True])
    assert np.allclose(curve.thresholds, [0.5, 0.1])
    assert np.allclose(curve.precision, [2 / 3, 2 / 4])
    assert np.allclose(curve.recall, [2 / 3, 2 / 3])  # the NaN-scored positive is never accepted


def test_threshold_at_target_precision_maximises_recall():
    assert threshold_at_precision(SCORES, LABELS, 1.0).point.threshold == pytest.approx(0.8)
    choice = threshold_at_precision(SCORES, LABELS, 0.75)
    assert choice.achieved
    assert choice.point.threshold == pytest.approx(0.5)  # precision 4/5 >= 0.75 at recall 4/5
    assert (choice.point.precision, choice.point.recall) == pytest.approx((0.8, 0.8))
    assert choice.point.false_positive_rate == pytest.approx(1 / 3)
    assert threshold_at_precision(SCORES, LABELS, 0.6).point.threshold == pytest.approx(0.2)  # everything


def test_unreachable_precision_rejects_everything():
    choice = threshold_at_precision([0.9, 0.5], [False, True], 0.9)
    assert not choice.achieved
    assert choice.point.threshold == math.inf and choice.point.n_accepted == 0
    assert math.isnan(choice.point.precision) and choice.point.recall == 0.0
    with pytest.raises(ValueError, match="target_precision"):
        threshold_at_precision(SCORES, LABELS, 0.0)
    with pytest.raises(ValueError, match="labels"):
        precision_recall_curve([0.1, 0.2], [0, 2])


def test_operating_point_on_held_out_data():
    point = operating_point([0.9, 0.6, 0.55, 0.2], [True, False, True, True], 0.55)
    assert point.n_accepted == 3
    assert (point.precision, point.recall, point.false_positive_rate) == pytest.approx((2 / 3, 2 / 3, 1.0))


def gaussian_errors(covariances: np.ndarray, true_scale: float, seed: int) -> np.ndarray:
    """One error per covariance, drawn from N(0, true_scale * covariance)."""
    rng = np.random.default_rng(seed)
    factors = np.linalg.cholesky(covariances * true_scale)
    return np.einsum("nij,nj->ni", factors, rng.standard_normal((len(covariances), 2)))


def random_covariances(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, np.pi, n)
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], axis=1).reshape(n, 2, 2)
    variances = rng.uniform(1.0, 400.0, size=(n, 2))
    return rotations @ (variances[:, :, np.newaxis] * np.eye(2)) @ rotations.transpose(0, 2, 1)


def test_expected_gaussian_coverages():
    assert gaussian_2d_coverage(1.0) == pytest.approx(0.3935, abs=1e-4)
    assert gaussian_2d_coverage(2.0) == pytest.approx(0.8647, abs=1e-4)


def test_mahalanobis_distance_by_hand():
    covariances = np.array([[[4.0, 0.0], [0.0, 1.0]], [[2.0, 1.0], [1.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]])
    errors = np.array([[2.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    distances = mahalanobis_squared(errors, covariances)
    assert distances[0] == pytest.approx(2.0)  # 4/4 + 1/1
    assert distances[1] == pytest.approx(2.0 / 3.0)  # [1 1] S^-1 [1 1]^T with S^-1 = [[2,-1],[-1,2]]/3
    assert math.isnan(distances[2])  # singular covariance


def test_coverage_of_correct_covariances_matches_the_gaussian_fractions():
    covariances = random_covariances(20000, seed=0)
    distances = mahalanobis_squared(gaussian_errors(covariances, 1.0, seed=1), covariances)
    coverage = covariance_coverage(distances)
    assert coverage["within_1sigma"] == pytest.approx(0.393, abs=0.01)
    assert coverage["within_2sigma"] == pytest.approx(0.865, abs=0.01)
    assert covariance_scale(distances) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("true_scale", [0.25, 4.0, 30.0])
def test_scale_factor_recovers_a_known_misscaling(true_scale):
    covariances = random_covariances(20000, seed=2)
    distances = mahalanobis_squared(gaussian_errors(covariances, true_scale, seed=3), covariances)
    before = covariance_coverage(distances)
    assert abs(before["within_2sigma"] - 0.865) > 0.1  # visibly mis-calibrated
    scale = covariance_scale(distances)
    assert scale == pytest.approx(true_scale, rel=0.05)
    after = covariance_coverage(distances, scale)
    assert after["within_2sigma"] == pytest.approx(0.865, abs=0.005)  # what the scale was fitted to
    assert after["within_1sigma"] == pytest.approx(0.393, abs=0.015)  # and the other ellipse follows


def test_covariance_model_recovers_an_unreported_isotropic_error():
    """True errors ~ N(0, 0.5 S + (4 m)^2 I) with reported covariances S of 0.25-5 m sigmas: an error the
    localizer does not see (like a camera one lane beside the mapped one) dominates the small covariances, so no
    single scale fits both coverages; the scale plus an added sigma does, on a second sample too."""

    def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        covariances = random_covariances(n, seed) / 16.0
        true = calibrated_covariance(covariances, 0.5, 4.0)
        factors = np.linalg.cholesky(true)
        errors = np.einsum("nij,nj->ni", factors, np.random.default_rng(seed + 1).standard_normal((n, 2)))
        return errors, covariances

    errors, covariances = sample(1500, seed=5)
    distances = mahalanobis_squared(errors, covariances)
    scaled = covariance_coverage(distances, covariance_scale(distances))
    assert abs(scaled["within_1sigma"] - 0.393) > 0.04  # the 2-sigma-fitted scale misses the 1-sigma coverage
    model = fit_covariance_model(errors, covariances)
    assert model["n"] == 1500
    assert model["extra_sigma_m"] >= 3.0  # the unreported error is found (scale and sigma trade off a little)
    test_errors, test_covariances = sample(4000, seed=7)
    fitted = calibrated_covariance(test_covariances, model["scale"], model["extra_sigma_m"])
    coverage = covariance_coverage(mahalanobis_squared(test_errors, fitted))
    assert coverage["within_1sigma"] == pytest.approx(0.393, abs=0.025)
    assert coverage["within_2sigma"] == pytest.approx(0.865, abs=0.025)
    nothing = fit_covariance_model(np.full((3, 2), np.nan), covariances[:3])
    assert nothing["n"] == 0 and math.isnan(nothing["scale"])


def test_undefined_distances_are_counted_not_used():
    coverage = covariance_coverage(np.array([0.5, math.nan, 9.0, 3.0]))
    assert coverage["n"] == 3 and coverage["n_undefined"] == 1
    assert coverage["within_1sigma"] == pytest.approx(1 / 3) and coverage["within_2sigma"] == pytest.approx(2 / 3)
    assert math.isnan(covariance_scale(np.array([math.nan])))


# ------------------------------------------------------------------------------------ temperature fit


def retrieval_rows(n_queries: int, n_places: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Top-20 retrieval where the true place (index = query) is the most similar most of the time."""
    rng = np.random.default_rng(seed)
    similarities = 1.0 - spread * rng.uniform(0.0, 1.0, size=(n_queries, n_places))
    truth = rng.integers(0, n_places, n_queries)
    similarities[np.arange(n_queries), truth] = 1.0 - spread * rng.uniform(0.0, 0.2, n_queries)
    order = np.argsort(-similarities, axis=1)[:, :20]
    return np.take_along_axis(similarities, order, axis=1), order, [np.array([t]) for t in truth]


def test_fitted_temperature_is_the_likelihood_maximum_and_follows_the_similarity_scale():
    from semloc_ros.core.calibration import fit_temperature, temperature_log_likelihood

    similarities, indices, positives = retrieval_rows(200, 300, spread=0.5, seed=0)
    fitted = fit_temperature(similarities, indices, positives, 300)
    best = temperature_log_likelihood(similarities, indices, positives, 300, fitted)
    for other in (fitted / 3, fitted * 3):
        assert temperature_log_likelihood(similarities, indices, positives, 300, other) < best
    # The same retrieval with every similarity gap 50 times smaller (a coarse descriptor): T scales along.
    compressed = 1.0 - (1.0 - similarities) / 50
    assert fit_temperature(compressed, indices, positives, 300) == pytest.approx(fitted / 50, rel=0.15)
    with pytest.raises(ValueError, match="positive"):
        fit_temperature(similarities, indices, [np.zeros(0, np.int64)] * 200, 300)


# ---------------------------------------------------------------------------- evaluation integration


def _route_database_and_drives():
    """A 600 m route of 300 places; a calibration and a report drive on it; a drive of another map."""
    from semloc_ros.core.database import GeoDatabase, PlaceRecord
    from semloc_ros.core.geodesy import LocalENU
    from semloc_ros.io.datasets import Drive, Frame

    rng = np.random.default_rng(5)
    frame = LocalENU(51.752, -1.2577)
    knots = rng.standard_normal((70, 32))

    def describe(x: np.ndarray, noise: float) -> np.ndarray:
        left = (x // 10).astype(int)
        blend = ((x % 10) / 10)[:, np.newaxis]
        values = (1 - blend) * knots[left] + blend * knots[left + 1] + noise * rng.standard_normal((len(x), 32))
        return (values / np.linalg.norm(values, axis=1, keepdims=True)).astype(np.float32)

    def drive(name: str, x: np.ndarray, north: float) -> Drive:
        lat, lon, _ = frame.to_geodetic(x, np.full_like(x, north))
        frames = [
            Frame(f"{name}/{i}", 10**9 * 10 + i * 200_000_000, float(a), float(o))
            for i, (a, o) in enumerate(zip(lat, lon, strict=True))
        ]
        return Drive(name, frames, condition=name.split("_")[0])

    place_x = np.arange(300) * 2.0
    lat, lon, _ = frame.to_geodetic(place_x, np.zeros_like(place_x))
    database = GeoDatabase(32, "test")
    database.add(describe(place_x, 0.0), [PlaceRecord(float(a), float(o)) for a, o in zip(lat, lon, strict=True)])
    query_x = np.arange(1.0, 590.0, 2.0)
    calibration = drive("day_calib", query_x, 3.5)
    report = drive("night_report", query_x, 3.5)
    other_x = np.arange(0.0, 500.0, 2.0)
    other_map = drive("other_map", other_x, 0.0)
    other_descriptors = (rng.standard_normal((len(other_x), 32))).astype(np.float32)  # unrelated places
    return (
        database,
        (calibration, describe(query_x, 0.15)),
        (report, describe(query_x, 0.2)),
        (other_map, other_descriptors),
    )


def test_calibration_of_a_method_on_held_out_drives(tmp_path):
    from semloc_ros.core.localizer import LocalizerConfig
    from semloc_ros.evaluation.calibration import (
        FilterDrive,
        calibrate_method,
        fit_filter_parameters,
        fit_filter_temperature,
        rejection_scores,
    )
    from semloc_ros.evaluation.loop import evaluate_query_descriptors
    from semloc_ros.evaluation.plots import plot_rejection_curves
    from semloc_ros.evaluation.report import format_localization_table, format_rejection_table

    database, (calibration, calibration_d), (report, report_d), (other_map, other_d) = _route_database_and_drives()
    config = LocalizerConfig().with_parameters(sequence_filter=True, filter_temperature=0.02)
    results = []
    for drive, descriptors in ((calibration, calibration_d), (report, report_d)):
        result = evaluate_query_descriptors(
            database, drive, descriptors, threshold_m=25.0, ns=(1,), localizer_config=config
        )
        results.append({"method": "synthetic", **result})
    negatives = rejection_scores(database, other_map, other_d, config, min_route_m=200.0)
    assert negatives["n_negatives"] == int(np.sum(np.arange(0.0, 500.0, 2.0) > 200.0))  # first 200 m excluded
    assert set(negatives["scores"]) == {"best_similarity", "confidence", "filtered_confidence"}

    fitted = fit_filter_temperature(database, calibration, calibration_d, config)
    assert 1e-4 <= fitted < 1.0 and fitted != 0.02
    fitted_config, fit = fit_filter_parameters(
        [FilterDrive(database, calibration, calibration_d)], config, temperatures=(0.01, 1.0),
        kidnap_probabilities=(1e-2,), reverse_weights=(0.0, 1.0),
    )
    assert fit["fitted_on"] == ["day_calib"] and len(fit["grid"]) == 2 and len(fit["reverse_weights"]) == 2
    best = min(fit["grid"], key=lambda row: row["mean_capped_error_m"])
    assert fitted_config.filter.temperature == best["temperature"]
    assert {row["temperature"] for row in fit["grid"]} == {0.01, 1.0}
    direction = min(fit["reverse_weights"], key=lambda row: row["mean_capped_error_m"])
    assert fitted_config.filter.reverse_weight == direction["reverse_weight"]
    for result in results:
        assert result["filtered"]["filter_temperature"] == 0.02
        assert result["filtered"]["localization_recall_at_1"] >= result["localization_recall_at_1"] - 1.0
        assert len(result["filtered"]["per_query"]["mahalanobis_sq"]) == len(result["per_query"]["error_m"])

    calibrated = calibrate_method(results, [negatives], "day_calib", target_precision=0.95)
    assert calibrated["held_out_query_drives"] == ["night_report"]
    assert calibrated["negatives"]["n_calibration"] + calibrated["negatives"]["n_report"] == negatives["n_negatives"]
    similarity = calibrated["rejection"]["best_similarity"]
    assert similarity["config_parameter"] == "min_similarity" and similarity["achieved_on_calibration"]
    assert similarity["calibration"]["precision"] >= 0.95
    held_out = similarity["per_drive"]["night_report"]
    # Unrelated random descriptors are far less similar than noisy views of the route: clean separation.
    assert held_out["false_positive_rate"] <= 0.05 and held_out["recall"] > 0.8
    assert held_out["curve"]["recall"][-1] == pytest.approx(1.0)
    assert 0.0 <= held_out["fix_precision_filtered"] <= held_out["precision"]
    for mode in ("single", "filtered"):
        scale = calibrated["covariance"][mode]["scale"]
        assert math.isfinite(scale) and scale > 0
        assert calibrated["covariance"][mode]["per_drive"]["night_report"]["scaled"]["scale"] == scale
        model = calibrated["covariance"][mode]["model"]
        assert model["scale"] > 0 and model["extra_sigma_m"] >= 0
        assert calibrated["covariance"][mode]["per_drive"]["night_report"]["calibrated"]["n"] > 0

    table = format_localization_table(results, {"synthetic": calibrated})
    assert "day (calib)" in table and "filtered" in table
    assert "night_report" in format_rejection_table({"synthetic": calibrated})
    png = plot_rejection_curves({"synthetic": calibrated}, tmp_path / "rejection.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_negatives_of_several_maps_are_split_by_map():
    from semloc_ros.evaluation.calibration import split_negatives

    def negatives(name, seed, values):
        return {"drive": name, "map": seed, "scores": {"best_similarity": values}}

    two_maps = [negatives("a_day", 21, [1, 2]), negatives("b_day", 33, [3, 4, 5]), negatives("a_night", 21, [6])]
    fit, report, rule = split_negatives(two_maps, "best_similarity")
    assert (fit, report) == ([1, 2, 6], [3, 4, 5]) and "map 21 calibrates" in rule
    one_map = [negatives("a_day", 21, [1, 2, 3]), negatives("a_night", 21, [4, 5])]
    fit, report, rule = split_negatives(one_map, "best_similarity")
    assert (fit, report) == ([1, 2, 4], [3, 5]) and "half" in rule


def test_fit_sequence_filter_reports_recall_per_drive(load_script, capsys, tmp_path):
    from semloc_ros.core.localizer import LocalizerConfig
    from semloc_ros.evaluation.calibration import FilterDrive

    script = load_script("fit_sequence_filter.py")
    database, (calibration, calibration_d), _, _ = _route_database_and_drives()
    chosen = LocalizerConfig().with_parameters(sequence_filter=True, filter_temperature=1.0)
    configs = {"chosen": chosen, "undirected": chosen.with_parameters(filter_reverse_weight=1.0)}
    [row] = script.recall_rows([FilterDrive(database, calibration, calibration_d)], configs, 25.0)
    assert row["drive"] == "day_calib" and row["queries"] == len(calibration)
    assert set(row) == {"drive", "queries", "single", "chosen", "undirected"}
    assert 0.0 <= row["single"] <= 100.0 and row["chosen"] >= row["single"] - 1.0
    assert "day_calib" in capsys.readouterr().out
    assert script.main(["--dataset", str(tmp_path)]) == 2  # no splits.json: one line, no traceback
    assert capsys.readouterr().err.startswith("fit_sequence_filter: ")
    assert script.main(["--dataset", str(tmp_path), "--stamp-scales", "1", "0"]) == 2
    assert "--stamp-scales must be > 0" in capsys.readouterr().err


def test_speed_time_constant_is_chosen_on_drives_replayed_at_other_speeds():
    from semloc_ros.core.localizer import LocalizerConfig
    from semloc_ros.evaluation.calibration import FilterDrive, at_speed, fit_speed_time_constant

    database, (calibration, calibration_d), _, _ = _route_database_and_drives()
    case = FilterDrive(database, calibration, calibration_d)
    slower = at_speed(case, 2.0)
    gaps = np.diff(slower.drive.stamps_ns)
    assert np.array_equal(gaps, 2 * np.diff(calibration.stamps_ns))  # the speed halved, the frames kept
    assert slower.drive.stamps_ns[0] == calibration.stamps_ns[0] and slower.descriptors is calibration_d
    config = LocalizerConfig().with_parameters(sequence_filter=True, filter_temperature=1.0)
    fitted, rows = fit_speed_time_constant([case], config, stamp_scales=(1.0, 2.0), time_constants=(0.0, 5.0))
    assert [row["speed_time_constant_s"] for row in rows] == [0.0, 5.0]
    best = min(rows, key=lambda row: row["mean_capped_error_m"])
    assert fitted.filter.speed_time_constant_s == best["speed_time_constant_s"]
    assert all(math.isfinite(row["mean_capped_error_m"]) for row in rows)


def test_warmup_is_chosen_by_the_fix_counts_it_keeps_and_removes():
    from semloc_ros.core.localizer import LocalizerConfig
    from semloc_ros.evaluation.calibration import FilterDrive, fit_filter_warmup, fix_counts

    database, (calibration, calibration_d), _, _ = _route_database_and_drives()
    case = FilterDrive(database, calibration, calibration_d)
    config = LocalizerConfig().with_parameters(sequence_filter=True, filter_temperature=1.0, filter_warmup_m=0.0)
    right, wrong = fix_counts([case], config, 25.0)
    assert right > 0 and right + wrong <= len(calibration)
    beyond_the_drive = 1e6
    fitted, rows = fit_filter_warmup([case], config, 25.0, warmups_m=(0.0, 20.0, beyond_the_drive))
    assert [row["warmup_m"] for row in rows] == [0.0, 20.0, beyond_the_drive]
    assert (rows[0]["right_fixes"], rows[0]["wrong_fixes"]) == (right, wrong)
    assert rows[1]["right_fixes"] + rows[1]["wrong_fixes"] < right + wrong  # the first 20 m publish no fix
    assert (rows[2]["right_fixes"], rows[2]["wrong_fixes"]) == (0, 0)
    fewest = min(row["wrong_fixes"] for row in rows)
    assert fitted.filter.warmup_m == min(row["warmup_m"] for row in rows if row["wrong_fixes"] == fewest)


def test_filter_fusion_experiment_weighs_the_two_cosines(load_script, capsys, tmp_path):
    script = load_script("experiment_filter_fusion.py")
    rng = np.random.default_rng(3)
    semantic, histogram = rng.standard_normal((4, 8)), rng.standard_normal((4, 5))
    unit = [rows / np.linalg.norm(rows, axis=1, keepdims=True) for rows in (semantic, histogram)]
    fused = script.fused(semantic, histogram, 0.25)
    assert fused.shape == (4, 13)
    expected = 0.25 * unit[0] @ unit[0][0] + 0.75 * unit[1] @ unit[1][0]
    assert np.allclose(fused @ fused[0], expected, atol=1e-6)  # the inner product: w cos_sem + (1 - w) cos_hist

    database, _, _, _ = _route_database_and_drives()
    from semloc_ros.core.database import GeoDatabase

    other = GeoDatabase(5, "histogram")
    other.add(rng.standard_normal((len(database) - 1, 5)), [database.record(i) for i in range(len(database) - 1)])
    with pytest.raises(ValueError, match="different places"):
        script.fused_database(database, other, 0.5)
    assert script.main(["--dataset", str(tmp_path)]) == 2  # no splits.json: one line, no traceback
    assert capsys.readouterr().err.startswith("experiment_filter_fusion: ")
    assert script.main(["--dataset", str(tmp_path), "--write-config", str(tmp_path / "x.yaml")]) == 2
    assert script.main(["--dataset", str(tmp_path), "--fusion-weights", "0.5", "1.5"]) == 2
    assert "--fusion-weights must lie in [0, 1]" in capsys.readouterr().err
