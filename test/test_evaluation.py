"""semloc_ros.evaluation metrics against hand-computed cases; evaluate_method with a stand-in pipeline."""

from __future__ import annotations

import json
import math

import faiss
import numpy as np
import pytest
import torch

from semloc_ros.core.database import GeoDatabase, PlaceRecord
from semloc_ros.core.files import jsonable
from semloc_ros.core.geodesy import LocalENU, geodesic_distance_m
from semloc_ros.core.localizer import LocalizerConfig
from semloc_ros.evaluation.loop import evaluate_method, evaluate_query_descriptors
from semloc_ros.evaluation.metrics import (
    method_label,
    position_error_stats,
    positives_within,
    recall_at_n,
    recall_report,
    top1_recall_at_distances,
)
from semloc_ros.evaluation.report import format_table
from semloc_ros.io.datasets import Drive, Frame

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)

ORIGIN = LocalENU(51.752, -1.2577, 60.0)


def geo(east_north: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Lat/lon of points given in metres east/north of ORIGIN."""
    en = np.asarray(east_north, dtype=float)
    lat, lon, _ = ORIGIN.to_geodetic(en[:, 0], en[:, 1])
    return np.asarray(lat), np.asarray(lon)


# ------------------------------------------------------------------------------------------------- recall


RETRIEVED = np.array(
    [
        [3, 1, 2, 0, 4],  # positive 3 at rank 1
        [0, 2, 4, 1, 3],  # positive 1 at rank 4
        [2, 0, 1, 3, 4],  # no positive at all
        [4, 3, 2, 1, 0],  # positives {0, 2}: first hit at rank 3
    ]
)
POSITIVES = [np.array([3]), np.array([1]), np.array([], dtype=np.int64), np.array([0, 2])]


def test_recall_at_n_hand_computed() -> None:
    assert recall_at_n(RETRIEVED, POSITIVES, ns=(1, 3, 5)) == {1: 25.0, 3: 50.0, 5: 75.0}
    # ns are sorted, so the cumulative "correct from the first hit on" logic holds for any order given
    assert recall_at_n(RETRIEVED, POSITIVES, ns=(5, 1)) == {1: 25.0, 5: 75.0}


def test_recall_report_counts_queries_without_positive() -> None:
    report = recall_report(RETRIEVED, POSITIVES, ns=(1, 3, 5))
    assert report["n_queries"] == 4
    assert report["n_queries_without_positive"] == 1
    assert report["recall_at_n_all_queries"] == {1: 25.0, 3: 50.0, 5: 75.0}
    with_positive = report["recall_at_n_queries_with_positive"]
    assert with_positive[1] == pytest.approx(100 / 3)
    assert with_positive[3] == pytest.approx(200 / 3)
    assert with_positive[5] == pytest.approx(100.0)


def test_recall_ignores_missing_results_and_checks_lengths() -> None:
    retrieved = np.array([[-1, -1], [5, -1]])
    assert recall_at_n(retrieved, [np.array([0]), np.array([5])], ns=(1, 2)) == {1: 50.0, 2: 50.0}
    with pytest.raises(ValueError):
        recall_at_n(retrieved, [np.array([0])], ns=(1,))


def test_top1_recall_at_distances() -> None:
    errors = np.array([1.0, 7.0, 12.0, np.nan])
    assert top1_recall_at_distances(errors, (5, 10, 15)) == {5: 25.0, 10: 50.0, 15: 75.0}


def test_position_error_stats() -> None:
    stats = position_error_stats(np.array([1.0, 3.0, 4.0, 20.0, np.nan]))
    assert stats["n"] == 5 and stats["n_no_estimate"] == 1
    assert stats["median"] == pytest.approx(3.5)
    assert stats["mean"] == pytest.approx(7.0)
    assert stats["p95"] == pytest.approx(4.0 + 0.85 * 16.0)  # linear interpolation between 4 and 20
    assert stats["within_2m"] == pytest.approx(20.0)
    assert stats["within_5m"] == pytest.approx(60.0)
    assert stats["within_10m"] == pytest.approx(60.0)
    empty = position_error_stats(np.array([np.nan]))
    assert math.isnan(empty["median"]) and empty["within_10m"] == 0.0


# ------------------------------------------------------------------------------------------------- positives


def test_positives_within_hand_computed() -> None:
    db_lat, db_lon = geo([(0, 0), (10, 0), (20, 0), (30, 0), (100, 0)])
    q_lat, q_lon = geo([(5, 0), (26, 3), (60, 0), (109.99, 0), (110.01, 0)])
    positives = positives_within(q_lat, q_lon, db_lat, db_lon, threshold_m=10.0)
    assert [p.tolist() for p in positives] == [[0, 1], [3, 2], [], [4], []]  # sorted by distance


def test_positives_within_matches_brute_force_geodesic() -> None:
    rng = np.random.default_rng(0)
    db_lat, db_lon = geo(rng.uniform(-2000, 2000, size=(400, 2)).tolist())
    q_lat, q_lon = geo(rng.uniform(-2000, 2000, size=(60, 2)).tolist())
    threshold = 150.0
    positives = positives_within(q_lat, q_lon, db_lat, db_lon, threshold)
    for q in range(len(q_lat)):
        distances = geodesic_distance_m(q_lat[q], q_lon[q], db_lat, db_lon)
        expected = set(np.flatnonzero(distances <= threshold).tolist())
        # ENU and ellipsoidal geodesic differ by far less than 5 cm at 2 km: ignore pairs that near the bound
        ambiguous = set(np.flatnonzero(np.abs(distances - threshold) < 0.05).tolist())
        assert set(positives[q].tolist()) ^ expected <= ambiguous
    assert sum(len(p) for p in positives) > 0


# ------------------------------------------------------------------------------------------------- full runs


def one_hot(indices: list[int], dimension: int = 8) -> np.ndarray:
    out = np.full((len(indices), dimension), 0.01, dtype=np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def test_evaluate_query_descriptors() -> None:
    db_lat, db_lon = geo([(i * 10.0, 0.0) for i in range(8)])
    database = GeoDatabase(8, "test-model")
    database.add(
        one_hot(list(range(8))),
        [PlaceRecord(float(a), float(o)) for a, o in zip(db_lat, db_lon, strict=True)],
    )
    # q0 at place 2 retrieves 2 (0 m); q1 at 35 m retrieves 6 (25 m away); q2 is 500 m away from everything
    q_lat, q_lon = geo([(20.0, 0.0), (35.0, 0.0), (500.0, 0.0)])
    frames = [Frame(f"q{i}", i, float(a), float(o)) for i, (a, o) in enumerate(zip(q_lat, q_lon, strict=True))]
    drive = Drive("queries", frames, condition="night")
    result = evaluate_query_descriptors(database, drive, one_hot([2, 6, 0]), threshold_m=10.0, ns=(1, 5))
    assert result["n_queries"] == 3 and result["n_queries_without_positive"] == 1
    assert result["recall_at_n_all_queries"]["1"] == pytest.approx(100 / 3)
    assert result["recall_at_n_queries_with_positive"]["1"] == pytest.approx(50.0)
    assert result["per_query"]["has_positive"] == [True, True, False]
    assert result["per_query"]["top1_index"] == [2, 6, 0]
    top1 = result["per_query"]["top1_error_m"]
    assert top1[0] == pytest.approx(0.0, abs=0.01) and top1[1] == pytest.approx(25.0, abs=0.05)
    assert sum(result["status_counts"].values()) == 3
    assert json.loads(json.dumps(jsonable(result), allow_nan=False))["condition"] == "night"


    # The drive's frames are consecutive frames of one camera: the integrity score sees the jumps between them.
    from semloc_ros.core.localizer import LocalizerConfig

    jumps_only = LocalizerConfig().with_parameters(rerank_top_k=0, integrity_weights=[0.0] * 5 + [-5.0],
                                                   integrity_bias=5.0, integrity_threshold=0.5)
    gated = evaluate_query_descriptors(database, drive, one_hot([2, 6, 0]), threshold_m=10.0, ns=(1, 5),
                                       localizer_config=jumps_only)
    ungated = evaluate_query_descriptors(database, drive, one_hot([2, 6, 0]), threshold_m=10.0, ns=(1, 5),
                                         localizer_config=jumps_only.with_parameters(integrity_threshold=0.0))
    assert ungated["status_counts"].get("low_confidence", 0) == 0
    assert gated["status_counts"].get("low_confidence", 0) == 2  # 40 m and 60 m within nanoseconds


class LabelSumPipeline:
    """Stand-in pipeline: the descriptor is the one-hot of the mean label id (oracle) or of rgb[0, 0, 0]."""

    model_id = "label-sum-test"
    dimension = 8

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def describe_frames(self, rgbs, labels=None, batch_size=16, progress=False) -> np.ndarray:
        self.calls.append(labels is not None)
        if labels is not None:
            ids = [int(np.mean(label)) % 8 for label in labels]
        else:
            ids = [int(rgb[0, 0, 0]) % 8 for rgb in rgbs]
        return one_hot(ids)


def make_drive(name: str, places: list[int], rgb_value: int, condition: str) -> Drive:
    """Frames at place p (p * 10 m east) whose ground-truth labels are filled with p; RGB is uninformative."""
    lat, lon = geo([(p * 10.0, 0.0) for p in places])
    frames = [
        Frame(
            f"{name}/{i}",
            i,
            float(lat[i]),
            float(lon[i]),
            rgb=np.full((4, 4, 3), rgb_value, np.uint8),
            labels=np.full((4, 4), p, np.uint8),
        )
        for i, p in enumerate(places)
    ]
    return Drive(name, frames, condition=condition)


def test_evaluate_method_oracle_uses_ground_truth_labels_and_says_so() -> None:
    database_drive = make_drive("db", list(range(8)), rgb_value=0, condition="day")
    query_drive = make_drive("q", [1, 4, 6], rgb_value=3, condition="night")
    pipeline = LabelSumPipeline()

    oracle = evaluate_method(
        pipeline, database_drive, [query_drive], method="semantic", oracle=True, threshold_m=2.0, ns=(1,)
    )
    assert all(pipeline.calls) and len(pipeline.calls) == 2  # database and queries from labels
    result = oracle["q"]
    assert result["method"] == "semantic-oracle" and result["oracle"] is True
    assert result["recall_at_n_all_queries"]["1"] == 100.0

    pipeline.calls.clear()
    plain = evaluate_method(pipeline, database_drive, [query_drive], method="semantic", threshold_m=2.0, ns=(1,))
    assert not any(pipeline.calls)
    assert plain["q"]["method"] == "semantic" and plain["q"]["oracle"] is False
    assert plain["q"]["recall_at_n_all_queries"]["1"] == 0.0  # all RGB descriptors point at place 3
    table = format_table([result, plain["q"]])
    assert "semantic-oracle" in table and "night" in table
    assert method_label("rgb", False) == "rgb"


def test_evaluate_method_drops_queries_with_invalid_gps() -> None:
    database_drive = make_drive("db", list(range(8)), rgb_value=0, condition="day")
    query_drive = make_drive("q", [1, 4, 6], rgb_value=3, condition="night")
    query_drive.frames[1].lat = math.nan
    results = evaluate_method(
        LabelSumPipeline(),
        database_drive,
        [query_drive],
        method="semantic",
        oracle=True,
        threshold_m=2.0,
        ns=(1,),
    )
    assert results["q"]["n_queries"] == 2
    assert results["q"]["skipped_frames"] == {"invalid_gps": 1}


def test_plots_write_pngs(tmp_path) -> None:
    from semloc_ros.evaluation.plots import plot_recall_at_n, plot_route_map, plot_top1_recall_at_distances

    database_drive = make_drive("db", list(range(8)), rgb_value=0, condition="day")
    query_drive = make_drive("q", [1, 4, 6], rgb_value=3, condition="night")
    results = list(
        evaluate_method(
            LabelSumPipeline(),
            database_drive,
            [query_drive],
            method="semantic",
            oracle=True,
            threshold_m=2.0,
            ns=(1, 5),
        ).values()
    )
    paths = [
        plot_top1_recall_at_distances(results, tmp_path / "top1.png"),
        plot_recall_at_n(results, tmp_path / "recall.png"),
        plot_route_map(results[0], database_drive.lat, database_drive.lon, tmp_path / "route.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------- commands


def write_tiny_dataset(root) -> None:
    """A semloc-sim layout: 6 database frames 10 m apart and 3 night queries on them, 48x64 images."""
    import csv

    import cv2

    rng = np.random.default_rng(0)
    for name, places, condition in (("db", range(6), "day"), ("q", (1, 3, 5), "night")):
        drive = root / "drives" / name
        (drive / "rgb").mkdir(parents=True)
        (drive / "label").mkdir()
        (drive / "drive.json").write_text(json.dumps({"condition": condition}))
        lat, lon = geo([(p * 10.0, 0.0) for p in places])
        with open(drive / "poses.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["frame", "stamp_ns", "lat", "lon", "alt_m", "heading_rad"])
            for i, p in enumerate(places):
                writer.writerow([i, i * 1_000_000_000, lat[i], lon[i], 60.0, 0.0])  # 1 s apart: 10 m/s
                labels = np.zeros((48, 64), np.uint8)
                labels[: 8 * (p + 1)] = 12  # sky share encodes the place
                labels[8 * (p + 1) :] = 10
                cv2.imwrite(str(drive / "label" / f"{i:06d}.png"), labels)
                cv2.imwrite(str(drive / "rgb" / f"{i:06d}.jpg"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (root / "splits.json").write_text(json.dumps({"database": "db", "queries": ["q"]}))


def test_build_db_and_evaluate_commands(tmp_path, capsys, monkeypatch) -> None:
    from semloc_ros.commands import build_db, evaluate
    from semloc_ros.models import pipeline

    # Untrained networks whether or not trained weights are shipped: the plumbing is under test, fast.
    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")

    write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "db.semdb"
    common = ["--threads", "1", "--untrained-ok", "--quiet"]
    source = f"semloc-sim:{tmp_path / 'data'}:db"
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert build_db.main([source, "--out", str(out), "--method", "label-histogram", *common]) == 0
        assert build_db.main([source, "--out", str(out), "--method", "label-histogram", "--append", *common]) == 0
        assert build_db.main([source, "--out", str(out), "--method", "rgb", "--append", *common]) == 1
    stored = GeoDatabase.load(out)
    assert len(stored) == 12 and stored.thumbnails is not None and len(stored.thumbnails) == 12
    assert "does not match" in capsys.readouterr().err
    bare = tmp_path / "bare.semdb"
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert build_db.main([source, "--out", str(bare), "--method", "label-histogram", "--no-thumbnails",
                              *common]) == 0
        assert build_db.main([source, "--out", str(bare), "--method", "label-histogram", "--append", *common]) == 0
    assert GeoDatabase.load(bare).thumbnails is None and len(GeoDatabase.load(bare)) == 12

    args = [
        "--dataset",
        str(tmp_path / "data"),
        "--methods",
        "label-histogram",
        "--oracle",
        "--out",
        str(tmp_path / "ev"),
    ]
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert evaluate.main([*args, "--threshold-m", "4", *common]) == 0
    table = capsys.readouterr().out
    assert "label-histogram-oracle" in table
    results = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert [r["method"] for r in results] == ["label-histogram", "label-histogram-oracle"]
    localizer = json.loads((tmp_path / "ev" / "results.json").read_text())["localizer"]
    assert localizer == LocalizerConfig().parameters()  # the shipped configuration
    assert results[1]["recall_at_n_all_queries"]["1"] == 100.0  # ground-truth labels encode the place
    assert (tmp_path / "ev" / "top1_recall_at_distance.png").is_file()
    assert len(list((tmp_path / "ev" / "cache").glob("*.semdb"))) == 2
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert evaluate.main([*args, "--threshold-m", "4", "--no-plots", "--no-resume", *common]) == 0
    assert capsys.readouterr().out.count("database from cache") == 2
    with pytest.warns(UserWarning, match="UNTRAINED"):
        assert evaluate.main([*args, "--threshold-m", "4", "--no-plots", "--set", "localizer_node.rerank_top_k=5",
                              *common]) == 0
    capsys.readouterr()
    reranked = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert all(r["reranked"] for r in reranked)
    assert reranked[1]["recall_at_n_all_queries"]["1"] == 100.0
    assert evaluate.main([*args, "--set", "localizer_node.rerank_top_k=-1", *common]) == 2
    assert "rerank_top_k must be in [0, 1000], got -1" in capsys.readouterr().err


def test_segmentation_scores_against_a_hand_computed_case() -> None:
    from semloc_ros.evaluation.metrics import confusion_matrix, segmentation_scores

    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    predicted = np.array([[0, 1, 1, 1], [2, 2, 0, 2]])
    confusion = confusion_matrix(predicted, truth, num_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion, ["a", "b", "c", "d"])
    assert scores["pixel_accuracy"] == pytest.approx(100 * 6 / 8)
    # IoU: a = 1/(2+2-1) = 1/3, b = 2/(2+3-2) = 2/3, c = 3/(4+3-3) = 3/4; d is absent from the truth.
    assert scores["iou_per_class"] == pytest.approx({"a": 100 / 3, "b": 200 / 3, "c": 75.0})
    assert scores["mean_iou"] == pytest.approx((100 / 3 + 200 / 3 + 75.0) / 3)
    with pytest.raises(ValueError):
        confusion_matrix(predicted[:, :2], truth, num_classes=4)


def test_predicted_labels_are_segmented_once_per_file_and_segmenter(tmp_path):
    from semloc_ros.io.datasets import Frame
    from semloc_ros.mapping import PredictedLabels

    class CountingSegmenter:
        model_id = "counting@1"
        calls = 0

        def predict_batch(self, rgbs):
            self.calls += len(rgbs)
            return rgbs[..., 0] // 100

        def predict(self, rgb):
            return self.predict_batch(rgb[None])[0]

    rgbs = [np.full((4, 6, 3), 100 * i, np.uint8) for i in range(3)]
    files = [Frame(f"d/{i}", i, 0.0, 0.0, rgb_path=tmp_path / f"{i}.jpg") for i in range(3)]
    in_memory = Frame("m/0", 0, 0.0, 0.0, rgb=rgbs[2])
    cache, segmenter = PredictedLabels(max_items=2), CountingSegmenter()
    first = cache.labels(segmenter, files, rgbs, batch_size=2)
    assert segmenter.calls == 3 and [int(x[0, 0]) for x in first] == [0, 1, 2]
    assert len(cache) == 2  # least recently used beyond max_items dropped
    again = cache.labels(segmenter, files[1:], rgbs[1:], batch_size=2)
    assert segmenter.calls == 3 and [int(x[0, 0]) for x in again] == [1, 2]
    cache.labels(segmenter, [in_memory, in_memory], [rgbs[2], rgbs[2]], batch_size=2)
    assert segmenter.calls == 5  # frames without a file are never kept
    other = CountingSegmenter()
    other.model_id = "counting@2"
    cache.labels(other, files[1:2], rgbs[1:2], batch_size=2)
    assert other.calls == 1  # another segmenter: segmented again


def test_evaluate_runs_the_shipped_configuration_unless_told_otherwise(tmp_path, capsys) -> None:
    from semloc_ros.commands.evaluate import localizer_configuration, parse_arguments
    from semloc_ros.core.localizer import LocalizerConfig

    out = ["--out", str(tmp_path / "ev")]
    shipped = localizer_configuration(parse_arguments(out))
    assert shipped == LocalizerConfig()  # config/semloc.yaml, read like the node reads it
    assert (shipped.rerank.top_k, shipped.covariance_cross_scale, shipped.filter.temperature) == (50, 0.0399, 1.4)

    params = tmp_path / "mine.yaml"
    params.write_text("localizer_node:\n  ros__parameters:\n    top_k: 7\n    covariance_cross_scale: 2\n"
                      "    database_path: /somewhere.semdb\n    marker_scale_m: 3.0\n")
    mine = localizer_configuration(parse_arguments([*out, "--params-file", str(params), "--set",
                                                    "localizer_node.top_k=3", "--sequence-filter"]))
    assert (mine.top_k, mine.covariance_cross_scale, mine.sequence_filter) == (3, 2.0, True)  # --set wins over the file
    assert mine.rerank.top_k == 50  # not in the file: the shipped default

    from semloc_ros.commands import evaluate

    for bad, reason in ((["--set", "descriptor_node.threads=2"], "localizer_node configuration parameters"),
                        (["--set", "localizer_node.no_such=1"], "localizer_node configuration parameters"),
                        (["--set", "localizer_node.filter_temperature=.inf"], "filter_temperature must be a finite"),
                        (["--params-file", str(tmp_path / "absent.yaml")], "cannot read parameter file")):
        assert evaluate.main([*out, *bad]) == 2
        error = capsys.readouterr().err
        assert reason in error and "Traceback" not in error, error


def test_the_evaluation_runs_as_a_library_call(tmp_path, monkeypatch) -> None:
    """evaluation.run does the work of ``semloc evaluate``: results in memory, written only when asked, one-line
    errors for requests the dataset cannot answer, and a cached map reused only with the same views."""
    from dataclasses import replace

    from semloc_ros.evaluation.run import (
        EvaluationError,
        EvaluationOptions,
        cached_database,
        run_evaluation,
        write_results,
    )
    from semloc_ros.models import pipeline
    from semloc_ros.models.pipeline import Pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_tiny_dataset(tmp_path / "data")
    options = EvaluationOptions(dataset=tmp_path / "data", out=tmp_path / "ev", methods=("label-histogram",),
                                oracle=True, threshold_m=4.0, untrained_ok=True, progress=False,
                                segmentation_stride=0)
    config = LocalizerConfig().with_parameters(rerank_top_k=0)
    logged: list[str] = []
    with pytest.warns(UserWarning, match="UNTRAINED"):
        evaluation = run_evaluation(options, config, logged.append)
    assert [r["method"] for r in evaluation.results] == ["label-histogram", "label-histogram-oracle"]
    assert evaluation.results[1]["recall_at_n_all_queries"]["1"] == 100.0
    assert evaluation.summary["localizer"] == config.parameters() and evaluation.drives.calibration_query is None
    assert not (options.out / "results.json").exists()
    assert json.loads(write_results(evaluation, options.out).read_text())["n_database"] == 6

    for change, reason in (({"queries": ("nope",)}, "unknown query drive"),
                           ({"calibration_query": "q"}, "only used with --rejection-queries"),
                           ({"rejection_queries": ("q",)}, "on the database map"),
                           ({"segmentation_drives": ("nope",)}, "cannot read segmentation drive nope")):
        with pytest.raises(EvaluationError, match=reason):
            run_evaluation(replace(options, **change), config, logged.append)

    cached = sorted((options.out / "cache").glob("label-histogram-oracle_*.semdb"))[0]
    with pytest.warns(UserWarning, match="UNTRAINED"):
        histogram = Pipeline.from_method("label-histogram", untrained_ok=True)
    drive = evaluation.drives.database
    assert cached_database(cached, histogram, drive, (0.0,), needs_thumbnails=False) is not None
    assert cached_database(cached, histogram, drive, (0.0, 0.1), needs_thumbnails=False) is None  # other views


def test_evaluate_reads_the_users_segmenter_with_its_label_mapping(tmp_path, capsys) -> None:
    from semloc_ros.commands import evaluate
    from semloc_ros.evaluation.protocols import Variant
    from semloc_ros.evaluation.run import variant_pipeline
    from semloc_ros.models import SegmentationNet

    arch = "lraspp_mobilenet_v3_large"
    user = tmp_path / "city.pth"  # a Cityscapes-19 model, a plain state dict
    torch.save(SegmentationNet({"arch": arch, "num_classes": 19}).net.state_dict(), user)
    base = ["--dataset", str(tmp_path), "--out", str(tmp_path / "ev"), "--methods", "label-histogram"]
    args = evaluate.parse_arguments([*base, "--segmenter", str(user), "--label-mapping", "cityscapes19",
                                     "--segmenter-arch", arch])
    options = evaluate.evaluation_options(args)
    pipeline = variant_pipeline(options, Variant("label-histogram", user))
    assert pipeline.segmenter.model_id.startswith(f"{arch}-19@") and "+map:cityscapes19" in pipeline.model_id
    assert evaluate.main([*base, "--label-mapping", "camvid11"]) == 2  # a mapping without a segmenter of the user
    assert "--label-mapping maps the output of --segmenters" in capsys.readouterr().err
