"""Tests of semloc_ros.core.labels (label set, colourisation, mappings from other label sets)."""

import json
from pathlib import Path

import numpy as np
import pytest

from semloc_ros.core.labels import (
    CAMVID_11,
    CAMVID_32,
    CITYSCAPES_19,
    DYNAMIC_CLASSES,
    MAPPINGS,
    SEMLOC_SIM,
    LabelMapping,
    LabelSet,
    colorize,
    landmark_share,
    load_mapping,
    overlay,
)
from semloc_ros.core.reranking import featureless

PACKAGED_JSON = Path(__file__).resolve().parents[1] / "semloc_ros" / "data" / "labels" / "semloc_sim.json"
DATASET_JSON = Path("/work/shared/datasets/semloc-sim-v1/classes.json")


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_semloc_sim_has_the_dataset_classes():
    assert SEMLOC_SIM.name == "semloc_sim"
    assert SEMLOC_SIM.num_classes == 18
    assert SEMLOC_SIM.ids == tuple(range(18))
    assert SEMLOC_SIM.names[0] == "UNLABELED" and SEMLOC_SIM.colors[0] == (0, 0, 0)
    assert SEMLOC_SIM.id_of("ROAD") == 10 and SEMLOC_SIM.colors[10] == (128, 64, 128)
    assert SEMLOC_SIM.id_of("VEGETATION") == 17


def test_packaged_label_set_matches_its_json_file():
    assert LabelSet.from_json(PACKAGED_JSON) == SEMLOC_SIM


@pytest.mark.skipif(not DATASET_JSON.is_file(), reason="semloc-sim-v1 dataset not present")
def test_packaged_copy_equals_the_dataset_file():
    assert json.loads(PACKAGED_JSON.read_text()) == json.loads(DATASET_JSON.read_text())


def test_id_of_is_case_insensitive_and_raises_for_unknown_names():
    assert SEMLOC_SIM.id_of("traffic light") == SEMLOC_SIM.id_of("TRAFFIC_LIGHT") == 14
    assert SEMLOC_SIM.name_of(4) == "CAR"
    with pytest.raises(KeyError, match="no class 'TRAIN'"):
        SEMLOC_SIM.id_of("TRAIN")
    with pytest.raises(KeyError):
        SEMLOC_SIM.name_of(18)


def test_dynamic_classes_exist():
    assert DYNAMIC_CLASSES == ("BIKE", "BUS", "CAR", "PEDESTRIAN", "TRUCK")
    assert sorted(SEMLOC_SIM.id_of(name) for name in DYNAMIC_CLASSES) == [1, 3, 4, 8, 16]


def test_label_set_is_immutable():
    with pytest.raises(AttributeError):
        SEMLOC_SIM.name = "other"  # type: ignore[misc]


def test_from_json_sorts_records_by_id(tmp_path):
    records = [
        {"id": 1, "name": "ROAD", "color": [1, 2, 3]},
        {"id": 0, "name": "VOID", "color": [0, 0, 0]},
    ]
    label_set = LabelSet.from_json(write_json(tmp_path / "tiny.json", records))
    assert label_set.name == "tiny" and label_set.names == ("VOID", "ROAD")
    assert label_set.colors == ((0, 0, 0), (1, 2, 3))


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "no classes"),
        ([{"id": 0, "name": "A", "color": [0, 0, 0]}, {"id": 2, "name": "B", "color": [0, 0, 0]}], "ids must be"),
        ([{"id": 0, "name": "A", "color": [0, 0, 0]}, {"id": 1, "name": "A", "color": [0, 0, 0]}], "duplicate"),
        ([{"id": 0, "name": "A", "color": [0, 0, 300]}], "not RGB"),
        ([{"id": 0, "name": "A", "color": [0, 0]}], "not RGB"),
        ([{"id": 0, "name": "A"}], "needs id, name and color"),
        ({"id": 0}, "expected a list"),
    ],
)
def test_invalid_label_sets_are_rejected(tmp_path, records, message):
    with pytest.raises(ValueError, match=message):
        LabelSet.from_json(write_json(tmp_path / "bad.json", records))


def test_colorize_uses_class_colours_and_black_for_unknown_ids():
    labels = np.array([[0, 4, 10], [17, 18, 255]], dtype=np.uint8)
    rgb = colorize(labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 1], (0, 0, 142))
    np.testing.assert_array_equal(rgb[0, 2], (128, 64, 128))
    np.testing.assert_array_equal(rgb[1, 0], (107, 142, 35))
    np.testing.assert_array_equal(rgb[1, 1:], 0)


def test_colorize_accepts_wider_integer_labels():
    labels = np.array([[-1, 4, 1000]], dtype=np.int32)
    np.testing.assert_array_equal(colorize(labels), [[[0, 0, 0], [0, 0, 142], [0, 0, 0]]])


def test_colorize_with_another_label_set():
    other = LabelSet("two", (0, 1), ("A", "B"), ((10, 20, 30), (40, 50, 60)))
    np.testing.assert_array_equal(
        colorize(np.array([[1, 0, 4]], np.uint8), other)[0], [[40, 50, 60], [10, 20, 30], [0, 0, 0]]
    )


@pytest.mark.parametrize("labels", [np.zeros((2, 2, 1), np.uint8), np.zeros((2, 2), np.float32), np.zeros(4, np.uint8)])
def test_colorize_rejects_non_label_images(labels):
    with pytest.raises(ValueError):
        colorize(labels)


def test_overlay_blends_with_alpha():
    rgb = np.full((1, 2, 3), 100, np.uint8)
    labels = np.array([[4, 0]], np.uint8)  # CAR (0, 0, 142), UNLABELED black
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=0.5), [[[50, 50, 121], [50, 50, 50]]])
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=1.0), colorize(labels))


def test_overlay_rejects_bad_inputs():
    labels = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((2, 3, 3), np.uint8), labels)
    with pytest.raises(ValueError, match="RGB"):
        overlay(np.zeros((2, 2, 3), np.float32), labels)
    with pytest.raises(ValueError, match="alpha"):
        overlay(np.zeros((2, 2, 3), np.uint8), labels, alpha=1.5)


def test_cityscapes_mapping():
    assert len(CITYSCAPES_19.source_names) == 19
    expected = {
        "road": "ROAD", "sidewalk": "SIDEWALK", "building": "BUILDING", "wall": "BUILDING", "fence": "FENCE",
        "pole": "POLE", "traffic light": "TRAFFIC_LIGHT", "traffic sign": "TRAFFIC_SIGN",
        "vegetation": "VEGETATION", "terrain": "TERRAIN", "sky": "SKY", "person": "PEDESTRIAN",
        "rider": "PEDESTRIAN", "car": "CAR", "truck": "TRUCK", "bus": "BUS", "train": "BUS",
        "motorcycle": "BIKE", "bicycle": "BIKE",
    }  # fmt: skip
    for train_id, source_name in enumerate(CITYSCAPES_19.source_names):
        assert SEMLOC_SIM.names[CITYSCAPES_19.table[train_id]] == expected[source_name]
    assert CITYSCAPES_19.source_names[:3] == ("road", "sidewalk", "building")
    assert CITYSCAPES_19.source_names[18] == "bicycle"


def test_mapping_apply_is_a_vectorised_lookup_with_unknown_to_unlabeled():
    train_ids = np.array([[0, 1, 2], [13, 18, 255]], np.uint8)
    mapped = CITYSCAPES_19.apply(train_ids)
    assert mapped.dtype == np.uint8 and mapped.shape == (2, 3)
    names = [[SEMLOC_SIM.names[i] for i in row] for row in mapped]
    assert names == [["ROAD", "SIDEWALK", "BUILDING"], ["CAR", "BIKE", "UNLABELED"]]
    wide = np.array([[-1, 13, 19, 70000]], np.int64)
    np.testing.assert_array_equal(CITYSCAPES_19.apply(wide), [[0, 4, 0, 0]])


def test_camvid_mappings():
    camvid11 = [SEMLOC_SIM.names[i] for i in CAMVID_11.apply(np.arange(12, dtype=np.uint8))]
    assert camvid11 == [
        "SKY", "BUILDING", "POLE", "ROAD", "SIDEWALK", "VEGETATION", "TRAFFIC_SIGN", "FENCE", "CAR", "PEDESTRIAN",
        "BIKE", "UNLABELED",
    ]  # fmt: skip
    assert len(CAMVID_32.source_names) == 32
    by_name = dict(zip(CAMVID_32.source_names, CAMVID_32.table, strict=True))
    assert SEMLOC_SIM.names[by_name["LaneMkgsDriv"]] == "LANE_LINE"
    assert SEMLOC_SIM.names[by_name["SUVPickupTruck"]] == "CAR"
    assert by_name["Void"] == by_name["Animal"] == 0


def test_identity_mapping_and_registry():
    assert set(MAPPINGS) >= {"identity", "cityscapes19", "camvid11"}
    labels = np.arange(18, dtype=np.uint8).reshape(3, 6)
    np.testing.assert_array_equal(MAPPINGS["identity"].apply(labels), labels)
    assert load_mapping("cityscapes19") is CITYSCAPES_19


def test_mapping_table_is_read_only_and_validated():
    with pytest.raises(ValueError):
        CITYSCAPES_19.table[0] = 3
    with pytest.raises(ValueError, match="targets must be"):
        LabelMapping("bad", ("a",), np.array([18]))
    with pytest.raises(ValueError, match="source names"):
        LabelMapping("bad", ("a", "b"), np.array([1]))
    with pytest.raises(ValueError, match="unknown source classes"):
        LabelMapping.from_names("bad", ("a",), {"b": "ROAD"})


def test_load_mapping_from_user_json(tmp_path):
    path = write_json(tmp_path / "my_model.json", {"0": "road", "7": "CAR", "3": 17})
    mapping = load_mapping(str(path))
    assert mapping.name == "my_model"
    np.testing.assert_array_equal(mapping.apply(np.array([[0, 1, 3, 7, 8]], np.uint8)), [[10, 0, 17, 4, 0]])
    assert load_mapping(path).table.size == 8


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({}, "non-empty JSON object"),
        (["ROAD"], "non-empty JSON object"),
        ({"road": "ROAD"}, "not an integer"),
        ({"300": "ROAD"}, "outside 0..255"),
        ({"1": "TRAIN"}, "is not a semloc_sim class"),
        ({"1": 18}, "is not a semloc_sim class"),
        ({"1": True}, "is not a semloc_sim class"),
    ],
)
def test_invalid_user_mappings(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_mapping(write_json(tmp_path / "bad.json", content))


def test_load_mapping_unknown_name_or_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown label mapping"):
        load_mapping("ade20k")
    with pytest.raises(FileNotFoundError):
        load_mapping(tmp_path / "missing.json")


def test_landmark_share_counts_static_structure_only():
    road, sky, building, car, tree = (SEMLOC_SIM.id_of(n) for n in ("ROAD", "SKY", "BUILDING", "CAR", "VEGETATION"))
    image = np.full((10, 10), road, np.uint8)
    image[:4] = sky
    assert landmark_share(image) == 0.0 and featureless(image, 0.01)
    image[0, :5] = car  # traffic is no landmark
    assert landmark_share(image) == 0.0
    image[1, :3] = building
    image[2, :2] = tree
    assert landmark_share(image) == pytest.approx(0.05)
    assert not featureless(image, 0.05) and featureless(image, 0.06)
    assert not featureless(np.full((10, 10), road, np.uint8), 0.0)  # 0: the rule is off
    assert not featureless(None, 0.5)  # no label image: nothing to judge
    with pytest.raises(ValueError, match="HxW"):
        landmark_share(np.zeros(5, np.uint8))
