"""Semantic segmenters: RGB ``HxWx3 uint8`` -> class ids ``HxW uint8`` of ``labels.SEMLOC_SIM``.

Architectures (``SEGMENTATION_ARCHS``): torchvision's ``lraspp_mobilenet_v3_large`` (default, CPU friendly),
``deeplabv3_mobilenet_v3_large`` and ``deeplabv3_resnet50`` (always built with ``weights=None``,
``weights_backbone=None``), and ``deeplabv3plus_mobilenet``: a compact DeepLabV3+ (ASPP on the stride-16
MobileNetV3 features, decoder fused with the stride-4 skip). ``Segmenter`` runs any of them, and also
TorchScript and ONNX files, behind ``predict`` / ``predict_batch``.

Model files that are programs load only with ``trust_model_code=True`` (the user said they trust the file): a
TorchScript archive is code that runs in this process with its rights (``aten::from_file``, ``aten::save``, ...
read and write any file), and an ONNX graph with operators outside the standard domains needs code from
elsewhere to run. Weights (semloc checkpoints, state dicts read with ``weights_only``) and standard ONNX graphs
are data and need no trust.

What a user model gets and must give (every format): input ``Nx3xHxW`` float32 RGB (not BGR), scaled to [0, 1],
resized bilinearly to the model's input size (a semloc checkpoint's ``input_size``, an ONNX file's fixed input
size, else the camera image's own size), then normalised with the ImageNet mean (0.485, 0.456, 0.406) and
standard deviation (0.229, 0.224, 0.225) per channel; output: logits ``NxCxhxw`` (or torchvision's
``{"out": logits}``), any ``h x w`` (the class ids are resized to the image, nearest). ``C`` must fit the label
mapping (:func:`~semloc_ros.core.labels.model_classes_problem`), checked when the model is loaded when ``C`` is
known from the file, else on its first output.

The shipped segmenter comes in three precisions (``PRECISIONS``): ``fp32`` (segmenter.pt), ``int8`` (its
statically quantized ONNX Runtime copy, segmenter_int8.onnx, remade by scripts/quantize_segmenter.py) and
``fp16`` (segmenter.pt in half precision, CUDA only); ``auto`` picks fp16 on a CUDA device and
``CPU_DEFAULT_PRECISION`` on the CPU.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.segmentation.deeplabv3 import ASPP

from semloc_ros.core.labels import SEMLOC_SIM, LabelMapping, model_classes_problem
from semloc_ros.models.base import BaseModel
from semloc_ros.models.utils import as_size, channel_argmax, check_rgb_batch, resolve_device, rgb_to_tensor
from semloc_ros.models.weights import (
    WEIGHTS_DIR,
    WeightsError,
    checkpoint_from_blob,
    is_semloc_blob,
    is_torchscript_file,
    load_checkpoint,
    make_model_id,
    safe_load,
    save_checkpoint,
)

DEFAULT_SEGMENTER_FILE = "segmenter.pt"
INT8_SEGMENTER_FILE = "segmenter_int8.onnx"
TORCHSCRIPT_META = "semloc_meta.json"
# Operator domains onnxruntime implements itself; any other domain is a custom operator (code from elsewhere).
STANDARD_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})
TRUST_HINT = ("load it only if you trust its author: pass --trust-model-code (command line) or set "
              "trust_model_code:=true (segmentation_node)")
ONNX_META_KEY = "semloc_meta"
"""Key of the ONNX metadata entry holding a JSON provenance record (kept in ``Segmenter.meta['provenance']``);
``"logits": "upsample_bilinear"`` in it: the network ends before its final upsampling, which runs in torch."""
PRECISIONS = ("auto", "fp32", "int8", "fp16")
CPU_DEFAULT_PRECISION = "int8"
"""What ``auto`` means on the CPU: int8, twice as fast per frame with Recall@1 not below fp32's on any evaluation
drive of semloc-sim-v1 and v2 (docs/benchmarks.md)."""
DEFAULT_SEGMENTERS = {"default": "auto", **{f"default-{p}": p for p in PRECISIONS if p != "auto"}}
"""Model names of the shipped segmenter (nodes' ``model``, ``evaluate --segmenters``) -> precision."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``int8`` or ``fp16`` for ``precision`` on ``device`` (ValueError when they do not fit)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else CPU_DEFAULT_PRECISION
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device, not {device}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision int8 runs on the CPU (ONNX Runtime), not on {device}")
    return precision


class DeepLabV3PlusMobileNet(nn.Module):
    """DeepLabV3+ on a dilated MobileNetV3-Large: ASPP at stride 16, decoder with the stride-4 features."""

    def __init__(self, num_classes: int, aspp_channels: int = 256, decoder_channels: int = 128):
        super().__init__()
        self.backbone = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).features
        self.low_index = 3  # output of block 3: 24 channels at stride 4
        self.aspp = ASPP(960, [6, 12, 18], aspp_channels)
        self.low_proj = nn.Sequential(nn.Conv2d(24, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(
            nn.Conv2d(aspp_channels + 48, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        low = x
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i == self.low_index:
                low = x
        high = F.interpolate(self.aspp(x), size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.decoder(torch.cat([high, self.low_proj(low)], dim=1))
        return {"out": F.interpolate(out, size=size, mode="bilinear", align_corners=False)}


def _torchvision_seg(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        fn = getattr(torchvision.models.segmentation, name)
        return fn(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


SEGMENTATION_ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "lraspp_mobilenet_v3_large": _torchvision_seg("lraspp_mobilenet_v3_large"),
    "deeplabv3_mobilenet_v3_large": _torchvision_seg("deeplabv3_mobilenet_v3_large"),
    "deeplabv3_resnet50": _torchvision_seg("deeplabv3_resnet50"),
    "deeplabv3plus_mobilenet": DeepLabV3PlusMobileNet,
}


INPUT_NORMS = ("imagenet", "instance")


class SegmentationNet(BaseModel):
    """Normalised RGB ``Nx3xHxW`` -> logits ``NxCxHxW`` (``conf['arch']`` picks the architecture)."""

    default_conf: ClassVar[dict[str, Any]] = {
        "arch": "lraspp_mobilenet_v3_large",
        "num_classes": SEMLOC_SIM.num_classes,
        "input_size": None,  # (H, W) the network runs at; None = the image's own size
        # 'instance': standardise each image per channel before the network (photometric normalisation:
        # removes global brightness, contrast and tint, i.e. much of a lighting change)
        "input_norm": "imagenet",
    }

    def _init(self, conf: dict[str, Any]) -> None:
        if conf["arch"] not in SEGMENTATION_ARCHS:
            raise ValueError(f"unknown segmentation arch {conf['arch']!r}; known: {sorted(SEGMENTATION_ARCHS)}")
        if conf["input_norm"] not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {conf['input_norm']!r}; use one of {INPUT_NORMS}")
        conf["input_size"] = as_size(conf["input_size"])
        self.instance_norm = conf["input_norm"] == "instance"
        self.net = SEGMENTATION_ARCHS[conf["arch"]](int(conf["num_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.instance_norm:
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        return self.net(x)["out"]  # every architecture returns torchvision's {"out": logits}


def _infer_num_classes(state: dict[str, torch.Tensor]) -> int:
    """Number of output classes of a torchvision segmentation state dict (its last classifier conv)."""
    convs = [v for k, v in state.items() if k.startswith(("classifier", "decoder")) and v.ndim == 4]
    if not convs:
        raise WeightsError("cannot infer the number of classes: no classifier conv weights in the state dict")
    return int(convs[-1].shape[0])


def _onnx_provenance(text: str | None) -> dict[str, Any]:
    """The JSON record stored under ``ONNX_META_KEY`` in an ONNX file's metadata ({} when absent or not JSON)."""
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Segmenter:
    """A segmentation model ready for inference, with its metadata (``model_id``, ``label_set``, ...)."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], Any],
        meta: dict[str, Any],
        device: str | torch.device = "auto",
        label_mapping: LabelMapping | None = None,
    ):
        self.device = resolve_device(device)
        self.meta = dict(meta)
        if label_mapping is not None and label_mapping.name == "identity":
            label_mapping = None
        self.label_mapping = label_mapping
        self.input_size = as_size(meta.get("input_size"))
        if isinstance(model, nn.Module | torch.jit.ScriptModule):
            model = model.to(self.device).eval()
        self.model = model
        self.fold_norms = True  # run a batch-norm-folded copy (see _inference_model); False: self.model
        self.input_dtype = torch.float32  # float16 for a half-precision network (``default(precision='fp16')``)
        self.precision = "onnx" if meta.get("arch") == "onnx" else "fp32"  # what runs; set by default()
        self._folded: tuple[tuple[tuple[int, int], ...], nn.Module] | None = None
        base_id = str(meta["model_id"])
        self.model_id = base_id if label_mapping is None else f"{base_id}+map:{_mapping_name(label_mapping)}"
        self.label_set = SEMLOC_SIM.name if label_mapping is not None else str(meta.get("label_set"))
        self.num_classes: int | None = None  # known from the file, else from the first output
        if meta.get("num_classes") is not None:
            self._check_classes(int(meta["num_classes"]))

    def _check_classes(self, num_classes: int) -> None:
        """Refuse a model whose class count does not fit the label mapping (:func:`model_classes_problem`)."""
        problem = model_classes_problem(num_classes, self.label_mapping)
        if problem is not None:
            raise WeightsError(f"segmenter {self.model_id}: {problem}")
        self.num_classes = num_classes

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def untrained(
        cls,
        arch: str = "lraspp_mobilenet_v3_large",
        num_classes: int = SEMLOC_SIM.num_classes,
        seed: int = 0,
        device: str | torch.device = "auto",
        input_size: tuple[int, int] | None = None,
    ) -> Segmenter:
        """A randomly initialised network (deterministic for a given seed)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SegmentationNet({"arch": arch, "num_classes": num_classes, "input_size": input_size})
        return cls.from_net(net, device=device)

    @classmethod
    def from_net(cls, net: SegmentationNet, device: str | torch.device = "auto", trained_on: Any = None) -> Segmenter:
        """Wrap a ``SegmentationNet`` (e.g. just trained)."""
        return cls(net, segmenter_meta(net, trained_on=trained_on), device=device)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "auto",
        arch: str | None = None,
        label_mapping: LabelMapping | None = None,
        trust_model_code: bool = False,
    ) -> Segmenter:
        """Load a semloc checkpoint, a torchvision state dict (needs ``arch``), TorchScript or ONNX file.

        ``label_mapping`` maps the model's output ids (e.g. Cityscapes-19) to ``SEMLOC_SIM`` ids. TorchScript
        files and ONNX files with custom operators are programs: without ``trust_model_code`` they are refused
        (``WeightsError``) before anything in them is read as code.
        """
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            return cls._from_onnx(path, device, label_mapping, trust_model_code)
        if path.is_file() and is_torchscript_file(path):
            if not trust_model_code:
                raise WeightsError(f"{path} is a TorchScript program: loading it runs its code; {TRUST_HINT}")
            return cls._from_torchscript(path, device, label_mapping)
        blob = safe_load(path)
        if is_semloc_blob(blob):
            state, meta = checkpoint_from_blob(blob, path)
            if meta["model_type"] != "segmenter":
                raise WeightsError(f"{path} holds a {meta['model_type']!r} model, not a segmenter")
            net = SegmentationNet(meta["conf"])
            net.load_state_dict(state)
            return cls(net, meta, device=device, label_mapping=label_mapping)
        return cls._from_state_dict(blob, path, device, arch, label_mapping)

    @classmethod
    def default(
        cls,
        device: str | torch.device = "auto",
        weights_dir: str | os.PathLike | None = None,
        precision: str = "auto",
    ) -> Segmenter:
        """The segmenter shipped with the package (``semloc_ros/data/models``) in ``precision`` (module docstring).

        ``auto`` on the CPU takes the int8 file only when it was quantized from the folder's segmenter.pt (else
        fp32: a retrained segmenter whose int8 copy was not remade); ``int8`` asked for explicitly is loaded as is.
        """
        dev = resolve_device(device)
        wdir = Path(weights_dir or WEIGHTS_DIR)
        chosen = resolve_precision(precision, dev)
        if chosen == "int8":
            int8 = cls._shipped_int8(wdir, required=precision == "int8")
            if int8 is not None:
                return int8
            chosen = "fp32"
        path = wdir / DEFAULT_SEGMENTER_FILE
        if not path.is_file():
            raise WeightsError(f"shipped segmenter weights not found at {path}; train them with "
                               "scripts/train_models.sh or pass a weights file")
        segmenter = cls.from_file(path, device=dev)
        if chosen == "fp16":
            segmenter.model = segmenter.model.half()
            segmenter.input_dtype = torch.float16
        segmenter.precision = chosen
        return segmenter

    @classmethod
    def _shipped_int8(cls, weights_dir: Path, required: bool) -> Segmenter | None:
        """The int8 segmenter of ``weights_dir``; None (not ``required``) when it is absent or was quantized from
        another network than the folder's segmenter.pt."""
        path, source = weights_dir / INT8_SEGMENTER_FILE, weights_dir / DEFAULT_SEGMENTER_FILE
        if not path.is_file():
            if required:
                raise WeightsError(f"int8 segmenter not found at {path}; make it with scripts/quantize_segmenter.py")
            return None
        segmenter = cls.from_file(path, device="cpu")
        segmenter.precision = "int8"
        quantized_from = segmenter.meta["provenance"].get("source_model_id")
        if required or not source.is_file() or load_checkpoint(source)[1]["model_id"] == quantized_from:
            return segmenter
        warnings.warn(f"{path} was quantized from {quantized_from}, not from {source}: using float32 "
                      "(remake it with scripts/quantize_segmenter.py)", stacklevel=3)
        return None

    @classmethod
    def _from_state_dict(
        cls, blob: Any, path: Path, device: str | torch.device, arch: str | None, mapping: LabelMapping | None
    ) -> Segmenter:
        if isinstance(blob, dict):
            for key in ("state_dict", "model"):  # common wrappers of training scripts
                if isinstance(blob.get(key), dict):
                    blob = blob[key]
        if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
            raise WeightsError(f"{path} is neither a semloc weights file nor a state dict of tensors")
        if arch is None:
            raise WeightsError(f"{path} is a plain state dict: name its architecture with the model_arch parameter "
                               f"(one of {sorted(SEGMENTATION_ARCHS)})")
        state = {k.removeprefix("module."): v for k, v in blob.items() if not k.startswith("aux_classifier.")}
        net = SegmentationNet({"arch": arch, "num_classes": _infer_num_classes(state)})
        try:
            net.net.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{path} does not fit model_arch {arch!r}: {exc}") from exc
        meta = segmenter_meta(net, trained_on=str(path))
        if net.conf["num_classes"] != SEMLOC_SIM.num_classes:
            meta["label_set"] = f"unknown-{net.conf['num_classes']}"
        return cls(net, meta, device=device, label_mapping=mapping)

    @classmethod
    def _from_torchscript(cls, path: Path, device: str | torch.device, mapping: LabelMapping | None) -> Segmenter:
        extra = {TORCHSCRIPT_META: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise WeightsError(f"cannot load TorchScript file {path}: {exc}") from exc
        if extra[TORCHSCRIPT_META]:
            meta = json.loads(extra[TORCHSCRIPT_META])
        else:
            meta = {
                "arch": "torchscript",
                "label_set": SEMLOC_SIM.name,
                "input_size": None,
                "model_id": f"torchscript@{_file_digest(path)[:12]}",
            }
        return cls(module, meta, device=device, label_mapping=mapping)

    @classmethod
    def _from_onnx(
        cls, path: Path, device: str | torch.device, mapping: LabelMapping | None, trust_model_code: bool
    ) -> Segmenter:
        try:
            import onnxruntime as ort  # optional dependency
        except ImportError as exc:
            raise WeightsError(
                f"loading the ONNX model {path} needs the 'onnxruntime' package, which is not installed"
            ) from exc
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        custom = onnx_custom_domains(path)
        if custom and not trust_model_code:
            raise WeightsError(f"{path} uses custom ONNX operators (domains {', '.join(custom)}), which run code "
                               f"from outside the file; {TRUST_HINT}")
        dev = resolve_device(device)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" else None
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the node's `threads`, as for torch models
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise WeightsError(f"cannot load ONNX model {path}: {exc}") from exc
        shape = session.get_inputs()[0].shape
        fixed = shape[2:4] if all(isinstance(s, int) for s in shape[2:4]) else None
        input_name = session.get_inputs()[0].name
        output_shape = session.get_outputs()[0].shape
        provenance = _onnx_provenance(session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY))
        upsample = provenance.get("logits") == "upsample_bilinear"  # the int8 file: its final resize runs here

        def run(x: torch.Tensor) -> torch.Tensor:
            out = torch.from_numpy(session.run(None, {input_name: x.detach().cpu().numpy().astype(np.float32)})[0])
            if upsample and out.shape[-2:] != x.shape[-2:]:  # channels_last: the argmax reads each pixel's logits
                out = F.interpolate(out.contiguous(memory_format=torch.channels_last), size=x.shape[-2:],
                                    mode="bilinear", align_corners=False)
            return out

        meta = {
            "arch": "onnx",
            "label_set": SEMLOC_SIM.name,
            "input_size": fixed,
            "model_id": f"onnx@{_file_digest(path)[:12]}",
            "provenance": provenance,
        }
        if len(output_shape) == 4 and isinstance(output_shape[1], int):
            meta["num_classes"] = output_shape[1]
        seg = cls(run, meta, device="cpu", label_mapping=mapping)
        return seg

    # ---- saving -------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, half: bool = False, **extra_meta: Any) -> dict[str, Any]:
        """Write the network as a semloc checkpoint (only for networks built by this package)."""
        if not isinstance(self.model, SegmentationNet):
            raise TypeError("only SegmentationNet models can be saved as semloc checkpoints")
        meta = {**segmenter_meta(self.model, trained_on=self.meta.get("trained_on")), **extra_meta}
        return save_checkpoint(path, self.model, meta, half=half)

    def export_torchscript(self, path: str | os.PathLike) -> None:
        """Write a TorchScript file (meta embedded, so ``from_file`` restores the same ``model_id``)."""
        if not isinstance(self.model, nn.Module):
            raise TypeError("only torch modules can be exported to TorchScript")
        meta = {k: self.meta[k] for k in ("arch", "label_set", "input_size", "model_id", "num_classes")}
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still the portable format
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.script(self.model.cpu().eval())
            torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
        self.model.to(self.device)

    def export_onnx(self, path: str | os.PathLike) -> None:
        """Write an ONNX file (input ``image`` Nx3xHxW ImageNet-normalised at ``input_size``, output ``logits``)
        for onnxruntime or other runtimes; ``from_file`` loads it back (model id from the file's digest)."""
        if not isinstance(self.model, nn.Module) or self.input_size is None:
            raise TypeError("only torch modules with a fixed input_size can be exported to ONNX")
        example = torch.zeros(1, 3, *self.input_size)
        with warnings.catch_warnings():  # the TorchScript-based exporter: no onnxscript needed
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
            torch.onnx.export(
                self.model.cpu().eval(),
                (example,),
                str(path),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
            )
        self.model.to(self.device)

    # ---- inference ----------------------------------------------------------------------------------
    def _inference_model(self) -> Callable[[torch.Tensor], Any]:
        """The network to run: for a torch module in eval mode, a copy with its batch norms folded into the
        preceding convolutions (same outputs up to rounding, ~25 % faster on CPU, docs/benchmarks.md).

        The copy is remade whenever a weight of ``self.model`` changed (tensor version or storage), so training
        the network in between never leaves predictions on stale weights; ``self.model`` itself (saved, trained)
        is never modified.
        """
        model = self.model
        if not self.fold_norms or not isinstance(model, nn.Module) \
                or isinstance(model, torch.jit.ScriptModule) or model.training:
            return model
        key = tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
        if self._folded is None or self._folded[0] != key:
            with torch.inference_mode(False):  # ordinary tensors, even when called under inference_mode
                folded = fold_batch_norms(copy.deepcopy(model)).requires_grad_(False)
            self._folded = (key, folded)
        return self._folded[1]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``Nx3xHxW`` -> logits ``NxCxhxw``; ``WeightsError`` when the model gives anything else."""
        out = self._inference_model()(x)
        if isinstance(out, dict):
            out = out.get("out")
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise WeightsError(f"segmenter {self.model_id} returned {shape} for a batch of {tuple(x.shape)}; "
                               "expected logits N x classes x H x W (see the input/output contract in "
                               "semloc_ros/models/segmentation.py)")
        if self.num_classes != out.shape[1]:
            self._check_classes(int(out.shape[1]))
        return out

    def predict_batch(self, rgbs: np.ndarray, at_input_size: bool = False) -> np.ndarray:
        """``NxHxWx3 uint8`` RGB -> ``NxHxW uint8`` class ids (SEMLOC_SIM if mapped); ``at_input_size``: unresized."""
        rgbs = check_rgb_batch(rgbs)
        h, w = rgbs.shape[1:3]
        with torch.inference_mode():
            x = rgb_to_tensor(rgbs, self.input_size, self.device).to(self.input_dtype)
            ids = channel_argmax(self.logits(x)).to(torch.uint8)
            if not at_input_size and tuple(ids.shape[-2:]) != (h, w):
                ids = F.interpolate(ids[:, None].float(), size=(h, w), mode="nearest-exact")[:, 0].to(torch.uint8)
            out = ids.cpu().numpy()
        if self.label_mapping is not None:
            out = np.asarray(self.label_mapping.apply(out), dtype=np.uint8)
        return out

    def predict(self, rgb: np.ndarray, at_input_size: bool = False) -> np.ndarray:
        """``HxWx3 uint8`` RGB -> ``HxW uint8`` class ids (``at_input_size``: see :meth:`predict_batch`)."""
        return self.predict_batch(np.asarray(rgb)[None], at_input_size)[0]

    def __repr__(self) -> str:
        return f"Segmenter({self.model_id}, label_set={self.label_set}, device={self.device})"


def onnx_custom_domains(path: Path) -> list[str]:
    """Operator domains of an ONNX graph that are neither standard nor defined by the file's own functions.

    Read with the ``onnx`` package (protobuf only, no external data, nothing executed); an unreadable file is
    a ``WeightsError``.
    """
    try:
        import onnx
    except ImportError:  # without onnx the graph cannot be inspected: treat it as a program
        return ["(unknown: the 'onnx' package is not installed)"]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise WeightsError(f"cannot load ONNX model {path}: {type(exc).__name__}: {exc}") from exc
    local = {function.domain for function in model.functions}
    graphs, domains = [model.graph], {entry.domain for entry in model.opset_import}
    while graphs:  # nested graphs: If/Loop/Scan bodies
        graph = graphs.pop()
        for node in graph.node:
            domains.add(node.domain)
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
    return sorted(domains - STANDARD_ONNX_DOMAINS - local)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential`` into that convolution
    (in place; the module must be in eval mode). Returns the module."""
    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return module


def segmenter_meta(net: SegmentationNet, trained_on: Any = None) -> dict[str, Any]:
    """The checkpoint metadata of a ``SegmentationNet`` (``model_id`` from its current weights)."""
    conf = dict(net.conf)
    size = conf["input_size"]
    conf["input_size"] = list(size) if size is not None else None
    # The input normalisation is not a weight: name it in the id so the same weights normalised otherwise differ.
    id_arch = conf["arch"] if conf["input_norm"] == "imagenet" else f"{conf['arch']}+{conf['input_norm']}-norm"
    return {
        "model_type": "segmenter",
        "arch": conf["arch"],
        "conf": conf,
        "model_id": make_model_id(id_arch, conf["num_classes"], net.state_dict()),
        "label_set": SEMLOC_SIM.name,
        "num_classes": int(conf["num_classes"]),
        "dimension": int(conf["num_classes"]),
        "input_size": conf["input_size"],
        "trained_on": trained_on,
    }


def _mapping_name(mapping: LabelMapping) -> str:
    return f"{mapping.name}-{hashlib.sha256(mapping.table.tobytes()).hexdigest()[:8]}"
