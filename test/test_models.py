"""Model plugins, weights format and pipeline (small inputs, one thread: fast on CPU)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from semloc_ros.core.labels import IGNORED_ID, SEMLOC_SIM, LabelMapping
from semloc_ros.models import (
    BaseModel,
    DescriptorExtractor,
    HybridDescriptor,
    Segmenter,
    WeightsError,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from semloc_ros.models.descriptor import (
    SemanticAlexNet,
    dynamic_class_ids,
    one_hot_conv,
    one_hot_ids,
    pooled_first,
)
from semloc_ros.models.loading import load_segmenter
from semloc_ros.models.pipeline import Pipeline
from semloc_ros.models.weights import FORMAT, make_model_id

torch.set_num_threads(1)

SMALL = (64, 80)  # network input size used in the tests
ROAD, SKY, BUILDING = SEMLOC_SIM.id_of("ROAD"), SEMLOC_SIM.id_of("SKY"), SEMLOC_SIM.id_of("BUILDING")


def _rgbs(n: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _labels(n: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Static-class label images: sky above, road below, buildings in random columns."""
    rng = np.random.default_rng(seed)
    out = np.full((n, h, w), ROAD, dtype=np.uint8)
    out[:, : h // 2] = SKY
    for i in range(n):
        c = int(rng.integers(0, w - 8))
        out[i, h // 4 : h // 2 + 4, c : c + 8] = BUILDING
    return out


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter.untrained(seed=0, device="cpu", input_size=SMALL)


@pytest.fixture(scope="module")
def sem() -> DescriptorExtractor:
    return DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu", input_size=SMALL)


@pytest.fixture(scope="module")
def rgbd() -> DescriptorExtractor:
    return DescriptorExtractor.untrained("rgb_netvlad", seed=0, device="cpu", input_size=SMALL)


def test_base_model_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config key"):
        SemanticAlexNet({"dimm": 3})
    assert issubclass(SemanticAlexNet, BaseModel)
    assert SemanticAlexNet({"dim": 32}).conf["dim"] == 32


def test_segmenter_shapes_and_resize(seg):
    rgbs = _rgbs(3, 50, 70)  # not the network's input size: resized in, nearest-resized back
    out = seg.predict_batch(rgbs)
    assert out.shape == (3, 50, 70) and out.dtype == np.uint8
    assert out.max() < SEMLOC_SIM.num_classes
    np.testing.assert_array_equal(seg.predict(rgbs[1]), out[1])
    assert seg.label_set == SEMLOC_SIM.name and seg.device.type == "cpu"
    assert seg.model_id.startswith("lraspp_mobilenet_v3_large-18@")
    with pytest.raises(ValueError):
        seg.predict_batch(rgbs[..., 0])


def test_deeplabv3plus_runs():
    s = Segmenter.untrained(arch="deeplabv3plus_mobilenet", seed=0, device="cpu", input_size=SMALL)
    assert s.predict_batch(_rgbs(1, 40, 56)).shape == (1, 40, 56)
    with pytest.raises(ValueError, match="unknown segmentation arch"):
        Segmenter.untrained(arch="nope")


@pytest.mark.parametrize(
    ("arch", "conf", "dim"),
    [
        ("semantic_alexnet", {"dim": 64, "input_size": SMALL}, 64),
        ("semantic_alexnet", {"pooling": "netvlad", "clusters": 4, "dim": 32, "input_size": SMALL}, 32),
        ("rgb_netvlad", {"clusters": 4, "dim": 48, "input_size": SMALL}, 48),
        ("label_histogram", {}, SEMLOC_SIM.num_classes * 16),
    ],
)
def test_descriptor_shapes_and_norm(arch, conf, dim):
    d = DescriptorExtractor.untrained(arch, seed=0, device="cpu", **conf)
    images = _labels(3) if d.input_kind == "labels" else _rgbs(3)
    out = d.describe_batch(images)
    assert out.shape == (3, dim) and out.dtype == np.float32 and d.dimension == dim
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(d.describe(images[2]), out[2], atol=1e-6)
    assert d.model_id.startswith(f"{arch}-{dim}@")


def test_untrained_is_deterministic(sem):
    labels = _labels(2)
    again = DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu", input_size=SMALL)
    other = DescriptorExtractor.untrained("semantic_alexnet", seed=1, device="cpu", input_size=SMALL)
    np.testing.assert_array_equal(sem.describe_batch(labels), again.describe_batch(labels))
    assert sem.model_id == again.model_id != other.model_id
    assert not np.allclose(sem.describe_batch(labels), other.describe_batch(labels))
    s1 = Segmenter.untrained(seed=3, device="cpu", input_size=SMALL)
    s2 = Segmenter.untrained(seed=3, device="cpu", input_size=SMALL)
    assert s1.model_id == s2.model_id


def test_descriptor_round_trip(sem, rgbd, tmp_path):
    for d, images in ((sem, _labels(2)), (rgbd, _rgbs(2))):
        path = tmp_path / f"{d.arch}.pt"
        meta = d.save(path, trained_on="unit test")
        loaded = DescriptorExtractor.from_file(path, device="cpu")
        assert loaded.model_id == d.model_id == meta["model_id"]
        assert loaded.meta["trained_on"] == "unit test" and loaded.input_kind == d.input_kind
        np.testing.assert_array_equal(loaded.describe_batch(images), d.describe_batch(images))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_half_precision_round_trip(sem, tmp_path):
    path = tmp_path / "half.pt"
    meta = sem.save(path, half=True)
    state, meta2 = load_checkpoint(path)
    assert meta2["model_id"] == meta["model_id"] and meta2["stored_dtype"] == "float16"
    assert all(v.dtype != torch.float16 for v in state.values())
    loaded = DescriptorExtractor.from_file(path, device="cpu")
    labels = _labels(2)
    np.testing.assert_allclose(loaded.describe_batch(labels), sem.describe_batch(labels), atol=2e-2)


def test_segmenter_round_trip_and_plain_state_dict(seg, tmp_path):
    rgbs = _rgbs(2)
    path = tmp_path / "seg.pt"
    seg.save(path)
    loaded = Segmenter.from_file(path, device="cpu")
    assert loaded.model_id == seg.model_id
    np.testing.assert_array_equal(loaded.predict_batch(rgbs), seg.predict_batch(rgbs))
    plain = tmp_path / "torchvision.pth"
    torch.save(seg.model.net.state_dict(), plain)
    with pytest.raises(WeightsError, match="arch"):
        Segmenter.from_file(plain)
    tv = Segmenter.from_file(plain, device="cpu", arch="lraspp_mobilenet_v3_large")
    tv.input_size = SMALL
    np.testing.assert_array_equal(tv.predict_batch(rgbs), seg.predict_batch(rgbs))
    with pytest.raises(WeightsError, match="not a segmenter"):
        Segmenter.from_file(_save_descriptor(tmp_path))


def _save_descriptor(tmp_path: Path) -> Path:
    path = tmp_path / "hist.pt"
    DescriptorExtractor.untrained("label_histogram", device="cpu").save(path)
    return path


def test_torchscript_round_trip(seg, tmp_path):
    path = tmp_path / "seg.ts"
    seg.export_torchscript(path)
    loaded = Segmenter.from_file(path, device="cpu", trust_model_code=True)
    assert loaded.model_id == seg.model_id and loaded.input_size == SMALL
    rgbs = _rgbs(2)
    np.testing.assert_array_equal(loaded.predict_batch(rgbs), seg.predict_batch(rgbs))
    with pytest.raises(WeightsError, match="TorchScript"):
        load_checkpoint(path)


class _FileCreatingModule(torch.nn.Module):
    """A 'segmenter' whose TorchScript code creates a file on its first frame (aten::from_file, shared)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.marker, shared=True, size=1)
        return torch.zeros(x.shape[0], 18, x.shape[2], x.shape[3]) + written.sum() * 0


def test_torchscript_is_a_program_and_loads_only_when_trusted(seg, tmp_path):
    marker = tmp_path / "written-by-the-model"
    evil = tmp_path / "evil.pt"  # any name: the archive's content decides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_FileCreatingModule(str(marker))), str(evil))
    with pytest.raises(WeightsError, match=r"TorchScript program.*--trust-model-code"):
        Segmenter.from_file(evil, device="cpu")
    with pytest.raises(WeightsError, match="trust_model_code"):
        load_segmenter(str(evil), device="cpu")
    assert not marker.exists()
    seg.save(tmp_path / "weights.pt")  # weights are data: no trust needed
    assert Segmenter.from_file(tmp_path / "weights.pt", device="cpu").model_id == seg.model_id
    trusted = load_segmenter(str(evil), device="cpu", trust_model_code=True)
    trusted.predict(_rgbs(1)[0])
    assert marker.exists()  # sanity: the file really is a program


def _onnx_with_operator(path: Path, domain: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    classes = SEMLOC_SIM.num_classes  # a plausible segmenter: one logit per semloc class (6 x the 3 channels)
    if domain:
        node = helper.make_node("Exfiltrate", ["image"], ["logits"], domain=domain)
    else:
        node = helper.make_node("Concat", ["image"] * (classes // 3), ["logits"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, 8, 8])])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_onnx_with_custom_operators_needs_trust(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    standard = _onnx_with_operator(tmp_path / "standard.onnx", "")
    assert Segmenter.from_file(standard, device="cpu").model_id.startswith("onnx@")
    custom = _onnx_with_operator(tmp_path / "custom.onnx", "com.example.ops")
    with pytest.raises(WeightsError, match=r"custom ONNX operators.*com\.example\.ops.*--trust-model-code"):
        Segmenter.from_file(custom, device="cpu")
    with pytest.raises(WeightsError, match="cannot load ONNX model"):  # trusted, but nothing implements it here
        Segmenter.from_file(custom, device="cpu", trust_model_code=True)


def test_label_mapping_applied(seg, tmp_path):
    lut = np.arange(SEMLOC_SIM.num_classes)[::-1].astype(np.uint8)  # id -> 17 - id: any change is visible
    mapping = LabelMapping("reverse", SEMLOC_SIM.names, lut)
    path = tmp_path / "seg.pt"
    seg.save(path)
    mapped = Segmenter.from_file(path, device="cpu", label_mapping=mapping)
    rgbs = _rgbs(2)
    np.testing.assert_array_equal(mapped.predict_batch(rgbs), lut[seg.predict_batch(rgbs)])
    assert mapped.model_id != seg.model_id


def test_label_histogram_values():
    labels = np.full((8, 8), SKY, dtype=np.uint8)
    labels[4:, :] = ROAD
    labels[0, 0] = BUILDING  # cell (0, 0): 3/4 sky, 1/4 building
    labels[4:6, 6:8] = 200  # out-of-range ids (e.g. IGNORED_ID, masked) count as no class: cell (2, 3) is empty
    d = DescriptorExtractor.untrained("label_histogram", device="cpu")
    c = SEMLOC_SIM.num_classes
    expected = np.zeros((c, 4, 4), dtype=np.float64)
    expected[SKY, :2, :] = 1.0
    expected[ROAD, 2:, :] = 1.0
    expected[:, 0, 0] = 0.0
    expected[SKY, 0, 0], expected[BUILDING, 0, 0] = 0.75, 0.25
    expected[ROAD, 2, 3] = 0.0
    expected = expected.reshape(-1) / np.linalg.norm(expected)
    np.testing.assert_allclose(d.describe(labels), expected, atol=1e-6)


def test_mask_dynamic():
    plain = DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu", input_size=SMALL)
    masked = DescriptorExtractor.untrained(
        "semantic_alexnet", seed=0, device="cpu", input_size=SMALL, mask_dynamic=True
    )
    static = _labels(2)
    np.testing.assert_allclose(masked.describe_batch(static), plain.describe_batch(static), atol=1e-6)
    car = SEMLOC_SIM.id_of("CAR")
    assert car in dynamic_class_ids()
    with_car = static.copy()
    with_car[:, 30:46, 10:40] = car
    assert not np.allclose(masked.describe_batch(with_car), plain.describe_batch(with_car), atol=1e-4)
    assert masked.model_id != plain.model_id  # the mask is part of the weights


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"format": FORMAT, "x": _Evil(marker)}, protocol=2))
    zipped = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "meta": {}, "state_dict": {"w": _Evil(marker)}}, zipped)
    for path in (raw, zipped):
        with pytest.raises(WeightsError, match="refused"):
            load_checkpoint(path)
        with pytest.raises(WeightsError):
            DescriptorExtractor.from_file(path)
        with pytest.raises(WeightsError):
            Segmenter.from_file(path, arch="lraspp_mobilenet_v3_large")
    assert not marker.exists()
    pickle.loads(raw.read_bytes())  # sanity: the payload really would create the marker
    assert marker.exists()


def test_bad_checkpoints_are_refused(sem, tmp_path):
    good = tmp_path / "good.pt"
    sem.save(good)
    data = good.read_bytes()
    cases = {
        "missing.pt": None,
        "empty.pt": b"",
        "truncated.pt": data[: len(data) // 2],
        "corrupt.pt": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(WeightsError, match=name.split(".")[0].replace("missing", "not found")):
            load_checkpoint(tmp_path / name)
    blob = torch.load(good, weights_only=True)
    blob["format_version"] = 2
    torch.save(blob, tmp_path / "newer.pt")
    with pytest.raises(WeightsError, match="newer"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a semloc weights file"):
        load_checkpoint(tmp_path / "other.pt")
    blob = torch.load(good, weights_only=True)
    key = next(iter(blob["state_dict"]))
    blob["state_dict"][key] = blob["state_dict"][key] + 1
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(WeightsError, match="model_id"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_save_checkpoint_needs_meta_and_model_id_is_stable(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="meta lacks"):
        save_checkpoint(tmp_path / "x.pt", net, {"arch": "x"})
    sd = net.state_dict()
    assert make_model_id("x", 2, sd) == make_model_id("x", 2, {k: v.clone() for k, v in sd.items()})


def test_onnx_round_trip(seg, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "seg.onnx"
    seg.export_onnx(path)
    loaded = Segmenter.from_file(path, device="cpu")
    assert loaded.input_size == SMALL and loaded.model_id.startswith("onnx@")
    rgbs = _rgbs(3)
    np.testing.assert_array_equal(loaded.predict_batch(rgbs), seg.predict_batch(rgbs))
    lut = np.arange(SEMLOC_SIM.num_classes)[::-1].astype(np.uint8)  # an ONNX model of another label set
    mapped = Segmenter.from_file(path, device="cpu", label_mapping=LabelMapping("reverse", SEMLOC_SIM.names, lut))
    np.testing.assert_array_equal(mapped.predict_batch(rgbs), lut[seg.predict_batch(rgbs)])
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(WeightsError):
        Segmenter.from_file(tmp_path / "bad.onnx")


def test_onnx_without_onnxruntime_is_a_clear_error(tmp_path):
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        path = tmp_path / "m.onnx"
        path.write_bytes(b"\x08\x07")
        with pytest.raises(WeightsError, match="onnxruntime"):
            Segmenter.from_file(path)
    else:
        pytest.skip("onnxruntime installed")


def test_hybrid_inner_product_is_weighted_cosine(sem, rgbd):
    hybrid = HybridDescriptor(sem, rgbd, semantic_weight=0.3)
    labels, rgbs = _labels(2), _rgbs(2)
    h = hybrid.describe_pair_batch(labels, rgbs)
    assert h.shape == (2, sem.dimension + rgbd.dimension) and hybrid.dimension == h.shape[1]
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, atol=1e-5)
    s, r = sem.describe_batch(labels), rgbd.describe_batch(rgbs)
    np.testing.assert_allclose(h[0] @ h[1], 0.3 * (s[0] @ s[1]) + 0.7 * (r[0] @ r[1]), atol=1e-5)
    np.testing.assert_allclose(hybrid.describe_pair(labels[1], rgbs[1]), h[1], atol=1e-6)
    assert sem.model_id in hybrid.model_id and rgbd.model_id in hybrid.model_id
    with pytest.raises(ValueError):
        HybridDescriptor(rgbd, sem)


def test_pipeline(seg, sem, rgbd):
    rgbs, labels = list(_rgbs(3)), list(_labels(3))
    pipe = Pipeline(seg, sem)
    assert pipe.model_id == f"{sem.model_id}|segmenter:{seg.model_id}" and pipe.dimension == sem.dimension
    assert Pipeline(None, rgbd).model_id == rgbd.model_id  # RGB: the descriptor alone
    oracle = pipe.describe_frames(rgbs, labels=labels, batch_size=2)
    np.testing.assert_allclose(oracle, sem.describe_batch(np.stack(labels)), atol=1e-6)
    predicted = pipe.describe_frames(rgbs, batch_size=2)
    np.testing.assert_allclose(predicted, sem.describe_batch(seg.predict_batch(np.stack(rgbs))), atol=1e-6)
    np.testing.assert_array_equal(pipe.segment(rgbs[0]), seg.predict(rgbs[0]))
    mixed = [*rgbs, _rgbs(1, 40, 56)[0]]  # a frame of another size in the batch
    assert pipe.describe_frames(mixed, batch_size=4).shape == (4, sem.dimension)
    rgb_pipe = Pipeline(None, rgbd)
    np.testing.assert_allclose(rgb_pipe.describe_frames(rgbs), rgbd.describe_batch(np.stack(rgbs)), atol=1e-6)
    with pytest.raises(ValueError):
        Pipeline(None, sem).describe_frames(rgbs)
    hybrid = Pipeline(seg, HybridDescriptor(sem, rgbd))
    assert hybrid.describe_frames(rgbs, labels=labels).shape == (3, sem.dimension + rgbd.dimension)


def test_pipeline_from_method(tmp_path):
    with pytest.raises(WeightsError):
        Pipeline.from_method("semantic", device="cpu", weights_dir=tmp_path)
    with pytest.warns(UserWarning, match="UNTRAINED"):
        pipe = Pipeline.from_method("rgb", device="cpu", weights_dir=tmp_path, untrained_ok=True)
    assert pipe.segmenter is None and pipe.dimension == 256
    hist = DescriptorExtractor.untrained("label_histogram", device="cpu")
    _save = tmp_path / "segmenter.pt"
    Segmenter.untrained(seed=0, device="cpu", input_size=SMALL).save(_save)
    pipe = Pipeline.from_method("label-histogram", device="cpu", weights_dir=tmp_path)
    assert pipe.model_id == f"{hist.model_id}|segmenter:{pipe.segmenter.model_id}"
    assert pipe.describe_frames(list(_rgbs(2))).shape == (2, hist.dimension)
    with pytest.raises(ValueError, match="unknown method"):
        Pipeline.from_method("sift")


def test_set_torch_threads():
    before = torch.get_num_threads()
    set_torch_threads(1)
    assert torch.get_num_threads() == 1
    set_torch_threads(None)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)


def test_segmenter_folds_batch_norms_for_inference_and_follows_weight_changes():
    seg = Segmenter.untrained(seed=3, device="cpu", input_size=SMALL)
    rgbs = _rgbs(2)
    folded = seg._inference_model()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in seg.model.modules())  # the saved network is untouched
    with torch.inference_mode():
        x = torch.randn(2, 3, *SMALL)
        torch.testing.assert_close(seg.logits(x), seg.model(x), rtol=1e-4, atol=1e-4)
    before = seg.predict_batch(rgbs)
    assert seg._inference_model() is folded  # reused while the weights are unchanged
    with torch.no_grad():
        for parameter in seg.model.parameters():
            parameter.mul_(-1.0)
    assert seg._inference_model() is not folded
    with torch.inference_mode():
        torch.testing.assert_close(seg.logits(x), seg.model(x), rtol=1e-4, atol=1e-4)
    assert seg.predict_batch(rgbs).shape == before.shape
    seg.model.train()
    assert seg._inference_model() is seg.model  # training mode: batch statistics, nothing folded


def test_descriptor_runs_channels_last_with_unchanged_model_id():
    net = SemanticAlexNet({"input_size": SMALL})
    contiguous_id = make_model_id("semantic_alexnet", net.dimension, net.state_dict())
    extractor = DescriptorExtractor.from_net(net, "semantic_alexnet", device="cpu")
    assert extractor.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert extractor.model_id == contiguous_id


@pytest.mark.parametrize("mask_dynamic", [False, True])
def test_inference_conv1_from_ids_equals_the_one_hot_convolution(mask_dynamic):
    """Without gradients the semantic descriptor's conv1 reads the ids directly (an embedding-bag sum): the same
    descriptors as the convolution of the one-hot image it was trained with, ignored ids and padding included."""
    torch.manual_seed(0)
    net = SemanticAlexNet({"input_size": SMALL, "mask_dynamic": mask_dynamic}).eval()
    with torch.no_grad():
        net.features[0].bias.normal_()  # a bias, so that its place in the sum is checked too
    ids = torch.randint(0, net.num_classes, (3, *SMALL))
    ids[0, :9, :13] = IGNORED_ID
    ids[1, -5:] = -1
    with torch.no_grad():
        fast = net(ids)
        features = net.features[1:](one_hot_conv(ids, net.features[0], net.num_classes, net.channel_mask))
    with torch.enable_grad():
        trained = net(ids)
        conv = net.features[:1](one_hot_ids(ids, net.num_classes) * net.channel_mask.view(1, -1, 1, 1))
    torch.testing.assert_close(one_hot_conv(ids, net.features[0], net.num_classes, net.channel_mask), conv,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, trained.detach(), rtol=1e-5, atol=1e-5)
    assert features.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # ReLU after the max-pools: bit for bit the same features
        assert torch.equal(pooled_first(net.features[1:], conv), net.features[1:](conv))


@pytest.mark.parametrize("method", ["semantic", "rgb", "hybrid"])
def test_shipped_weights_load_and_describe(method):
    """Every shipped weights file loads with this code (pickle-free) and gives unit-norm descriptors."""
    from semloc_ros.models.pipeline import Pipeline

    torch.set_num_threads(1)
    pipeline = Pipeline.from_method(method, device="cpu")
    rgb = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    descriptors = pipeline.describe_frames(list(rgb))
    assert descriptors.shape == (2, pipeline.dimension)
    assert np.allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-4)


def test_masking_dynamic_classes_at_run_time():
    plain = DescriptorExtractor.untrained("semantic_alexnet", seed=0, device="cpu", input_size=SMALL)
    masked = plain.masking_dynamic_classes()
    assert masked.model_id == plain.model_id + "+mask-dynamic" and masked.net is plain.net
    assert masked.masking_dynamic_classes().model_id == masked.model_id and not plain.mask_dynamic
    static = _labels(2)
    np.testing.assert_allclose(masked.describe_batch(static), plain.describe_batch(static), atol=1e-6)
    with_car = static.copy()
    with_car[:, 30:46, 10:40] = SEMLOC_SIM.id_of("CAR")
    # Run-time masking = a network trained with mask_dynamic: dynamic pixels count as no class at all.
    trained_masked = DescriptorExtractor.untrained(
        "semantic_alexnet", seed=0, device="cpu", input_size=SMALL, mask_dynamic=True
    )
    np.testing.assert_allclose(masked.describe_batch(with_car), trained_masked.describe_batch(with_car), atol=1e-5)
    histogram = DescriptorExtractor.untrained("label_histogram", device="cpu").masking_dynamic_classes()
    whole_car = np.full((1, 32, 32), SEMLOC_SIM.id_of("CAR"), np.uint8)
    assert not np.any(histogram.describe_batch(whole_car))  # nothing left to describe
    with pytest.raises(ValueError, match="RGB"):
        DescriptorExtractor.untrained("rgb_netvlad", device="cpu").masking_dynamic_classes()


def test_channel_argmax_equals_torch_argmax_with_ties():
    from semloc_ros.models.segmentation import channel_argmax

    logits = torch.round(torch.randn(2, 19, 24, 32) * 2) / 2  # coarse values: many ties
    np.testing.assert_array_equal(channel_argmax(logits).numpy(), logits.argmax(dim=1).numpy())
    many = torch.randn(1, 300, 4, 5)
    assert channel_argmax(many).dtype == torch.int64
    np.testing.assert_array_equal(channel_argmax(many).numpy(), many.argmax(dim=1).numpy())
    pixels_last = logits.contiguous(memory_format=torch.channels_last)  # as the int8 segmenter upsamples them
    assert channel_argmax(pixels_last).dtype == torch.uint8
    np.testing.assert_array_equal(channel_argmax(pixels_last).numpy(), channel_argmax(logits).numpy())


def test_precision_selection():
    from semloc_ros.models.segmentation import CPU_DEFAULT_PRECISION, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object: no GPU needed
    assert resolve_precision("auto", cpu) == CPU_DEFAULT_PRECISION
    assert resolve_precision("auto", cuda) == "fp16"
    assert resolve_precision("fp32", cuda) == "fp32" and resolve_precision("int8", cpu) == "int8"
    for precision, device, message in (("fp16", cpu, "CUDA"), ("int8", cuda, "CPU"), ("bf16", cpu, "unknown")):
        with pytest.raises(ValueError, match=message):
            resolve_precision(precision, device)
    with pytest.raises(ValueError, match="CUDA"):
        Segmenter.default(device="cpu", precision="fp16")


def test_auto_precision_takes_the_int8_file_only_when_made_from_the_folders_segmenter(tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil
    import warnings

    from semloc_ros.models.segmentation import INT8_SEGMENTER_FILE
    from semloc_ros.models.weights import WEIGHTS_DIR

    torch.set_num_threads(1)
    assert Segmenter.default(device="cpu").precision == "int8"  # the shipped pair
    Segmenter.untrained(seed=0, device="cpu", input_size=SMALL).save(tmp_path / "segmenter.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Segmenter.default(device="cpu", weights_dir=tmp_path).precision == "fp32"  # no int8 copy
    with pytest.raises(WeightsError, match="quantize_segmenter"):
        Segmenter.default(device="cpu", weights_dir=tmp_path, precision="int8")
    shutil.copy(WEIGHTS_DIR / INT8_SEGMENTER_FILE, tmp_path / INT8_SEGMENTER_FILE)  # stale: another network's
    with pytest.warns(UserWarning, match="quantized from"):
        assert Segmenter.default(device="cpu", weights_dir=tmp_path).precision == "fp32"
    assert Segmenter.default(device="cpu", weights_dir=tmp_path, precision="int8").precision == "int8"


def test_shipped_int8_segmenter_upsamples_its_logits_and_agrees_with_fp32(shared_dataset):
    pytest.importorskip("onnxruntime")
    from semloc_ros.io.datasets import load_rgbs, load_semloc_sim_drive
    from semloc_ros.models.loading import load_segmenter

    torch.set_num_threads(1)
    int8, fp32 = load_segmenter("default-int8", device="cpu"), load_segmenter("default-fp32", device="cpu")
    assert int8.precision == "int8" and fp32.precision == "fp32"
    assert int8.meta["provenance"]["source_model_id"] == fp32.model_id  # quantized from the shipped weights
    x = torch.zeros(1, 3, *int8.input_size)
    assert int8.logits(x).shape == (1, SEMLOC_SIM.num_classes, *int8.input_size)  # the graph ends at 1/8
    drive = load_semloc_sim_drive(shared_dataset, "trainA_dusk_l0")
    rgbs = np.stack(load_rgbs([drive[5], drive[50]]))
    assert np.mean(int8.predict_batch(rgbs) == fp32.predict_batch(rgbs)) > 0.99  # 0.995 (MinMax, 8-bit logits: 0.990)
    pipeline = Pipeline.from_method("semantic", device="cpu", segmenter_file="default-int8")
    assert pipeline.segmenter.precision == "int8"


def test_shipped_int8_segmenter_keeps_its_logits_float():
    """The classifier's two convolutions and their sum run in float32 (scripts/quantize_segmenter.py, step 4): the
    graph ends with that sum, not with a DequantizeLinear of 8-bit logits, and both convolutions have float weights."""
    onnx = pytest.importorskip("onnx")
    from semloc_ros.models.segmentation import INT8_SEGMENTER_FILE
    from semloc_ros.models.weights import WEIGHTS_DIR

    graph = onnx.load(str(WEIGHTS_DIR / INT8_SEGMENTER_FILE)).graph
    producer = {output: node for node in graph.node for output in node.output}
    weights = {tensor.name: tensor for tensor in graph.initializer}
    final = producer[graph.output[0].name]
    assert final.op_type == "Add"
    convs = [producer[name] for name in final.input]
    assert [conv.op_type for conv in convs] == ["Conv", "Conv"]
    assert all(weights[conv.input[1]].data_type == onnx.TensorProto.FLOAT for conv in convs)


def test_rgb_to_tensor_resizes_the_uint8_pixels_before_converting_them_to_float():
    """A 1080p frame is shrunk as uint8 (antialiased bilinear), not converted to 6 M floats first: the result is
    the uint8 resize's, within one grey level of resizing floats; upscaling works the same way."""
    import torch.nn.functional as F  # noqa: N812

    from semloc_ros.models.utils import normalize_rgb, rgb_to_tensor

    rgb = np.random.default_rng(0).integers(0, 256, (1, 90, 160, 3), dtype=np.uint8)
    pixels = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    for size in ((24, 32), (120, 200)):
        got = rgb_to_tensor(rgb, size, torch.device("cpu"))
        resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        assert torch.equal(got, normalize_rgb(resized.float() / 255.0))
        floats = F.interpolate(pixels.float() / 255.0, size=size, mode="bilinear", align_corners=False, antialias=True)
        assert (got - normalize_rgb(floats)).abs().max() <= 1.001 / 255.0 / 0.224  # one grey level, normalised
    assert torch.equal(rgb_to_tensor(rgb, (90, 160), torch.device("cpu")), normalize_rgb(pixels.float() / 255.0))
