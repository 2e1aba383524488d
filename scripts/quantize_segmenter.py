"""Remake the int8 segmenter (semloc_ros/data/models/segmenter_int8.onnx) from the shipped float32 one.

1. Export the shipped segmenter (segmenter.pt) to ONNX (fixed 240x320 input, batch dimension free).
2. Cut off the final bilinear upsampling of the logits (the Segmenter runs it in torch, 4x faster than ONNX
   Runtime's Resize, and the logits leave the int8 graph 64x smaller: provenance ``"logits": "upsample_bilinear"``),
   then pre-process for quantization (shape inference, graph optimisation: batch norms folded into convolutions).
3. Calibrate the activation ranges on TRAINING images only: ``--per-drive`` frames spread evenly over each drive of
   the ``train`` split of every ``--dataset`` (semloc-sim-v1, -v2; no evaluation or tuning map is read),
   normalised as the segmenter sees them. A histogram of every activation is collected one drive at a time;
   each activation's range keeps ``--percentile`` percent of its values (the rarest extremes at both ends are
   clipped), which leaves the common values finer steps than the full minimum-maximum range would.
4. Quantize statically with ONNX Runtime (QDQ format: int8 weights per output channel, uint8 activations), except
   the classifier's two convolutions and their sum (``FLOAT_NODES``): the logits stay float32, so near-ties between
   classes are not rounded to one 8-bit step. Keep only the operator domains the graph uses (standard ONNX: no
   custom operators, so it loads without trust), and store the provenance (source model id, calibration drives
   and frames, recipe) in the file's metadata.
5. Report how often the int8 labels equal the float32 ones on training frames not used for calibration.

The recipe was chosen on the held-out tuning map of semloc-sim-v2 and held-out training frames (label agreement
with float32 per condition, then retrieval on the tuning map), never on an evaluation drive
(semloc_ros/data/models/README.md).

    python scripts/quantize_segmenter.py --dataset ../shared/datasets/semloc-sim-v1 --dataset ../semloc-sim-v2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import PercentileCalibrater, TensorsData
from onnxruntime.quantization.quantize import save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from semloc_ros.io.datasets import Drive, load_rgbs, load_semloc_sim_drive
from semloc_ros.models import Segmenter, set_torch_threads
from semloc_ros.models.segmentation import INT8_SEGMENTER_FILE, ONNX_META_KEY
from semloc_ros.models.utils import rgb_to_tensor
from semloc_ros.models.weights import WEIGHTS_DIR

FLOAT_NODES = ("/net/classifier/low_classifier/Conv", "/net/classifier/high_classifier/Conv", "/net/classifier/Add")
"""Step 4: the LR-ASPP classifier's convolutions and their sum (the logits), left in float32."""
PERCENTILE = 99.99
HISTOGRAM_BINS = 2048


class Frames(CalibrationDataReader):
    """The calibration images, one normalised ``1x3xHxW`` input at a time."""

    def __init__(self, rgbs: list[np.ndarray], size: tuple[int, int]):
        self._inputs = iter([rgb_to_tensor(rgb[None], size, torch.device("cpu")).numpy() for rgb in rgbs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._inputs, None)
        return None if x is None else {"image": x}


def training_frames(datasets: list[Path], per_drive: int, offset: int,
                    exclude: frozenset[str] = frozenset()) -> tuple[list[np.ndarray], list[str]]:
    """``per_drive`` evenly spaced RGB frames (starting ``offset`` into each spacing) of every training drive of
    every dataset, none of ``exclude`` (image ids)."""
    rgbs, ids = [], []
    for dataset in datasets:
        names = json.loads((dataset / "splits.json").read_text())["train"]
        if any(not name.startswith("train") for name in names):
            raise SystemExit(f"{dataset}/splits.json lists non-training drives under 'train': {names}")
        more_rgbs, more_ids = _drive_frames(dataset, names, per_drive, offset, exclude)
        rgbs += more_rgbs
        ids += more_ids
    return rgbs, ids


def _drive_frames(dataset: Path, names: list[str], per_drive: int, offset: int,
                  exclude: frozenset[str]) -> tuple[list[np.ndarray], list[str]]:
    rgbs, ids = [], []
    for name in names:
        drive: Drive = load_semloc_sim_drive(dataset, name)
        step = max(1, len(drive) // per_drive)
        frames = [drive[i] for i in range(offset % step, len(drive), step) if drive[i].image_id not in exclude]
        frames = frames[:per_drive]
        rgbs.extend(load_rgbs(frames))
        ids.extend(frame.image_id for frame in frames)
    return rgbs, ids


def calibrate(prepared: Path, rgbs: list[np.ndarray], size: tuple[int, int], per_drive: int, percentile: float,
              out: Path) -> Path:
    """Step 3: activation ranges from histograms collected ``per_drive`` frames (a drive's worth) at a time,
    written as an ONNX Runtime calibration cache (``out``) for ``quantize_static``."""
    calibrator = PercentileCalibrater(prepared, None, augmented_model_path=str(out.with_suffix(".augmented.onnx")),
                                      symmetric=False, num_bins=HISTOGRAM_BINS, percentile=percentile)
    calibrator.augment_graph()
    calibrator.create_inference_session()
    for start in range(0, len(rgbs), per_drive):
        calibrator.collect_data(Frames(rgbs[start:start + per_drive], size))
    save_tensors_data(TensorsData(CalibrationMethod.Percentile, calibrator.collector.compute_collection_result()),
                      out)
    return out


def quantize(prepared: Path, ranges: Path, out: Path) -> None:
    """Step 4 (without the metadata): QDQ, int8 weights per output channel, uint8 activations in the ``ranges``
    of step 3, the ``FLOAT_NODES`` left in float32."""
    quantize_static(str(prepared), str(out), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=list(FLOAT_NODES),
                    calibration_cache_path=str(ranges))


def for_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Step 2: end the graph before its final Resize (the logits at the head's resolution)."""
    graph = model.graph
    final = next(node for node in graph.node if graph.output[0].name in node.output)
    if final.op_type != "Resize":
        raise SystemExit(f"expected the graph to end with its logits' Resize, found {final.op_type}")
    graph.node.remove(final)
    output = onnx.helper.make_tensor_value_info(final.input[0], onnx.TensorProto.FLOAT, None)
    del graph.output[:]
    graph.output.append(output)
    return model


def agreement(fp32: Segmenter, int8: Segmenter, rgbs: list[np.ndarray]) -> float:
    """Share of pixels with the same label from both segmenters."""
    same = sum(int((fp32.predict(rgb) == int8.predict(rgb)).sum()) for rgb in rgbs)
    return same / sum(rgb.shape[0] * rgb.shape[1] for rgb in rgbs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, action="append", required=True,
                        help="semloc-sim root (its train split is read); repeatable")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / INT8_SEGMENTER_FILE)
    parser.add_argument("--per-drive", type=int, default=25, help="calibration frames per training drive")
    parser.add_argument("--percentile", type=float, default=PERCENTILE,
                        help="percent of each activation's calibration values inside its range (step 3)")
    parser.add_argument("--check-per-drive", type=int, default=5, help="held-out training frames per drive (step 5)")
    args = parser.parse_args(argv)
    set_torch_threads(1)
    fp32 = Segmenter.default(device="cpu", precision="fp32")
    rgbs, ids = training_frames(args.dataset, args.per_drive, offset=0)
    with tempfile.TemporaryDirectory() as tmp:
        exported, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        fp32.export_onnx(exported)  # step 1
        onnx.save(for_int8(onnx.load(str(exported))), str(exported))  # step 2
        quant_pre_process(str(exported), str(prepared))
        ranges = calibrate(prepared, rgbs, fp32.input_size, args.per_drive, args.percentile,
                           Path(tmp) / "ranges.json")  # step 3
        quantize(prepared, ranges, args.out)  # step 4
    model = onnx.load(str(args.out))
    used = {node.domain for node in model.graph.node} | {""}  # the optimiser declares domains it does not use
    kept = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    provenance = {"source_model_id": fp32.model_id, "logits": "upsample_bilinear",
                  "calibration": ", ".join(f"{root.resolve().name} train split" for root in args.dataset),
                  "calibration_frames": ids, "method": "onnxruntime quantize_static QDQ, per-channel, "
                  f"percentile {args.percentile} ranges, float32 logits"}
    onnx.helper.set_model_props(model, {ONNX_META_KEY: json.dumps(provenance)})
    onnx.save(model, str(args.out))
    int8 = Segmenter.from_file(args.out, device="cpu")
    held_out, _ = training_frames(args.dataset, args.check_per_drive, offset=7, exclude=frozenset(ids))  # step 5
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB), {len(ids)} calibration frames; "
          f"labels equal to float32 on {len(held_out)} other training frames: {agreement(fp32, int8, held_out):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
