"""Helpers shared by the model plugins: device choice, RGB normalisation, label/RGB batch tensors and the
argmax of class logits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

# ImageNet statistics: the one normalisation of every RGB network of the package (segmenters, RGB descriptors).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` tuple or ``None``."""
    if size is None:
        return None
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"invalid input size {size!r}")
    return h, w


def check_rgb_batch(rgbs: np.ndarray) -> np.ndarray:
    """Validate an ``NxHxWx3 uint8`` array."""
    rgbs = np.asarray(rgbs)
    if rgbs.ndim != 4 or rgbs.shape[-1] != 3 or rgbs.dtype != np.uint8:
        raise ValueError(f"expected RGB images NxHxWx3 uint8, got {rgbs.shape} {rgbs.dtype}")
    return rgbs


def check_label_batch(labels: np.ndarray) -> np.ndarray:
    """Validate an ``NxHxW uint8`` array of class ids."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype != np.uint8:
        raise ValueError(f"expected label images NxHxW uint8, got {labels.shape} {labels.dtype}")
    return labels


def normalize_rgb(x: torch.Tensor) -> torch.Tensor:
    """Float ``Nx3xHxW`` in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def rgb_to_tensor(rgbs: np.ndarray | torch.Tensor, size: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """``NxHxWx3 uint8`` -> normalised float ``Nx3xhxw`` on ``device``, bilinearly resized to ``size``.

    On the CPU the (antialiased) resize runs on the uint8 pixels, before the conversion to float: within one grey
    level of resizing the floats, and a 1080p camera frame is not turned into 6 M floats first (several times
    faster, docs/benchmarks.md)."""
    if isinstance(rgbs, np.ndarray):
        rgbs = torch.from_numpy(check_rgb_batch(rgbs))
    x = rgbs.to(device).permute(0, 3, 1, 2)
    resize = size is not None and tuple(x.shape[-2:]) != tuple(size)
    if resize and x.device.type == "cpu":
        x, resize = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True), False
    x = x.float().div_(255.0)
    if resize:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return normalize_rgb(x)


def labels_to_tensor(
    labels: np.ndarray | torch.Tensor, size: tuple[int, int] | None, device: torch.device
) -> torch.Tensor:
    """``NxHxW uint8`` class ids -> ``int64 NxhxW`` on ``device``, resized to ``size`` with nearest."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(check_label_batch(labels))
    y = labels.to(device)
    if size is not None and tuple(y.shape[-2:]) != tuple(size):
        y = resize_ids(y, size)
    return y.long()


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``NxHxW`` integer tensor (keeps the dtype)."""
    out = F.interpolate(ids[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(ids.dtype)


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``NxCxHxW`` logits -> ``NxHxW`` index of the largest channel (the first on ties), as a running maximum over
    the channels: the ids of ``logits.argmax(dim=1)`` for finite logits, several times faster on the CPU, where
    torch reduces over the strided channel dimension slowly (docs/benchmarks.md). Channels_last logits (each
    pixel's channels contiguous) take ``argmax`` itself, faster still."""
    dtype = torch.uint8 if logits.shape[1] <= 256 else torch.int64
    if logits.shape[1] > 1 and logits.dim() == 4 and logits.is_contiguous(memory_format=torch.channels_last):
        return logits.argmax(dim=1).to(dtype)
    best = logits[:, 0].clone()
    ids = torch.zeros(best.shape, dtype=dtype, device=logits.device)
    for channel in range(1, logits.shape[1]):
        values = logits[:, channel]
        ids.masked_fill_(values > best, channel)
        torch.maximum(best, values, out=best)
    return ids
