"""Training pieces on a tiny synthetic semloc-sim dataset (a few steps: checks plumbing, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from semloc_ros.commands import train as train_cmd
from semloc_ros.core.labels import SEMLOC_SIM
from semloc_ros.models import DescriptorExtractor, Segmenter, load_checkpoint
from semloc_ros.training.augment import corrupt_labels, photometric
from semloc_ros.training.common import cosine_lr
from semloc_ros.training.data import FrameIndex, TrainDrive, load_train_drives, load_train_sets
from semloc_ros.training.descriptor import (
    DescriptorTrainConfig,
    build_pairs,
    cross_drive_recall,
    init_projection_pca,
    train_descriptor,
)
from semloc_ros.training.segmenter import SegmenterTrainConfig, class_weights, train_segmenter

torch.set_num_threads(1)
H, W = 48, 64
ROAD, SKY, BUILDING = SEMLOC_SIM.id_of("ROAD"), SEMLOC_SIM.id_of("SKY"), SEMLOC_SIM.id_of("BUILDING")


def _write_drive(root: Path, name: str, seed: int, n: int, lane_y: float) -> None:
    d = root / "drives" / name
    (d / "rgb").mkdir(parents=True)
    (d / "label").mkdir()
    rng = np.random.default_rng(seed + int(lane_y))
    rows = ["frame,stamp_ns,x_m,y_m,heading_rad,speed_mps,lat,lon,alt_m"]
    for i in range(n):
        lab = np.full((H, W), ROAD, np.uint8)
        lab[: H // 2] = SKY
        c = (i * 7) % (W - 10)
        lab[10 : H // 2, c : c + 10] = BUILDING
        rgb = SEMLOC_SIM.color_table()[lab] // 2 + rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(d / "rgb" / f"{i:06d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(d / "label" / f"{i:06d}.png"), lab)
        rows.append(f"{i},{i},{4.0 * i:.4f},{lane_y:.4f},0.0,1.0,51.75,-1.25,60")
    (d / "poses.csv").write_text("\n".join(rows) + "\n")
    (d / "drive.json").write_text(json.dumps({"seed": seed, "condition": name.split("_")[1]}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("semloc-sim")
    _write_drive(root, "trainA_day_l0", 21, 24, 7.0)
    _write_drive(root, "trainA_night_l1", 21, 24, 3.5)
    _write_drive(root, "eval_day_l0", 10, 4, 7.0)
    splits = {"train": ["trainA_day_l0", "trainA_night_l1"], "database": "eval_day_l0", "queries": []}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def test_loading_uses_only_train_drives(dataset):
    drives = load_train_drives(dataset, progress=False)
    assert [d.name for d in drives] == ["trainA_day_l0", "trainA_night_l1"]
    assert drives[0].rgb.shape == (24, H, W, 3) and drives[0].labels.shape == (24, H, W)
    assert drives[1].condition == "night" and drives[1].map_seed == 21
    small = load_train_drives(dataset, ["trainA_day_l0"], (24, 32), (12, 16), progress=False)[0]
    assert small.rgb.shape[1:3] == (24, 32) and small.labels.shape[1:] == (12, 16)
    with pytest.raises(ValueError, match="outside the train split"):
        load_train_drives(dataset, ["eval_day_l0"], progress=False)


def test_pairs_are_cross_drive_and_far_negatives():
    xy = np.array([[0, 0], [10, 0], [100, 0], [1, 0], [11, 0], [100, 3]], dtype=float)
    drives = [TrainDrive("a", 1, "day", None, None, xy[:3], np.zeros(3)),
              TrainDrive("b", 1, "night", None, None, xy[3:], np.zeros(3))]  # fmt: skip
    index = FrameIndex.of(drives)
    positives, negatives = build_pairs(index, pos_m=5.0, neg_m=25.0, max_heading_deg=60.0)
    assert [p.tolist() for p in positives] == [[3], [4], [5], [0], [1], [2]]
    assert negatives[0].tolist() == [False, False, True, False, False, True]
    desc = np.eye(6, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]  # perfect descriptors
    assert cross_drive_recall(desc, index, 10.0) == 1.0


def test_augmentations_keep_range_and_change_inputs():
    gen = torch.Generator().manual_seed(0)
    labels = torch.full((6, H, W), ROAD)
    labels[:, : H // 2] = SKY
    noisy = corrupt_labels(labels, gen, strength=1.0)
    assert noisy.shape == labels.shape and noisy.dtype == torch.int64
    assert int(noisy.min()) >= 0 and int(noisy.max()) < SEMLOC_SIM.num_classes
    assert (noisy != labels).float().mean() > 0.001
    rgb = torch.rand(6, 3, H, W, generator=gen)
    out = photometric(rgb, gen)
    assert out.shape == rgb.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, rgb)


def test_class_weights_and_schedule():
    w = class_weights(np.array([0.5, 0.0, 0.01, 0.49]))
    assert w[1] == 0 and w[2] > w[0] and abs(float(w[w > 0].mean()) - 1.0) < 1e-6
    assert cosine_lr(0.0, 1.0) < cosine_lr(0.05, 1.0) == pytest.approx(1.0)
    assert cosine_lr(1.0, 1.0) == pytest.approx(0.02)


def test_train_segmenter_and_descriptors(dataset, tmp_path):
    drives = load_train_drives(dataset, progress=False)
    cfg = SegmenterTrainConfig(input_size=(H, W), batch_size=2, steps=2, device="cpu", eval_every=6)
    result = train_segmenter(drives, tmp_path / "seg.pt", cfg, dataset="tiny", progress=False)
    assert result["steps"] == 2
    seg = Segmenter.from_file(tmp_path / "seg.pt", device="cpu")
    assert seg.predict(drives[0].rgb[0]).shape == (H, W)
    _, meta = load_checkpoint(tmp_path / "seg.pt")
    assert meta["trained_on"] == "tiny" and "miou" in meta["training"]["train_subset_metrics"]

    small = load_train_drives(dataset, None, None, (H, W), progress=False)
    for kind in ("semantic", "rgb"):
        dcfg = DescriptorTrainConfig(
            kind=kind, net_conf={"input_size": (H, W), "clusters": 4, "dim": 32}, anchors=2, negatives=2,
            neg_m=20.0, hard_pool=4, steps=2, device="cpu",
        )  # fmt: skip
        if kind == "rgb":
            small = load_train_drives(dataset, None, (H, W), None, labels=False, progress=False)
        out = tmp_path / f"{kind}.pt"
        res = train_descriptor(small, out, dcfg, segmenter=seg if kind == "semantic" else None, progress=False)
        d = DescriptorExtractor.from_file(out, device="cpu")
        assert res["steps"] == 2 and d.dimension == 32 and d.input_kind == ("labels" if kind == "semantic" else "rgb")
        if kind == "semantic":
            assert res["segmenter"] == seg.model_id


def test_train_command(dataset, tmp_path, capsys):
    out = tmp_path / "seg.pt"
    argv = ["segmenter", "--dataset", str(dataset), "--out", str(out), "--steps", "1", "--threads", "1"]
    assert train_cmd.main([*argv, "--input-size", str(H), str(W), "--batch-size", "2", "--device", "cpu"]) == 0
    assert out.is_file() and "took" in capsys.readouterr().out
    bad = ["semantic", "--dataset", str(dataset), "--drives", "eval_day_l0", "--segmenter", "none", "--out", str(out)]
    assert train_cmd.main(bad) == 1
    assert "outside the train split" in capsys.readouterr().err


def test_train_sets_join_datasets_and_refuse_held_out_sets(dataset, tmp_path):
    second = tmp_path / "v2"
    _write_drive(second, "trainC_fog_l0", 103, 6, 0.0)
    _write_drive(second, "tuneE_day_l0", 104, 4, 0.0)
    splits = {"train": ["trainC_fog_l0"], "database": None, "queries": [],
              "tuning": {"database": "tuneE_day_l0", "queries": []}}
    (second / "splits.json").write_text(json.dumps(splits))
    drives = load_train_sets([dataset, second], progress=False)
    assert [d.name for d in drives] == ["trainA_day_l0", "trainA_night_l1", "trainC_fog_l0"]
    assert [d.name for d in load_train_sets([dataset, second], ["trainC_fog_l0"], progress=False)] == ["trainC_fog_l0"]
    with pytest.raises(ValueError, match="outside the train split"):
        load_train_sets([dataset, second], ["tuneE_day_l0"], progress=False)
    with pytest.raises(ValueError, match="outside the train split"):
        load_train_drives(second, ["tuneE_day_l0"], progress=False)
    with pytest.raises(ValueError, match="map seeds"):
        load_train_sets([dataset, dataset], progress=False)


def test_pca_init_spreads_untrained_descriptors():
    ext = DescriptorExtractor.untrained("rgb_netvlad", seed=0, device="cpu", input_size=(H, W), clusters=4, dim=16)
    rgbs = np.random.default_rng(0).integers(0, 256, (40, H, W, 3), dtype=np.uint8)
    rgbs[:20] //= 3  # two groups of brightness

    def mean_cos() -> float:
        d = ext.describe_batch(rgbs)
        s = d @ d.T
        return float(s[np.triu_indices(len(s), 1)].mean())

    before = mean_cos()
    with torch.no_grad():
        init_projection_pca(ext.net, ext.to_input(rgbs))
    assert before > 0.5 and abs(mean_cos()) < 0.2
    with pytest.raises(ValueError, match="input_norm"):
        DescriptorExtractor.untrained("rgb_netvlad", input_norm="nope")
    inst = DescriptorExtractor.untrained("rgb_netvlad", device="cpu", input_size=(H, W), input_norm="instance")
    np.testing.assert_allclose(inst.describe_batch(rgbs[20:22]), inst.describe_batch(rgbs[20:22] // 2), atol=0.05)


def test_pasted_vehicles_stand_on_the_lower_half_and_shift_moves_columns():
    from semloc_ros.core.labels import IGNORED_ID
    from semloc_ros.training.augment import OCCLUDER_CLASSES, paste_vehicles, random_shift

    gen = torch.Generator().manual_seed(0)
    labels = torch.full((64, H, W), ROAD)
    labels[:, : H // 2] = SKY
    out = paste_vehicles(labels, gen, p=1.0)
    changed = out != labels
    assert changed.any(dim=(1, 2)).float().mean() > 0.8  # nearly every image got a box of a new class
    assert not changed[:, : int(0.2 * H)].any()  # nothing floats in the sky
    fills = {IGNORED_ID if c == "IGNORED" else SEMLOC_SIM.id_of(c) for c in OCCLUDER_CLASSES}
    assert set(out[changed].unique().tolist()) <= fills and IGNORED_ID in out[changed]
    assert torch.equal(paste_vehicles(labels, gen, p=0.0), labels)

    ramp = torch.arange(W).expand(4, H, W)
    shifted = random_shift(ramp, gen, max_fraction=0.25)
    assert shifted.shape == ramp.shape
    offsets = (shifted - ramp)[:, :, W // 2]  # constant per image, within the bound
    assert torch.all(offsets == offsets[:, :1]) and int(offsets.abs().max()) <= W // 4


def test_other_camera_moves_the_horizon_and_scales_about_the_centre():
    from semloc_ros.training.augment import other_camera

    gen = torch.Generator().manual_seed(0)
    labels = torch.full((64, H, W), ROAD)
    labels[:, : H // 2] = SKY
    assert torch.equal(other_camera(labels, gen, p=0.0), labels)
    out = other_camera(labels, gen, p=1.0, max_zoom=1.25, max_tilt=0.08)
    assert out.shape == labels.shape and out.dtype == labels.dtype
    horizon = (out == SKY).sum(dim=1).float().median(dim=1).values  # sky rows per image, centre columns
    assert horizon.std() > 0.5 and (horizon - H // 2).abs().max() <= 0.08 * H + 0.25 * H / 2 + 1
    wider = (out == 0).any(dim=(1, 2))  # a wider view leaves what the map never saw unlabeled
    assert 0 < int(wider.sum()) < 64 and set(out.unique().tolist()) <= {0, ROAD, SKY}


def test_instance_normalised_segmenter_ignores_global_lighting():
    from semloc_ros.models.segmentation import SegmentationNet

    torch.manual_seed(0)
    net = SegmentationNet({"input_norm": "instance", "input_size": (H, W)}).eval()
    x = torch.rand(2, 3, H, W)
    darker = x * torch.tensor([0.3, 0.25, 0.4]).view(1, 3, 1, 1) + 0.05  # dimmer, tinted light
    with torch.no_grad():
        torch.testing.assert_close(net(darker), net(x), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="input_norm"):
        SegmentationNet({"input_norm": "gray-world"})
    plain = Segmenter.from_net(SegmentationNet({"input_size": (H, W)}))
    normed = Segmenter.from_net(SegmentationNet({"input_size": (H, W), "input_norm": "instance"}))
    normed.model.load_state_dict(plain.model.state_dict())
    assert Segmenter.from_net(normed.model).model_id != plain.model_id  # same weights, other input: other id


def test_self_training_pseudo_labels_only_confident_pixels(dataset, tmp_path):
    from semloc_ros.core.labels import IGNORED_ID
    from semloc_ros.training.segmenter import pseudo_label

    drives = load_train_drives(dataset, ["trainA_day_l0"], (H, W), (H, W), progress=False)
    cfg = SegmenterTrainConfig(input_size=(H, W), batch_size=2, steps=3, device="cpu", eval_every=6)
    train_segmenter(drives, tmp_path / "teacher.pt", cfg, progress=False)
    teacher = Segmenter.from_file(tmp_path / "teacher.pt", device="cpu")
    night = load_train_drives(dataset, ["trainA_night_l1"], (H, W), None, labels=False, progress=False)[0].rgb
    loose, strict = pseudo_label(teacher, night, 0.0), pseudo_label(teacher, night, 0.999)
    assert loose.shape == night.shape[:3] and not (loose == IGNORED_ID).any()
    assert (strict == IGNORED_ID).mean() > (loose == IGNORED_ID).mean()
    kept = strict != IGNORED_ID
    np.testing.assert_array_equal(strict[kept], loose[kept])  # kept pixels keep the teacher's argmax

    # A student fine-tuned from the teacher on day labels + night pseudo-labels (night labels never read).
    argv = ["segmenter", "--dataset", str(dataset), "--drives", "trainA_day_l0", "--out", str(tmp_path / "s.pt"),
            "--steps", "2", "--threads", "1", "--input-size", str(H), str(W), "--batch-size", "2", "--device", "cpu",
            "--init", str(tmp_path / "teacher.pt"), "--pseudo-drives", "trainA_night_l1", "--pseudo-threshold", "0.5"]
    assert train_cmd.main(argv) == 0
    _, meta = load_checkpoint(tmp_path / "s.pt")
    assert meta["training"]["pseudo_labeled_frames"] == 24 and meta["training"]["config"]["init"]
    missing_teacher = [str(tmp_path / "nope.pt") if a.endswith("teacher.pt") else a for a in argv]
    assert train_cmd.main(missing_teacher) == 1


def test_class_swaps_relabel_a_whole_class():
    from semloc_ros.training.augment import swap_classes

    gen = torch.Generator().manual_seed(0)
    terrain = SEMLOC_SIM.id_of("TERRAIN")
    labels = torch.full((200, H, W), ROAD)
    labels[:, : H // 2] = terrain
    out = swap_classes(labels, gen, p=0.5)
    changed = (out != labels).any(dim=(1, 2))
    assert 0.1 < changed.float().mean() < 0.5  # p x the share of swaps whose source class is present
    for image in out[changed]:
        assert len(image[: H // 2].unique()) == 1  # the whole class, not a blob
    assert torch.equal(swap_classes(labels, gen, p=0.0), labels)
