"""Segmenter training from scratch: class-balanced cross-entropy, lighting augmentation, flips, scale crops."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from tqdm import tqdm

from semloc_ros.labels import SEMLOC_SIM
from semloc_ros.models.segmentation import SegmentationNet, Segmenter
from semloc_ros.models.utils import normalize_rgb, resolve_device
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


def class_weights(freq: np.ndarray) -> torch.Tensor:
    """ENet-style ``1 / ln(1.02 + f)`` weights, 0 for absent classes, mean 1 over present classes."""
    w = 1.0 / np.log(1.02 + freq)
    w[freq <= 0] = 0.0
    w /= w[freq > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def confusion_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Per-class IoU (NaN for classes absent from both) and pixel accuracy."""
    cm = np.bincount(gt.reshape(-1).astype(np.int64) * num_classes + pred.reshape(-1), minlength=num_classes**2)
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


def train_segmenter(
    drives: list[TrainDrive], out: Path, cfg: SegmenterTrainConfig, dataset: str = "", progress: bool = True
) -> dict[str, Any]:
    """Train a segmenter on ``drives`` (RGB + labels at ``cfg.input_size``) and save it to ``out``."""
    t0 = time.monotonic()
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    net = SegmentationNet({"arch": cfg.arch, "num_classes": SEMLOC_SIM.num_classes, "input_size": cfg.input_size})
    net.to(device).train()
    rgbs = torch.from_numpy(np.concatenate([d.rgb for d in drives]))
    labels = torch.from_numpy(np.concatenate([d.labels for d in drives]))
    if tuple(rgbs.shape[1:3]) != tuple(cfg.input_size):
        raise ValueError(f"drives are loaded at {tuple(rgbs.shape[1:3])}, config wants {cfg.input_size}")
    freq = class_pixel_frequencies([d.labels for d in drives], SEMLOC_SIM.num_classes)
    weights = class_weights(freq).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = Budget(cfg.minutes, cfg.steps)
    losses: list[float] = []
    bar = tqdm(desc="segmenter", unit="step", disable=not progress, total=cfg.steps)
    while not budget.done():
        idx = torch.randint(0, len(rgbs), (cfg.batch_size,), generator=gen)
        x = rgbs[idx].to(device).permute(0, 3, 1, 2).float().div_(255.0)
        y = labels[idx].to(device).long()
        x = photometric(x, gen)
        x, y = random_hflip(x, y, gen)
        if float(torch.rand(1, generator=gen)) < cfg.crop_prob:
            x, y = random_resized_crop(x, y, gen)
        set_lr(opt, cosine_lr(budget.fraction(), cfg.lr))
        loss = F.cross_entropy(net(normalize_rgb(x)), y, weight=weights)
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
        "steps": budget.step,
        "train_seconds": train_s,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "class_weights": weights.cpu().tolist(),
        "train_subset_metrics": metrics,
        "total_seconds": time.monotonic() - t0,
    }
    save_size_aware(seg.save, out, training=plain(training))
    return training
