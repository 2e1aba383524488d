"""``semloc train segmenter|semantic|rgb --dataset ROOT --out FILE``: train a model on the semloc-sim train drives.

- ``segmenter``: segmentation network from scratch (class-balanced cross-entropy, lighting augmentation), or
  fine-tuned from ``--init``; ``--pseudo-drives`` adds self-training on those drives' RGB only (their labels are
  never read): ``--teacher`` (default ``--init``) pseudo-labels them, confident pixels only.
- ``semantic``: the semantic descriptor (label input) with cross-condition triplets and hard negatives; its input
  mixes noisy ground-truth labels and the predictions of ``--segmenter`` (default: the shipped segmenter).
- ``rgb``: the RGB NetVLAD baseline, same triplets.

Only the ``train`` drives of the dataset's splits.json are read. Training stops after ``--minutes`` of wall
clock (cosine learning rate over that budget) or after ``--steps`` steps when given (reproducible length).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from semloc_ros.commands.common import add_trust_model_code_argument

DEFAULT_MINUTES = {"segmenter": 20.0, "semantic": 12.0, "rgb": 12.0}
DEFAULT_FILES = {"segmenter": "segmenter.pt", "semantic": "descriptor_semantic.pt", "rgb": "descriptor_rgb.pt"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semloc train", description="Train the segmenter, the semantic descriptor or the RGB baseline."
    )
    parser.add_argument("task", choices=sorted(DEFAULT_FILES), help="what to train")
    parser.add_argument("--dataset", required=True, type=Path, help="semloc-sim dataset root (with splits.json)")
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
    parser.add_argument(
        "--input-norm",
        choices=("imagenet", "instance"),
        default="imagenet",
        help="input normalisation of the RGB descriptor or the segmenter ('instance' = per image)",
    )
    parser.add_argument(
        "--augment", choices=("photometric", "none"), default="photometric", help="segmenter: lighting augmentation"
    )
    parser.add_argument("--init", default=None, help="segmenter: weights to start from (fine-tuning)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from semloc_ros.core.labels import IGNORED_ID
    from semloc_ros.models import Segmenter, WeightsError, set_torch_threads
    from semloc_ros.models.weights import WEIGHTS_DIR
    from semloc_ros.training.data import load_train_drives

    if args.threads < 1:
        print("semloc train: --threads must be >= 1", file=sys.stderr)
        return 2
    set_torch_threads(args.threads)
    start = time.monotonic()
    out = args.out or WEIGHTS_DIR / DEFAULT_FILES[args.task]
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[args.task]
    progress = not args.quiet and sys.stderr.isatty()
    dataset = str(args.dataset.resolve())
    trained_on = f"semloc-sim-v1 train split ({args.dataset.resolve().name})"
    input_size = tuple(args.input_size) if args.input_size else None
    try:
        if args.task == "segmenter":
            from semloc_ros.training.segmenter import SegmenterTrainConfig, pseudo_label, train_segmenter

            cfg = SegmenterTrainConfig(
                arch=args.arch,
                minutes=minutes,
                steps=args.steps,
                seed=args.seed,
                device=args.device,
                augment=args.augment,
                input_norm=args.input_norm,
                init=args.init,
                pseudo_threshold=args.pseudo_threshold,
            )
            cfg.input_size = input_size or cfg.input_size
            cfg.batch_size = args.batch_size or cfg.batch_size
            cfg.lr = args.lr or cfg.lr
            drives = load_train_drives(args.dataset, args.drives, cfg.input_size, cfg.input_size, progress=progress)
            pseudo = None
            if args.pseudo_drives:
                teacher_file = args.teacher or args.init
                if teacher_file is None:
                    raise ValueError("--pseudo-drives needs --teacher or --init")
                teacher = Segmenter.from_file(teacher_file, device=args.device, trust_model_code=args.trust_model_code)
                unlabeled = load_train_drives(
                    args.dataset, args.pseudo_drives, cfg.input_size, None, labels=False, progress=progress
                )
                pseudo_rgbs = np.concatenate([d.rgb for d in unlabeled])
                pseudo_ids = pseudo_label(teacher, pseudo_rgbs, cfg.pseudo_threshold)
                kept = float(np.mean(pseudo_ids != IGNORED_ID))
                print(f"pseudo-labeled {len(pseudo_rgbs)} frames with {teacher.model_id}: {100 * kept:.1f} % of "
                      f"pixels above confidence {cfg.pseudo_threshold:g}", flush=True)
                pseudo = (pseudo_rgbs, pseudo_ids)
            # time to load the data is not part of the training budget
            result = train_segmenter(drives, out, cfg, dataset=trained_on, progress=progress, pseudo=pseudo)
        else:
            from semloc_ros.training.descriptor import DescriptorTrainConfig, train_descriptor

            net_conf: dict = {"dim": args.dim}
            if args.task == "semantic":
                net_conf |= {"pooling": args.pooling, "mask_dynamic": args.mask_dynamic}
            else:
                net_conf |= {"backbone": args.backbone, "input_norm": args.input_norm}
            if input_size:
                net_conf["input_size"] = input_size
            cfg = DescriptorTrainConfig(
                kind=args.task, net_conf=net_conf, minutes=minutes, steps=args.steps, seed=args.seed, device=args.device
            )
            cfg.anchors = args.batch_size or cfg.anchors
            cfg.pca_init = args.pca_init
            cfg.p_vehicles, cfg.p_swap, cfg.max_shift = args.vehicles, args.swap_classes, args.max_shift
            cfg.lr = args.lr or cfg.lr
            size = input_size or (120, 160)
            segmenter = None
            if args.task == "semantic" and args.segmenter != "none":
                segmenter = (
                    Segmenter.default(device=args.device)
                    if args.segmenter == "default"
                    else Segmenter.from_file(args.segmenter, device=args.device, trust_model_code=args.trust_model_code)
                )
                print(f"mixing in the predictions of segmenter {segmenter.model_id}", flush=True)
            if args.task == "semantic":
                drives = load_train_drives(
                    args.dataset, args.drives, None, size, rgb=segmenter is not None, progress=progress
                )
            else:
                drives = load_train_drives(args.dataset, args.drives, size, None, labels=False, progress=progress)
            result = train_descriptor(drives, out, cfg, segmenter=segmenter, dataset=trained_on, progress=progress)
    except (OSError, ValueError, WeightsError) as error:
        print(f"semloc train: {error}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - start
    print(
        f"wrote {out} ({args.task}, {result['steps']} steps, seed {args.seed}, {args.threads} threads, "
        f"dataset {dataset}); took {elapsed / 60:.1f} min ({elapsed:.0f} s, training {result['train_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
