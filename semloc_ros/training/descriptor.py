"""Descriptor training with a triplet loss on cosine similarity and hard negatives.

1. Pairs from GPS (:mod:`~semloc_ros.training.mining`): positives are frames of OTHER drives of the same map
   within ``pos_m`` metres (and similar heading), and with ``revisit_s`` also revisits within a drive; negatives
   are frames of the same map farther than ``neg_m``. A held-out stretch (``holdout``) is left out.
2. Synthetic positives (``p_synthetic``): the anchor's own frame as another camera would see it (horizontal
   shift, crop and scale, and the usual lighting or label noise); an anchor without a GPS positive always gets
   one, so a single drive is enough.
3. Negatives are mined among the most similar ones in a descriptor cache of every training frame, refreshed
   every ``refresh_s`` seconds. The semantic descriptor sees ground-truth labels corrupted with
   segmentation-like noise and/or labels predicted by the trained segmenter on lighting-augmented RGB, so it
   learns to tolerate segmenter errors; the RGB baseline sees lighting-augmented RGB.
4. The network starts from ``init`` (fine-tuning; ``default`` = the shipped descriptor) or from scratch;
   Recall@N on the held-out stretch is reported before and after training.
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

from semloc_ros.core.labels import SEMLOC_SIM
from semloc_ros.models.descriptor import (
    DescriptorExtractor,
    DescriptorNet,
    NetVLAD,
    build_descriptor_net,
    one_hot_ids,
)
from semloc_ros.models.segmentation import Segmenter
from semloc_ros.models.utils import normalize_rgb, resolve_device
from semloc_ros.training.augment import (
    corrupt_labels,
    other_camera,
    paste_vehicles,
    photometric,
    random_shift,
    swap_classes,
    synthetic_view,
)
from semloc_ros.training.common import Budget, cosine_lr, plain, save_size_aware, seed_everything, set_lr
from semloc_ros.training.data import FrameIndex, TrainDrive
from semloc_ros.training.mining import (
    HeldOut,
    NoTrainingDataError,
    build_pairs,
    cross_drive_recall,
    hold_out,
    recall_at_n,
)

__all__ = ["DescriptorTrainConfig", "build_pairs", "cross_drive_recall", "train_descriptor"]


@dataclass
class DescriptorTrainConfig:
    kind: str = "semantic"  # 'semantic' (labels) or 'rgb'
    net_conf: dict | None = None  # overrides of the network's default_conf
    anchors: int = 8  # anchors per step; each with 1 positive and `negatives` negatives
    negatives: int = 4
    margin: float = 0.2  # triplet margin on cosine similarity
    pos_m: float = 5.0
    neg_m: float = 25.0
    max_heading_deg: float = 60.0
    hard_pool: int = 50  # hard negatives are drawn from the hard_pool most similar ones of the cache
    hard_share: float = 0.5  # share of hard negatives; the others are random far frames of the same map
    clip_grad: float = 1.0
    rgb_aug_strength: float = 0.7  # RGB: strength of the lighting augmentation
    keep_best: bool = True  # keep the weights of the cache refresh with the best selection metric
    pca_init: bool = False  # initialise the projection as a PCA whitening of pooled features (see init_projection_pca)
    refresh_s: float = 90.0
    lr: float = 1e-4
    weight_decay: float = 1e-4
    minutes: float = 12.0
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    # Semantic input mix (per image): segmenter prediction / noisy ground truth / clean ground truth.
    p_predicted: float = 0.4
    p_clean: float = 0.15
    noise_strength: float = 1.0
    recall_m: float = 10.0
    # Semantic: share of images with synthetic traffic pasted in (paste_vehicles), with one class relabelled as
    # another everywhere (swap_classes), the maximal horizontal shift (random_shift), and the share seen by
    # another camera (other_camera: field of view, pitch, mount height).
    p_vehicles: float = 0.0
    p_swap: float = 0.0
    max_shift: float = 0.0
    p_camera: float = 0.0
    # Step 1: revisits within a drive at least this many seconds apart are positives too (None: other drives only).
    revisit_s: float | None = None
    # Step 2: share of anchors whose positive is a synthetic view of themselves, and the views' geometry.
    p_synthetic: float = 0.0
    synthetic_shift: float = 0.15
    synthetic_zoom: float = 1.3
    holdout: float = 0.0  # share of the first drive held out for Recall@N (0: none)
    init: str | None = None  # step 4: weights to fine-tune ('default' = the shipped descriptor of this kind)


def arch_of(kind: str) -> str:
    if kind not in ("semantic", "rgb"):
        raise ValueError(f"descriptor kind must be 'semantic' or 'rgb', got {kind!r}")
    return "semantic_alexnet" if kind == "semantic" else "rgb_netvlad"


@torch.no_grad()
def init_netvlad(net: DescriptorNet, inputs: torch.Tensor, clusters: int, gen: torch.Generator) -> None:
    """Set NetVLAD centroids by a few k-means iterations on normalised conv features of ``inputs``."""
    pool = getattr(net, "pool", None)
    if not isinstance(pool, NetVLAD):
        return
    x = inputs
    if net.input_kind == "labels":
        x = one_hot_ids(x, SEMLOC_SIM.num_classes) * net.channel_mask.view(1, -1, 1, 1)
    feats = F.normalize(net.features(x), dim=1).permute(0, 2, 3, 1).reshape(-1, pool.centroids.shape[1])
    feats = feats[torch.randperm(len(feats), generator=gen)[:20000].to(feats.device)]
    centroids = feats[torch.randperm(len(feats), generator=gen)[:clusters].to(feats.device)].clone()
    for _ in range(15):
        assign = (feats @ centroids.T).argmax(dim=1)
        for k in range(clusters):
            members = feats[assign == k]
            if len(members):
                centroids[k] = members.mean(dim=0)
        centroids = F.normalize(centroids, dim=1)
    pool.set_centroids(centroids)


@torch.no_grad()
def init_projection_pca(net: DescriptorNet, inputs: torch.Tensor, eps: float = 0.01) -> None:
    """Initialise the final linear layer as a (regularised) PCA whitening of the pooled features of ``inputs``.

    Untrained pooled features are nearly parallel (cosine ~0.98 for RGB NetVLAD), which leaves a triplet loss
    stuck at its margin; centring and whitening spreads them before training starts.
    """
    proj = getattr(net, "proj", None)
    if not isinstance(proj, torch.nn.Linear):
        return
    x = inputs
    if net.input_kind == "labels":
        x = one_hot_ids(x, SEMLOC_SIM.num_classes) * net.channel_mask.view(1, -1, 1, 1)
    feats = net.pool(net.features(x)).double()
    mean = feats.mean(dim=0)
    _, s, vt = torch.linalg.svd(feats - mean, full_matrices=False)
    k = min(proj.out_features, len(s))
    var = s[:k] ** 2 / max(1, len(feats) - 1)
    weight = torch.zeros_like(proj.weight, dtype=torch.float64)
    weight[:k] = vt[:k] / torch.sqrt(var + eps * var.mean())[:, None]
    proj.weight.copy_(weight.float())
    proj.bias.copy_((-weight @ mean).float())


class _Inputs:
    """Builds network input batches for frame indices (with the training-time corruptions)."""

    def __init__(
        self,
        kind: str,
        drives: list[TrainDrive],
        predicted: np.ndarray | None,
        cfg: DescriptorTrainConfig,
        device: torch.device,
        gen: torch.Generator,
    ):
        self.kind, self.cfg, self.device, self.gen = kind, cfg, device, gen
        if kind == "semantic":
            self.images = torch.from_numpy(np.concatenate([d.labels for d in drives]))
        else:
            self.images = torch.from_numpy(np.concatenate([d.rgb for d in drives]))
        self.predicted = torch.from_numpy(predicted) if predicted is not None else None

    def clean(self, idx: torch.Tensor) -> torch.Tensor:
        """Cache input: segmenter predictions when available (what queries look like), else ground truth."""
        if self.kind == "semantic":
            src = self.predicted if self.predicted is not None else self.images
            return src[idx].to(self.device).long()
        return normalize_rgb(self.images[idx].to(self.device).permute(0, 3, 1, 2).float().div_(255.0))

    def noisy_gt(self, idx: torch.Tensor) -> torch.Tensor:
        """Ground-truth labels with the same synthetic errors at every call (monitoring)."""
        gen = torch.Generator().manual_seed(1234 + int(idx[0]))
        return corrupt_labels(self.images[idx].to(self.device).long(), gen, strength=self.cfg.noise_strength)

    def synthetic(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Step 2: training inputs ``x`` as another camera would see them."""
        return synthetic_view(x, gen, self.cfg.synthetic_shift, self.cfg.synthetic_zoom)

    def view(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Fixed synthetic queries of the held-out frames: another camera, lighting (RGB) or label noise."""
        if self.kind == "rgb":
            x = self.images[idx].to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            return normalize_rgb(self.synthetic(photometric(x, gen, strength=self.cfg.rgb_aug_strength), gen))
        return self.synthetic(corrupt_labels(self.clean(idx), gen, strength=0.5), gen)

    def train(self, idx: torch.Tensor) -> torch.Tensor:
        cfg, gen = self.cfg, self.gen
        if self.kind == "rgb":
            x = self.images[idx].to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            return normalize_rgb(photometric(x, gen, strength=cfg.rgb_aug_strength))
        gt = self.images[idx].to(self.device).long()
        noisy = corrupt_labels(gt, gen, strength=cfg.noise_strength)
        r = torch.rand(len(idx), generator=gen).to(self.device)[:, None, None]
        out = torch.where(r < cfg.p_clean, gt, noisy)
        if self.predicted is not None:
            pred = self.predicted[idx].to(self.device).long()
            out = torch.where((r >= cfg.p_clean) & (r < cfg.p_clean + cfg.p_predicted), pred, out)
        if cfg.p_swap > 0:
            out = swap_classes(out, gen, p=cfg.p_swap)
        if cfg.p_vehicles > 0:
            out = paste_vehicles(out, gen, p=cfg.p_vehicles)
        if cfg.max_shift > 0:
            out = random_shift(out, gen, cfg.max_shift)
        if cfg.p_camera > 0:
            out = other_camera(out, gen, p=cfg.p_camera)
        return out


@torch.no_grad()
def predict_labels(
    segmenter: Segmenter, drives: list[TrainDrive], size: tuple[int, int], gen: torch.Generator, progress: bool
) -> np.ndarray:
    """Segmenter predictions on every training frame, half of them on lighting-augmented RGB, at ``size``."""
    out = []
    rgbs = np.concatenate([d.rgb for d in drives])
    for i in tqdm(range(0, len(rgbs), 16), desc="segmenter labels", disable=not progress):
        x = torch.from_numpy(rgbs[i : i + 16]).permute(0, 3, 1, 2).float().div_(255.0)
        aug = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(aug[:, None, None, None], photometric(x, gen), x)
        x8 = (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        lab = torch.from_numpy(segmenter.predict_batch(x8))
        lab = F.interpolate(lab[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(torch.uint8)
        out.append(lab.numpy())
    return np.concatenate(out)


def _initial_net(cfg: DescriptorTrainConfig, device: torch.device) -> tuple[DescriptorNet, str | None]:
    """Step 4: a fresh network of ``cfg.kind``, or a copy of ``cfg.init`` (and its model id)."""
    arch = arch_of(cfg.kind)
    if cfg.init is None:
        return build_descriptor_net(arch, cfg.net_conf or {}).to(device), None
    start = (DescriptorExtractor.default(cfg.kind, device="cpu") if cfg.init == "default"
             else DescriptorExtractor.from_file(cfg.init, device="cpu"))
    if start.arch != arch:
        raise ValueError(f"--init {cfg.init} is a {start.arch} descriptor, not {arch} ({cfg.kind})")
    net = build_descriptor_net(arch, start.meta["conf"])
    net.load_state_dict(start.net.state_dict())
    return net.to(device).train(), start.model_id


def _training_frames(index: FrameIndex, cfg: DescriptorTrainConfig) -> tuple[list, np.ndarray, np.ndarray,
                                                                            HeldOut | None]:
    """Step 1: positives and negatives among the training frames, the anchors, and the held-out stretch."""
    positives, negatives = build_pairs(index, cfg.pos_m, cfg.neg_m, cfg.max_heading_deg, cfg.revisit_s)
    held = hold_out(index, cfg.holdout, cfg.pos_m, cfg.max_heading_deg, cfg.revisit_s)
    train = ~held.mask if held is not None else np.ones(len(index), dtype=bool)
    negatives &= train[None, :]
    positives = [p[train[p]] for p in positives]
    with_positive = np.array([len(p) > 0 for p in positives]) & train
    usable = train & negatives.any(axis=1) & (with_positive | (cfg.p_synthetic > 0))
    anchors = np.flatnonzero(usable)
    print(f"{len(index)} frames, {int(train.sum())} for training: {int((with_positive & usable).sum())} anchors "
          f"with GPS positives ({'other drives or revisits' if cfg.revisit_s else 'other drives'}), "
          f"{len(anchors)} with synthetic views" + (f"; {held.describe()}" if held else ""), flush=True)
    if not len(anchors):
        raise NoTrainingDataError(
            f"no training triplets: of {int(train.sum())} training frames, {int(with_positive.sum())} have a "
            f"positive (another pass within {cfg.pos_m:g} m) and {int(negatives.any(axis=1).sum())} a negative "
            f"(a frame beyond {cfg.neg_m:g} m); record a longer route, add a second drive (--source) or allow "
            "synthetic views")
    return positives, negatives, anchors, held


def _sample_step(rng: np.random.Generator, anchors: np.ndarray, positives: list, negatives: np.ndarray,
                 desc: np.ndarray, cfg: DescriptorTrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anchors, positives (the anchor itself where ``synthetic``), synthetic mask and negatives of one step."""
    a = rng.choice(anchors, cfg.anchors, replace=len(anchors) < cfg.anchors)
    synthetic = np.array([not len(positives[i]) or rng.random() < cfg.p_synthetic for i in a])
    p = np.array([i if syn else rng.choice(positives[i]) for i, syn in zip(a, synthetic, strict=True)])
    sim = desc[a] @ desc.T
    sim[~negatives[a]] = -np.inf
    hard = np.argsort(-sim, axis=1)[:, : cfg.hard_pool]
    n_hard = round(cfg.negatives * cfg.hard_share)
    n = np.stack([np.concatenate([rng.choice(h[np.isfinite(sim[k, h])], n_hard),
                                  rng.choice(np.flatnonzero(negatives[a[k]]), cfg.negatives - n_hard)])
                  for k, h in enumerate(hard)])
    return a, p, synthetic, n


def _heldout_recall(held: HeldOut | None, desc: np.ndarray, describe, inputs: _Inputs, index: FrameIndex,
                    cfg: DescriptorTrainConfig) -> dict[str, float] | None:
    """Step 4: Recall@N of the held-out stretch's queries (synthetic views with a fixed seed) among all frames."""
    if held is None:
        return None
    if held.synthetic:
        gen = torch.Generator().manual_seed(cfg.seed + 99)
        queries = describe(lambda idx: inputs.view(torch.from_numpy(held.queries)[idx], gen), len(held.queries))
    else:
        queries = desc[held.queries]
    return recall_at_n(desc, queries, held, index, cfg.recall_m, cfg.revisit_s)


class _Recall:
    """Descriptors of every training frame and cross-drive Recall@1 (semantic: also noisy-label queries)."""

    def __init__(self, net, inputs, index: FrameIndex, cfg: DescriptorTrainConfig) -> None:
        self.net, self.inputs, self.index, self.cfg = net, inputs, index, cfg

    def describe(self, make_input, count: int | None = None) -> np.ndarray:
        count = len(self.index) if count is None else count
        self.net.eval()
        with torch.inference_mode():
            chunks = [torch.arange(i, min(i + 64, count)) for i in range(0, count, 64)]
            desc = [self.net(make_input(c)).cpu() for c in chunks]
        self.net.train()
        return torch.cat(desc).numpy()

    def __call__(self) -> tuple[np.ndarray, dict[str, float]]:
        desc = self.describe(self.inputs.clean)
        recall = {"recall": cross_drive_recall(desc, self.index, self.cfg.recall_m)}
        if self.cfg.kind == "semantic":
            recall["noisy_recall"] = cross_drive_recall(desc, self.index, self.cfg.recall_m,
                                                        self.describe(self.inputs.noisy_gt))
        return desc, recall


def _initialise(net, inputs, index: FrameIndex, cfg: DescriptorTrainConfig, init_id: str | None, gen) -> None:
    """NetVLAD clusters and the PCA projection from the data, unless the weights came from ``--init``."""
    if init_id is not None:
        return
    init_netvlad(net, inputs.clean(torch.randperm(len(index), generator=gen)[:64]), net.conf.get("clusters", 16), gen)
    if cfg.pca_init:
        sample = torch.randperm(len(index), generator=gen)[:1024]
        net.eval()
        init_projection_pca(net, torch.cat([inputs.clean(sample[i : i + 64]) for i in range(0, len(sample), 64)]))
        net.train()


def _triplet_loss(net, x: torch.Tensor, cfg: DescriptorTrainConfig) -> torch.Tensor:
    """Margin triplet loss on cosine similarities of one batch laid out as anchors, positives, negatives."""
    emb = net(x)
    ea, ep = emb[: cfg.anchors], emb[cfg.anchors : 2 * cfg.anchors]
    en = emb[2 * cfg.anchors :].view(cfg.anchors, cfg.negatives, -1)
    s_ap = (ea * ep).sum(-1, keepdim=True)
    s_an = torch.einsum("bd,bkd->bk", ea, en)
    return F.relu(cfg.margin - s_ap + s_an).mean()


def _train_loop(net, inputs, recall: _Recall, start: tuple[np.ndarray, dict[str, float]], mined,
                cfg: DescriptorTrainConfig, budget: Budget, gen, progress: bool) -> dict[str, Any]:
    """Triplet steps until the budget is spent, descriptors refreshed every ``refresh_s`` for hard negatives."""
    positives, negatives, anchors = mined
    desc, start = start
    history = [{"step": 0, **start}]
    key = "noisy_recall" if cfg.kind == "semantic" else "recall"  # model selection metric (keep_best)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    last_refresh, rng, losses = time.monotonic(), np.random.default_rng(cfg.seed), []
    print(f"cross-drive recall@1 ({cfg.recall_m:g} m) before training: {start}", flush=True)
    bar = tqdm(desc=f"{cfg.kind} descriptor", unit="step", disable=not progress, total=cfg.steps)
    while not budget.done():
        a, p, synthetic, n = _sample_step(rng, anchors, positives, negatives, desc, cfg)
        x = inputs.train(torch.from_numpy(np.concatenate([a, p, n.reshape(-1)])))
        if synthetic.any():  # step 2: the positives that are the anchor seen by another camera
            rows = torch.from_numpy(cfg.anchors + np.flatnonzero(synthetic)).to(x.device)
            x[rows] = inputs.synthetic(x[rows], gen)
        loss = _triplet_loss(net, x, cfg)
        set_lr(opt, cosine_lr(budget.fraction(), cfg.lr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        opt.step()
        budget.step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if time.monotonic() - last_refresh > cfg.refresh_s:
            desc, now = recall()
            last_refresh = time.monotonic()
            if cfg.keep_best and now[key] > best[0]:
                best = (now[key], budget.step, {k: v.detach().clone() for k, v in net.state_dict().items()})
            history.append({"step": budget.step, **now, "loss": float(np.mean(losses[-50:]))})
            print(f"step {budget.step} t={budget.elapsed():.0f}s loss {np.mean(losses[-50:]):.4f} "
                  f"cross-drive recall@1 {now}", flush=True)
    bar.close()
    return {"start": start, "history": history, "key": key, "best": best, "losses": losses,
            "train_seconds": budget.elapsed()}


def _keep_best(net, recall: _Recall, run: dict[str, Any], budget: Budget, cfg: DescriptorTrainConfig):
    """The final descriptors and recall; the weights of the best refresh when ``keep_best`` and it was better."""
    desc, end = recall()
    print(f"cross-drive recall@1 ({cfg.recall_m:g} m) after training: {end}", flush=True)
    key, best = run["key"], run["best"]
    kept = budget.step
    if cfg.keep_best and best[0] > end[key]:
        net.load_state_dict(best[2])
        kept = best[1]
        print(f"keeping the weights of step {kept} ({key} {best[0]:.3f} > {end[key]:.3f})", flush=True)
        desc = recall.describe(recall.inputs.clean)
    return desc, end, kept


def train_descriptor(
    drives: list[TrainDrive],
    out: Path,
    cfg: DescriptorTrainConfig,
    segmenter: Segmenter | None = None,
    dataset: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Train the semantic or RGB descriptor on ``drives`` (images already at the network's input size)."""
    t0 = time.monotonic()
    gen = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    net, init_id = _initial_net(cfg, device)
    index = FrameIndex.of(drives)
    positives, negatives, anchors, held = _training_frames(index, cfg)
    predicted = None
    if cfg.kind == "semantic" and segmenter is not None and cfg.p_predicted > 0:
        predicted = predict_labels(segmenter, drives, net.conf["input_size"], gen, progress)
    inputs = _Inputs(cfg.kind, drives, predicted, cfg, device, gen)
    _initialise(net, inputs, index, cfg, init_id, gen)
    recall = _Recall(net, inputs, index, cfg)
    start = recall()
    heldout_start = _heldout_recall(held, start[0], recall.describe, inputs, index, cfg)
    budget = Budget(cfg.minutes, cfg.steps)  # the training time: preparing the data above is not part of it
    run = _train_loop(net, inputs, recall, start, (positives, negatives, anchors), cfg, budget, gen, progress)
    desc, recall_end, kept = _keep_best(net, recall, run, budget, cfg)
    heldout_end = _heldout_recall(held, desc, recall.describe, inputs, index, cfg)
    if held is not None:
        print(f"{held.describe()}; Recall@N ({cfg.recall_m:g} m) before {_fmt(heldout_start)}, "
              f"after {_fmt(heldout_end)}", flush=True)
    net.eval()
    extractor = DescriptorExtractor.from_net(net, arch_of(cfg.kind), device=device, trained_on=dataset)
    losses = run["losses"]
    training = {
        "task": f"descriptor-{cfg.kind}",
        "config": asdict(cfg),
        "drives": [d.name for d in drives],
        "init": init_id,
        "segmenter": segmenter.model_id if predicted is not None and segmenter is not None else None,
        "steps": budget.step,
        "kept_step": kept,
        "train_seconds": run["train_seconds"],
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "cross_drive_recall_at_1": {"before": run["start"], "after": recall_end, "threshold_m": cfg.recall_m},
        "heldout_recall": None if held is None else {"before": heldout_start, "after": heldout_end,
                                                     "queries": held.describe()},
        "history": run["history"],
        "total_seconds": time.monotonic() - t0,
    }
    save_size_aware(extractor.save, out, training=plain(training))
    return training


def _fmt(recall: dict[str, float] | None) -> str:
    return "n/a" if recall is None else " ".join(f"{k} {100 * v:.1f} %" for k, v in recall.items())
