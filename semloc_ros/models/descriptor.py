"""Global place descriptors: label or RGB image -> L2-normalised ``float32`` vector, compared by inner product.

Architectures (``DESCRIPTOR_ARCHS``):
- ``semantic_alexnet`` (the seed's method): AlexNet ``features`` whose conv1 takes the one-hot label image
  (``num_classes`` channels), a GeM or NetVLAD head, a linear projection to ``dim``. The default input size
  (120, 160) is half the 320x240 camera resolution: label images are piecewise constant, so halving keeps the
  scene layout (road, sky line, buildings, poles of >= 2 px) while costing a quarter of the compute, and conv5
  still sees a 6x9 grid of the scene.
- ``rgb_netvlad``: the RGB baseline, AlexNet (or VGG16) features + NetVLAD + projection.
- ``label_histogram``: the trivial baseline without weights, per-cell class histograms on a 4x4 grid.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import nn

from semloc_ros.core.labels import IGNORED_ID, SEMLOC_SIM, dynamic_class_ids
from semloc_ros.models.base import BaseModel
from semloc_ros.models.utils import as_size, labels_to_tensor, resolve_device, rgb_to_tensor
from semloc_ros.models.weights import WEIGHTS_DIR, WeightsError, load_checkpoint, make_model_id, save_checkpoint

DEFAULT_DESCRIPTOR_FILES = {"semantic": "descriptor_semantic.pt", "rgb": "descriptor_rgb.pt"}


def one_hot_ids(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``NxHxW`` int64 ids -> ``NxCxHxW`` float one-hot; ids outside ``[0, C)`` (e.g. ``IGNORED_ID``) -> zeros."""
    valid = (ids >= 0) & (ids < num_classes)
    x = F.one_hot(torch.where(valid, ids, torch.zeros_like(ids)), num_classes).permute(0, 3, 1, 2).float()
    return x * valid[:, None].float()


def one_hot_conv(ids: torch.Tensor, conv: nn.Conv2d, num_classes: int, channel_mask: torch.Tensor,
                 column_padding: tuple[int, int] | None = None) -> torch.Tensor:
    """``conv(one_hot_ids(ids) * channel_mask)`` without building the one-hot image: ``NxHxW`` int64 ids ->
    ``NxOxhxw`` (channels_last), equal to the convolution up to float rounding, several times faster on a CPU.
    ``column_padding``: (left, right) columns of padding instead of the convolution's own (a strip of an image).

    A one-hot pixel selects one weight column per kernel position, so each output is the bias plus the sum of the
    weight columns of its window's classes: one embedding-bag sum per output over a table of ``(class, kernel
    position)`` rows, ids outside ``[0, C)`` and the padding selecting zero rows.
    """
    kernel_h, kernel_w = conv.kernel_size
    taps = kernel_h * kernel_w
    weight = conv.weight * channel_mask.view(1, -1, 1, 1)  # (O, C, kh, kw)
    table = torch.cat([weight.permute(1, 2, 3, 0).reshape(num_classes * taps, -1),
                       weight.new_zeros(taps, weight.shape[0])])  # rows of class C: no class
    classes = torch.where((ids >= 0) & (ids < num_classes), ids, num_classes)
    pad_h, pad_w = conv.padding
    left, right = (pad_w, pad_w) if column_padding is None else column_padding
    rows = F.pad(classes * taps, (left, right, pad_h, pad_h), value=num_classes * taps)
    windows = rows.unfold(1, kernel_h, conv.stride[0]).unfold(2, kernel_w, conv.stride[1])  # (N, h, w, kh, kw)
    count, out_h, out_w = windows.shape[:3]
    index = windows.reshape(-1, taps) + torch.arange(taps, device=ids.device)
    out = F.embedding_bag(index, table, mode="sum")
    if conv.bias is not None:
        out += conv.bias
    return out.view(count, out_h, out_w, -1).permute(0, 3, 1, 2)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent ``p``: ``NxCxHxW -> NxC``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class NetVLAD(nn.Module):
    """NetVLAD: soft assignment to ``clusters`` centroids, residual sums, intra-normalisation: ``NxCxHxW -> NxKC``."""

    def __init__(self, channels: int, clusters: int = 16, alpha: float = 10.0):
        super().__init__()
        self.assign = nn.Conv2d(channels, clusters, 1, bias=True)
        self.centroids = nn.Parameter(torch.randn(clusters, channels) * 0.1)
        self.alpha = alpha
        self.set_centroids(F.normalize(self.centroids.data, dim=1))

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor) -> None:
        """Set centroids (``KxC``, e.g. k-means of normalised features) and the matching assignment conv."""
        self.centroids.copy_(centroids)
        self.assign.weight.copy_((2.0 * self.alpha * centroids)[:, :, None, None])
        self.assign.bias.copy_(-self.alpha * centroids.norm(dim=1) ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        a = F.softmax(self.assign(x).flatten(2), dim=1)  # N x K x HW
        feats = x.flatten(2)  # N x C x HW
        vlad = torch.bmm(a, feats.transpose(1, 2)) - a.sum(dim=2, keepdim=True) * self.centroids[None]
        return F.normalize(vlad, dim=2).flatten(1)


def _pooling_head(kind: str, channels: int, clusters: int, dim: int) -> tuple[nn.Module, nn.Module]:
    if kind == "gem":
        return GeM(), nn.Linear(channels, dim)
    if kind == "netvlad":
        return NetVLAD(channels, clusters), nn.Linear(channels * clusters, dim)
    raise ValueError(f"unknown pooling {kind!r}; use 'gem' or 'netvlad'")


def _alexnet_features(in_channels: int) -> nn.Sequential:
    """AlexNet conv1..conv5 (+ReLU), without the last max-pool; conv1 adapted to ``in_channels``."""
    features = torchvision.models.alexnet(weights=None).features[:-1]
    if in_channels != 3:
        features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    return features


def pool_before_relu(modules: nn.Sequential | list[nn.Module]) -> list[nn.Module]:
    """Layers in the order inference runs them: each ReLU that a max-pool follows after that pool (the same
    numbers: ReLU is monotonic, so it commutes with a maximum; on a quarter of the values)."""
    out = list(modules)
    for i in range(len(out) - 1):
        if isinstance(out[i], nn.ReLU) and isinstance(out[i + 1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def pooled_first(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)`` in the order of :func:`pool_before_relu`."""
    for module in pool_before_relu(layers):
        x = module(x)
    return x


class DescriptorNet(BaseModel):
    """Base of descriptor networks: ``input_kind`` is ``'labels'`` (int64 NxHxW) or ``'rgb'`` (normalised)."""

    input_kind: ClassVar[str] = "labels"
    dimension: int

    def _init_common(self, conf: dict[str, Any]) -> None:
        conf["input_size"] = as_size(conf.get("input_size"))


class SemanticAlexNet(DescriptorNet):
    """One-hot labels -> AlexNet features -> GeM/NetVLAD -> linear -> L2 (the seed's semantic descriptor)."""

    input_kind: ClassVar[str] = "labels"
    default_conf: ClassVar[dict[str, Any]] = {
        "num_classes": SEMLOC_SIM.num_classes,
        "dim": 256,
        "pooling": "gem",  # 'gem' or 'netvlad'
        "clusters": 16,  # NetVLAD clusters
        "input_size": (120, 160),
        "mask_dynamic": False,  # zero the one-hot channels of DYNAMIC_CLASSES
    }

    def _init(self, conf: dict[str, Any]) -> None:
        self._init_common(conf)
        self.num_classes = int(conf["num_classes"])
        self.dimension = int(conf["dim"])
        mask = torch.ones(self.num_classes)
        if conf["mask_dynamic"]:
            mask[[i for i in dynamic_class_ids() if i < self.num_classes]] = 0.0
        # A buffer, so it is part of the state dict and of the model id.
        self.register_buffer("channel_mask", mask)
        self.features = _alexnet_features(self.num_classes)
        self.pool, self.proj = _pooling_head(conf["pooling"], 256, int(conf["clusters"]), self.dimension)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: the convolution of the one-hot image, as it was trained
            x = self.features(one_hot_ids(ids, self.num_classes) * self.channel_mask.view(1, -1, 1, 1))
        else:  # inference: conv1 straight from the ids (one_hot_conv)
            x = pooled_first(self.features[1:], self.first_conv(ids))
        return self.pool_head(x)

    def first_conv(self, ids: torch.Tensor, column_padding: tuple[int, int] | None = None) -> torch.Tensor:
        """conv1 of ``NxHxW`` ids at inference (:func:`one_hot_conv`)."""
        return one_hot_conv(ids, self.features[0], self.num_classes, self.channel_mask, column_padding)

    def pool_head(self, x: torch.Tensor) -> torch.Tensor:
        """Conv features ``NxCxhxw`` -> the L2-normalised descriptor (pooling, projection)."""
        return F.normalize(self.proj(self.pool(x)), dim=1)


class RGBNetVLAD(DescriptorNet):
    """Normalised RGB -> AlexNet (or VGG16) conv features -> NetVLAD -> linear -> L2 (the RGB baseline)."""

    input_kind: ClassVar[str] = "rgb"
    default_conf: ClassVar[dict[str, Any]] = {
        "backbone": "alexnet",  # 'alexnet' or 'vgg16'
        "dim": 256,
        "clusters": 16,
        "input_size": (120, 160),
        # 'instance': standardise each image per channel first (removes global brightness/tint: lighting changes)
        "input_norm": "imagenet",
    }

    def _init(self, conf: dict[str, Any]) -> None:
        self._init_common(conf)
        self.dimension = int(conf["dim"])
        if conf["input_norm"] not in ("imagenet", "instance"):
            raise ValueError(f"unknown input_norm {conf['input_norm']!r}; use 'imagenet' or 'instance'")
        self.instance_norm = conf["input_norm"] == "instance"
        if conf["backbone"] == "alexnet":
            self.features, channels = _alexnet_features(3), 256
        elif conf["backbone"] == "vgg16":
            self.features, channels = torchvision.models.vgg16(weights=None).features[:-2], 512
        else:
            raise ValueError(f"unknown backbone {conf['backbone']!r}; use 'alexnet' or 'vgg16'")
        self.pool, self.proj = _pooling_head("netvlad", channels, int(conf["clusters"]), self.dimension)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.instance_norm:
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        return F.normalize(self.proj(self.pool(self.features(x))), dim=1)


class LabelHistogram(DescriptorNet):
    """Per-cell class histograms (fractions of the cell's pixels) on a ``grid x grid`` layout, L2-normalised."""

    input_kind: ClassVar[str] = "labels"
    default_conf: ClassVar[dict[str, Any]] = {"num_classes": SEMLOC_SIM.num_classes, "grid": 4, "input_size": None}

    def _init(self, conf: dict[str, Any]) -> None:
        self._init_common(conf)
        self.num_classes = int(conf["num_classes"])
        self.grid = int(conf["grid"])
        self.dimension = self.num_classes * self.grid * self.grid

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = one_hot_ids(ids, self.num_classes)
        hist = F.adaptive_avg_pool2d(x, self.grid)  # N x C x g x g, sums to 1 over C in every cell (ignored: less)
        return F.normalize(hist.flatten(1), dim=1)


DESCRIPTOR_ARCHS: dict[str, type[DescriptorNet]] = {
    "semantic_alexnet": SemanticAlexNet,
    "rgb_netvlad": RGBNetVLAD,
    "label_histogram": LabelHistogram,
}


def build_descriptor_net(arch: str, conf: dict[str, Any] | None = None) -> DescriptorNet:
    """Instantiate a descriptor network by name."""
    if arch not in DESCRIPTOR_ARCHS:
        raise ValueError(f"unknown descriptor arch {arch!r}; known: {sorted(DESCRIPTOR_ARCHS)}")
    return DESCRIPTOR_ARCHS[arch](conf)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (checkpoint/JSON-friendly conf)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def descriptor_meta(net: DescriptorNet, arch: str, trained_on: Any = None) -> dict[str, Any]:
    """The checkpoint metadata of a descriptor network (``model_id`` from its current weights)."""
    conf = _plain(net.conf)
    return {
        "model_type": "descriptor",
        "arch": arch,
        "conf": conf,
        "model_id": make_model_id(arch, net.dimension, net.state_dict()),
        "input_kind": net.input_kind,
        "label_set": SEMLOC_SIM.name if net.input_kind == "labels" else None,
        "num_classes": int(conf.get("num_classes", SEMLOC_SIM.num_classes)),
        "dimension": int(net.dimension),
        "input_size": conf.get("input_size"),
        "trained_on": trained_on,
    }


class DescriptorExtractor:
    """A descriptor network ready for inference: images -> ``(N, D) float32`` L2-normalised rows."""

    def __init__(self, net: DescriptorNet, meta: dict[str, Any], device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        # channels_last 4-D weights: to_input builds channels_last batches (one-hot/RGB permuted from NHWC), so
        # the convolutions run without a weight reorder per call (~25 % faster on CPU, docs/benchmarks.md).
        self.net = net.to(self.device).eval().to(memory_format=torch.channels_last)
        self.meta = dict(meta)
        self.arch = str(meta["arch"])
        self.model_id = str(meta["model_id"])
        self.input_kind: str = net.input_kind
        self.dimension = int(net.dimension)
        self.input_size = as_size(net.conf.get("input_size"))
        self.mask_dynamic = False  # see masking_dynamic_classes()

    @classmethod
    def untrained(
        cls, arch: str = "semantic_alexnet", seed: int = 0, device: str | torch.device = "auto", **conf: Any
    ) -> DescriptorExtractor:
        """A randomly initialised network (deterministic for a given seed); ``conf`` overrides defaults."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_descriptor_net(arch, conf)
        return cls.from_net(net, arch, device=device)

    @classmethod
    def from_net(
        cls, net: DescriptorNet, arch: str, device: str | torch.device = "auto", trained_on: Any = None
    ) -> DescriptorExtractor:
        """Wrap a network (e.g. just trained)."""
        return cls(net, descriptor_meta(net, arch, trained_on=trained_on), device=device)

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> DescriptorExtractor:
        """Load a semloc descriptor checkpoint."""
        state, meta = load_checkpoint(path)
        if meta["model_type"] != "descriptor":
            raise WeightsError(f"{path} holds a {meta['model_type']!r} model, not a descriptor")
        net = build_descriptor_net(meta["arch"], meta["conf"])
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{path}: weights do not fit {meta['arch']}: {exc}") from exc
        return cls(net, meta, device=device)

    @classmethod
    def default(
        cls, kind: str = "semantic", device: str | torch.device = "auto", weights_dir: str | os.PathLike | None = None
    ) -> DescriptorExtractor:
        """The shipped descriptor of ``kind`` ('semantic' or 'rgb') from ``semloc_ros/data/models``."""
        if kind not in DEFAULT_DESCRIPTOR_FILES:
            raise ValueError(f"unknown descriptor kind {kind!r}; use one of {sorted(DEFAULT_DESCRIPTOR_FILES)}")
        path = Path(weights_dir or WEIGHTS_DIR) / DEFAULT_DESCRIPTOR_FILES[kind]
        if not path.is_file():
            raise WeightsError(
                f"shipped {kind} descriptor weights not found at {path}; train them with scripts/train_models.sh"
            )
        return cls.from_file(path, device=device)

    def save(self, path: str | os.PathLike, half: bool = False, **extra_meta: Any) -> dict[str, Any]:
        """Write the network as a semloc checkpoint; returns the stored meta."""
        meta = {**descriptor_meta(self.net, self.arch, trained_on=self.meta.get("trained_on")), **extra_meta}
        return save_checkpoint(path, self.net, meta, half=half)

    def masking_dynamic_classes(self) -> DescriptorExtractor:
        """This descriptor (same network, shared) ignoring the pixels of ``DYNAMIC_CLASSES`` (vehicles,
        pedestrians): they count as no class at all. Its ``model_id`` gets ``+mask-dynamic``."""
        if self.input_kind != "labels":
            raise ValueError(f"{self.arch} describes RGB: it has no classes to mask")
        masked = copy.copy(self)
        masked.mask_dynamic = True
        masked.model_id = self.model_id if self.mask_dynamic else f"{self.model_id}+mask-dynamic"
        return masked

    def to_input(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images (labels ``NxHxW uint8`` or RGB ``NxHxWx3 uint8``) -> the network's input tensor."""
        if self.input_kind == "labels":
            return self.masked_ids(labels_to_tensor(images, self.input_size, self.device))
        return rgb_to_tensor(images, self.input_size, self.device)

    def masked_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Class ids at the input size as the network reads them: dynamic classes ignored when masking them."""
        if not self.mask_dynamic:
            return ids
        dynamic = torch.tensor(dynamic_class_ids(), device=ids.device)
        return torch.where(torch.isin(ids, dynamic), torch.full_like(ids, IGNORED_ID), ids)

    def describe_batch(self, images: np.ndarray) -> np.ndarray:
        """``NxHxW`` labels or ``NxHxWx3`` RGB (uint8) -> ``(N, D) float32``."""
        with torch.inference_mode():
            return self.net(self.to_input(images)).float().cpu().numpy()

    def describe(self, image: np.ndarray) -> np.ndarray:
        """One image -> ``(D,) float32``."""
        return self.describe_batch(np.asarray(image)[None])[0]

    def __repr__(self) -> str:
        return f"DescriptorExtractor({self.model_id}, input={self.input_kind}, device={self.device})"


class HybridDescriptor:
    """``[sqrt(w) * semantic, sqrt(1 - w) * rgb]``: its inner product is the w-weighted sum of both cosines."""

    input_kind = "labels+rgb"

    def __init__(self, semantic: DescriptorExtractor, rgb: DescriptorExtractor, semantic_weight: float = 0.5):
        if semantic.input_kind != "labels" or rgb.input_kind != "rgb":
            raise ValueError("HybridDescriptor needs a label-input and an RGB-input descriptor")
        if not 0.0 <= semantic_weight <= 1.0:
            raise ValueError(f"semantic_weight must be in [0, 1], got {semantic_weight}")
        self.semantic, self.rgb = semantic, rgb
        self.semantic_weight = float(semantic_weight)
        self.dimension = semantic.dimension + rgb.dimension
        self.model_id = f"hybrid(w={self.semantic_weight:g})[{semantic.model_id}+{rgb.model_id}]"

    def describe_pair_batch(self, labels: np.ndarray, rgbs: np.ndarray) -> np.ndarray:
        """``NxHxW`` labels and ``NxHxWx3`` RGB -> ``(N, D_sem + D_rgb) float32``."""
        w = self.semantic_weight
        out = np.concatenate(
            [np.sqrt(w) * self.semantic.describe_batch(labels), np.sqrt(1.0 - w) * self.rgb.describe_batch(rgbs)],
            axis=1,
        )
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def describe_pair(self, labels: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """One frame -> ``(D,) float32``."""
        return self.describe_pair_batch(np.asarray(labels)[None], np.asarray(rgb)[None])[0]

    def __repr__(self) -> str:
        return f"HybridDescriptor({self.model_id})"
