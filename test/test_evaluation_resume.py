"""``semloc evaluate`` keeps each finished drive's results, prints a line per drive and resumes a stopped run."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import faiss
import pytest
import torch
from test_protocols import write_drive

from semloc_ros.core.localizer import LocalizerConfig

torch.set_num_threads(1)
faiss.omp_set_num_threads(1)

DRIVE_LINE = re.compile(r"^(label-histogram(?:-oracle)?) (q|q2): R@1 \S+ R@5 \S+, \d+ frames, \d+\.\d s$")


def write_dataset(root: Path) -> None:
    """One map (database + two query drives) and a drive of another map (out-of-database negatives)."""
    write_drive(root, "db", range(6), {"seed": 10, "condition": "day"})
    write_drive(root, "q", (1, 3, 5), {"seed": 10, "condition": "night"})
    write_drive(root, "q2", (0, 2, 4), {"seed": 10, "condition": "dusk"})
    write_drive(root, "other_night", range(6), {"seed": 21, "condition": "night"})
    (root / "splits.json").write_text(json.dumps({"database": "db", "queries": ["q", "q2"], "train": []}))


@pytest.fixture
def evaluate_in(tmp_path, monkeypatch, capsys):
    """Run ``semloc evaluate`` (two variants x two query drives, negatives, segmentation) into a folder; returns
    its output lines (stdout, then stderr)."""
    from semloc_ros.commands import evaluate
    from semloc_ros.models import pipeline

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")  # untrained networks: plumbing only
    write_dataset(tmp_path / "data")

    def run(out: Path, *extra: str, status: int = 0) -> list[str]:
        argv = ["--dataset", str(tmp_path / "data"), "--methods", "label-histogram", "--oracle", "--out", str(out),
                "--threshold-m", "4", "--threads", "1", "--untrained-ok", "--quiet", "--no-plots",
                "--rejection-queries", "other_night", "--calibration-query", "q", "--segmentation-stride", "2",
                *extra]
        capsys.readouterr()
        with pytest.warns(UserWarning, match="UNTRAINED"):
            assert evaluate.main(argv) == status
        captured = capsys.readouterr()
        return captured.out.splitlines() + captured.err.splitlines()

    return run


def _drive_lines(lines: list[str]) -> list[tuple[str, str]]:
    return [match.groups() for match in map(DRIVE_LINE.match, lines) if match]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_a_killed_evaluation_resumes_where_it_stopped_with_the_same_results(tmp_path, monkeypatch, evaluate_in):
    from semloc_ros.evaluation import run

    reference = evaluate_in(tmp_path / "reference")
    assert _drive_lines(reference) == [("label-histogram", "q"), ("label-histogram", "q2"),
                                       ("label-histogram-oracle", "q"), ("label-histogram-oracle", "q2")]
    assert sum(" (negatives): " in line for line in reference) == 2  # one per variant
    assert sum(line.startswith("segmentation ") and " mIoU " in line for line in reference) == 3  # db, q, q2
    assert not any("resumed" in line for line in reference)
    assert sum(re.fullmatch(r"label-histogram(-oracle)?: database db built, 6 entries, \d+\.\d s", line) is not None
               for line in reference) == 2

    out = tmp_path / "killed"
    finished = run.evaluate_method
    calls = []

    def killed_on_the_third_drive(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the first variant's drives are done, the second variant's first is running
            raise KeyboardInterrupt
        return finished(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(run, "evaluate_method", killed_on_the_third_drive)
        interrupted = evaluate_in(out, status=130)
    assert interrupted[-1] == (f"semloc evaluate: interrupted; the finished drives are kept in {out / 'partial'} "
                               "and the same command goes on from there")
    assert not (out / "results.json").exists()
    kept = sorted(path.name for path in (out / "partial").rglob("*.json"))
    assert kept == ["other_night.negatives.json", "q.json", "q2.json"]

    resumed = evaluate_in(out)
    assert "resumed 3 drive results from " + str(out / "partial") in "\n".join(resumed)
    assert _drive_lines(resumed) == [("label-histogram-oracle", "q"), ("label-histogram-oracle", "q2")]
    assert _results(out) == _results(tmp_path / "reference")

    oracle_q2 = next(path for path in (out / "partial").glob("label-histogram-oracle-*/q2.json"))
    oracle_q2.unlink()
    segmentation_q = next((out / "partial").glob("segmentation-*/q.json"))
    segmentation_q.write_text("{not json")
    again = evaluate_in(out)
    assert _drive_lines(again) == [("label-histogram-oracle", "q2")]
    assert any(line.startswith("recomputing ") and "unreadable" in line for line in again)
    assert any(line.startswith("segmentation q: mIoU ") for line in again)
    assert "resumed 7 drive results" in "\n".join(again)  # 9 drive results less the two above
    assert _results(out) == _results(tmp_path / "reference")

    complete = evaluate_in(out)
    assert not _drive_lines(complete) and "resumed 9 drive results" in "\n".join(complete)
    assert not any(": database " in line for line in complete)  # nothing left to compute: no map loaded
    assert _results(out) == _results(tmp_path / "reference")

    recomputed = evaluate_in(out, "--no-resume")
    assert len(_drive_lines(recomputed)) == 4 and not any("resumed" in line for line in recomputed)
    assert _results(out) == _results(tmp_path / "reference")


def test_a_changed_request_never_reuses_kept_results(tmp_path, monkeypatch):
    """Other descriptor weights (same file), localizer configuration, stride, threshold or drive content: computed
    again; the same request: read back."""
    from semloc_ros.evaluation.run import EvaluationOptions, run_evaluation
    from semloc_ros.models import pipeline
    from semloc_ros.models.descriptor import DescriptorExtractor

    monkeypatch.setattr(pipeline, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_dataset(tmp_path / "data")
    options = EvaluationOptions(dataset=tmp_path / "data", out=tmp_path / "ev", methods=("label-histogram",),
                                oracle=True, threshold_m=4.0, untrained_ok=True, progress=False,
                                segmentation_stride=0)
    config = LocalizerConfig().with_parameters(rerank_top_k=0)

    def computed(options: EvaluationOptions = options, config: LocalizerConfig = config) -> list[tuple[str, ...]]:
        logged: list[str] = []
        with pytest.warns(UserWarning, match="UNTRAINED"):
            run_evaluation(options, config, logged.append)
        return [tuple(line.split(":")[0].split()) for line in logged if ": R@1 " in line]

    every_drive = [("label-histogram", "q"), ("label-histogram", "q2"), ("label-histogram-oracle", "q"),
                   ("label-histogram-oracle", "q2")]
    assert computed() == every_drive
    assert computed() == []  # the same request: every drive read back
    assert computed(config=config.with_parameters(rerank_top_k=5)) == every_drive
    assert computed(replace(options, query_stride=2)) == every_drive
    assert computed(replace(options, threshold_m=6.0)) == every_drive
    assert computed() == []  # the first request's results are still there
    shutil.rmtree(tmp_path / "data" / "drives" / "q2")
    write_drive(tmp_path / "data", "q2", (0, 2, 4), {"seed": 10, "condition": "dusk"}, pole=True)  # re-rendered
    assert computed() == [("label-histogram", "q2"), ("label-histogram-oracle", "q2")]
    assert computed(replace(options, resume=False)) == every_drive

    weights = tmp_path / "semantic.pt"
    semantic = replace(options, methods=("semantic",), oracle=False, queries=("q",), descriptor_file=weights)
    DescriptorExtractor.untrained("semantic_alexnet", seed=0).save(weights)
    assert computed(semantic) == [("semantic", "q")]
    DescriptorExtractor.untrained("semantic_alexnet", seed=1).save(weights)  # other weights, same file
    assert computed(semantic) == [("semantic", "q")]


def test_a_quantized_segmenter_gets_its_own_cached_descriptors():
    """An int8 copy shares the pipeline id of its float network (maps answer both) but not its exact labels."""
    from types import SimpleNamespace

    from semloc_ros.evaluation.loop import cache_key

    def pipeline(segmenter_file_id: str, needs_labels: bool = True) -> SimpleNamespace:
        return SimpleNamespace(model_id="semantic@1|segmenter:lraspp@2", needs_labels=needs_labels,
                               segmenter=SimpleNamespace(model_id=segmenter_file_id))

    assert cache_key(pipeline("onnx@int8")) != cache_key(pipeline("lraspp@2"))
    assert cache_key(pipeline("onnx@int8", needs_labels=False)) == "semantic@1|segmenter:lraspp@2"
