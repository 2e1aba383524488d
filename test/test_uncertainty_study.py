"""Tests of the study plumbing of scripts/fit_uncertainty.py (semloc_ros.evaluation.uncertainty_study)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from semloc_ros.evaluation.uncertainty_study import (
    check_distinct_drives,
    fit_offmap_similarity,
    held_out_maps,
    read_localizer_config,
    training_maps,
    tuning_maps,
    write_config_values,
)

ROOT = Path(__file__).resolve().parents[1]


def test_written_values_keep_the_comments_and_read_back_as_the_declared_types(tmp_path):
    path = tmp_path / "semloc.yaml"
    path.write_text((ROOT / "config" / "semloc.yaml").read_text())
    write_config_values(path, {"covariance_cross_scale": 2.0, "integrity_weights": [1.0, 0.0, -2.5, 0.0, 0.0, 3.0],
                               "integrity_threshold": 0.25})
    text = path.read_text()
    assert "# best_cosine, confidence, alignment" in text  # the comment stays
    params = yaml.safe_load(text)["localizer_node"]["ros__parameters"]
    assert params["covariance_cross_scale"] == 2.0 and isinstance(params["covariance_cross_scale"], float)
    assert params["integrity_weights"] == [1.0, 0.0, -2.5, 0.0, 0.0, 3.0]
    assert all(isinstance(w, float) for w in params["integrity_weights"])  # a ROS double array, not integers
    assert read_localizer_config(path).integrity_threshold == 0.25
    with pytest.raises(ValueError, match="no_such_parameter"):
        write_config_values(path, {"no_such_parameter": 1.0})


def write_root(root: Path, drives: list[tuple[str, int, str, float]], splits: dict) -> Path:
    """A semloc-sim root of one-frame drives ``(name, seed, condition, camera yaw)`` and its splits.json."""
    for name, seed, condition, yaw in drives:
        folder = root / "drives" / name
        folder.mkdir(parents=True)
        camera = {"hpr_deg": [yaw, 0.0, 0.0]}
        (folder / "drive.json").write_text(json.dumps({"seed": seed, "condition": condition, "camera": camera}))
        (folder / "poses.csv").write_text("frame,stamp_ns,lat,lon,alt_m,heading_rad\n0,1,51.7,-1.2,60,0\n")
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_training_maps_group_the_train_drives_of_every_root_by_map_and_camera(tmp_path):
    v1 = write_root(tmp_path / "v1", [("a_night", 1, "night", 0.0), ("a_day", 1, "day", 0.0), ("b_day", 2, "day", 0.0),
                                      ("b_dusk", 2, "dusk", 0.0), ("e_db", 9, "day", 0.0), ("e_q", 9, "night", 0.0)],
                    {"train": ["a_night", "a_day", "b_day", "b_dusk"], "database": "e_db", "queries": ["e_q"]})
    v2 = write_root(tmp_path / "v2", [("c_day", 3, "day", 0.0), ("c_fog", 3, "fog", 0.0),
                                      ("c_rear_day", 3, "day", 180.0), ("c_rear_dusk", 3, "dusk", 180.0),
                                      ("f_db", 8, "day", 0.0), ("f_q", 8, "fog", 0.0),
                                      ("f_rear_db", 8, "day", 180.0), ("f_rear_q", 8, "night", 180.0),
                                      ("t_db", 7, "day", 0.0), ("t_q", 7, "night", 0.0)],
                    {"train": ["c_day", "c_rear_day", "c_fog", "c_rear_dusk"], "database": "f_db", "queries": ["f_q"],
                     "rear": {"database": "f_rear_db", "queries": ["f_rear_q"]},
                     "tuning": {"database": "t_db", "queries": ["t_q"]}})
    maps = training_maps([v1, v2])
    assert [(m.name, m.database.name, [q.name for q in m.queries]) for m in maps] == [
        ("map1", "a_day", ["a_night"]), ("map2", "b_day", ["b_dusk"]), ("map3", "c_day", ["c_fog"]),
        ("map3-rear", "c_rear_day", ["c_rear_dusk"])]  # no evaluation, rear-set or tuning drive
    assert maps[2].world == maps[3].world != maps[1].world  # a rear map is never out-of-map for its seed
    held = held_out_maps(v2)
    assert [(m.name, m.database.name) for m in held] == [("v2:evaluation", "f_db"), ("v2:rear", "f_rear_db"),
                                                        ("v2:tuning", "t_db")]
    assert held[0].world == held[1].world and [m.name for m in tuning_maps(v2)] == ["v2:tuning"]
    assert tuning_maps(v1) == []
    clash = write_root(tmp_path / "clash", [("z_day", 2, "day", 0.0), ("z_dusk", 2, "dusk", 0.0)],
                       {"train": ["z_day", "z_dusk"], "database": "z_day", "queries": ["z_dusk"]})
    with pytest.raises(ValueError, match="map seeds"):
        training_maps([v1, clash])
    twin = write_root(tmp_path / "twin", [("e_db", 5, "day", 0.0), ("e_q", 5, "night", 0.0)],
                      {"train": [], "database": "e_db", "queries": ["e_q"]})
    check_distinct_drives([*held_out_maps(v1), *held_out_maps(v1)])  # the same folders twice: one description
    with pytest.raises(ValueError, match="same name and frame count"):
        check_distinct_drives([*held_out_maps(v1), *held_out_maps(twin)])
    with pytest.raises(ValueError, match="at least two training maps"):
        training_maps([clash])


def test_offmap_similarity_separates_right_in_map_frames_from_out_of_map_frames():
    from semloc_ros.evaluation.fix_records import FixRecords

    def records(best: np.ndarray, in_map: bool) -> FixRecords:
        n = len(best)
        zeros2 = np.zeros((n, 2))
        return FixRecords("d", "db", "single", in_map, np.arange(n), zeros2, np.zeros(n), zeros2, zeros2,
                          np.zeros((n, 2, 2)), zeros2, np.ones(n, bool), {"best_cosine": best},
                          np.full(n, 1000.0))

    rng = np.random.default_rng(0)
    inside = records(rng.normal(0.97, 0.005, 500), True)
    outside = records(rng.normal(0.93, 0.005, 500), False)
    assert 0.94 < fit_offmap_similarity([inside, outside], 25.0, 200.0) < 0.96


def test_the_landmark_rule_is_chosen_where_featureless_fixes_are_out_of_map_and_off_where_they_are_right():
    from semloc_ros.evaluation.fix_records import FixRecords
    from semloc_ros.evaluation.uncertainty_study import fit_min_landmark_share

    def records(shares: np.ndarray, in_map: bool) -> FixRecords:
        n = len(shares)
        zeros2 = np.zeros((n, 2))
        return FixRecords("d", "db", "single", in_map, np.arange(n), zeros2, np.zeros(n), zeros2, zeros2,
                          np.zeros((n, 2, 2)), zeros2, np.ones(n, bool), {}, np.full(n, 1000.0), shares)

    rng = np.random.default_rng(1)
    landmarks = rng.uniform(0.05, 0.5, 400)
    right = records(np.concatenate([landmarks, np.full(4, 0.003)]), True)  # a few right fixes of empty views
    empty_ends = records(np.concatenate([np.full(40, 0.001), np.zeros(20)]), False)  # look-alike empty ends
    share, scores = fit_min_landmark_share([right, empty_ends], 25.0, 200.0)
    assert share == 0.0025 and scores["0.0025"] > scores["0.0"] and scores["0.0025"] > scores["0.005"]
    assert right.featureless_withheld(0.0025).fix.sum() == 404
    assert empty_ends.featureless_withheld(0.0025).fix.sum() == 0
    assert right.featureless_withheld(0.005).fix.sum() == 400
    distinct = records(landmarks[:100], False)  # out-of-map views with landmarks: the rule cannot help
    assert fit_min_landmark_share([right, distinct], 25.0, 200.0)[0] == 0.0


def test_fit_uncertainty_refuses_to_write_what_a_report_only_run_does_not_fit(tmp_path, capsys, load_script):
    script = load_script("fit_uncertainty.py")
    config = tmp_path / "semloc.yaml"
    assert script.main(["--dataset", str(tmp_path), "--report-only", "--write-config", str(config)]) == 2
    assert "--report-only" in capsys.readouterr().err and not config.exists()


def test_timed_study_writes_the_results_or_says_why_not(tmp_path, capsys):
    import json

    from semloc_ros.evaluation.uncertainty_study import timed_study

    study = timed_study("fit_x", lambda: {"rows": [1]}, tmp_path / "out")
    assert study["rows"] == [1] and study["seconds"] >= 0
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == study

    def missing() -> dict:
        raise FileNotFoundError("no splits.json in /data")

    assert timed_study("fit_x", missing, tmp_path / "none") is None
    assert capsys.readouterr().err == "fit_x: no splits.json in /data\n"
    assert not (tmp_path / "none").exists()
