"""scripts/quantize_segmenter.py on a small untrained segmenter: percentile ranges (step 3), float32 logits (step 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semloc_ros.models import Segmenter


def _number(value) -> float:
    """A range end as ONNX Runtime's calibration cache stores it: a number or a serialised numpy array."""
    return float(np.ravel(value["data"])[0]) if isinstance(value, dict) else float(value)


def test_quantize_segmenter_clips_rare_activations_and_keeps_the_logits_float(tmp_path, load_script):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    script = load_script("quantize_segmenter.py")
    seg = Segmenter.untrained(device="cpu", input_size=(32, 48))
    exported, prepared = tmp_path / "fp32.onnx", tmp_path / "prepared.onnx"
    seg.export_onnx(exported)
    onnx.save(script.for_int8(onnx.load(str(exported))), str(exported))
    quant_pre_process(str(exported), str(prepared))
    rgbs = list(np.random.default_rng(0).integers(0, 256, (4, 32, 48, 3), dtype=np.uint8))
    ranges = {}
    for percentile in (100.0, 99.0):
        path = script.calibrate(prepared, rgbs, seg.input_size, 2, percentile, tmp_path / f"ranges{percentile}.json")
        ranges[percentile] = json.loads(path.read_text())["data"]
    width = {p: {name: _number(r["highest"]) - _number(r["lowest"]) for name, r in data.items()}
             for p, data in ranges.items()}
    assert all(width[99.0][name] <= width[100.0][name] + 1e-6 for name in width[100.0])
    assert sum(width[99.0][name] < 0.9 * width[100.0][name] for name in width[100.0]) > len(width[100.0]) // 2
    out = tmp_path / "int8.onnx"
    script.quantize(prepared, tmp_path / "ranges99.0.json", out)
    graph = onnx.load(str(out)).graph
    producer = {output: node for node in graph.node for output in node.output}
    final = producer[graph.output[0].name]
    assert final.name == "/net/classifier/Add" and final.op_type == "Add"
    assert {producer[name].name for name in final.input} == set(script.FLOAT_NODES) - {final.name}
