"""The label set of the package (``SEMLOC_SIM``), colourisation and mappings from other label sets.

Label images are ``uint8`` HxW arrays of class ids of :data:`SEMLOC_SIM`, the classes of the semloc-sim-v1
dataset (``data/labels/semloc_sim.json``). Segmenters trained on other label sets are mapped onto it with a
:class:`LabelMapping` (Cityscapes-19 train ids, CamVid 11 or 32 classes, or a user JSON file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

UNLABELED_ID = 0


@dataclass(frozen=True)
class LabelSet:
    """Classes with contiguous ids ``0..N-1``, unique upper-case names and RGB colours."""

    name: str
    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(c) for c in color) for color in self.colors))
        if not self.ids:
            raise ValueError(f"label set {self.name!r} has no classes")
        if not len(self.ids) == len(self.names) == len(self.colors):
            raise ValueError(
                f"label set {self.name!r}: {len(self.ids)} ids, {len(self.names)} names, {len(self.colors)} colours"
            )
        if self.ids != tuple(range(len(self.ids))):
            raise ValueError(f"label set {self.name!r}: ids must be 0..{len(self.ids) - 1} in order, got {self.ids}")
        if len(self.ids) > 256:
            raise ValueError(f"label set {self.name!r} has {len(self.ids)} classes; uint8 labels allow 256")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label set {self.name!r} has duplicate class names")
        for class_name, color in zip(self.names, self.colors, strict=True):
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError(f"label set {self.name!r}: colour of {class_name} is not RGB 0..255: {color}")

    @property
    def num_classes(self) -> int:
        """Number of classes (ids are ``0..num_classes-1``)."""
        return len(self.ids)

    def id_of(self, class_name: str) -> int:
        """The id of ``class_name`` (case-insensitive; spaces count as underscores)."""
        key = class_name.strip().upper().replace(" ", "_")
        try:
            return self.names.index(key)
        except ValueError:
            raise KeyError(
                f"no class {class_name!r} in label set {self.name!r}; classes: {', '.join(self.names)}"
            ) from None

    def name_of(self, class_id: int) -> str:
        """The name of class ``class_id``."""
        if not 0 <= class_id < self.num_classes:
            raise KeyError(f"no class id {class_id} in label set {self.name!r}")
        return self.names[class_id]

    def color_table(self) -> np.ndarray:
        """A (256, 3) ``uint8`` RGB lookup table: the class colours, black for ids outside the set."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return table

    @classmethod
    def from_records(cls, name: str, records: Any) -> LabelSet:
        """Build from a list of ``{"id": int, "name": str, "color": [r, g, b]}`` (any order of ids)."""
        if not isinstance(records, list):
            raise ValueError(f"label set {name!r}: expected a list of classes, got {type(records).__name__}")
        try:
            ordered = sorted(records, key=lambda record: int(record["id"]))
            return cls(
                name=name,
                ids=tuple(int(record["id"]) for record in ordered),
                names=tuple(str(record["name"]) for record in ordered),
                colors=tuple(tuple(record["color"]) for record in ordered),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"label set {name!r}: every class needs id, name and color ({error!r})") from error

    @classmethod
    def from_json(cls, path: str | Path, name: str | None = None) -> LabelSet:
        """Read a classes.json file (the semloc-sim-v1 format); the name defaults to the file stem."""
        path = Path(path)
        with path.open(encoding="utf-8") as file:
            records = json.load(file)
        return cls.from_records(name or path.stem, records)


def _load_packaged_label_set(file_name: str) -> LabelSet:
    text = resources.files("semloc_ros").joinpath("data", "labels", file_name).read_text(encoding="utf-8")
    return LabelSet.from_records(Path(file_name).stem, json.loads(text))


SEMLOC_SIM: LabelSet = _load_packaged_label_set("semloc_sim.json")
"""The 18 classes of the semloc-sim-v1 dataset: the label set of every label image in the package."""

DYNAMIC_CLASSES: tuple[str, ...] = ("BIKE", "BUS", "CAR", "PEDESTRIAN", "TRUCK")
"""Classes of objects that move, hence are not landmarks for place recognition."""

IGNORED_ID = 255
"""Label id of a pixel without a class: ignored by training losses (unconfident pseudo-labels) and by the label
descriptors (masked dynamic objects). Every id outside the label set is treated the same way."""


def dynamic_class_ids() -> list[int]:
    """Ids in ``SEMLOC_SIM`` of the classes that move (cars, people, ...)."""
    return sorted(SEMLOC_SIM.id_of(name) for name in DYNAMIC_CLASSES)


LANDMARK_CLASSES: tuple[str, ...] = ("BUILDING", "FENCE", "POLE", "TRAFFIC_LIGHT", "TRAFFIC_SIGN", "VEGETATION")
"""Static structure beside the road: what tells one place from another. Road, lane lines, crosswalks, sidewalks,
terrain and sky look alike on every map; a view of nothing else matches another map's empty stretch as well as
its own place."""


def landmark_share(labels: np.ndarray) -> float:
    """The share of the pixels of a label image (or thumbnail) in :data:`LANDMARK_CLASSES` (0 for an empty one)."""
    labels = _check_labels(labels)
    ids = [SEMLOC_SIM.id_of(name) for name in LANDMARK_CLASSES]
    return float(np.isin(labels, ids).mean()) if labels.size else 0.0


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected an HxW label image, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label images hold integer class ids, got dtype {labels.dtype}")
    return labels


def colorize(labels: np.ndarray, label_set: LabelSet = SEMLOC_SIM) -> np.ndarray:
    """HxW class ids -> HxWx3 ``uint8`` RGB with the class colours; unknown ids are black."""
    labels = _check_labels(labels)
    table = label_set.color_table()
    if labels.dtype == np.uint8:
        return table[labels]
    known = (labels >= 0) & (labels < label_set.num_classes)
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    rgb[known] = table[labels[known]]
    return rgb


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5, label_set: LabelSet = SEMLOC_SIM) -> np.ndarray:
    """Blend the class colours over an HxWx3 ``uint8`` RGB image: ``(1 - alpha) * rgb + alpha * colour``."""
    labels = _check_labels(labels)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} of shape {rgb.shape}")
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} is outside [0, 1]")
    colours = colorize(labels, label_set).astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    return np.rint(blended).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class LabelMapping:
    """Source class id -> :data:`SEMLOC_SIM` id; ``table[source_id]`` is the target id.

    ``source_names[i]`` names source id ``i``. Ids beyond the table (e.g. an ignore id 255) map to 0
    (UNLABELED).
    """

    name: str
    source_names: tuple[str, ...]
    table: np.ndarray

    def __post_init__(self) -> None:
        table = np.array(self.table, dtype=np.int64).reshape(-1)
        if len(self.source_names) != table.size:
            raise ValueError(
                f"mapping {self.name!r}: {len(self.source_names)} source names for {table.size} table entries"
            )
        if table.size == 0 or table.size > 256:
            raise ValueError(f"mapping {self.name!r}: table needs 1..256 entries, has {table.size}")
        if ((table < 0) | (table >= SEMLOC_SIM.num_classes)).any():
            raise ValueError(f"mapping {self.name!r}: targets must be ids 0..{SEMLOC_SIM.num_classes - 1}")
        frozen_table = table.astype(np.uint8)
        frozen_table.flags.writeable = False
        object.__setattr__(self, "table", frozen_table)
        object.__setattr__(self, "source_names", tuple(str(n) for n in self.source_names))

    @classmethod
    def from_names(cls, name: str, source_names: tuple[str, ...], targets: dict[str, str]) -> LabelMapping:
        """Build from source class names in id order and ``{source name: SEMLOC_SIM name}``.

        Source classes absent from ``targets`` map to UNLABELED.
        """
        unknown = set(targets) - set(source_names)
        if unknown:
            raise ValueError(f"mapping {name!r}: targets name unknown source classes {sorted(unknown)}")
        table = [SEMLOC_SIM.id_of(targets[source]) if source in targets else UNLABELED_ID for source in source_names]
        return cls(name, tuple(source_names), np.asarray(table))

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """Map source class ids (any integer array) to ``uint8`` SEMLOC_SIM ids; unknown ids -> 0."""
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"label images hold integer class ids, got dtype {labels.dtype}")
        if labels.dtype == np.uint8:
            lookup = np.zeros(256, dtype=np.uint8)
            lookup[: self.table.size] = self.table
            return lookup[labels]
        known = (labels >= 0) & (labels < self.table.size)
        mapped = np.zeros(labels.shape, dtype=np.uint8)
        mapped[known] = self.table[labels[known]]
        return mapped


CITYSCAPES_19 = LabelMapping.from_names(
    "cityscapes19",
    (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
        "bicycle",
    ),
    {
        "road": "ROAD", "sidewalk": "SIDEWALK", "building": "BUILDING", "wall": "BUILDING", "fence": "FENCE",
        "pole": "POLE", "traffic light": "TRAFFIC_LIGHT", "traffic sign": "TRAFFIC_SIGN",
        "vegetation": "VEGETATION", "terrain": "TERRAIN", "sky": "SKY", "person": "PEDESTRIAN",
        "rider": "PEDESTRIAN", "car": "CAR", "truck": "TRUCK", "bus": "BUS", "train": "BUS",
        "motorcycle": "BIKE", "bicycle": "BIKE",
    },
)  # fmt: skip
"""Cityscapes train ids 0..18 (ignore id 255 -> UNLABELED)."""

CAMVID_11 = LabelMapping.from_names(
    "camvid11",
    (
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
        "Bicyclist", "Void",
    ),
    {
        "Sky": "SKY", "Building": "BUILDING", "Pole": "POLE", "Road": "ROAD", "Pavement": "SIDEWALK",
        "Tree": "VEGETATION", "SignSymbol": "TRAFFIC_SIGN", "Fence": "FENCE", "Car": "CAR",
        "Pedestrian": "PEDESTRIAN", "Bicyclist": "BIKE",
    },
)  # fmt: skip
"""CamVid 11 classes in SegNet's order (id 11 = void -> UNLABELED)."""

CAMVID_32 = LabelMapping.from_names(
    "camvid32",
    (
        "Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child",
        "Column_Pole", "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter",
        "OtherMoving", "ParkingBlock", "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol", "Sky",
        "SUVPickupTruck", "TrafficCone", "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel",
        "VegetationMisc", "Void", "Wall",
    ),
    {
        "Archway": "BUILDING", "Bicyclist": "BIKE", "Bridge": "BUILDING", "Building": "BUILDING",
        "Car": "CAR", "Child": "PEDESTRIAN", "Column_Pole": "POLE", "Fence": "FENCE",
        "LaneMkgsDriv": "LANE_LINE", "LaneMkgsNonDriv": "LANE_LINE", "MotorcycleScooter": "BIKE",
        "ParkingBlock": "SIDEWALK",
        "Pedestrian": "PEDESTRIAN", "Road": "ROAD", "RoadShoulder": "ROAD", "Sidewalk": "SIDEWALK",
        "SignSymbol": "TRAFFIC_SIGN", "Sky": "SKY", "SUVPickupTruck": "CAR", "TrafficLight": "TRAFFIC_LIGHT",
        "Train": "BUS", "Tree": "VEGETATION", "Truck_Bus": "TRUCK", "Tunnel": "BUILDING",
        "VegetationMisc": "VEGETATION", "Wall": "BUILDING",
    },
)  # fmt: skip
"""CamVid's 32 classes, ids in the order of its label_colors.txt (as in fast.ai's codes.txt)."""

IDENTITY = LabelMapping("identity", SEMLOC_SIM.names, np.arange(SEMLOC_SIM.num_classes))
"""SEMLOC_SIM -> SEMLOC_SIM."""

MAPPINGS: dict[str, LabelMapping] = {
    mapping.name: mapping for mapping in (IDENTITY, CITYSCAPES_19, CAMVID_11, CAMVID_32)
}


def mapping_from_json(path: str | Path) -> LabelMapping:
    """Read a user mapping ``{"source_id": "SEMLOC_NAME" or SEMLOC id}``; unlisted source ids -> UNLABELED."""
    path = Path(path)
    with path.open(encoding="utf-8") as file:
        entries = json.load(file)
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: expected a non-empty JSON object {{source_id: SEMLOC class name}}")
    targets: dict[int, int] = {}
    for key, target in entries.items():
        try:
            source_id = int(key)
        except ValueError:
            raise ValueError(f"{path}: source id {key!r} is not an integer") from None
        if not 0 <= source_id <= 255:
            raise ValueError(f"{path}: source id {source_id} is outside 0..255")
        if isinstance(target, str) and target.strip().upper().replace(" ", "_") in SEMLOC_SIM.names:
            targets[source_id] = SEMLOC_SIM.id_of(target)
        elif isinstance(target, int) and not isinstance(target, bool) and 0 <= target < SEMLOC_SIM.num_classes:
            targets[source_id] = target
        else:
            raise ValueError(f"{path}: target {target!r} of source id {key} is not a {SEMLOC_SIM.name} class")
    table = np.zeros(max(targets) + 1, dtype=np.int64)
    for source_id, target_id in targets.items():
        table[source_id] = target_id
    source_names = tuple(str(i) for i in range(table.size))
    return LabelMapping(path.stem, source_names, table)


def model_classes_problem(num_classes: int, mapping: LabelMapping | None) -> str | None:
    """Why a segmenter with ``num_classes`` outputs does not fit ``mapping`` (None = identity), or None if it does.

    Every id the model emits must be in the mapping (else it would silently become UNLABELED, or with the identity
    an id semloc has no class for), and the model must emit every id the mapping maps to a class (else the mapping
    was made for another label set: a 7-class model read as Cityscapes-19). The text names the ROS parameter.
    """
    mapping = mapping or IDENTITY
    named = np.flatnonzero(mapping.table != UNLABELED_ID)
    needed = int(named[-1]) + 1 if named.size else 1
    covered = mapping.table.size
    if needed <= num_classes <= covered:
        return None
    what = (f"label_mapping '{mapping.name}' ({SEMLOC_SIM.name}'s own {covered} classes)" if mapping is IDENTITY
            else f"label_mapping '{mapping.name}' (source ids 0..{covered - 1})")
    if num_classes > covered:
        return (f"the segmenter has {num_classes} output classes, but {what} has no class for ids "
                f"{covered}..{num_classes - 1}: set label_mapping to the model's label set (built-in: "
                f"{', '.join(MAPPINGS)}, or a JSON file)")
    return (f"the segmenter has {num_classes} output classes, but {what} expects at least {needed}: "
            f"it was made for another label set; set label_mapping to the model's")


def load_mapping(name_or_json_path: str | Path) -> LabelMapping:
    """A built-in mapping by name (see :data:`MAPPINGS`) or a user JSON mapping file."""
    key = str(name_or_json_path)
    if key in MAPPINGS:
        return MAPPINGS[key]
    path = Path(key).expanduser()
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"label mapping file {path} does not exist")
        return mapping_from_json(path)
    raise ValueError(f"unknown label mapping {key!r}; built-in: {', '.join(MAPPINGS)}, or a .json file")
