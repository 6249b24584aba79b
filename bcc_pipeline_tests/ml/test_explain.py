import numpy as np
import pytest
import torch
from torch import nn

from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.explain import (
    ExplanationUnavailableError,
    examples_to_explain,
    explanation_maps,
    explanation_method,
    map_file_name,
)
from bcc_pipeline.ml.network import ClassifierNet
from bcc_pipeline_tests.conftest import tiny_net

SIZE = 64
CPU = torch.device("cpu")


def _lesion_image(side: str) -> np.ndarray:
    """A dark uint8 CHW slice with one bright 16-px square lesion, left or right of centre."""
    image = np.full((3, SIZE, SIZE), 20, dtype=np.uint8)
    left = 6 if side == "left" else SIZE - 6 - 16
    image[:, 24:40, left : left + 16] = 220
    return image


def _lesion_half(heat: np.ndarray) -> str:
    """Which half of the image holds most of the map's mass."""
    return "left" if heat[:, : SIZE // 2].sum() > heat[:, SIZE // 2 :].sum() else "right"


class _BrightnessCNN(nn.Module):
    """A CNN whose one feature (at half resolution) is 'brighter than the background', pooled;
    with a head that calls that feature class 1, Grad-CAM of class 1 is the lesion itself."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 1, kernel_size=2, stride=2)
        nn.init.constant_(conv.weight, 1 / 12)
        nn.init.constant_(conv.bias, -0.5)
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))


def _brightness_classifier() -> ClassifierNet:
    head = nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        head.bias.zero_()
    return ClassifierNet(_BrightnessCNN(), head, -1, Normalization((0.0,) * 3, (1.0,) * 3)).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_rollout_maps_have_the_image_size_and_follow_the_lesion(seed):
    """Untrained vit_tiny: the one patch that differs draws more head-averaged attention than
    the identical dark ones (exp in the softmax is convex), so even random weights' rollout
    peaks on it; a rollout that lost the token order or the class-token row would not."""
    net = tiny_net(image_size=SIZE, seed=seed)
    images = np.stack([_lesion_image("left"), _lesion_image("right")])
    maps = explanation_maps(net, images, CPU)
    assert explanation_method(net) == "attention rollout"
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0)
    assert [_lesion_half(heat) for heat in maps] == ["left", "right"]


def test_grad_cam_of_a_lesion_detector_is_the_lesion():
    """A known answer: for a CNN that detects brightness, the Grad-CAM of 'lesion' is the
    lesion, upsampled from the half-resolution feature map to the image's size."""
    net = _brightness_classifier()
    images = np.stack([_lesion_image("left"), _lesion_image("right")])
    maps = explanation_maps(net, images, CPU)
    assert explanation_method(net) == "Grad-CAM"
    assert maps.shape == (2, SIZE, SIZE)
    for heat, image in zip(maps, images, strict=True):
        lesion = image[0] > 100
        assert heat[lesion].mean() > 0.9
        assert heat[~lesion].mean() < 0.1
    assert [_lesion_half(heat) for heat in maps] == ["left", "right"]


def test_a_backbone_without_known_blocks_is_said_to_have_no_map():
    net = ClassifierNet(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), nn.Linear(4, 2), 0, Normalization()
    )
    with pytest.raises(ExplanationUnavailableError, match="no explanation map for Sequential"):
        explanation_method(net)


def test_examples_are_a_seeded_sample_per_class_plus_the_misclassified_up_to_a_cap():
    labels = np.repeat([0, 1, 2], 10)
    predictions = labels.copy()
    predictions[[3, 4, 5, 21]] = [1, 1, 2, 0]
    sample = examples_to_explain(labels, predictions, per_class=2, max_misclassified=0, seed=0)
    assert [int((labels[sample] == label).sum()) for label in (0, 1, 2)] == [2, 2, 2]
    assert sample != examples_to_explain(labels, predictions, 2, 0, seed=1)
    chosen = examples_to_explain(labels, predictions, per_class=2, max_misclassified=3, seed=0)
    assert chosen == sorted(set(sample) | {3, 4, 5}), "the first 3 misclassified, in order"


def test_map_file_names_are_distinct_and_safe():
    names = [
        map_file_name(i, path) for i, path in enumerate(["a/x.jpg", "b/x.jpg", "c/y - Copy.jpg"])
    ]
    assert names == ["0000_x.png", "0001_x.png", "0002_y_-_Copy.png"]
