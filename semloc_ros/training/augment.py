"""Batched augmentations on the training device: photometric (lighting conditions), flips, segmentation noise."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from semloc_ros.core.labels import IGNORED_ID, SEMLOC_SIM

# Classes a segmenter plausibly confuses (source -> candidates), used to corrupt ground-truth labels.
CONFUSIONS: dict[str, tuple[str, ...]] = {
    "SKY": ("BUILDING", "VEGETATION", "UNLABELED"),
    "BUILDING": ("SKY", "VEGETATION", "TERRAIN"),
    "VEGETATION": ("TERRAIN", "BUILDING", "SKY"),
    "TERRAIN": ("VEGETATION", "ROAD", "SIDEWALK"),
    "ROAD": ("SIDEWALK", "TERRAIN", "LANE_LINE"),
    "SIDEWALK": ("ROAD", "TERRAIN"),
    "LANE_LINE": ("ROAD",),
    "POLE": ("BUILDING", "VEGETATION", "SKY"),
}


def photometric(rgb: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random lighting of ``Nx3xHxW`` floats in [0, 1]: tint, brightness (often strong darkening, like night),
    gamma, contrast, saturation and sensor noise, each drawn per image. Returns floats in [0, 1]."""
    n, dev = rgb.shape[0], rgb.device

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, *shape, generator=gen)).to(dev)

    dark = torch.rand(n, generator=gen) < 0.35 * strength
    brightness = torch.where(dark, 0.12 + 0.33 * torch.rand(n, generator=gen), 0.7 + 0.6 * torch.rand(n, generator=gen))
    tint = u(1.0 - 0.25 * strength, 1.0 + 0.25 * strength, 3)
    x = rgb * (brightness.to(dev)[:, None] * tint)[:, :, None, None]
    gamma = torch.exp(u(-0.5 * strength, 0.7 * strength))[:, None, None, None]
    x = x.clamp(1e-4, 1.0).pow(gamma)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1.0 - 0.4 * strength, 1.0 + 0.3 * strength)[:, None, None, None] + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * u(1.0 - 0.6 * strength, 1.0 + 0.4 * strength)[:, None, None, None] + gray
    noise = u(0.0, 0.03 * strength)[:, None, None, None]
    x = x + noise * torch.randn(x.shape, generator=gen).to(dev)
    return x.clamp(0.0, 1.0)


def random_hflip(
    rgb: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip the same random subset of images and label maps horizontally."""
    flip = (torch.rand(rgb.shape[0], generator=gen) < p).to(rgb.device)
    rgb = torch.where(flip[:, None, None, None], rgb.flip(-1), rgb)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    return rgb, labels


def random_resized_crop(
    rgb: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, min_scale: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random crop (same aspect ratio, area share ``min_scale..1``) of the batch, resized back."""
    h, w = rgb.shape[-2:]
    s = float(min_scale + (1 - min_scale) * torch.rand(1, generator=gen)) ** 0.5
    ch, cw = max(8, round(h * s)), max(8, round(w * s))
    y0 = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x0 = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    rgb = F.interpolate(rgb[..., y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="bilinear", align_corners=False)
    crop = labels[:, None, y0 : y0 + ch, x0 : x0 + cw].float()
    labels = F.interpolate(crop, size=(h, w), mode="nearest-exact")[:, 0].long()
    return rgb, labels


def _confusion_lut(num_classes: int) -> list[list[int]]:
    """Candidates per class id (itself when it has no confusion partners)."""
    lut = [[c] for c in range(num_classes)]
    for src, dsts in CONFUSIONS.items():
        lut[SEMLOC_SIM.id_of(src)] = [SEMLOC_SIM.id_of(d) for d in dsts]
    return lut


def corrupt_labels(labels: torch.Tensor, gen: torch.Generator, strength: float = 1.0, blobs: int = 4) -> torch.Tensor:
    """Segmentation-like errors on ``NxHxW`` int64 ground truth.

    - wobbly class boundaries: a smooth random displacement field (up to ~2 % of the width), nearest resampling;
    - coarse predictions: nearest down/up-sampling by 2 or 4 for some images;
    - confused regions: up to ``blobs`` random ellipses where each class turns into a plausible confusion
      (``CONFUSIONS``: sky/building, terrain/vegetation, road/sidewalk, ...);
    - thin classes lost: lane lines -> road, poles -> their surroundings' class, for some images.
    """
    n, h, w = labels.shape
    dev = labels.device
    c = SEMLOC_SIM.num_classes
    x = labels.float()[:, None]
    # Wobbly boundaries.
    amp = (torch.rand(n, 1, 1, 1, generator=gen) * 0.04 * strength).to(dev)
    flow = F.interpolate(torch.randn(n, 2, 4, 5, generator=gen).to(dev), size=(h, w), mode="bicubic") * amp
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1)[None] + flow.permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=True)
    # Coarse.
    factor = int(torch.randint(0, 3, (1,), generator=gen)) * 2  # 0, 2 or 4
    coarse = (torch.rand(n, generator=gen) < 0.3 * strength).to(dev)
    if factor and coarse.any():
        small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="nearest-exact")
        x = torch.where(coarse[:, None, None, None], F.interpolate(small, size=(h, w), mode="nearest-exact"), x)
    out = x[:, 0].long().clamp(0, c - 1)
    # Thin classes lost.
    lane, pole = SEMLOC_SIM.id_of("LANE_LINE"), SEMLOC_SIM.id_of("POLE")
    drop_lane = (torch.rand(n, generator=gen) < 0.3 * strength).to(dev)[:, None, None]
    out = torch.where(drop_lane & (out == lane), torch.full_like(out, SEMLOC_SIM.id_of("ROAD")), out)
    drop_pole = (torch.rand(n, generator=gen) < 0.3 * strength).to(dev)[:, None, None]
    shifted = out.roll(shifts=max(1, w // 40), dims=-1)
    out = torch.where(drop_pole & (out == pole) & (shifted != pole), shifted, out)
    # Confused regions.
    lut = _confusion_lut(c)
    width = max(len(v) for v in lut)
    cands = torch.tensor([v + v[-1:] * (width - len(v)) for v in lut], device=dev)[None]  # 1 x c x width
    counts = torch.tensor([len(v) for v in lut], device=dev, dtype=torch.float32)[None]
    yy = torch.arange(h, device=dev, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, device=dev, dtype=torch.float32)[None, None, :]
    for _ in range(blobs):
        active = (torch.rand(n, generator=gen) < 0.5 * strength).to(dev)
        cy, cx = (torch.rand(n, generator=gen) * h).to(dev), (torch.rand(n, generator=gen) * w).to(dev)
        ry = ((0.05 + 0.2 * torch.rand(n, generator=gen)) * h).to(dev)
        rx = ((0.05 + 0.2 * torch.rand(n, generator=gen)) * w).to(dev)
        inside = ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + (
            (xx - cx[:, None, None]) / rx[:, None, None]
        ) ** 2
        mask = (inside <= 1.0) & active[:, None, None]
        pick = (torch.rand(n, c, generator=gen).to(dev) * counts).long()  # a random candidate per class
        table = torch.gather(cands.expand(n, -1, -1), 2, pick[..., None])[..., 0]  # n x c
        swapped = torch.gather(table, 1, out.reshape(n, -1)).reshape(n, h, w)
        out = torch.where(mask, swapped, out)
    return out


# What a segmenter that never saw vehicles may call one, the vehicle classes themselves, and "ignored" (a
# segmenter that knows vehicles, with the descriptor masking them).
OCCLUDER_CLASSES: tuple[str, ...] = ("CAR", "TRUCK", "ROAD", "BUILDING", "SIDEWALK", "TERRAIN", "IGNORED")


def paste_vehicles(labels: torch.Tensor, gen: torch.Generator, p: float = 0.5, max_count: int = 3) -> torch.Tensor:
    """Synthetic traffic on ``NxHxW`` label maps: with probability ``p`` per image, 1..``max_count`` boxes standing
    on the lower half of the image (wider when nearer the bottom, like vehicles ahead on the road), each filled
    with one of ``OCCLUDER_CLASSES``: a vehicle class (what a segmenter that knows vehicles outputs), a static
    class (what one that never saw vehicles outputs) or ``IGNORED_ID`` (vehicles masked, ``mask_dynamic``). The
    training data has no traffic, the queries may have."""
    n, h, w = labels.shape
    dev = labels.device
    out = labels.clone()
    fills = torch.tensor(
        [IGNORED_ID if c == "IGNORED" else SEMLOC_SIM.id_of(c) for c in OCCLUDER_CLASSES], device=dev
    )
    yy = torch.arange(h, device=dev)[None, :, None]
    xx = torch.arange(w, device=dev)[None, None, :]
    active = torch.rand(n, generator=gen) < p
    count = torch.randint(1, max_count + 1, (n,), generator=gen)
    for k in range(max_count):
        on = (active & (count > k)).to(dev)
        bottom = 0.55 + 0.45 * torch.rand(n, generator=gen)  # fraction of the height
        nearness = (bottom - 0.55) / 0.45  # 0 at the horizon band, 1 at the image bottom
        width = 0.04 + 0.5 * nearness * torch.rand(n, generator=gen) + 0.04 * torch.rand(n, generator=gen)
        height = width * w / h * (0.5 + 0.4 * torch.rand(n, generator=gen))
        x0 = torch.rand(n, generator=gen) * (1 - width)
        y1, x0 = (bottom * h).to(dev)[:, None, None], (x0 * w).to(dev)[:, None, None]
        y0, x1 = y1 - (height * h).to(dev)[:, None, None], x0 + (width * w).to(dev)[:, None, None]
        box = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1) & on[:, None, None]
        fill = fills[torch.randint(0, len(fills), (n,), generator=gen).to(dev)][:, None, None]
        out = torch.where(box, fill.expand_as(out), out)
    return out


def random_shift(labels: torch.Tensor, gen: torch.Generator, max_fraction: float = 0.08) -> torch.Tensor:
    """Shift each ``NxHxW`` label map horizontally by up to ``max_fraction`` of its width (a small yaw or lane
    offset), repeating the border column."""
    n, _, w = labels.shape
    shifts = ((torch.rand(n, generator=gen) * 2 - 1) * max_fraction * w).round().long().to(labels.device)
    cols = (torch.arange(w, device=labels.device)[None, :] - shifts[:, None]).clamp(0, w - 1)  # n x w
    return torch.gather(labels, 2, cols[:, None, :].expand_as(labels))


def other_camera(labels: torch.Tensor, gen: torch.Generator, p: float = 0.5, max_zoom: float = 1.25,
                 max_tilt: float = 0.08) -> torch.Tensor:
    """With probability ``p`` per ``NxHxW`` label map, the view of another camera at the same place: a field of
    view up to ``max_zoom`` times narrower or wider (scale about the centre) and a pitch or mount-height change
    that moves the horizon by up to ``max_tilt`` of the height. What a wider view would add is unknown, so it is
    ``UNLABELED`` (0)."""
    n = labels.shape[0]
    active = torch.rand(n, generator=gen) < p
    zoom = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log(max_zoom))
    tilt = (torch.rand(n, generator=gen) * 2 - 1) * 2 * max_tilt  # normalised coordinates span 2
    zoom, tilt = torch.where(active, zoom, torch.ones(n)), torch.where(active, tilt, torch.zeros(n))
    return _zoom_and_shift(labels, zoom, torch.zeros(n), tilt, padding_mode="zeros")


# Whole-class confusions of a segmenter under a new appearance (e.g. snow-covered terrain labelled road).
CLASS_SWAPS: tuple[tuple[str, str], ...] = (
    ("TERRAIN", "ROAD"),
    ("TERRAIN", "SIDEWALK"),
    ("SIDEWALK", "ROAD"),
    ("SIDEWALK", "TERRAIN"),
    ("VEGETATION", "TERRAIN"),
    ("LANE_LINE", "ROAD"),
)


def swap_classes(labels: torch.Tensor, gen: torch.Generator, p: float = 0.3) -> torch.Tensor:
    """With probability ``p`` per ``HxW`` label map, relabel every pixel of one class as another
    (``CLASS_SWAPS``): the segmenter errors that come with a whole new look of a surface, not local blobs."""
    n = labels.shape[0]
    pairs = torch.tensor([[SEMLOC_SIM.id_of(a), SEMLOC_SIM.id_of(b)] for a, b in CLASS_SWAPS], device=labels.device)
    active = (torch.rand(n, generator=gen) < p).to(labels.device)
    pick = pairs[torch.randint(0, len(pairs), (n,), generator=gen).to(labels.device)]  # n x 2
    source, target = pick[:, 0, None, None], pick[:, 1, None, None]
    return torch.where(active[:, None, None] & (labels == source), target.expand_as(labels), labels)


def synthetic_view(
    x: torch.Tensor, gen: torch.Generator, max_shift: float = 0.15, max_zoom: float = 1.3
) -> torch.Tensor:
    """The same places as seen by another camera: per image a horizontal shift by up to ``max_shift`` of the
    width (another lane or yaw; border columns repeated) and a centred crop scaled back up by up to ``max_zoom``
    (a narrower field of view). ``x``: ``NxCxHxW`` floats (RGB, bilinear) or ``NxHxW`` int64 labels (nearest)."""
    n = x.shape[0]
    zoom = 1.0 + (max_zoom - 1.0) * torch.rand(n, generator=gen)
    shift = (torch.rand(n, generator=gen) * 2 - 1) * 2 * max_shift  # normalised coordinates span 2
    out = _zoom_and_shift(x, zoom, shift, torch.zeros(n), padding_mode="border")
    return out.long() if x.dim() == 3 else out


def _zoom_and_shift(x: torch.Tensor, zoom: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor,
                    padding_mode: str) -> torch.Tensor:
    """Each image of ``x`` scaled up by ``zoom`` about its centre and moved by ``(shift_x, shift_y)`` in normalised
    coordinates (the image spans 2): ``NxCxHxW`` floats bilinear, ``NxHxW`` labels nearest (in their dtype)."""
    labels = x.dim() == 3
    theta = torch.zeros(len(zoom), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
    src = x[:, None].float() if labels else x
    grid = F.affine_grid(theta.to(x.device), list(src.shape), align_corners=False)
    out = F.grid_sample(src, grid, mode="nearest" if labels else "bilinear", padding_mode=padding_mode,
                        align_corners=False)
    return out[:, 0].to(x.dtype) if labels else out
