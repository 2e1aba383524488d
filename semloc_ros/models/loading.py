"""Model selection strings shared by nodes and the command line (ROS-free).

A model is named by one string:
- ``default``: the weights shipped with the package (``semloc_ros/data/models``); for the segmenter also
  ``default-fp32``, ``default-int8`` and ``default-fp16`` (CUDA), ``default`` being ``auto``
  (:mod:`semloc_ros.models.segmentation`);
- ``untrained:<arch>``: a randomly initialised network with a fixed seed (tests, smoke runs);
- anything else: a path to a weights file (semloc checkpoint, TorchScript, ONNX, torchvision state dict).

Files that are programs (TorchScript, ONNX with custom operators) load only with ``trust_model_code=True``.
"""

from __future__ import annotations

from pathlib import Path

from semloc_ros.core.labels import load_mapping
from semloc_ros.models import WEIGHTS_DIR, DescriptorExtractor, Segmenter, WeightsError, load_checkpoint
from semloc_ros.models.segmentation import DEFAULT_SEGMENTER_FILE, DEFAULT_SEGMENTERS

UNTRAINED_PREFIX = "untrained:"


def load_segmenter(spec: str, device: str = "auto", arch: str = "",
                   label_mapping: str = "identity", trust_model_code: bool = False) -> Segmenter:
    """The segmenter named by ``spec`` (see module docstring)."""
    if spec in DEFAULT_SEGMENTERS:
        return Segmenter.default(device=device, precision=DEFAULT_SEGMENTERS[spec])
    if spec.startswith(UNTRAINED_PREFIX):
        return Segmenter.untrained(arch=spec.removeprefix(UNTRAINED_PREFIX), seed=0, device=device)
    mapping = None if label_mapping == "identity" else load_mapping(label_mapping)
    return Segmenter.from_file(Path(spec).expanduser(), device=device, arch=arch or None,
                               label_mapping=mapping, trust_model_code=trust_model_code)


def load_descriptor(spec: str, device: str = "auto", kind: str = "semantic") -> DescriptorExtractor:
    """The descriptor extractor named by ``spec``; ``default`` picks the shipped model of ``kind``."""
    if spec == "default":
        return DescriptorExtractor.default(kind=kind, device=device)
    if spec.startswith(UNTRAINED_PREFIX):
        return DescriptorExtractor.untrained(spec.removeprefix(UNTRAINED_PREFIX), seed=0, device=device)
    return DescriptorExtractor.from_file(Path(spec).expanduser(), device=device)


def shipped_segmenter_id(weights_dir: str | Path | None = None) -> str | None:
    """The model id of the shipped segmenter (the one maps made before pipeline ids were built with, as
    :func:`semloc_ros.core.pipeline_id.accepts` takes it); None when its weights are missing or unreadable."""
    try:
        return str(load_checkpoint(Path(weights_dir or WEIGHTS_DIR) / DEFAULT_SEGMENTER_FILE)[1]["model_id"])
    except (WeightsError, OSError):
        return None


def segmenter_identity(segmenter: Segmenter) -> str:
    """The segmenter's part of a pipeline id (:mod:`semloc_ros.core.pipeline_id`): its model id (with the label
    mapping), where a quantized copy (provenance ``source_model_id``, e.g. the shipped int8 file) counts as the
    network it was quantized from: its labels agree within the quantization error (docs/benchmarks.md), so a map
    built with one precision answers the others."""
    source = (segmenter.meta.get("provenance") or {}).get("source_model_id")
    base = str(segmenter.meta["model_id"])
    if not isinstance(source, str) or not source or not segmenter.model_id.startswith(base):
        return segmenter.model_id
    return source + segmenter.model_id[len(base):]
