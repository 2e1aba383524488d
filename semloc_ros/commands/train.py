"""``semloc train segmenter|semantic|rgb --dataset ROOT | --source SRC [--source SRC ...] --out FILE``.

Trains on the semloc-sim train drives (``--dataset``), or on any source ``semloc build-db`` reads (``--source``:
a bag, a CSV image folder, an ``@utm@`` folder, ``semloc-sim:ROOT:DRIVE``), e.g. the user's own drives:

- ``segmenter``: segmentation network from scratch (class-balanced cross-entropy, lighting augmentation), or
  fine-tuned from ``--init``; ``--pseudo-drives`` adds self-training on those drives' RGB only (their labels are
  never read): ``--teacher`` (default ``--init``) pseudo-labels them, confident pixels only.
- ``semantic``: the semantic descriptor (label input) with cross-condition triplets and hard negatives; its input
  mixes noisy ground-truth labels and the predictions of ``--segmenter`` (default: the shipped segmenter).
- ``rgb``: the RGB NetVLAD baseline, same triplets.

With ``--source``: label images come from ``--segmenter`` (semantic) or the teacher (segmenter
self-training), cached in ``--cache-dir``; descriptor positives are other drives and revisits within a drive
(``--revisit-s``) within 5 m, plus synthetic views of the anchor (``--synthetic``), negatives beyond 25 m; the
last ``--holdout`` of the first source is held out and reported as Recall@N before and after training.

Only the ``train`` drives of the dataset's splits.json are read. Training stops after ``--minutes`` of wall
clock (cosine learning rate over that budget) or after ``--steps`` steps when given (reproducible length).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from semloc_ros.commands.common import add_label_mapping_arguments, add_trust_model_code_argument

DEFAULT_MINUTES = {"segmenter": 20.0, "semantic": 12.0, "rgb": 12.0}
DEFAULT_FILES = {"segmenter": "segmenter.pt", "semantic": "descriptor_semantic.pt", "rgb": "descriptor_rgb.pt"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc train", description="Train the segmenter, the semantic descriptor or the RGB baseline."
    )
    parser.add_argument("task", choices=sorted(DEFAULT_FILES), help="what to train")
    parser.add_argument("--dataset", type=Path, action="append", default=[],
                        help="semloc-sim dataset root (with splits.json); repeatable: the train drives of all")
    parser.add_argument("--source", action="append", default=[], metavar="SRC",
                        help="a drive as build-db reads it (bag, CSV or @utm@ folder, semloc-sim:ROOT:DRIVE); "
                             "repeatable")
    parser.add_argument("--image-topic", default=None, help="--source bags: image topic (Image or CompressedImage)")
    parser.add_argument("--gps-topic", default=None, help="--source bags: NavSatFix topic")
    parser.add_argument("--max-gap-s", type=float, default=1.0, help="--source bags: largest image-to-fix time gap")
    parser.add_argument("--min-distance-m", type=float, default=1.0,
                        help="--source: keep a frame only this far (m) from the last kept one (0: all)")
    add_label_mapping_arguments(parser, "a user --segmenter / --teacher")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="--source: where predicted labels are cached (default ~/.cache/semloc/train-labels)")
    parser.add_argument("--revisit-s", type=float, default=30.0,
                        help="--source: frames of one drive this many seconds apart within 5 m are positives")
    parser.add_argument("--synthetic", type=float, default=0.5,
                        help="--source: share of positives that are synthetic views of the anchor (shift, crop, "
                             "lighting); anchors without a GPS positive always get one")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="--source: share of the first source held out and reported as Recall@N (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped file name)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget (segmenter 20, else 12)")
    parser.add_argument("--steps", type=int, default=None, help="fixed number of steps instead of --minutes")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--drives", nargs="+", default=None, help="subset of the train drives (default: all)")
    parser.add_argument("--batch-size", type=int, default=None, help="segmenter images / descriptor anchors per step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--arch", default="lraspp_mobilenet_v3_large", help="segmenter architecture")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None, help="network input size")
    parser.add_argument("--pooling", choices=("gem", "netvlad"), default="netvlad", help="semantic descriptor head")
    parser.add_argument("--backbone", choices=("alexnet", "vgg16"), default="alexnet", help="RGB descriptor backbone")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension")
    parser.add_argument("--mask-dynamic", action="store_true", help="semantic: ignore dynamic classes")
    parser.add_argument(
        "--vehicles", type=float, default=0.0, help="semantic: share of inputs with synthetic traffic pasted in"
    )
    parser.add_argument(
        "--swap-classes", type=float, default=0.0, help="semantic: share of inputs with one class relabelled"
    )
    parser.add_argument(
        "--max-shift", type=float, default=0.0, help="semantic: random horizontal shift, fraction of the width"
    )
    parser.add_argument("--camera-views", type=float, default=0.0,
                        help="semantic: share of inputs as another camera sees them (field of view, pitch, height)")
    parser.add_argument(
        "--input-norm",
        choices=("imagenet", "instance"),
        default="imagenet",
        help="input normalisation of the RGB descriptor or the segmenter ('instance' = per image)",
    )
    parser.add_argument(
        "--augment", choices=("photometric", "none"), default="photometric", help="segmenter: lighting augmentation"
    )
    parser.add_argument("--init", default=None,
                        help="weights to fine-tune: a segmenter, or a descriptor ('default' = the shipped one)")
    parser.add_argument(
        "--pseudo-drives",
        nargs="+",
        default=None,
        metavar="DRIVE",
        help="segmenter: self-train on these train drives' RGB (labels unused), pseudo-labeled by --teacher",
    )
    parser.add_argument("--teacher", default=None, help="segmenter: pseudo-labeling weights (default: --init)")
    parser.add_argument(
        "--pseudo-threshold", type=float, default=0.9, help="segmenter: teacher confidence to keep a pseudo-label"
    )
    parser.add_argument(
        "--pca-init", action="store_true", help="initialise the projection as a PCA whitening of pooled features"
    )
    parser.add_argument(
        "--segmenter",
        default="default",
        help="semantic: segmenter weights whose predictions are mixed into the input ('default' = shipped, "
        "'none' = ground truth + synthetic noise only)",
    )
    add_trust_model_code_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars (periodic log lines instead)")
    return parser


def _check_arguments(args: argparse.Namespace) -> str | None:
    if args.threads < 1:
        return "--threads must be >= 1"
    if not args.dataset and not args.source:
        return "give --dataset ROOT (semloc-sim) or --source SRC (bag, folder, ...)"
    if args.dataset and args.source and args.task != "segmenter":
        return "descriptors train on --dataset or on --source, not both"
    if args.source and args.task == "semantic" and args.segmenter == "none":
        return "--source has no ground-truth labels: --segmenter must name a segmenter"
    if not 0.0 <= args.synthetic <= 1.0 or not 0.0 <= args.holdout < 0.9:
        return "--synthetic must be in [0, 1] and --holdout in [0, 0.9)"
    return None


def _labeling_segmenter(args: argparse.Namespace, spec: str | None):
    """The segmenter ``spec`` (default: shipped) with the user's label mapping, or None."""
    from semloc_ros.models.loading import load_segmenter

    if spec is None or spec == "none":
        return None
    spec = "default-fp32" if spec == "default" else spec  # training sees the float32 network's labels
    return load_segmenter(spec, args.device, args.segmenter_arch, args.label_mapping,
                          trust_model_code=args.trust_model_code)


def _sources(args: argparse.Namespace, rgb_size, label_size, labeler, labeler_id: str, progress: bool):
    from semloc_ros.training.sources import default_cache_dir, load_sources, train_drives_from_sources

    drives = load_sources(args.source, args.image_topic, args.gps_topic, args.max_gap_s, args.min_distance_m)
    for drive in drives:
        print(f"source {drive.source}: {len(drive)} frames ("
              + (", ".join(f"{k}={v}" for k, v in drive.skipped.items() if v) or "none skipped") + ")", flush=True)
    return train_drives_from_sources(drives, rgb_size, label_size, labeler, labeler_id,
                                     args.cache_dir or default_cache_dir(), progress)


def _train_segmenter(args: argparse.Namespace, out: Path, minutes: float, input_size, trained_on: str, progress: bool):
    import numpy as np

    from semloc_ros.core.labels import IGNORED_ID
    from semloc_ros.training.data import load_train_sets
    from semloc_ros.training.segmenter import SegmenterTrainConfig, pseudo_label, train_segmenter
    from semloc_ros.training.sources import resized

    cfg = SegmenterTrainConfig(arch=args.arch, minutes=minutes, steps=args.steps, seed=args.seed, device=args.device,
                               augment=args.augment, input_norm=args.input_norm, init=args.init,
                               pseudo_threshold=args.pseudo_threshold)
    cfg.input_size = input_size or cfg.input_size
    cfg.batch_size = args.batch_size or cfg.batch_size
    cfg.lr = args.lr or cfg.lr
    drives = []
    if args.dataset:
        drives = load_train_sets(args.dataset, args.drives, rgb_size=cfg.input_size, label_size=cfg.input_size,
                                 progress=progress)
    pseudo = None
    if args.pseudo_drives or args.source:
        teacher = _labeling_segmenter(args, args.teacher or args.init or ("default" if args.source else None))
        if teacher is None:
            raise ValueError("--pseudo-drives needs --teacher or --init")
        if args.source:
            def labeler(rgbs):
                return pseudo_label(teacher, resized(rgbs, tuple(cfg.input_size)), cfg.pseudo_threshold)

            what = f"pseudo:{teacher.model_id}:{cfg.pseudo_threshold:g}"
            unlabeled = _sources(args, cfg.input_size, cfg.input_size, labeler, what, progress)
            pseudo_rgbs = np.concatenate([d.rgb for d in unlabeled])
            pseudo_ids = np.concatenate([d.labels for d in unlabeled])
        else:
            unlabeled = load_train_sets(args.dataset, args.pseudo_drives, rgb_size=cfg.input_size, labels=False,
                                        progress=progress)
            pseudo_rgbs = np.concatenate([d.rgb for d in unlabeled])
            pseudo_ids = pseudo_label(teacher, pseudo_rgbs, cfg.pseudo_threshold)
        kept = float(np.mean(pseudo_ids != IGNORED_ID))
        print(f"pseudo-labeled {len(pseudo_rgbs)} frames with {teacher.model_id}: {100 * kept:.1f} % of "
              f"pixels above confidence {cfg.pseudo_threshold:g}", flush=True)
        if drives:
            pseudo = (pseudo_rgbs, pseudo_ids)
        else:  # no labeled drive: the pseudo-labeled frames are the training set
            drives = unlabeled
    # time to load the data is not part of the training budget
    return train_segmenter(drives, out, cfg, dataset=trained_on, progress=progress, pseudo=pseudo)


def _train_descriptor(args: argparse.Namespace, out: Path, minutes: float, input_size, trained_on: str,
                      progress: bool):
    from semloc_ros.training.data import load_train_sets
    from semloc_ros.training.descriptor import DescriptorTrainConfig, train_descriptor
    from semloc_ros.training.sources import segmenter_labeler

    net_conf: dict = {"dim": args.dim}
    if args.task == "semantic":
        net_conf |= {"pooling": args.pooling, "mask_dynamic": args.mask_dynamic}
    else:
        net_conf |= {"backbone": args.backbone, "input_norm": args.input_norm}
    if input_size:
        net_conf["input_size"] = input_size
    cfg = DescriptorTrainConfig(kind=args.task, net_conf=net_conf, minutes=minutes, steps=args.steps, seed=args.seed,
                                device=args.device, init=args.init)
    cfg.anchors = args.batch_size or cfg.anchors
    cfg.pca_init = args.pca_init
    cfg.p_vehicles, cfg.p_swap, cfg.max_shift = args.vehicles, args.swap_classes, args.max_shift
    cfg.p_camera = args.camera_views
    cfg.lr = args.lr or cfg.lr
    size = input_size or _init_input_size(args) or (120, 160)
    segmenter = _labeling_segmenter(args, args.segmenter if args.task == "semantic" else None)
    if args.source:
        cfg.revisit_s, cfg.p_synthetic, cfg.holdout = args.revisit_s, args.synthetic, args.holdout
        if args.task == "semantic":
            print(f"labels from segmenter {segmenter.model_id}", flush=True)
            drives = _sources(args, None, size, segmenter_labeler(segmenter), f"labels:{segmenter.model_id}",
                              progress)
            segmenter = None  # the labels already are its predictions
        else:
            drives = _sources(args, size, None, None, "", progress)
    elif args.task == "semantic":
        if segmenter is not None:
            print(f"mixing in the predictions of segmenter {segmenter.model_id}", flush=True)
        drives = load_train_sets(args.dataset, args.drives, label_size=size, rgb=segmenter is not None,
                                 progress=progress)
    else:
        drives = load_train_sets(args.dataset, args.drives, rgb_size=size, labels=False, progress=progress)
    return train_descriptor(drives, out, cfg, segmenter=segmenter, dataset=trained_on, progress=progress)


def _init_input_size(args: argparse.Namespace):
    """The input size of the descriptor given to --init (its images must be loaded at that size)."""
    from semloc_ros.models.loading import load_descriptor

    if args.init is None:
        return None
    return load_descriptor(args.init, "cpu", kind=args.task).input_size


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from semloc_ros.io.datasets import DatasetError
    from semloc_ros.models import WeightsError, set_torch_threads
    from semloc_ros.models.weights import WEIGHTS_DIR

    if (problem := _check_arguments(args)) is not None:
        print(f"semloc train: {problem}", file=sys.stderr)
        return 2
    set_torch_threads(args.threads)
    start = time.monotonic()
    out = args.out or WEIGHTS_DIR / DEFAULT_FILES[args.task]
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[args.task]
    progress = not args.quiet and sys.stderr.isatty()
    data = [str(root.resolve()) for root in args.dataset] + args.source
    trained_on = ", ".join([f"train split of {root.resolve().name}" for root in args.dataset]
                           + [f"source {spec}" for spec in args.source])
    input_size = tuple(args.input_size) if args.input_size else None
    train = _train_segmenter if args.task == "segmenter" else _train_descriptor
    try:
        result = train(args, out, minutes, input_size, trained_on, progress)
    except (OSError, ValueError, WeightsError, DatasetError) as error:
        print(f"semloc train: {error}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - start
    print(
        f"wrote {out} ({args.task}, {result['steps']} steps, seed {args.seed}, {args.threads} threads, "
        f"data {'; '.join(data)}); took {elapsed / 60:.1f} min ({elapsed:.0f} s, "
        f"training {result['train_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
