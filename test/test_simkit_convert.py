"""semloc_ros.io.simkit: simkit capture (frames.npz + meta.json) -> semloc-sim drive, on tiny synthetic captures."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semloc_ros.io import simkit

pyproj = pytest.importorskip("pyproj")

# the kit's alphabetical class list (capture.py NAMES): UNLABELED is kit id 16
KIT_NAMES = ["BIKE", "BUILDING", "BUS", "CAR", "CROSSWALK", "FENCE", "LANE_LINE", "PEDESTRIAN", "POLE", "ROAD",
             "SIDEWALK", "SKY", "TERRAIN", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "TRUCK", "UNLABELED", "VEGETATION"]
KIT_COLORS = [[i, 2 * i, 3 * i] for i in range(len(KIT_NAMES))]
STEPS = np.array([0, 2, 4, 6, 8, 10, 12, 14])
# east 10 m per frame, then north: a route with both axes, far from the origin (up to ~1 km)
XS = np.array([5.0, 15.0, 25.0, 35.0, 800.0, 800.0, 800.0, 803.3])
YS = np.array([7.0, 7.0, 7.0, 7.0, -600.0, -590.0, -580.0, -575.1])


def make_capture(folder: Path, *, every: int = 2, phase: int = 0, **meta_extra) -> Path:
    """A kit-like output folder: frames.npz + meta.json with 8 frames of 6x8 pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(STEPS)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (n, 6, 8, 3), dtype=np.uint8)
    label = np.full((n, 6, 8), 16, np.uint8)  # UNLABELED
    label[:, :2] = 0  # BIKE
    label[:, 4:] = 17  # VEGETATION
    pose = np.stack([STEPS, XS, YS, np.zeros(n), np.full(n, 36.0)], axis=1)
    np.savez_compressed(folder / "frames.npz", rgb=rgb, label=label, pose=pose)
    meta = dict(seed=7, map=12, traffic=0.0, random_traffic=False, steps=int(STEPS[-1]) + 1, w=8, h=6, every=every,
                phase=phase, condition="day", lane=0, fov=None, cam_height=0.0, cam_x=0.0, cam_pitch=0.0,
                cam_yaw=0.0, scenery_change=0.0, scenery_change_seed=1, no_crash_done=False, height_scale=50,
                n_frames=n, fps=2.5, t_capture=3.2, scenery={"building": 3, "tree": 2, "pole": 1},
                camera={"pos_m": [0, 0.8, 1.5], "hpr_deg": [0, 0, 0], "hfov_deg": 60.0, "vfov_deg": 46.8},
                class_names=KIT_NAMES, class_colors=KIT_COLORS, route_len_m=1234.5, arrive=True, crash=False,
                out_of_road=False)
    meta.update(meta_extra)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def convert(tmp_path: Path, name: str = "synth_day_l0", role: str = "database", index: int = 100, **kw) -> dict:
    raw = tmp_path / "raw" / name
    if not raw.exists():
        make_capture(raw, **kw)
    return simkit.convert(raw, tmp_path / "root" / "drives" / name, name=name, role=role, drive_index=index,
                          block_sequence="ICX")


def read_poses(drive: Path) -> list[dict]:
    with open(drive / "poses.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_class_ids_renumbered_unlabeled_zero(tmp_path):
    convert(tmp_path)
    drive = tmp_path / "root" / "drives" / "synth_day_l0"
    label = np.asarray(Image.open(drive / "label" / "000003.png"))
    assert label.dtype == np.uint8 and label.shape == (6, 8)
    assert set(np.unique(label[2:4])) == {0}  # kit UNLABELED (16) -> 0
    assert set(np.unique(label[:2])) == {1}  # kit BIKE (0) -> 1
    assert set(np.unique(label[4:])) == {17}  # kit VEGETATION (17) -> 17
    _, classes = simkit.class_table(KIT_NAMES, KIT_COLORS)
    assert [c["name"] for c in classes[:3]] == ["UNLABELED", "BIKE", "BUILDING"]
    assert classes[0]["kit_id"] == 16 and classes[0]["color"] == KIT_COLORS[16]


def test_poses_csv_columns_and_values(tmp_path):
    convert(tmp_path)
    drive = tmp_path / "root" / "drives" / "synth_day_l0"
    header = (drive / "poses.csv").read_text().splitlines()[0]
    assert header == "frame,stamp_ns,x_m,y_m,heading_rad,speed_mps,lat,lon,alt_m"
    rows = read_poses(drive)
    assert [int(r["frame"]) for r in rows] == list(range(len(STEPS)))
    assert float(rows[4]["x_m"]) == 800.0 and float(rows[4]["y_m"]) == -600.0
    assert float(rows[0]["speed_mps"]) == pytest.approx(10.0)
    assert {r["alt_m"] for r in rows} == {"60.00"}
    assert len(list((drive / "rgb").glob("*.jpg"))) == len(STEPS)


def test_wgs84_geodesic_distance_equals_xy_distance(tmp_path):
    convert(tmp_path)
    rows = read_poses(tmp_path / "root" / "drives" / "synth_day_l0")
    geod = pyproj.Geod(ellps="WGS84")
    worst = 0.0
    for a in rows:
        for b in rows:
            planar = math.hypot(float(a["x_m"]) - float(b["x_m"]), float(a["y_m"]) - float(b["y_m"]))
            if planar < 5.0:
                continue
            _, _, dist = geod.inv(float(a["lon"]), float(a["lat"]), float(b["lon"]), float(b["lat"]))
            worst = max(worst, abs(dist - planar) / planar)
    assert worst < 1e-4  # 0.01 %
    # the sphere of v1 would be off by ~0.1-0.3 % east-west: make sure the check can tell
    sphere = pyproj.Geod(a=6371008.8, b=6371008.8)
    _, _, dist = sphere.inv(float(rows[0]["lon"]), float(rows[0]["lat"]), float(rows[3]["lon"]), float(rows[3]["lat"]))
    assert abs(dist - 30.0) / 30.0 > 1e-3


def test_origin_and_east_north_axes(tmp_path):
    lat, lon = simkit.xy_to_latlon(np.array([0.0, 1000.0, 0.0]), np.array([0.0, 0.0, 1000.0]))
    assert lat[0] == pytest.approx(51.752, abs=1e-12) and lon[0] == pytest.approx(-1.2577, abs=1e-12)
    assert lon[1] > lon[0] and abs(lat[1] - lat[0]) < 1e-5  # +x = east
    assert lat[2] > lat[0] and abs(lon[2] - lon[0]) < 1e-9  # +y = north
    info = convert(tmp_path)
    assert info["geo_check"]["axes_east_north_ok"] and info["geo_check"]["max_rel_err_pct"] < 0.01
    assert info["geo_check"]["pairs"] > 0


def test_stamps_follow_the_rule_and_increase(tmp_path):
    convert(tmp_path, index=123)
    rows = read_poses(tmp_path / "root" / "drives" / "synth_day_l0")
    stamps = [int(r["stamp_ns"]) for r in rows]
    assert stamps == [1_700_000_000_000_000_000 + 123 * 10**12 + (s + 1) * 10**8 for s in STEPS]
    assert all(b - a == 2 * 10**8 for a, b in itertools.pairwise(stamps))  # every 2 -> 0.2 s
    with pytest.raises(simkit.ConvertError):
        simkit.stamps_ns(np.array([0, 4, 2]), 100)


def test_drive_json_records_camera_change_phase_traffic(tmp_path):
    info = convert(tmp_path, name="synth_rear", role="rear_query", phase=1, cam_yaw=180.0, cam_x=-2.0,
                   scenery_change=0.3, scenery_change_seed=2, traffic=0.1, random_traffic=True,
                   condition="night", lane=1)
    saved = json.loads((tmp_path / "root" / "drives" / "synth_rear" / "drive.json").read_text())
    assert saved["phase"] == 1 and saved["traffic"] == 0.1 and saved["random_traffic"] is True
    assert saved["camera"]["summary"] == "rear fov60 x-2" and saved["camera"]["hfov_deg"] == 60.0
    assert saved["scenery_change"] == {"fraction": 0.3, "seed": 2}
    assert saved["split"] == "rear_query" and saved["block_sequence"] == "ICX" and info["drive_index"] == 100


def test_rerun_skips_and_changed_source_redoes(tmp_path):
    convert(tmp_path)
    drive = tmp_path / "root" / "drives" / "synth_day_l0"
    stamp = (drive / "drive.json").stat().st_mtime_ns
    again = convert(tmp_path)
    assert again.get("skipped") is True and (drive / "drive.json").stat().st_mtime_ns == stamp
    meta_path = tmp_path / "raw" / "synth_day_l0" / "meta.json"  # a re-render changes meta.json
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "fps": 2.6}))
    (drive.parent / "synth_day_l0.partial").mkdir()  # a half-written leftover is replaced
    redone = convert(tmp_path)
    assert "skipped" not in redone and redone["capture_fps"] == 2.6
    assert not (drive.parent / "synth_day_l0.partial").exists()


def test_readme_table_and_splits(tmp_path):
    convert(tmp_path, name="eval_day_l0", role="database", index=100)
    convert(tmp_path, name="eval_night_l1", role="query", index=101, condition="night", lane=1, phase=1,
            fov=75.0, cam_height=0.4, cam_pitch=-4.0, camera={"hfov_deg": 75.0})
    convert(tmp_path, name="trainC_day_l0", role="train", index=102)
    convert(tmp_path, name="tuneE_day_l0", role="tuning_database", index=103)
    convert(tmp_path, name="city01_day_l0", role="city", index=104, arrive=False, crash=True)
    root = tmp_path / "root"
    splits = simkit.write_dataset_files(root)
    assert splits["database"] == "eval_day_l0" and splits["queries"] == ["eval_night_l1"]
    assert splits["train"] == ["trainC_day_l0"] and splits["city"] == ["city01_day_l0"]
    assert splits["tuning"] == {"database": "tuneE_day_l0", "queries": []}
    assert json.loads((root / "sets" / "tuning" / "splits.json").read_text())["database"] == "tuneE_day_l0"
    assert (root / "sets" / "tuning" / "drives" / "tuneE_day_l0" / "poses.csv").is_file()
    assert json.loads((root / "classes.json").read_text())[0]["name"] == "UNLABELED"
    readme = (root / "README.md").read_text()
    assert "| eval_day_l0 | database | 7 | 12 (ICX) | 0 | day | front fov60 | - | 0 | 2/0 | 8 | 1234 | yes |" in readme
    assert "| eval_night_l1 | query | 7 | 12 (ICX) | 1 | night | front fov75 h+0.4 pitch-4 |" in readme
    assert "| no (crash) |" in readme


def test_root_loads_with_the_package_loader(tmp_path):
    datasets = pytest.importorskip("semloc_ros.io.datasets")
    convert(tmp_path, name="eval_day_l0", role="database", index=100)
    convert(tmp_path, name="eval_night_l1", role="query", index=101, condition="night", lane=1)
    simkit.write_dataset_files(tmp_path / "root")
    database, queries = datasets.load_semloc_sim_split(tmp_path / "root")
    assert len(database) == len(STEPS) and [q.name for q in queries] == ["eval_night_l1"]
    assert database.frames[0].stamp_ns == 1_700_000_000_000_000_000 + 100 * 10**12 + 10**8


def test_cli_convert_and_readme(tmp_path, capsys):
    raw = make_capture(tmp_path / "raw" / "x")
    out = tmp_path / "root" / "drives" / "eval_day_l0"
    assert simkit.main(["convert", str(raw), str(out), "--drive-index", "100", "--role", "database"]) == 0
    assert json.loads(capsys.readouterr().out)["n_frames"] == len(STEPS)
    assert simkit.main(["readme", str(tmp_path / "root")]) == 0
    assert (tmp_path / "root" / "README.md").is_file()
    assert simkit.main(["convert", str(tmp_path / "missing"), str(out), "--drive-index", "1"]) != 0
