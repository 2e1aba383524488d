"""Named evaluation protocols: confuser databases, traffic queries with/without masking, per-segmenter rows."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from semloc_ros.core.database import GeoDatabase
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.labels import SEMLOC_SIM
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.evaluation.protocols import (
    CONFUSER_SPACING_M,
    Variant,
    confuser_database,
    find_confuser_drives,
    protocol_variants,
    shift_drive,
)
from semloc_ros.io.datasets import Drive, Frame, load_semloc_sim_drive

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = LocalENU(51.752, -1.2577, 60.0)
SKY, ROAD, CAR = SEMLOC_SIM.id_of("SKY"), SEMLOC_SIM.id_of("ROAD"), SEMLOC_SIM.id_of("CAR")


def write_drive(root: Path, name: str, places, info: dict, cars: bool = False, pole: bool = False) -> None:
    """A semloc-sim drive of 48x64 frames 10 m apart along east; the sky share encodes the place."""
    drive = root / "drives" / name
    (drive / "rgb").mkdir(parents=True)
    (drive / "label").mkdir()
    (drive / "drive.json").write_text(json.dumps(info))
    rng = np.random.default_rng(len(name))
    lat, lon, _ = ORIGIN.to_geodetic(np.array([p * 10.0 for p in places]), np.zeros(len(places)))
    with open(drive / "poses.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame", "stamp_ns", "lat", "lon", "alt_m", "heading_rad"])
        for i, p in enumerate(places):
            writer.writerow([i, (i + 1) * 10**8, lat[i], lon[i], 60.0, 0.0])
            labels = np.full((48, 64), ROAD, np.uint8)
            labels[: 6 * (p + 1)] = SKY
            if cars:  # a vehicle hiding the right quarter of the view
                labels[:, 48:64] = CAR
            if pole:
                labels[:, 30:33] = SEMLOC_SIM.id_of("POLE")
            cv2.imwrite(str(drive / "label" / f"{i:06d}.png"), labels)
            cv2.imwrite(str(drive / "rgb" / f"{i:06d}.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


def write_two_map_dataset(root: Path, traffic: bool = False) -> None:
    """Map 10: database (day, with a pole the queries lack) and night queries; map 21: a day drive that looks
    even more like the queries than their own places (a confuser) and a night drive (never a confuser: other
    condition)."""
    write_drive(root, "db", range(6), {"seed": 10, "condition": "day"}, pole=True)
    write_drive(root, "q", (1, 3, 5), {"seed": 10, "condition": "night", "traffic": 0.1 if traffic else 0.0},
                cars=traffic)
    write_drive(root, "other_day", range(6), {"seed": 21, "condition": "day"})
    write_drive(root, "other_night", range(6), {"seed": 21, "condition": "night"})
    (root / "splits.json").write_text(json.dumps({"database": "db", "queries": ["q"], "train": []}))


def test_shift_drive_moves_positions_and_keeps_geometry() -> None:
    lat, lon, _ = ORIGIN.to_geodetic(np.array([0.0, 30.0, 30.0]), np.array([0.0, 0.0, 40.0]))
    drive = Drive("d", [Frame(f"d/{i}", i, float(a), float(o)) for i, (a, o) in enumerate(zip(lat, lon, strict=True))])
    moved = shift_drive(drive, 5000.0, -2000.0, ORIGIN, name="c1")
    east, north, _ = ORIGIN.to_enu(moved.lat, moved.lon)
    np.testing.assert_allclose(east, [5000.0, 5030.0, 5030.0], atol=1e-3)
    np.testing.assert_allclose(north, [-2000.0, -2000.0, -1960.0], atol=1e-3)
    assert geodesic_distance_m(moved.lat[1], moved.lon[1], moved.lat[2], moved.lon[2]) == pytest.approx(40.0, abs=0.05)
    assert [f.image_id for f in moved] == ["c1/d/0", "c1/d/1", "c1/d/2"]
    assert drive.frames[0].lat == lat[0]  # the source drive is untouched


def test_confuser_database_places_every_map_far_from_the_others(tmp_path) -> None:
    write_two_map_dataset(tmp_path)
    database = load_semloc_sim_drive(tmp_path, "db")
    confusers = find_confuser_drives([tmp_path], database)
    assert [d.name for d in confusers] == ["other_day"]  # same condition, other map; night drive left out
    combined = confuser_database(database, confusers + confusers)  # the same map twice: two offsets
    assert len(combined) == 18 and combined.name == "db+2maps"
    np.testing.assert_array_equal(combined.lat[:6], database.lat)  # the true database is unchanged
    distances = geodesic_distance_m(database.lat[0], database.lon[0], combined.lat[6:], combined.lon[6:])
    assert np.all(distances > CONFUSER_SPACING_M - 100)
    first, second = combined.frames[6], combined.frames[12]
    assert geodesic_distance_m(first.lat, first.lon, second.lat, second.lon) > CONFUSER_SPACING_M


def test_protocol_variants_name_every_row() -> None:
    segs = [Path("/m/day-plain.pt"), Path("/m/day-selftrain.pt")]
    variants = protocol_variants(["semantic", "rgb"], segs, mask_variants=False, oracle=True)
    assert [v.name for v in variants] == ["semantic@day-plain", "semantic@day-selftrain", "semantic", "rgb"]
    assert variants[2].oracle and variants[2].segmenter is None
    masked = protocol_variants(["label-histogram"], None, mask_variants=True, oracle=False)
    assert [(v.name, v.mask_dynamic) for v in masked] == [("label-histogram", False), ("label-histogram+mask", True)]
    assert Variant("rgb").segmenter_name == ""


def _evaluate(tmp_path: Path, protocol: str, dataset: Path, *extra: str) -> dict:
    from semloc_ros.commands import evaluate

    out = tmp_path / protocol
    argv = ["--dataset", str(dataset), "--protocol", protocol, "--methods", "label-histogram", "--out", str(out),
            "--threshold-m", "4", "--threads", "1", "--untrained-ok", "--quiet", "--no-plots", *extra]
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert evaluate.main(argv) == 0
    return json.loads((out / "results.json").read_text())


def test_confusers_protocol_lets_look_alike_maps_compete(tmp_path, monkeypatch) -> None:
    from semloc_ros.models import pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")  # untrained segmenter: plumbing only
    write_two_map_dataset(tmp_path / "data")
    standard = _evaluate(tmp_path, "standard", tmp_path / "data", "--oracle")
    confusers = _evaluate(tmp_path, "confusers", tmp_path / "data", "--oracle")
    oracle = {r["method"]: r for r in standard["results"]}["label-histogram-oracle"]
    assert oracle["recall_at_n_all_queries"]["1"] == 100.0
    assert confusers["protocol"]["name"] == "confusers"
    assert confusers["n_database"] == 12 and confusers["confusers"]["drives"] == ["other_day"]
    confused = {r["method"]: r for r in confusers["results"]}["label-histogram-oracle"]
    # Each query looks exactly like its look-alike 5 km away and almost like its true place (the pole): the
    # look-alike wins the top-1, the true place comes second.
    assert confused["recall_at_n_all_queries"]["1"] == 0.0
    assert confused["recall_at_n_all_queries"]["5"] == 100.0
    top1 = np.array(confused["per_query"]["top1_error_m"])
    assert np.all(top1 > CONFUSER_SPACING_M - 100)

    tables = subprocess.run([sys.executable, str(ROOT / "scripts" / "results_tables.py"),
                             str(tmp_path / "confusers" / "results.json")], capture_output=True, text=True, check=True)
    assert "| label-histogram-oracle | night | 0.0 | 100.0 |" in tables.stdout and "db+1maps" in tables.stdout


def test_dynamic_protocol_masks_vehicles(tmp_path, monkeypatch) -> None:
    from semloc_ros.models import pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_two_map_dataset(tmp_path / "data", traffic=True)
    results = _evaluate(tmp_path, "dynamic", tmp_path / "data")
    rows = {r["method"]: r for r in results["results"]}
    assert set(rows) == {"label-histogram", "label-histogram-oracle", "label-histogram+mask",
                         "label-histogram+mask-oracle"}
    assert rows["label-histogram+mask"]["model_id"].split("|segmenter:")[0].endswith("+mask-dynamic")
    # The car hides a quarter of every query: it lowers the similarity to the true place unless ignored.
    masked = np.array(rows["label-histogram+mask-oracle"]["per_query"]["best_similarity"])
    unmasked = np.array(rows["label-histogram-oracle"]["per_query"]["best_similarity"])
    assert np.all(masked > unmasked + 0.05), (masked, unmasked)
    assert rows["label-histogram+mask-oracle"]["top1_error_m"]["within_2m"] == 100.0


def test_protocols_refuse_what_they_cannot_score(tmp_path, capsys) -> None:
    from semloc_ros.commands import evaluate

    write_two_map_dataset(tmp_path / "data")  # no traffic anywhere
    base = ["--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "o"), "--quiet"]
    assert evaluate.main([*base, "--protocol", "dynamic"]) == 2
    assert "traffic" in capsys.readouterr().err
    assert evaluate.main([*base, "--protocol", "day-only"]) == 2
    assert "--segmenters" in capsys.readouterr().err
    assert evaluate.main([*base, "--protocol", "confusers", "--rejection-queries", "other_night"]) == 2
    assert "on the database map" in capsys.readouterr().err
    assert evaluate.main([*base, "--segmentation-drives", "no_such_drive"]) == 2
    assert "cannot read segmentation drive no_such_drive" in capsys.readouterr().err


def test_shifted_views_move_content_sideways_and_count_once_per_place(tmp_path, monkeypatch):
    from semloc_ros.core.views import shift_view
    from semloc_ros.evaluation.loop import distinct_places
    from semloc_ros.mapping import build_database
    from semloc_ros.models import pipeline
    from semloc_ros.models.pipeline import Pipeline

    ramp = np.tile(np.arange(10, dtype=np.uint8), (2, 3, 1))  # N=2, H=3, W=10
    np.testing.assert_array_equal(shift_view(ramp, 0.2)[0, 0], [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(shift_view(ramp, -0.2)[0, 0], [2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
    rgb = np.repeat(ramp[..., None], 3, axis=3)
    np.testing.assert_array_equal(shift_view(rgb, 0.1)[..., 0], shift_view(ramp, 0.1))

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_two_map_dataset(tmp_path / "data")
    drive = load_semloc_sim_drive(tmp_path / "data", "db")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        histogram = Pipeline.from_method("label-histogram", untrained_ok=True)
    database = build_database(histogram, drive, oracle=True, views=(0.0, -0.1, 0.1))
    assert len(database) == 18 and database.views == (0.0, -0.1, 0.1)
    assert list(database.image_ids[[0, 6, 12]]) == ["db/000000", "db/000000#view-0.1", "db/000000#view+0.1"]
    np.testing.assert_array_equal(database.lat[6:12], database.lat[:6])  # a view keeps its place's position
    assert not np.allclose(database.descriptors[6], database.descriptors[0])  # but looks different
    assert build_database(histogram, drive, oracle=True).views == (0.0,)

    similarities = np.array([[0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
    retrieved = np.array([[0, 6, 1, 12]])
    sims, places = distinct_places(similarities, retrieved, database.image_ids, 3)
    assert places.tolist() == [[0, 1, -1]] and sims[0, :2].tolist() == pytest.approx([0.9, 0.7])


def test_views_on_the_command_line(tmp_path, monkeypatch, capsys):
    from semloc_ros.commands import build_db
    from semloc_ros.models import pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_two_map_dataset(tmp_path / "data")
    results = _evaluate(tmp_path, "standard", tmp_path / "data", "--oracle", "--database-views", "0", "-0.05", "0.05")
    assert results["database_views"] == [0.0, -0.05, 0.05]
    oracle = {r["method"]: r for r in results["results"]}["label-histogram-oracle"]
    assert oracle["n_database"] == 18 and oracle["recall_at_n_all_queries"]["1"] == 100.0
    out = tmp_path / "views.semdb"
    source = f"semloc-sim:{tmp_path / 'data'}:db"
    common = ["--out", str(out), "--method", "label-histogram", "--untrained-ok", "--threads", "1", "--quiet"]
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert build_db.main([source, *common, "--views", "0", "0.1"]) == 0
    assert len(GeoDatabase.load(out)) == 12
    for bad in (["0", "0.7"], ["0.1", "0.1"]):
        with pytest.raises(SystemExit) as exit_info:
            build_db.main([source, *common, "--views", *bad])
        assert exit_info.value.code == 2 and "--views" in capsys.readouterr().err


def test_presets_name_whole_evaluations_and_the_command_line_overrides_them(tmp_path) -> None:
    from semloc_ros.commands.evaluate import localizer_configuration, parse_arguments
    from semloc_ros.evaluation.protocols import PRESETS, PROTOCOLS
    from semloc_ros.models.pipeline import METHODS

    out = ["--out", str(tmp_path / "o")]
    args = parse_arguments(["--preset", "views-rerank", *out])
    assert args.protocol == "standard" and args.database_views == [0.0, -0.1, 0.1, -0.2, 0.2, -0.3, 0.3]
    assert args.sequence_filter and args.segmentation_stride == 0 and args.query_stride == 3
    config = localizer_configuration(args)
    assert config.rerank.top_k == 50 and config.sequence_filter
    assert config.integrity_threshold == LocalizerConfig().integrity_threshold  # published: the shipped gate
    assert parse_arguments(["--preset", "standard", *out]).calibration_query == "eval_day_l1"  # named, not guessed

    overridden = parse_arguments(["--preset", "views-rerank", "--query-stride", "1", "--no-sequence-filter",
                                  "--set", "localizer_node.rerank_top_k=20", *out])
    assert overridden.query_stride == 1 and overridden.database_views == args.database_views
    assert localizer_configuration(overridden).rerank.top_k == 20
    assert not localizer_configuration(overridden).sequence_filter
    assert parse_arguments(["--preset", "confusers", *out]).protocol == "confusers"
    assert localizer_configuration(parse_arguments(["--preset", "standard", *out])).rerank.top_k == 0
    for preset in PRESETS.values():  # every preset is a valid evaluation
        assert preset.protocol in PROTOCOLS and set(preset.methods) <= set(METHODS)
        assert bool(preset.rejection_queries) == (preset.calibration_query is not None)  # run.py needs both
        localizer_configuration(parse_arguments(["--preset", preset.name, *out]))


def test_the_protocols_script_names_presets_instead_of_copying_flags() -> None:
    from semloc_ros.evaluation.protocols import PRESETS

    script = (ROOT / "scripts" / "evaluate_protocols.sh").read_text()
    runs = re.findall(r"^\s*run ([\w-]+) ", script, flags=re.MULTILINE)
    assert runs and set(runs) <= set(PRESETS)
    for flag in ("--rerank", "--database-views", "--sequence-filter", "--methods", "--query-stride"):
        assert flag not in script


def test_the_threshold_analysis_needs_its_drive_named_and_scores_the_shipped_configuration(tmp_path, monkeypatch,
                                                                                           capsys):
    from semloc_ros.commands import evaluate
    from semloc_ros.models import pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_two_map_dataset(tmp_path / "data")
    argv = ["--dataset", str(tmp_path / "data"), "--methods", "label-histogram", "--out", str(tmp_path / "x"),
            "--untrained-ok", "--quiet", "--no-plots"]
    assert evaluate.main([*argv, "--rejection-queries", "other_night"]) == 2
    assert "needs --calibration-query" in capsys.readouterr().err
    assert evaluate.main([*argv, "--calibration-query", "q"]) == 2
    assert "only used with --rejection-queries" in capsys.readouterr().err
    results = _evaluate(tmp_path, "standard", tmp_path / "data", "--rejection-queries", "other_night",
                        "--calibration-query", "q")
    shipped = LocalizerConfig().parameters()
    for name in ("covariance_cross_scale", "position_sigma_cross_m", "integrity_threshold", "filter_temperature"):
        assert results["localizer"][name] == shipped[name]  # the analysis changes nothing that is scored
    assert results["localizer"]["rerank_top_k"] == 50  # the rest is the shipped configuration
    assert "label-histogram" in results["calibration"]



def test_v2_day_only_preset_scores_each_segmenter_in_the_shipped_configuration(tmp_path, load_script) -> None:
    from semloc_ros.commands import evaluate
    from semloc_ros.commands.evaluate import localizer_configuration, parse_arguments
    from semloc_ros.core.views import RECOMMENDED_VIEWS
    from semloc_ros.models.segmentation import SegmentationNet, Segmenter

    args = parse_arguments(["--preset", "v2-day-only", "--out", str(tmp_path / "o")])
    assert args.protocol == "day-only" and args.methods == ["semantic", "label-histogram"]
    assert args.database_views == list(RECOMMENDED_VIEWS) and args.segmentation_drives == []
    config = localizer_configuration(args)
    assert config.rerank.top_k == 50 and config.sequence_filter

    write_two_map_dataset(tmp_path / "data")
    segmenter = tmp_path / "day-photometric.pt"
    Segmenter.from_net(SegmentationNet({"input_size": (48, 64)})).save(segmenter)
    out = tmp_path / "v2-day-only"
    argv = ["--preset", "v2-day-only", "--dataset", str(tmp_path / "data"), "--segmenters", str(segmenter),
            "--methods", "label-histogram", "--out", str(out), "--threads", "1", "--quiet", "--no-plots"]
    assert evaluate.main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    (row,) = summary["results"]
    assert row["method"] == "label-histogram@day-photometric" and "filtered" in row
    assert row["n_database"] == 6 * len(RECOMMENDED_VIEWS)
    assert set(summary["segmentation"]["day-photometric"]["drives"]) == {"db", "q"}
    table = load_script("results_tables.py").per_segmenter_table(summary)
    assert "| day-photometric | " in table and "night: mIoU · sem R@1/5 · hist R@1/5" in table
