"""Segmenter training: class-balanced cross-entropy, lighting augmentation, flips, scale crops, self-training.

Self-training (no labels of the target conditions used): a teacher segmenter labels unlabeled frames (e.g. the
night drives' RGB, or the frames of the user's bags); pixels where its flip-averaged softmax is below a
confidence threshold are ignored; the student then trains on batches that mix labeled frames and these
pseudo-labeled frames, both augmented, or on pseudo-labeled frames alone (passed as ``drives`` whose labels hold
``IGNORED_ID``; the reported metrics are then the agreement with the teacher's confident pixels).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from semloc_ros.core.labels import IGNORED_ID, SEMLOC_SIM
from semloc_ros.models.loading import load_segmenter
from semloc_ros.models.segmentation import SegmentationNet, Segmenter
from semloc_ros.models.utils import normalize_rgb, resolve_device, rgb_to_tensor
from semloc_ros.training.augment import photometric, random_hflip, random_resized_crop
from semloc_ros.training.common import Budget, cosine_lr, plain, save_size_aware, seed_everything, set_lr
from semloc_ros.training.data import TrainDrive, class_pixel_frequencies


@dataclass
class SegmenterTrainConfig:
    arch: str = "lraspp_mobilenet_v3_large"
    input_size: tuple[int, int] = (240, 320)  # the dataset's resolution
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    minutes: float = 20.0
    steps: int | None = None  # fixed number of steps instead of the time budget
    seed: int = 0
    device: str = "auto"
    crop_prob: float = 0.5
    eval_every: int = 10  # mIoU on every eval_every-th frame at the end
    augment: str = "photometric"  # 'photometric' (random lighting) or 'none' (flips and crops only)
    input_norm: str = "imagenet"  # 'instance': per-image photometric normalisation inside the network
    init: str | None = None  # segmenter weights to start from (fine-tuning, e.g. the self-training teacher)
    pseudo_threshold: float = 0.9  # self-training: teacher confidence below which a pixel is ignored
    pseudo_share: float = 0.5  # self-training: share of each batch drawn from the pseudo-labeled frames


AUGMENTS = ("photometric", "none")


@torch.inference_mode()
def pseudo_label(teacher: Segmenter, rgbs: np.ndarray, threshold: float, batch_size: int = 16) -> np.ndarray:
    """``NxHxWx3 uint8`` -> ``NxHxW uint8`` teacher labels, ``IGNORED_ID`` where the flip-averaged softmax
    confidence is below ``threshold``."""
    out = np.empty(rgbs.shape[:3], dtype=np.uint8)
    for i in range(0, len(rgbs), batch_size):
        x = rgb_to_tensor(rgbs[i : i + batch_size], teacher.input_size, teacher.device)
        prob = (teacher.logits(x).softmax(1) + teacher.logits(x.flip(-1)).softmax(1).flip(-1)) / 2
        if tuple(prob.shape[-2:]) != tuple(rgbs.shape[1:3]):
            prob = F.interpolate(prob, size=rgbs.shape[1:3], mode="bilinear", align_corners=False)
        confidence, ids = prob.max(1)
        ids[confidence < threshold] = IGNORED_ID
        out[i : i + batch_size] = ids.to(torch.uint8).cpu().numpy()
    return out


def class_weights(freq: np.ndarray) -> torch.Tensor:
    """ENet-style ``1 / ln(1.02 + f)`` weights, 0 for absent classes, mean 1 over present classes."""
    w = 1.0 / np.log(1.02 + freq)
    w[freq <= 0] = 0.0
    w /= w[freq > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def confusion_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Per-class IoU (NaN for classes absent from both) and pixel accuracy; ground-truth ids outside the
    classes (``IGNORED_ID`` of pseudo-labels) are left out."""
    known = gt.reshape(-1) < num_classes
    gt, pred = gt.reshape(-1)[known], np.minimum(pred.reshape(-1)[known], num_classes - 1)
    cm = np.bincount(gt.astype(np.int64) * num_classes + pred, minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return iou, float(inter.sum() / max(cm.sum(), 1))


def evaluate_segmenter(seg: Segmenter, drives: list[TrainDrive], every: int) -> dict[str, Any]:
    """mIoU and pixel accuracy per drive on every ``every``-th frame (training drives: a sanity check)."""
    c = SEMLOC_SIM.num_classes
    per_drive, all_pred, all_gt = {}, [], []
    for d in drives:
        rgb, gt = d.rgb[::every], d.labels[::every]
        pred = np.concatenate([seg.predict_batch(rgb[i : i + 16]) for i in range(0, len(rgb), 16)])
        iou, acc = confusion_iou(pred, gt, c)
        per_drive[d.name] = {"miou": float(np.nanmean(iou)), "pixel_acc": acc}
        all_pred.append(pred)
        all_gt.append(gt)
    iou, acc = confusion_iou(np.concatenate(all_pred), np.concatenate(all_gt), c)
    return {
        "miou": float(np.nanmean(iou)),
        "pixel_acc": acc,
        "iou": {SEMLOC_SIM.names[i]: float(v) for i, v in enumerate(iou) if not np.isnan(v)},
        "per_drive": per_drive,
    }


def _initial_net(cfg: SegmenterTrainConfig) -> SegmentationNet:
    """A fresh network, or a copy of ``cfg.init``'s (which must have the configured architecture)."""
    conf = {
        "arch": cfg.arch,
        "num_classes": SEMLOC_SIM.num_classes,
        "input_size": cfg.input_size,
        "input_norm": cfg.input_norm,
    }
    net = SegmentationNet(conf)
    if cfg.init is not None:
        # a file, or 'default' (the shipped segmenter: its float32 network, the one that can be trained)
        start = load_segmenter("default-fp32" if cfg.init == "default" else cfg.init, device="cpu")
        if not isinstance(start.model, SegmentationNet) or start.model.conf["arch"] != cfg.arch \
                or start.model.conf["input_norm"] != cfg.input_norm:
            raise ValueError(f"--init {cfg.init} is not a semloc {cfg.arch} segmenter with input_norm {cfg.input_norm}")
        net.load_state_dict(start.model.state_dict())
    return net


def train_segmenter(
    drives: list[TrainDrive],
    out: Path,
    cfg: SegmenterTrainConfig,
    dataset: str = "",
    progress: bool = True,
    pseudo: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train a segmenter on ``drives`` (RGB + labels at ``cfg.input_size``) and save it to ``out``.

    ``pseudo`` = (RGB, pseudo-labels with ``IGNORED_ID``) of unlabeled frames for self-training.
    """
    if cfg.augment not in AUGMENTS:
        raise ValueError(f"unknown augment {cfg.augment!r}; use one of {AUGMENTS}")
    if not 0 < cfg.pseudo_share < 1:
        raise ValueError("pseudo_share must be in (0, 1)")
    t0 = time.monotonic()
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    net = _initial_net(cfg).to(device).train()
    rgbs = torch.from_numpy(np.concatenate([d.rgb for d in drives]))
    labels = torch.from_numpy(np.concatenate([d.labels for d in drives]))
    if tuple(rgbs.shape[1:3]) != tuple(cfg.input_size):
        raise ValueError(f"drives are loaded at {tuple(rgbs.shape[1:3])}, config wants {cfg.input_size}")
    n_pseudo = 0
    if pseudo is not None:
        pseudo_rgbs, pseudo_labels = (torch.from_numpy(a) for a in pseudo)
        n_pseudo = round(cfg.batch_size * cfg.pseudo_share)
    freq = class_pixel_frequencies([d.labels for d in drives], SEMLOC_SIM.num_classes)
    weights = class_weights(freq).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = Budget(cfg.minutes, cfg.steps)
    losses: list[float] = []
    bar = tqdm(desc="segmenter", unit="step", disable=not progress, total=cfg.steps)
    while not budget.done():
        idx = torch.randint(0, len(rgbs), (cfg.batch_size - n_pseudo,), generator=gen)
        x, y = rgbs[idx], labels[idx]
        if n_pseudo:
            pidx = torch.randint(0, len(pseudo_rgbs), (n_pseudo,), generator=gen)
            x, y = torch.cat([x, pseudo_rgbs[pidx]]), torch.cat([y, pseudo_labels[pidx]])
        x = x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
        y = y.to(device).long()
        if cfg.augment == "photometric":
            x = photometric(x, gen)
        x, y = random_hflip(x, y, gen)
        if float(torch.rand(1, generator=gen)) < cfg.crop_prob:
            x, y = random_resized_crop(x, y, gen)
        set_lr(opt, cosine_lr(budget.fraction(), cfg.lr))
        loss = F.cross_entropy(net(normalize_rgb(x)), y, weight=weights, ignore_index=IGNORED_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        budget.step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if budget.step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
            if not progress:
                print(f"step {budget.step} loss {np.mean(losses[-20:]):.4f} t={budget.elapsed():.0f}s", flush=True)
    bar.close()
    train_s = budget.elapsed()
    net.eval()
    seg = Segmenter.from_net(net, device=device, trained_on=dataset)
    metrics = evaluate_segmenter(seg, drives, cfg.eval_every)
    training = {
        "task": "segmenter",
        "config": asdict(cfg),
        "drives": [d.name for d in drives],
        "pseudo_labeled_frames": 0 if pseudo is None else len(pseudo[0]),
        "steps": budget.step,
        "train_seconds": train_s,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "class_weights": weights.cpu().tolist(),
        "train_subset_metrics": metrics,
        "total_seconds": time.monotonic() - t0,
    }
    save_size_aware(seg.save, out, training=plain(training))
    return training
