"""User segmenters: class count vs label mapping at load time, output rank, errors that name the ROS parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semloc_ros.core.labels import CAMVID_11, CITYSCAPES_19, SEMLOC_SIM, load_mapping, model_classes_problem
from semloc_ros.models import SegmentationNet, Segmenter, WeightsError


def test_model_classes_problem_for_the_built_in_mappings() -> None:
    assert model_classes_problem(19, CITYSCAPES_19) is None
    assert model_classes_problem(11, CAMVID_11) is None and model_classes_problem(12, CAMVID_11) is None  # + void
    assert model_classes_problem(SEMLOC_SIM.num_classes, None) is None
    too_few = model_classes_problem(7, CITYSCAPES_19)
    assert too_few is not None and "7 output classes" in too_few and "at least 19" in too_few
    too_many = model_classes_problem(19, CAMVID_11)
    assert too_many is not None and "ids 12..18" in too_many and "label_mapping" in too_many
    identity = model_classes_problem(19, None)  # would emit label 18: semloc has no such class
    assert identity is not None and "identity" in identity and "ids 18..18" in identity
    assert model_classes_problem(19, load_mapping("identity")) == identity


def _state_dict_file(tmp_path, num_classes: int):
    net = SegmentationNet({"arch": "lraspp_mobilenet_v3_large", "num_classes": num_classes})
    path = tmp_path / f"seg{num_classes}.pth"
    torch.save(net.net.state_dict(), path)
    return path


def test_state_dicts_whose_classes_do_not_fit_the_mapping_are_refused_at_load(tmp_path) -> None:
    seven, nineteen = _state_dict_file(tmp_path, 7), _state_dict_file(tmp_path, 19)
    with pytest.raises(WeightsError, match=r"7 output classes.*label_mapping 'cityscapes19'"):
        Segmenter.from_file(seven, device="cpu", arch="lraspp_mobilenet_v3_large", label_mapping=CITYSCAPES_19)
    with pytest.raises(WeightsError, match="label_mapping 'camvid11'"):
        Segmenter.from_file(nineteen, device="cpu", arch="lraspp_mobilenet_v3_large", label_mapping=CAMVID_11)
    with pytest.raises(WeightsError, match="label_mapping 'identity'"):
        Segmenter.from_file(nineteen, device="cpu", arch="lraspp_mobilenet_v3_large")
    mapped = Segmenter.from_file(nineteen, device="cpu", arch="lraspp_mobilenet_v3_large", label_mapping=CITYSCAPES_19)
    assert mapped.num_classes == 19
    with pytest.raises(WeightsError, match="model_arch parameter"):
        Segmenter.from_file(nineteen, device="cpu")


def test_outputs_of_the_wrong_rank_or_class_count_give_a_clear_error() -> None:
    rgb = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    per_pixel = Segmenter(lambda x: x.mean(1), {"model_id": "toy-ids", "input_size": None}, device="cpu")
    with pytest.raises(WeightsError, match=r"returned \(1, 8, 8\).*expected logits N x classes x H x W"):
        per_pixel.predict_batch(rgb)
    # a model whose class count only shows in its output (e.g. TorchScript without semloc metadata)
    nineteen = Segmenter(lambda x: torch.zeros(x.shape[0], 19, *x.shape[2:]), {"model_id": "toy19",
                                                                              "input_size": None}, device="cpu")
    with pytest.raises(WeightsError, match=r"19 output classes.*label_mapping 'identity'"):
        nineteen.predict_batch(rgb)
    fitting = Segmenter(lambda x: torch.zeros(x.shape[0], 19, *x.shape[2:]), {"model_id": "toy19",
                                                                             "input_size": None},
                        device="cpu", label_mapping=CITYSCAPES_19)
    assert fitting.predict_batch(rgb).shape == (1, 8, 8) and fitting.num_classes == 19
