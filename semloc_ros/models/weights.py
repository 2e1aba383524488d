"""The one weights format of semloc_ros: a ``torch.save`` dict of tensors plus plain metadata.

``{"format": "semloc-weights", "format_version": 1, "meta": {...}, "state_dict": {...}}``

Files are written atomically (temporary file in the same directory + ``os.replace``) and read with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor or a plain container:
a malicious file raises ``WeightsError`` and its payload is never executed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from semloc_ros.core.files import atomic_write

FORMAT = "semloc-weights"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
REQUIRED_META = ("model_type", "arch", "conf", "label_set", "num_classes", "dimension", "input_size")


class WeightsError(RuntimeError):
    """A weights file is missing, unreadable, unsafe or not in the semloc format."""


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the tensors of a state dict: names, dtypes, shapes and bytes in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def make_model_id(arch: str, dimension: int, state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"{arch}-{dimension}@{sha256[:12]}"``: the same weights always give the same id."""
    return f"{arch}-{int(dimension)}@{state_dict_digest(state_dict)[:12]}"


def _atomic_torch_save(obj: Any, path: Path, **kwargs: Any) -> None:
    atomic_write(path, lambda stream: torch.save(obj, stream, **kwargs))  # ordinary readable files (umask)


def save_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, meta: Mapping[str, Any], half: bool = False
) -> dict[str, Any]:
    """Write ``model``'s weights and ``meta`` atomically; returns the stored meta.

    ``meta`` needs ``model_type, arch, conf, label_set, num_classes, dimension, input_size``; ``model_id``
    and ``created_utc`` are filled in. ``half=True`` stores floating tensors as float16 (loaded back as
    float32); the model id is then the digest of the float16 tensors, i.e. of what the file holds.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_checkpoint: meta lacks {missing}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    out = dict(meta)
    out["model_id"] = make_model_id(out["arch"], out["dimension"], state)
    out["stored_dtype"] = "float16" if half else "float32"
    out.setdefault("trained_on", None)
    out.setdefault("created_utc", _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": out, "state_dict": state}
    _atomic_torch_save(blob, Path(path))
    return out


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """True for a ``torch.jit.save`` archive (a zip with ``code/`` and ``constants.pkl`` entries)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True, map_location='cpu')`` with every failure turned into ``WeightsError``."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file is empty (0 bytes): {path}")
    if is_torchscript_file(path):
        raise WeightsError(f"{path} is a TorchScript archive, not a semloc weights file (Segmenter.from_file reads it)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise WeightsError(
                f"refused to load {path}: it contains pickled objects other than tensors and plain containers "
                "(possibly malicious); nothing in it was executed"
            ) from exc
        raise WeightsError(f"weights file is corrupt (unpickling failed): {path}: {exc}") from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"weights file is truncated or corrupt: {path}: {exc}") from exc


def is_semloc_blob(blob: Any) -> bool:
    """True for an object loaded from a semloc weights file."""
    return isinstance(blob, dict) and blob.get("format") == FORMAT


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a semloc weights file -> ``(state_dict, meta)``; float16-stored tensors come back as float32."""
    return checkpoint_from_blob(safe_load(path), path)


def checkpoint_from_blob(blob: Any, path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Validate an object read by ``safe_load`` as a semloc checkpoint -> ``(state_dict, meta)``."""
    if not is_semloc_blob(blob):
        raise WeightsError(
            f"{path} is not a semloc weights file (no format={FORMAT!r}); plain state dicts load with "
            "their architecture named (the segmentation node's model_arch parameter)"
        )
    version = blob.get("format_version")
    if not isinstance(version, int):
        raise WeightsError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{path} has format_version {version}, newer than this semloc_ros supports ({FORMAT_VERSION}); "
            "upgrade semloc_ros"
        )
    meta, state = blob.get("meta"), blob.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise WeightsError(f"{path}: 'meta' and 'state_dict' must be dicts")
    missing = [k for k in (*REQUIRED_META, "model_id") if k not in meta]
    if missing:
        raise WeightsError(f"{path}: meta lacks {missing}")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: state_dict holds non-tensor values")
    expected = make_model_id(meta["arch"], meta["dimension"], state)
    if expected != meta["model_id"]:
        raise WeightsError(f"{path}: weights do not match the stored model_id {meta['model_id']} ({expected})")
    if meta.get("stored_dtype") == "float16":
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, meta
