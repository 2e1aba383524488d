"""Database views of the semantic descriptor from one pass of its convolutions, the same numbers as describing
each shifted view on its own (up to float rounding).

A view (:mod:`semloc_ros.core.views`) is the label image moved sideways, its border column repeated; at the
descriptor's input size it is a crop of one image extended on both sides by the largest shift. Convolutions and
pooling are translation-equivariant, so where the shift is a multiple of the stack's total stride, a view's feature
map is the crop of the extended image's map at the view's offset, except near the view's borders: there the
per-view computation reads zero padding where the extended image has columns. Those border columns are recomputed
per view, so the result does not change (sharing everything would: on real frames the cosine of a view's
descriptor with its per-view one falls to 0.25-0.7, the trained network reads its borders).

1. Plan: the input columns of each view (shift at the label image's width, then the resize to the input size)
   must be a crop of one extended column list at an offset that is a multiple of the total stride; views that do
   not fit (or a network other than conv layers, max-pools and ReLUs) are described one by one
   (:func:`describe_views_one_by_one`, the reference).
2. Extend: the label image gathered once per frame to the extended input (rows and columns of the resize).
3. Layer by layer: the layer runs once on the extended map; each view's output columns whose window reaches its
   own border (its "dirty" columns) are computed from the view's columns with the view's padding, the left
   strips of all views in one call, the right strips in another.
4. Once the dirty columns are more than half the width, the rest of the stack runs on each view's whole map
   (all views in one batch).
5. Pooling (NetVLAD or GeM, projection) of each view.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from semloc_ros.core.views import check_views, shift_view, shifted_columns
from semloc_ros.models.descriptor import DescriptorExtractor, pool_before_relu
from semloc_ros.models.utils import labels_to_tensor, resize_ids


@dataclass(frozen=True)
class ViewPlan:
    """How the views of label images of one size are described (step 1)."""

    rows: np.ndarray  # source row of each input row
    columns: np.ndarray  # source column of each column of the extended input
    offsets: dict[int, int]  # view index -> first column of its crop in the extended input (shared views)
    width: int  # the input width (a view's width)


def _layer_geometry(module: nn.Module) -> tuple[int, int, int] | None:
    """Horizontal (kernel, stride, padding) of a layer; (1, 1, 0) for a ReLU; None for one the plan cannot share."""
    if isinstance(module, nn.ReLU):
        return 1, 1, 0
    if isinstance(module, nn.Conv2d) and module.dilation[1] == 1 and module.padding_mode == "zeros":
        return module.kernel_size[1], module.stride[1], int(module.padding[1])
    if isinstance(module, nn.MaxPool2d):
        size, stride = torch.nn.modules.utils._pair(module.kernel_size), torch.nn.modules.utils._pair(module.stride)
        if module.padding in (0, (0, 0)) and module.dilation in (1, (1, 1)) and not module.ceil_mode:
            return size[1], stride[1], 0
    return None


def total_stride(net: nn.Module) -> int | None:
    """The product of the horizontal strides of a semantic descriptor's conv stack; None when it cannot be shared."""
    if not (hasattr(net, "first_conv") and hasattr(net, "pool_head") and isinstance(net.features[0], nn.Conv2d)):
        return None
    geometries = [_layer_geometry(module) for module in net.features]
    return None if any(g is None for g in geometries) else math.prod(g[1] for g in geometries)


def _source_indices(length: int, size: int) -> np.ndarray:
    """The source index of each of ``size`` positions of the nearest resize of ``length`` positions."""
    if length == size:
        return np.arange(length)
    index = torch.arange(length, dtype=torch.int64).view(1, length, 1)
    return resize_ids(index, (size, 1))[0, :, 0].numpy()


@functools.lru_cache(maxsize=32)
def plan_views(label_shape: tuple[int, int], input_size: tuple[int, int] | None, views: tuple[float, ...],
               stride: int) -> ViewPlan:
    """Step 1: which views are crops of one extended input, at offsets that are multiples of ``stride``."""
    height, width = label_shape
    size = (height, width) if input_size is None else tuple(input_size)
    rows, columns = _source_indices(height, size[0]), _source_indices(width, size[1])
    shifts = {v: round(shift * size[1]) for v, shift in enumerate(views) if round(shift * size[1]) % stride == 0}
    left, right = max([0, *shifts.values()]), max([0, *(-s for s in shifts.values())])
    extended = np.full(size[1] + left + right, -1)
    offsets: dict[int, int] = {}
    for v, shift_px in shifts.items():
        view_columns = shifted_columns(width, round(views[v] * width))[columns]
        window = extended[left - shift_px : left - shift_px + size[1]]
        if np.all((window < 0) | (window == view_columns)):
            window[:] = view_columns
            offsets[v] = left - shift_px
    # Columns of no view never reach a shared output column (step 3 recomputes those whose window leaves the view).
    extended[extended < 0] = 0
    return ViewPlan(rows, extended, offsets if len(offsets) > 1 else {}, size[1])


class _ViewMaps:
    """The maps of all shared views at one layer: the extended map, and per view its dirty border columns."""

    def __init__(self, extended: torch.Tensor, offsets: list[int], width: int):
        self.extended, self.offsets, self.width = extended, offsets, width
        self.left: torch.Tensor | None = None  # (V*N, ..., a) the first ``a`` columns of each view
        self.right: torch.Tensor | None = None  # (V*N, ..., b) the last ``b`` columns
        self.a = self.b = 0

    def columns(self, start: int, stop: int) -> torch.Tensor:
        """Columns ``[start, stop)`` of every view, views one after the other along the batch."""
        middle_start, middle_stop = max(start, self.a), min(stop, self.width - self.b)
        pieces = []
        if start < self.a:
            pieces.append(self.left[..., start : min(stop, self.a)])
        if middle_start < middle_stop:
            pieces.append(torch.cat([self.extended[..., o + middle_start : o + middle_stop] for o in self.offsets]))
        if stop > self.width - self.b:
            first = self.width - self.b
            pieces.append(self.right[..., max(start, first) - first : stop - first])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def _run_layer(net: nn.Module, module: nn.Module, x: torch.Tensor, padding: tuple[int, int] | None) -> torch.Tensor:
    """One layer on ``x``; ``padding``: (left, right) columns instead of the layer's own."""
    if module is net.features[0]:
        return net.first_conv(x, padding)
    if padding is None or not isinstance(module, nn.Conv2d):
        return module(x)
    return F.conv2d(F.pad(x, (*padding, 0, 0)), module.weight, module.bias, module.stride,
                    (module.padding[0], 0), module.dilation, module.groups)


def _step(net: nn.Module, module: nn.Module, maps: _ViewMaps) -> bool:
    """Step 3 for one layer; False (nothing changed) when its dirty columns exceed half the width (step 4)."""
    kernel, stride, pad = _layer_geometry(module)
    width = (maps.width + 2 * pad - kernel) // stride + 1
    a = -(-(maps.a + pad) // stride)
    b = width - 1 - (maps.width - maps.b - kernel + pad) // stride
    left_stop, right_start = stride * (a - 1) - pad + kernel, stride * (width - b) - pad
    if 2 * (a + b) > width or (a and left_stop > maps.width) or (b and right_start < 0):
        return False
    left = _run_layer(net, module, maps.columns(0, left_stop), (pad, 0)) if a else None
    right_pad = max(0, stride * (width - 1) - pad + kernel - maps.width)
    right = _run_layer(net, module, maps.columns(right_start, maps.width), (0, right_pad)) if b else None
    maps.extended = _run_layer(net, module, maps.extended, None)
    maps.offsets = [o // stride for o in maps.offsets]
    maps.left, maps.right, maps.a, maps.b, maps.width = left, right, a, b, width
    return True


def shared_view_features(net: nn.Module, extended_ids: torch.Tensor, offsets: list[int], width: int) -> torch.Tensor:
    """Steps 3-4: conv features ``(V*N, C, h, w)`` of the views at ``offsets`` (input columns, multiples of the
    total stride) of ``NxHxW_ext`` extended ids, each view ``width`` columns wide."""
    maps = _ViewMaps(extended_ids, offsets, width)
    layers = pool_before_relu(net.features)
    done = 0
    while done < len(layers) and _step(net, layers[done], maps):
        done += 1
    x = maps.columns(0, maps.width)
    for module in layers[done:]:
        x = _run_layer(net, module, x, None)
    return x


def describe_views_one_by_one(extractor: DescriptorExtractor, labels: np.ndarray,
                              views: Sequence[float]) -> np.ndarray:
    """``(V, N, D)``: each view shifted (:func:`semloc_ros.core.views.shift_view`) and described (the reference)."""
    return np.stack([extractor.describe_batch(shift_view(labels, shift)) for shift in views])


def describe_views(extractor: DescriptorExtractor, labels: np.ndarray, views: Sequence[float]) -> np.ndarray:
    """``(V, N, D) float32`` descriptors of ``NxHxW`` labels seen at each of ``views``: the views that the plan
    shares from one pass of the conv stack (steps 1-5), the others one by one."""
    views = check_views(views)
    stride = total_stride(extractor.net) if extractor.input_kind == "labels" else None
    if stride is None or labels.ndim != 3:
        return describe_views_one_by_one(extractor, labels, views)
    plan = plan_views(labels.shape[1:], extractor.input_size, views, stride)
    out = np.zeros((len(views), len(labels), extractor.dimension), dtype=np.float32)
    for v, shift in enumerate(views):
        if v not in plan.offsets:
            out[v] = extractor.describe_batch(shift_view(labels, shift))
    if plan.offsets:
        extended = labels[:, plan.rows][:, :, plan.columns]  # step 2
        with torch.inference_mode():
            ids = extractor.masked_ids(labels_to_tensor(extended, None, extractor.device))
            features = shared_view_features(extractor.net, ids, list(plan.offsets.values()), plan.width)
            described = extractor.net.pool_head(features).float().cpu().numpy()  # step 5
        out[list(plan.offsets)] = described.reshape(len(plan.offsets), len(labels), -1)
    return out
