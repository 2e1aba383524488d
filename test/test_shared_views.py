"""Database views of the semantic descriptor from one pass of its convolutions: the same descriptors as shifting
each view and describing it (the per-view reference), for views the plan shares and for those it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semloc_ros.core.views import RECOMMENDED_VIEWS, shift_view
from semloc_ros.io.datasets import Frame
from semloc_ros.mapping import describe_drive_views
from semloc_ros.models import DescriptorExtractor
from semloc_ros.models.pipeline import Pipeline
from semloc_ros.models.shared_views import describe_views, describe_views_one_by_one, plan_views, total_stride


def scenes(count: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Label images of class blocks (8x8 cells, nearest-upsampled), as piecewise constant as segmentations."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 18, (count, shape[0] // 8 + 1, shape[1] // 8 + 1), dtype=np.uint8)
    blocks = cells.repeat(8, axis=1).repeat(8, axis=2)[:, : shape[0], : shape[1]]
    blocks[:, :, -5:] = 255  # ignored columns at a border: they move in and out of the views
    return blocks


def extractor(input_size: tuple[int, int], mask_dynamic: bool = False) -> DescriptorExtractor:
    torch.manual_seed(0)
    untrained = DescriptorExtractor.untrained("semantic_alexnet", device="cpu", pooling="netvlad",
                                              input_size=input_size)
    with torch.no_grad():  # biases, so that the zero padding of a view's borders matters
        for module in untrained.net.features:
            if isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0.0, 0.5)
    return untrained.masking_dynamic_classes() if mask_dynamic else untrained


@pytest.mark.parametrize(("label_shape", "input_size", "views", "shared"), [
    ((240, 320), (120, 160), RECOMMENDED_VIEWS, 7),  # 10 % of 160 px: one stride (16) per step
    ((64, 96), (64, 96), (0.0, 1 / 6, -1 / 6, 1 / 3), 4),  # no resize; the stack goes per view from conv2
    ((240, 320), (120, 160), (0.0, 0.05, -0.1, 0.2), 3),  # 0.05: 8 px, not a multiple of the stride
])
@pytest.mark.parametrize("mask_dynamic", [False, True])
def test_shared_views_equal_the_per_view_descriptors(label_shape, input_size, views, shared, mask_dynamic):
    torch.set_num_threads(1)
    described = extractor(input_size, mask_dynamic)
    labels = scenes(3, label_shape)
    plan = plan_views(label_shape, input_size, tuple(views), total_stride(described.net))
    assert len(plan.offsets) == shared
    np.testing.assert_allclose(describe_views(described, labels, views),
                               describe_views_one_by_one(described, labels, views), rtol=0, atol=2e-5)


def test_a_resize_that_does_not_commute_with_the_shift_describes_those_views_one_by_one():
    """At 333 px a view moves by 33 px, not 33.3 (16 px at 160): its resize picks other columns than a crop."""
    described = extractor((120, 160))
    plan = plan_views((240, 333), (120, 160), RECOMMENDED_VIEWS, 16)
    assert len(plan.offsets) < len(RECOMMENDED_VIEWS)
    labels = scenes(2, (240, 333))
    np.testing.assert_allclose(describe_views(described, labels, RECOMMENDED_VIEWS),
                               describe_views_one_by_one(described, labels, RECOMMENDED_VIEWS), rtol=0, atol=2e-5)


def test_shipped_descriptor_views_equal_the_per_view_descriptors():
    """Whatever weights ship: their views from one pass equal the per-view descriptors."""
    torch.set_num_threads(1)
    shipped = DescriptorExtractor.default("semantic", device="cpu")
    labels = scenes(2, (240, 320), seed=1)
    shared = describe_views(shipped, labels, RECOMMENDED_VIEWS)
    reference = describe_views_one_by_one(shipped, labels, RECOMMENDED_VIEWS)
    np.testing.assert_allclose(shared, reference, rtol=0, atol=2e-5)


def test_map_building_describes_label_views_from_one_pass_and_others_per_shift():
    """describe_drive_views: a label pipeline's views (mixed image sizes included) as the reference; an RGB
    pipeline has no label views to share (its views are shifted RGB images)."""
    torch.set_num_threads(1)
    labels = list(scenes(3, (120, 160))) + list(scenes(1, (96, 128), seed=2))
    frames = [Frame(f"f{i}", i, 48.0, 11.0, rgb=np.zeros((*label.shape, 3), np.uint8), labels=label)
              for i, label in enumerate(labels)]
    pipeline = Pipeline(None, extractor((120, 160)))
    views = (0.0, 0.1, -0.2)
    descriptors, thumbnails = describe_drive_views(pipeline, frames, views, oracle=True, batch_size=2,
                                                   label_cache=None, thumbnails=True)
    for v, shift in enumerate(views):
        expected = np.stack([pipeline.descriptor.describe(shift_view(label[None], shift)[0]) for label in labels])
        np.testing.assert_allclose(descriptors[v], expected, rtol=0, atol=2e-5)
    assert thumbnails.shape[:2] == (3, 4) and not np.array_equal(thumbnails[1], thumbnails[0])
    rgb = Pipeline(None, DescriptorExtractor.untrained("rgb_netvlad", device="cpu"))
    assert rgb.describe_label_views(labels, views) is None
