"""The benchmarks' helpers (no timing is asserted) and the automatic device choice."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from semloc_ros.benchmarks import common, e2e, index
from semloc_ros.commands import benchmark
from semloc_ros.models import resolve_device


def test_stats_ms_and_top5_recall():
    stats = common.stats_ms([0.001] * 19 + [0.1])
    assert stats["median"] == pytest.approx(1.0) and stats["n"] == 20 and stats["p95"] > 1.0
    assert math.isnan(common.stats_ms([])["median"])
    truth = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    found = np.array([[5, 4, 3, 2, 1], [6, 7, 0, 0, -1]])
    assert index.top5_recall(found, truth) == pytest.approx((1.0 + 0.4) / 2)


def test_parse_and_merge_overrides():
    parsed = e2e.parse_assignments("segmentation_node.threads=2, localizer_node.top_k=5,"
                                         "segmentation_node.publish_overlay=false")
    assert parsed == {"segmentation_node": {"threads": 2, "publish_overlay": False}, "localizer_node": {"top_k": 5}}
    merged = e2e.merge_overrides({"localizer_node": {"database_path": "a"}}, parsed,
                                       {"localizer_node": {"top_k": 7}})
    assert merged["localizer_node"] == {"database_path": "a", "top_k": 7}
    for bad in ("threads=2", "segmentation_node.threads", ".x=1"):
        with pytest.raises(ValueError):
            e2e.parse_assignments(bad)


def test_synthetic_set_keeps_the_real_rows_and_matches_the_neighbour_cosine():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    sigma, cosine = index.matched_noise_sigma(base)
    rows, source = index.synthetic_set(base, 1_000, sigma)
    np.testing.assert_array_equal(rows[:300], base)
    np.testing.assert_array_equal(source, np.arange(1_000) % 300)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    copies = np.einsum("nd,nd->n", rows[300:], base[source[300:]])
    assert abs(float(np.mean(copies)) - cosine) < 0.05


def test_busy_core_runs_a_process_only_inside_the_block():
    with common.busy_core() as process:
        assert process.poll() is None
        time.sleep(0.2)
        assert common.cpu_seconds(process.pid) > 0.05
    assert process.poll() is not None
    with common.busy_core(enabled=False) as nothing:
        assert nothing is None


def test_proc_status_reports_memory():
    status = common.proc_status()
    assert 0 < status["VmRSS"] <= status["VmHWM"]


def test_parser_modes_and_defaults():
    parser = benchmark.build_parser()
    e2e_args = parser.parse_args(["e2e", "--variant", "t2:segmentation_node.threads=2",
                                  "--set", "localizer_node.top_k=5"])
    assert e2e_args.rate == 20.0 and e2e_args.domain_id == benchmark.DEFAULT_DOMAIN_ID and e2e_args.device == "auto"
    index_args = parser.parse_args(["index"])
    assert index_args.sizes == [100_000, 1_000_000] and set(index_args.index_types) == {"flat", "hnsw", "ivfpq"}
    rerank_args = parser.parse_args(["rerank"])
    assert rerank_args.top_k == 50 and rerank_args.queries == 30


def test_build_benchmark_compares_view_sets():
    from semloc_ros.core.views import RECOMMENDED_VIEWS, SINGLE_VIEW

    parser = benchmark.build_parser()
    assert parser.parse_args(["build"]).views == [SINGLE_VIEW, RECOMMENDED_VIEWS]  # single vs 7 views, one run
    assert parser.parse_args(["build", "--views", "0,-0.1,0.1", "recommended"]).views == [(0.0, -0.1, 0.1),
                                                                                          RECOMMENDED_VIEWS]
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--views", "0,0.7"])


def test_build_benchmark_builds_every_view_set_from_a_bag(shared_dataset, tmp_path):
    import json

    out = tmp_path / "build.json"
    assert benchmark.main(["build", "--dataset", str(shared_dataset), "--cache", str(tmp_path), "--frames", "3",
                           "--batch-sizes", "2", "--threads", "1", "--repeats", "1", "--views", "single", "0,0.2",
                           "--device", "cpu", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    rates, cpu = results["views_ratio"], results["views_cpu_ratio"]
    assert list(rates) == list(cpu) == ["threads 1 batch 2 views 0", "threads 1 batch 2 views 0 0.2"]
    assert rates["threads 1 batch 2 views 0"] == 1.0 and rates["threads 1 batch 2 views 0 0.2"] > 0
    assert cpu["threads 1 batch 2 views 0"] == 1.0 and results["cpu_ms_per_image"]["threads 1 batch 2 views 0"] > 0


def test_rerank_benchmark_compares_both_alignments_on_real_thumbnails(shared_dataset, tmp_path):
    import json

    out = tmp_path / "rerank.json"
    domain = os.environ["ROS_DOMAIN_ID"]
    assert benchmark.main(["rerank", "--dataset", str(shared_dataset), "--queries", "2", "--repeats", "1",
                           "--top-k", "5", "--json", str(out)]) == 0
    assert os.environ["ROS_DOMAIN_ID"] == domain  # the caller's ROS domain (230 leaked into later tests)
    results = json.loads(out.read_text())["results"]
    assert results["identical"] is True and results["bit-packed"]["n"] == 2 and results["reference"]["n"] == 2


# ------------------------------------------------------------------------------------------- device choice
@pytest.mark.parametrize(("available", "expected"), [(True, "cuda"), (False, "cpu")])
def test_auto_device_is_cuda_when_present(monkeypatch, available, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu" and resolve_device("cuda:1") == torch.device("cuda", 1)


def test_every_device_default_is_auto():
    from semloc_ros.commands import build_db, evaluate, train
    from semloc_ros.ros import descriptor_node, segmentation_node

    for module in (segmentation_node, descriptor_node):
        assert {spec.name: spec.default for spec in module.PARAMETERS}["device"] == "auto"
    assert build_db.build_parser().get_default("device") == "auto"
    assert benchmark.build_parser().parse_args(["stages"]).device == "auto"
    for module in (evaluate, train):
        source = Path(module.__file__).read_text()
        assert '"--device", default="auto"' in source


def test_build_db_makes_auto_index_maps_by_default():
    from semloc_ros.commands import build_db

    parser = build_db.build_parser()
    assert parser.get_default("index_type") == "auto"
    assert parser.parse_args(["x", "--out", "y", "--index-type", "ivfpq"]).index_type == "ivfpq"
    with pytest.raises(SystemExit):
        parser.parse_args(["x", "--out", "y", "--index-type", "magic"])


def test_index_workers_build_and_query_a_map_in_fresh_processes(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((200, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    files = {"rows": rows, "source": np.arange(200), "positions": np.zeros((200, 2)), "queries": rows[:20],
             "truth": np.stack([np.arange(20)] * 5, axis=1)}
    spec = {name: str(tmp_path / f"{name}.npy") for name in files}
    for name, array in files.items():
        np.save(spec[name], array, allow_pickle=False)
    spec.update(index_type="flat", model_id="m", db=str(tmp_path / "map.semdb"), latency_queries=5, nprobe=[8],
                rerank=[64], ef_search=[16], rebuild=False)
    built = index.worker("build", spec)
    assert not built["reused"] and Path(built["db"]).is_file()
    queried = index.worker("query", spec)
    assert queried["entries"] == 200 and queried["points"][0]["setting"] == {}
    assert index.worker("build", spec)["reused"]


class _SlowCamera:
    """A camera publisher whose publish takes longer than the frame period (large frames at a high rate)."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.last_publish = 0.0

    def publish(self, message) -> None:
        time.sleep(0.005)
        self.stamps.append(message.header.stamp.sec * 10**9 + message.header.stamp.nanosec)
        self.last_publish = time.monotonic()


class _AnsweringExecutor:
    """Each spin takes the fix of every frame published so far (a pipeline that answers at once)."""

    def __init__(self, client) -> None:
        self.client = client

    def add_node(self, node) -> None:
        pass

    remove_node = add_node

    def spin_once(self, timeout_sec: float) -> None:
        for stamp in list(self.client.camera_publisher.stamps):
            self.client.fix_times.setdefault(stamp, time.monotonic())
        time.sleep(0.001)


def test_e2e_takes_fixes_while_a_busy_camera_publishes() -> None:
    """The fixes are timed on a thread of their own: a camera always behind its schedule (publishing never leaves
    time to spin between frames) must not hold them back until the stream ends."""
    from types import SimpleNamespace

    from semloc_ros.ros.conversions import array_to_imgmsg

    ticks = iter(range(1, 10**6))
    client = SimpleNamespace(
        fixes={}, fix_times={}, diagnostics={}, hop_times={}, camera_publisher=_SlowCamera(),
        start_up=lambda *args, **kwargs: None, spin_for=lambda seconds: None, foreign_nodes=lambda nodes: [],
        diagnostic_values=lambda node: {},
        get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=next(ticks) * 10**6)))
    runner = SimpleNamespace(nodes=("segmentation_node",), exit_report=lambda: None, log_dir=None,
                             processes={"segmentation_node": SimpleNamespace(pid=os.getpid())})
    args = SimpleNamespace(startup_timeout_s=1.0, drain_s=0.5, rate=1000.0, domain_id=0)
    messages = [array_to_imgmsg(np.zeros((4, 4, 3), np.uint8), "rgb8")]
    run = e2e.stream_once(client, _AnsweringExecutor(client), runner, messages, 20, args)
    assert run["ok"] and run["answered"] == 20
    during_stream = [t for t in client.fix_times.values() if t < client.camera_publisher.last_publish]
    assert len(during_stream) >= 10, f"{len(during_stream)} of 20 fixes taken while the camera published"
