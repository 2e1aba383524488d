"""Named evaluation protocols of ``semloc evaluate --protocol NAME`` (hloc-style named configurations).

Every protocol scores the same metrics (Recall@N at ``threshold_m``, the share of top-1 places and of localizer
estimates within 2, 5 and 10 m, median / 95th percentile error) for every method asked for, so the trivial
``label-histogram`` and the ``rgb`` baseline appear in every table beside the semantic descriptor.

- ``standard``: the dataset's database drive against each of its query drives.
- ``confusers``: one database of several maps: the database drive plus every drive of OTHER maps recorded in the
  database's condition (and those of ``--confuser-datasets``), each map shifted to its own geographic offset so
  its look-alike places compete with the true ones but are never within the threshold.
- ``dynamic``: the query drives with traffic, each label method with and without ``mask_dynamic`` (dynamic
  classes ignored by the descriptor), with the segmenter and with ground-truth labels.
- ``day-only``: the label methods once per segmenter of ``--segmenters`` (e.g. trained on day drives only, then
  with augmentation, photometric normalisation or self-training: ``scripts/train_day_only.sh``), each with its
  mIoU per condition (``v2-day-only``: on semloc-sim-v2 in the shipped configuration,
  ``scripts/train_day_only_v2.sh``).

A *preset* (``semloc evaluate --preset NAME``, :data:`PRESETS`) names one complete evaluation: a protocol, the
methods, the database views, the localizer parameters set on top of the parameter file, and the other options
(each still overridable on the command line). ``scripts/evaluate_protocols.sh`` runs the presets behind the
published tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from semloc_ros.core.geodesy import LocalENU
from semloc_ros.core.views import RECOMMENDED_VIEWS, SINGLE_VIEW
from semloc_ros.io.datasets import Drive, Frame, load_semloc_sim_drive


@dataclass(frozen=True)
class Protocol:
    """What one named protocol evaluates."""

    name: str
    description: str
    confusers: bool = False  # add other maps' drives to the database, each at its own offset
    traffic_queries_only: bool = False  # only query drives recorded with traffic
    mask_variants: bool = False  # label methods with and without mask_dynamic
    oracle: bool = False  # also ground-truth labels
    per_segmenter: bool = False  # label methods once per --segmenters file


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("standard", "database drive vs each query drive"),
        Protocol(
            "confusers",
            "database of several maps (other maps' drives of the database condition at their own offsets)",
            confusers=True,
        ),
        Protocol(
            "dynamic",
            "query drives with traffic, label methods with and without mask_dynamic, segmenter and ground truth",
            traffic_queries_only=True,
            mask_variants=True,
            oracle=True,
        ),
        Protocol(
            "day-only",
            "label methods once per segmenter of --segmenters (e.g. trained on day drives only), mIoU per condition",
            per_segmenter=True,
        ),
    )
}

CONFUSER_SPACING_M = 5000.0  # far beyond any route extent (~1 km) and any threshold


def has_traffic(drive: Drive) -> bool:
    """Whether a semloc-sim drive was recorded with traffic (``drive.json`` ``traffic`` > 0)."""
    return float(drive.metadata.get("traffic") or 0.0) > 0.0


def find_confuser_drives(roots: list[Path], database: Drive) -> list[Drive]:
    """Drives of every root whose map differs from the database's and whose condition equals its condition
    (one per map: the first by name), as a user would map each area once in the same conditions."""
    seed, condition = database.metadata.get("seed"), database.condition
    chosen: dict[tuple[str, object], Drive] = {}
    for root in roots:
        for info_path in sorted(Path(root).glob("drives/*/drive.json")):
            info = json.loads(info_path.read_text())
            map_key = (str(root), info.get("seed"))
            if info.get("seed") == seed or info.get("condition") != condition or map_key in chosen:
                continue
            chosen[map_key] = load_semloc_sim_drive(root, info_path.parent.name)
    return list(chosen.values())


def shift_drive(drive: Drive, east_m: float, north_m: float, frame: LocalENU, name: str | None = None) -> Drive:
    """The drive moved by ``(east_m, north_m)`` in the local ENU ``frame`` (geometry kept, lat/lon changed)."""
    east, north, _ = frame.to_enu(drive.lat, drive.lon)
    lat, lon, _ = frame.to_geodetic(np.asarray(east) + east_m, np.asarray(north) + north_m)
    frames = [
        replace(f, lat=float(la), lon=float(lo), image_id=f"{name or drive.name}/{f.image_id}")
        for f, la, lo in zip(drive.frames, lat, lon, strict=True)
    ]
    return replace(drive, name=name or drive.name, frames=frames, skipped=dict(drive.skipped))


def confuser_database(database: Drive, confusers: list[Drive], spacing_m: float = CONFUSER_SPACING_M) -> Drive:
    """One database drive: ``database`` unchanged, then confuser ``k`` (1-based) shifted by ``k * spacing_m``
    along a direction that turns 90 degrees per map (east, north, west, south, then farther out)."""
    frame = LocalENU.centred_on(database.lat, database.lon)
    frames: list[Frame] = list(database.frames)
    for k, drive in enumerate(confusers, start=1):
        ring, quarter = (k - 1) // 4 + 1, (k - 1) % 4
        direction = ((1, 0), (0, 1), (-1, 0), (0, -1))[quarter]
        distance = ring * spacing_m
        shifted = shift_drive(drive, direction[0] * distance, direction[1] * distance, frame, f"confuser{k}")
        frames.extend(shifted.frames)
    names = "+".join(d.name for d in confusers)
    return replace(
        database,
        name=f"{database.name}+{len(confusers)}maps",
        frames=frames,
        metadata={**database.metadata, "confusers": names, "confuser_spacing_m": spacing_m},
    )


LABEL_METHODS = ("semantic", "hybrid", "label-histogram")  # methods whose input includes a label image


@dataclass(frozen=True)
class Variant:
    """One row set of a results table: a method with its segmenter, masking and label source."""

    method: str
    segmenter: Path | None = None  # None = the shipped segmenter
    mask_dynamic: bool = False
    oracle: bool = False  # ground-truth labels instead of the segmenter

    @property
    def segmenter_name(self) -> str:
        return self.segmenter.stem if self.segmenter is not None else ""

    @property
    def name(self) -> str:
        """Row name without the oracle suffix: ``semantic``, ``semantic+mask``, ``semantic@day-plain``, ..."""
        suffix = f"@{self.segmenter_name}" if self.segmenter is not None and not self.oracle else ""
        return f"{self.method}{suffix}{'+mask' if self.mask_dynamic else ''}"


def protocol_variants(
    methods: list[str], segmenters: list[Path] | None, mask_variants: bool, oracle: bool
) -> list[Variant]:
    """Every variant to score: label methods once per segmenter (ground truth once), with and without masking
    when ``mask_variants``; RGB once."""
    variants = []
    for method in methods:
        if method not in LABEL_METHODS:
            variants.append(Variant(method))
            continue
        for mask in (False, True) if mask_variants else (False,):
            variants.extend(Variant(method, segmenter, mask) for segmenter in segmenters or [None])
            if oracle:
                variants.append(Variant(method, None, mask, oracle=True))
    return variants


ALL_METHODS = ("semantic", "rgb", "hybrid", "label-histogram")
# Out-of-database negatives of semloc-sim-v1: day and night drives of both training maps (map A calibrates).
SEMLOC_SIM_NEGATIVES = ("trainA_day_l0", "trainA_night_l1", "trainB_day_l1", "trainB_night_l0")
LABEL_AND_BASELINES = ("semantic", "label-histogram", "rgb")


@dataclass(frozen=True)
class Preset:
    """A named evaluation: ``semloc evaluate`` options and localizer parameters."""

    name: str
    description: str
    protocol: str = "standard"
    methods: tuple[str, ...] = ALL_METHODS
    parameters: tuple[tuple[str, Any], ...] = ()  # (name, value) of localizer_node parameters over the file
    database_views: tuple[float, ...] = SINGLE_VIEW
    sequence_filter: bool = False
    rejection_queries: tuple[str, ...] = ()
    calibration_query: str | None = None  # the drive the no-match threshold analysis is fitted on
    query_stride: int = 3
    segmentation_stride: int = 0
    segmentation_drives: tuple[str, ...] = ()
    route_maps: bool = False

    def arguments(self) -> dict[str, Any]:
        """The ``semloc evaluate`` argument defaults of this preset (argparse destinations)."""
        return {
            "protocol": self.protocol,
            "methods": list(self.methods),
            "database_views": list(self.database_views),
            "sequence_filter": self.sequence_filter,
            "rejection_queries": list(self.rejection_queries),
            "calibration_query": self.calibration_query,
            "query_stride": self.query_stride,
            "segmentation_stride": self.segmentation_stride,
            "segmentation_drives": list(self.segmentation_drives),
            "no_route_maps": not self.route_maps,
        }


# The published tables score the shipped localizer settings (covariance model, integrity gate: fitted on the
# training maps), with re-ranking switched as the preset says.
NO_RERANK = (("rerank_top_k", 0),)
RERANK = (("rerank_top_k", 50),)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("standard", "standard protocol, single-frame and sequence filter, no-match rejection against the "
               "training maps (semloc-sim-v1), no re-ranking", parameters=NO_RERANK, sequence_filter=True,
               rejection_queries=SEMLOC_SIM_NEGATIVES, calibration_query="eval_day_l1", segmentation_stride=5,
               route_maps=True),
        Preset("confusers", "confusers protocol, no re-ranking", protocol="confusers", parameters=NO_RERANK),
        Preset("dynamic", "dynamic protocol on every frame, no re-ranking", protocol="dynamic", parameters=NO_RERANK,
               query_stride=1),
        Preset("views", "standard protocol, database views at 0, +-5 and +-10 % of the width, no re-ranking",
               parameters=NO_RERANK, database_views=(0.0, -0.05, 0.05, -0.1, 0.1)),
        Preset("rerank", "standard protocol with label re-ranking of the top 50, sequence filter",
               parameters=RERANK, sequence_filter=True),
        Preset("views-rerank", "re-ranking of the top 50 and views at 0, +-10, +-20, +-30 % (the shipped "
               "configuration's calibration), sequence filter", parameters=RERANK, sequence_filter=True,
               database_views=RECOMMENDED_VIEWS),
        Preset("confusers-views-rerank", "confusers protocol with re-ranking and views at 0, +-10, +-20, +-30 %",
               protocol="confusers", methods=("semantic", "label-histogram"), parameters=RERANK,
               database_views=RECOMMENDED_VIEWS),
        Preset("v2-shipped", "semloc-sim-v2 (its root or a sets/ root): the shipped configuration (views, re-ranking, "
               "sequence filter), the baselines, mIoU per drive", methods=LABEL_AND_BASELINES, parameters=RERANK,
               sequence_filter=True, database_views=RECOMMENDED_VIEWS, segmentation_stride=5),
        Preset("v2-descriptor", "semloc-sim-v2: the descriptors alone (one view, no re-ranking; add --oracle for "
               "ground-truth labels) beside the baselines", methods=LABEL_AND_BASELINES, parameters=NO_RERANK,
               sequence_filter=True),
        Preset("v2-confusers", "semloc-sim-v2: the confusers protocol (every other map's day drive in the database) "
               "with the shipped configuration", protocol="confusers", methods=("semantic", "label-histogram"),
               parameters=RERANK, database_views=RECOMMENDED_VIEWS),
        Preset("day-only", "day-only protocol (give --segmenters), mIoU on every 3rd frame and trainB_overcast_l1",
               protocol="day-only", methods=LABEL_AND_BASELINES, parameters=NO_RERANK,
               segmentation_stride=3, segmentation_drives=("trainB_overcast_l1",)),
        Preset("v2-day-only", "semloc-sim-v2: the day-only protocol (give --segmenters) in the shipped configuration "
               "(views, re-ranking, sequence filter), mIoU on every 5th frame of each drive", protocol="day-only",
               methods=("semantic", "label-histogram"), parameters=RERANK, sequence_filter=True,
               database_views=RECOMMENDED_VIEWS, segmentation_stride=5),
    )
}
