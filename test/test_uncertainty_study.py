"""Tests of the study plumbing of scripts/fit_uncertainty.py (semloc_ros.evaluation.uncertainty_study)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from semloc_ros.evaluation.uncertainty_study import (
    fit_offmap_similarity,
    read_localizer_config,
    training_maps,
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


def test_training_maps_group_the_train_drives_by_map_with_the_day_drive_as_database(tmp_path):
    for name, seed, condition in (("a_night", 1, "night"), ("a_day", 1, "day"), ("b_day", 2, "day"),
                                  ("b_dusk", 2, "dusk"), ("e_db", 9, "day"), ("e_q", 9, "night")):
        folder = tmp_path / "drives" / name
        folder.mkdir(parents=True)
        (folder / "drive.json").write_text(json.dumps({"seed": seed, "condition": condition}))
        (folder / "poses.csv").write_text("frame,stamp_ns,lat,lon,alt_m,heading_rad\n0,1,51.7,-1.2,60,0\n")
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["a_night", "a_day", "b_day", "b_dusk"],
                                                      "database": "e_db", "queries": ["e_q"]}))
    maps = training_maps(tmp_path)
    assert [(m.database.name, [q.name for q in m.queries]) for m in maps] == [("a_day", ["a_night"]),
                                                                             ("b_day", ["b_dusk"])]


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
