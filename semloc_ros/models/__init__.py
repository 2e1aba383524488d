"""Model plugins behind one base class (hloc style): segmenters, descriptors and their weights format."""

from __future__ import annotations

import contextlib

import torch

from semloc_ros.models.base import BaseModel
from semloc_ros.models.descriptor import (
    DESCRIPTOR_ARCHS,
    DescriptorExtractor,
    DescriptorNet,
    HybridDescriptor,
    build_descriptor_net,
)
from semloc_ros.models.segmentation import SEGMENTATION_ARCHS, SegmentationNet, Segmenter
from semloc_ros.models.utils import resolve_device
from semloc_ros.models.weights import WEIGHTS_DIR, WeightsError, load_checkpoint, save_checkpoint

__all__ = [
    "DESCRIPTOR_ARCHS",
    "SEGMENTATION_ARCHS",
    "WEIGHTS_DIR",
    "BaseModel",
    "DescriptorExtractor",
    "DescriptorNet",
    "HybridDescriptor",
    "SegmentationNet",
    "Segmenter",
    "WeightsError",
    "build_descriptor_net",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "set_torch_threads",
]


def set_torch_threads(n: int | None) -> None:
    """Limit torch's intra-op (and, when still allowed, inter-op) threads; ``None``/``<= 0`` leaves them."""
    if not n or n <= 0:
        return
    torch.set_num_threads(int(n))
    with contextlib.suppress(RuntimeError):  # settable only once, before inter-op parallel work started
        torch.set_num_interop_threads(int(n))
