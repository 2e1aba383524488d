"""The offline chain RGB -> labels -> descriptor used by the command line (build-db, evaluate)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from semloc_ros.core.pipeline_id import pipeline_id
from semloc_ros.models import DescriptorExtractor, HybridDescriptor, Segmenter, WeightsError
from semloc_ros.models.loading import load_segmenter, segmenter_identity
from semloc_ros.models.segmentation import DEFAULT_SEGMENTERS
from semloc_ros.models.shared_views import describe_views
from semloc_ros.models.weights import WEIGHTS_DIR

METHODS = ("semantic", "rgb", "hybrid", "label-histogram")


def _stack(items: Sequence[np.ndarray]) -> np.ndarray | None:
    """Stack images of one shape into an array; ``None`` when their shapes differ."""
    arrays = [np.asarray(a) for a in items]
    if any(a.shape != arrays[0].shape for a in arrays):
        return None
    return np.stack(arrays)


class Pipeline:
    """A segmenter (or none, for RGB-only descriptors) followed by a descriptor."""

    def __init__(
        self,
        segmenter: Segmenter | None,
        descriptor: DescriptorExtractor | HybridDescriptor,
        method: str = "",
    ):
        needs_labels = isinstance(descriptor, HybridDescriptor) or descriptor.input_kind == "labels"
        self.segmenter = segmenter
        self.descriptor = descriptor
        self.needs_labels = needs_labels
        self.needs_rgb = isinstance(descriptor, HybridDescriptor) or descriptor.input_kind == "rgb"
        self.method = method
        # The map's and the queries' identity: descriptor + segmenter (with its label mapping) for label methods.
        segmenter_id = segmenter_identity(segmenter) if needs_labels and segmenter is not None else None
        self.model_id: str = pipeline_id(descriptor.model_id, segmenter_id)
        self.dimension: int = int(descriptor.dimension)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """``HxWx3 uint8`` -> ``HxW uint8`` labels."""
        if self.segmenter is None:
            raise RuntimeError("this pipeline has no segmenter")
        return self.segmenter.predict(rgb)

    def describe_frames(
        self,
        rgbs: Sequence[np.ndarray] | None,
        labels: Sequence[np.ndarray] | None = None,
        batch_size: int = 16,
        progress: bool = False,
    ) -> np.ndarray:
        """``(N, D) float32`` descriptors of N frames.

        Label-input descriptors use ``labels`` when given (ground truth: the "oracle" mode), else the segmenter's
        output on ``rgbs``. RGB-input descriptors need ``rgbs``. (Database views: :mod:`semloc_ros.mapping`.)
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        n = len(rgbs) if rgbs is not None else len(labels) if labels is not None else 0
        if rgbs is not None and labels is not None and len(rgbs) != len(labels):
            raise ValueError(f"{len(rgbs)} RGB images but {len(labels)} label images")
        if self.needs_rgb and rgbs is None:
            raise ValueError(f"method {self.method or self.model_id} needs RGB images")
        if self.needs_labels and labels is None and (rgbs is None or self.segmenter is None):
            raise ValueError("label-input descriptor: pass labels, or RGB images and a pipeline with a segmenter")
        out = np.zeros((n, self.dimension), dtype=np.float32)
        with tqdm(total=n, desc="describe", unit="img", disable=not progress) as bar:
            for i in range(0, n, batch_size):
                rgb = _stack(rgbs[i : i + batch_size]) if rgbs is not None else None
                lab = _stack(labels[i : i + batch_size]) if labels is not None else None
                if (rgb is None and rgbs is not None) or (lab is None and labels is not None):
                    # Mixed image sizes in this batch: one frame at a time.
                    for j in range(i, min(i + batch_size, n)):
                        out[j] = self._describe_group(
                            None if rgbs is None else np.asarray(rgbs[j])[None],
                            None if labels is None else np.asarray(labels[j])[None],
                        )[0]
                else:
                    d = self._describe_group(rgb, lab)
                    out[i : i + len(d)] = d
                bar.update(min(batch_size, n - i))
        return out

    def describe_label_views(self, labels: Sequence[np.ndarray], views: Sequence[float],
                             batch_size: int = 16) -> np.ndarray | None:
        """``(V, N, D) float32`` descriptors of N label images seen at each of ``views`` (:mod:`semloc_ros.core.views`),
        ``batch_size`` frames at a time, all views of a batch from one pass of the label descriptor's convolutions
        (:func:`semloc_ros.models.shared_views.describe_views`); None for a method that reads RGB or no labels
        (its views are RGB and labels shifted, :func:`semloc_ros.mapping.describe_drive_views`)."""
        if not isinstance(self.descriptor, DescriptorExtractor) or self.descriptor.input_kind != "labels":
            return None
        out = np.zeros((len(views), len(labels), self.dimension), dtype=np.float32)
        for i in range(0, len(labels), max(1, batch_size)):
            batch = _stack(labels[i : i + batch_size])
            groups = [np.asarray(lab)[None] for lab in labels[i : i + batch_size]] if batch is None else [batch]
            described = np.concatenate([describe_views(self.descriptor, group, views) for group in groups], axis=1)
            out[:, i : i + described.shape[1]] = described
        return out

    def _describe_group(self, rgb: np.ndarray | None, lab: np.ndarray | None) -> np.ndarray:
        if self.needs_labels and lab is None:
            lab = self.segmenter.predict_batch(rgb)  # type: ignore[union-attr]
        if isinstance(self.descriptor, HybridDescriptor):
            return self.descriptor.describe_pair_batch(lab, rgb)
        return self.descriptor.describe_batch(lab if self.descriptor.input_kind == "labels" else rgb)

    @classmethod
    def from_method(
        cls,
        method: str,
        device: str = "auto",
        weights_dir: str | os.PathLike | None = None,
        untrained_ok: bool = False,
        segmenter_file: str | os.PathLike | None = None,
        label_mapping: str | None = None,
        segmenter_arch: str = "",
        mask_dynamic: bool = False,
        trust_model_code: bool = False,
        descriptor_file: str | os.PathLike | None = None,
    ) -> Pipeline:
        """The pipeline of a named method with the shipped weights ('semantic', 'rgb', 'hybrid', 'label-histogram').

        ``untrained_ok=True`` substitutes seeded untrained networks for missing weight files (with a warning).
        ``segmenter_file`` replaces the shipped segmenter (a file or ``untrained:<arch>``, as
        :func:`semloc_ros.models.loading.load_segmenter`, with ``segmenter_arch`` for torchvision state dicts; or
        one of the shipped one's precisions, e.g. ``default-int8``), its output mapped to semloc classes by
        ``label_mapping`` (a name or a JSON file; None: identity). ``mask_dynamic`` makes the label descriptor ignore
        the pixels of dynamic classes (vehicles, pedestrians); ``trust_model_code`` lets the segmenter file be a
        program (TorchScript).
        ``descriptor_file`` (e.g. from ``semloc train``) replaces the shipped descriptor of its kind (semantic or
        RGB).
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
        if mask_dynamic and method == "rgb":
            raise ValueError("mask_dynamic needs a label-based method; 'rgb' sees no classes")
        wdir = Path(weights_dir or WEIGHTS_DIR)

        if label_mapping not in (None, "identity") and str(segmenter_file or "default") in DEFAULT_SEGMENTERS:
            raise ValueError("a label mapping needs a segmenter file (the shipped segmenter outputs semloc classes)")

        def segmenter() -> Segmenter:
            shipped = DEFAULT_SEGMENTERS.get(str(segmenter_file or "default"))
            if shipped is None:
                return load_segmenter(str(segmenter_file), device, segmenter_arch,
                                      label_mapping or "identity", trust_model_code)
            try:
                return Segmenter.default(device=device, weights_dir=wdir, precision=shipped)
            except WeightsError:
                if not untrained_ok:
                    raise
                warnings.warn("segmenter weights missing: using an UNTRAINED segmenter", stacklevel=3)
                return Segmenter.untrained(seed=0, device=device)

        def descriptor(kind: str) -> DescriptorExtractor:
            if descriptor_file is not None:
                given = DescriptorExtractor.from_file(descriptor_file, device=device)
                if given.input_kind == ("labels" if kind == "semantic" else "rgb"):
                    return given
                if method != "hybrid":
                    raise ValueError(f"{descriptor_file} is a {given.arch} descriptor, not one for method {method}")
            try:
                return DescriptorExtractor.default(kind=kind, device=device, weights_dir=wdir)
            except WeightsError:
                if not untrained_ok:
                    raise
                warnings.warn(f"{kind} descriptor weights missing: using an UNTRAINED descriptor", stacklevel=3)
                arch = "semantic_alexnet" if kind == "semantic" else "rgb_netvlad"
                return DescriptorExtractor.untrained(arch, seed=0, device=device)

        def labels_descriptor(extractor: DescriptorExtractor) -> DescriptorExtractor:
            return extractor.masking_dynamic_classes() if mask_dynamic else extractor

        if method == "semantic":
            return cls(segmenter(), labels_descriptor(descriptor("semantic")), method=method)
        if method == "rgb":
            return cls(None, descriptor("rgb"), method=method)
        if method == "hybrid":
            semantic = labels_descriptor(descriptor("semantic"))
            return cls(segmenter(), HybridDescriptor(semantic, descriptor("rgb")), method=method)
        histogram = labels_descriptor(DescriptorExtractor.untrained("label_histogram", device=device))
        return cls(segmenter(), histogram, method=method)
