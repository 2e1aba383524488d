"""Training from the sources build-db reads: GPS mining within drives, synthetic views, held-out Recall@N."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from semloc_ros.commands import train as train_cmd
from semloc_ros.core.geodesy import LocalENU
from semloc_ros.models import load_checkpoint
from semloc_ros.training.augment import synthetic_view
from semloc_ros.training.data import FrameIndex, TrainDrive
from semloc_ros.training.mining import build_pairs, hold_out, recall_at_n
from semloc_ros.training.sources import travel_heading

torch.set_num_threads(1)
LAT0, LON0 = 48.1, 11.5
UNTRAINED = "untrained:lraspp_mobilenet_v3_large"


def write_folder_drive(folder: Path, north_m: list[float], seed: int = 0) -> Path:
    """A CSV image folder: 48x64 images whose content depends on the position, 1 s apart."""
    folder.mkdir(parents=True)
    lat, lon, _ = LocalENU(LAT0, LON0).to_geodetic(np.zeros(len(north_m)), np.array(north_m))
    rows = ["filename,lat,lon,stamp_ns"]
    for i, (north, la, lo) in enumerate(zip(north_m, lat, lon, strict=True)):
        rng = np.random.default_rng(int(north // 10) + seed)  # the same scene every 10 m
        rgb = np.repeat(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), 8, axis=0).repeat(8, axis=1)
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rows.append(f"{i:04d}.png,{la:.9f},{lo:.9f},{(i + 1) * 1_000_000_000}")
    (folder / "frames.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_pairs_within_a_drive_are_revisits_apart_in_time() -> None:
    # one drive: out 0..40 m and back; frames 2 s apart
    xy = np.array([[0, y] for y in (0, 10, 20, 30, 40, 30, 20, 10, 0)], dtype=float)
    heading = np.zeros(9)  # same heading, so the return pass is a positive (heading checks are tested elsewhere)
    drive = TrainDrive("loop", 0, "day", None, None, xy, heading, np.arange(9) * 2.0)
    index = FrameIndex.of([drive])
    positives, negatives = build_pairs(index, pos_m=5.0, neg_m=25.0, max_heading_deg=60.0, revisit_s=5.0)
    assert positives[0].tolist() == [8] and positives[2].tolist() == [6] and positives[4].tolist() == []
    assert [p.tolist() for p in build_pairs(index, 5.0, 25.0, 60.0)[0]] == [[]] * 9  # cross-drive only
    assert negatives[0].tolist() == [False, False, False, True, True, True, False, False, False]
    held = hold_out(index, 0.34, pos_m=5.0, max_heading_deg=60.0, revisit_s=5.0)
    assert held is not None and not held.synthetic
    # the last 3 frames (20, 10, 0 m) and every frame within 10 m of them; queries: those with a revisit
    assert np.flatnonzero(held.mask).tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    assert held.queries.tolist() == [0, 1, 2, 6, 7, 8]  # 30 m is passed twice but only 4 s apart
    desc = np.eye(9, dtype=np.float32)[[0, 1, 2, 3, 4, 3, 2, 1, 0]]  # revisits look alike
    assert recall_at_n(desc, desc[held.queries], held, index, 5.0, 5.0, ns=(1,)) == {"R@1": 1.0}


def test_heading_from_the_track_and_synthetic_views() -> None:
    xy = np.array([[0, 0], [1, 1], [2, 2], [2, 2], [2, 2], [3, 3]], dtype=float)
    heading = travel_heading(xy, base_m=2.0)
    assert np.allclose(heading[:3], np.pi / 4)
    labels = torch.arange(16).repeat(2, 8, 1)  # column ids
    gen = torch.Generator().manual_seed(0)
    view = synthetic_view(labels, gen, max_shift=0.25, max_zoom=1.0)
    assert view.shape == labels.shape and view.dtype == torch.int64
    assert not torch.equal(view, labels) and set(view.unique().tolist()) <= set(range(16))
    rgb = torch.rand(2, 3, 8, 16, generator=gen)
    assert synthetic_view(rgb, gen).shape == rgb.shape


def test_train_semantic_from_one_folder_drive_caches_labels_and_reports_holdout(tmp_path: Path, capsys) -> None:
    drive = write_folder_drive(tmp_path / "drive", [2.0 * i for i in range(40)])
    cache = tmp_path / "cache"
    out = tmp_path / "semantic.pt"
    argv = ["semantic", "--source", str(drive), "--segmenter", UNTRAINED, "--out", str(out), "--steps", "2",
            "--threads", "1", "--device", "cpu", "--batch-size", "2", "--input-size", "48", "64", "--dim", "16",
            "--cache-dir", str(cache), "--quiet", "--min-distance-m", "0"]
    assert train_cmd.main(argv) == 0, capsys.readouterr().err
    output = capsys.readouterr().out
    # the last 8 frames (14 m) and the 4 others within 10 m of them are held out; one drive without a loop:
    # only synthetic positives, and synthetic views as the held-out queries
    assert "0 anchors with GPS positives" in output and "28 with synthetic views" in output
    assert "held-out stretch: 12 frames around 14 m of the route, queries: 12 synthetic views" in output
    assert "Recall@N (10 m) before R@1" in output
    cached = list(cache.glob("*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert train_cmd.main(argv) == 0  # the labels come from the cache the second time
    assert [p.stat().st_mtime_ns for p in cache.glob("*.npz")] == [stamp]
    _, meta = load_checkpoint(out)
    assert meta["training"]["heldout_recall"]["after"]["R@1"] >= 0.0
    assert meta["training"]["config"]["revisit_s"] == 30.0


def test_train_reports_data_without_triplets_in_one_line(tmp_path: Path, capsys) -> None:
    short = write_folder_drive(tmp_path / "short", [1.0 * i for i in range(12)])  # 11 m: nothing beyond 25 m
    argv = ["rgb", "--source", str(short), "--out", str(tmp_path / "x.pt"), "--steps", "1", "--threads", "1",
            "--device", "cpu", "--input-size", "48", "64", "--quiet", "--min-distance-m", "0"]
    assert train_cmd.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("semloc train: no training triplets")
    assert "0 a negative (a frame beyond 25 m)" in err
    assert train_cmd.main(["rgb", "--out", "x.pt"]) == 2
    assert "--dataset ROOT" in capsys.readouterr().err


def test_fine_tune_shipped_descriptor_and_self_train_segmenter_from_two_drives(tmp_path: Path, capsys) -> None:
    first = write_folder_drive(tmp_path / "a", [2.0 * i for i in range(30)])
    second = write_folder_drive(tmp_path / "b", [2.0 * i + 0.5 for i in range(30)], seed=1)
    common = ["--source", str(first), "--source", str(second), "--steps", "1", "--threads", "1", "--device", "cpu",
              "--batch-size", "2", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--min-distance-m", "0"]
    out = tmp_path / "tuned.pt"
    assert train_cmd.main(["semantic", *common, "--init", "default", "--segmenter", UNTRAINED, "--out", str(out),
                           "--holdout", "0"]) == 0, capsys.readouterr().err
    output = capsys.readouterr().out
    assert "60 for training: 60 anchors with GPS positives" in output  # the second drive passes the same places
    _, meta = load_checkpoint(out)
    shipped = load_checkpoint(Path(train_cmd.__file__).parents[1] / "data" / "models" / "descriptor_semantic.pt")[1]
    assert meta["training"]["init"] == shipped["model_id"] and meta["conf"]["dim"] == shipped["conf"]["dim"]
    seg = tmp_path / "seg.pt"
    assert train_cmd.main(["segmenter", *common, "--init", "default", "--teacher", UNTRAINED, "--pseudo-threshold", "0",
                           "--input-size", "48", "64", "--out", str(seg)]) == 0, capsys.readouterr().err
    assert "pseudo-labeled 60 frames" in capsys.readouterr().out
    assert load_checkpoint(seg)[1]["training"]["pseudo_labeled_frames"] == 0  # they were the training set
