from pathlib import PurePath

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.explain import (
    MAP_NAME_MAX_BYTES,
    Explainer,
    ExplanationUnavailableError,
    _attention_rollout,
    examples_to_explain,
    explain_examples,
    map_file_name,
)
from bcc_pipeline.ml.network import ClassifierNet
from bcc_pipeline.ml.overlays import save_png
from bcc_pipeline_tests.conftest import tiny_net

SIZE = 64
CPU = torch.device("cpu")


def _lesion_image(side: str, brain: bool = False) -> np.ndarray:
    """A dark uint8 CHW slice with one bright 16-px square lesion, left or right of centre;
    with `brain`, the lesion sits in a mid-grey 'brain' that covers most of the slice."""
    image = np.full((3, SIZE, SIZE), 20, dtype=np.uint8)
    if brain:
        image[:, 8:56, 4:60] = 110
    left = 6 if side == "left" else SIZE - 6 - 16
    image[:, 24:40, left : left + 16] = 220
    return image


def _lesion_half(heat: np.ndarray) -> str:
    """Which half of the image holds most of the map's mass."""
    return "left" if heat[:, : SIZE // 2].sum() > heat[:, SIZE // 2 :].sum() else "right"


class _BrightDarkCNN(nn.Module):
    """A CNN with two features at half resolution, pooled: 'bright' (above 0.6, the lesion)
    and 'dark' (below 0.3, the background); the mid-grey brain has neither."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 2, kernel_size=2, stride=2)
        with torch.no_grad():
            conv.weight.copy_(
                torch.tensor([1 / 12, -1 / 12])[:, None, None, None].expand(2, 3, 2, 2)
            )
            conv.bias.copy_(torch.tensor([-0.6, 0.3]))
        self.features = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))


def _lesion_detector() -> ClassifierNet:
    """Class 1 ('lesion') counts bright for and dark against; its bias makes it the prediction."""
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
        head.bias.copy_(torch.tensor([0.0, 1.0]))
    return ClassifierNet(_BrightDarkCNN(), head, -1, Normalization((0.0,) * 3, (1.0,) * 3)).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_rollout_maps_have_the_image_size_and_follow_the_lesion(seed, dtype):
    """Untrained vit_tiny: the one patch that differs draws more head-averaged attention than
    the identical dark ones (exp in the softmax is convex), so even random weights' rollout
    peaks on it; a rollout that lost the token order or the class-token row would not. So
    it does in bfloat16, the precision the report evaluates a cached-feature model in."""
    net = tiny_net(image_size=SIZE, seed=seed)
    images = np.stack([_lesion_image("left"), _lesion_image("right")])
    explainer = Explainer(net, CPU, dtype)
    maps = explainer.maps(images)
    assert {p.dtype for p in explainer._net.parameters()} == {dtype}
    if dtype != torch.float32:
        np.testing.assert_allclose(maps, Explainer(net, CPU).maps(images), atol=0.1)
    assert explainer.method == "attention rollout"
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() == 0.0 and maps.max() == pytest.approx(1.0)
    assert [_lesion_half(heat) for heat in maps] == ["left", "right"]


def test_attention_rollout_multiplies_each_blocks_attention_with_the_residual_path():
    """The rollout against attention recomputed by hand, block by block: softmax(q k^T / sqrt(d))
    from each block's in_proj, averaged over heads, plus identity, rows renormalised."""
    net = tiny_net(image_size=SIZE)
    vit = net.backbone
    images = torch.from_numpy(_lesion_image("left")[None])
    with torch.no_grad():
        tokens = vit._process_input(net.normalize(images))
        x = torch.cat([vit.class_token, tokens], dim=1) + vit.encoder.pos_embedding
        count = x.shape[1]
        expected = torch.eye(count)
        for block in vit.encoder.layers:
            attention = block.self_attention
            q, k, _ = F.linear(block.ln_1(x), attention.in_proj_weight, attention.in_proj_bias)[
                0
            ].chunk(3, dim=-1)
            heads, width = attention.num_heads, q.shape[-1] // attention.num_heads
            q, k = (t.reshape(count, heads, width).transpose(0, 1) for t in (q, k))
            weights = torch.softmax(q @ k.transpose(1, 2) / width**0.5, dim=-1).mean(dim=0)
            mixed = 0.5 * weights + 0.5 * torch.eye(count)
            expected = mixed / mixed.sum(dim=1, keepdim=True) @ expected
            x = block(x)
        logits, rollout = _attention_rollout(net, images)
    side = SIZE // 16
    torch.testing.assert_close(rollout[0, 0], expected[0, 1:].reshape(side, side))
    torch.testing.assert_close(logits, net.head(vit.heads(vit.encoder.ln(x)[:, 0])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_cam_of_a_lesion_detector_is_the_lesion(dtype):
    """A known answer: for a CNN that counts bright for and dark against 'lesion', the
    Grad-CAM of 'lesion' is the lesion, upsampled from half resolution to the image's size;
    the dark background counts against it and is cut to zero, like the featureless brain."""
    net = _lesion_detector()
    images = np.stack([_lesion_image("left", brain=True), _lesion_image("right", brain=True)])
    explainer = Explainer(net, CPU, dtype)
    maps = explainer.maps(images)
    assert explainer.method == "Grad-CAM"
    assert maps.shape == (2, SIZE, SIZE)
    for heat, image in zip(maps, images, strict=True):
        lesion = image[0] > 200
        assert heat[lesion].mean() > 0.9
        assert heat[~lesion].mean() < 0.05
    assert [_lesion_half(heat) for heat in maps] == ["left", "right"]


def _count_backbone_images(net: ClassifierNet) -> list[int]:
    """Images through `net`'s backbone, per forward call, from now on."""
    seen: list[int] = []
    net.backbone.register_forward_pre_hook(lambda _module, args: seen.append(len(args[0])))
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rollout_predictions_bring_their_maps_from_the_same_forward_pass(dtype):
    """Explainer.predict: the network's logits, and coarse maps that `maps` turns into the
    very maps it would compute itself, without running the backbone again."""
    net = tiny_net(image_size=SIZE)
    images = np.stack([_lesion_image(side) for side in ("left", "right", "left")] * 7)
    explainer = Explainer(net, CPU, dtype)
    seen = _count_backbone_images(explainer.network)
    logits, coarse = explainer.predict(images)
    assert sum(seen) == len(images), "one forward pass per image"
    with torch.no_grad():
        expected = explainer.network(torch.from_numpy(images)).float()
    torch.testing.assert_close(logits, expected, atol=0.05, rtol=0.05)
    assert coarse.shape == (len(images), 1, SIZE // 16, SIZE // 16)
    seen.clear()
    reused = explainer.maps(images, coarse)
    assert seen == []
    np.testing.assert_allclose(reused, explainer.maps(images), atol=2e-3)  # float16 coarse
    assert [_lesion_half(heat) for heat in reused[:3]] == ["left", "right", "left"]


def test_grad_cam_predictions_leave_the_maps_to_the_images_explained():
    """Grad-CAM needs a backward pass: predict gives only the logits, and maps computes its
    own for the images that get explained."""
    net = _lesion_detector()
    images = np.stack([_lesion_image("left", brain=True), _lesion_image("right", brain=True)])
    explainer = Explainer(net, CPU)
    logits, coarse = explainer.predict(images)
    assert coarse is None
    with torch.no_grad():
        torch.testing.assert_close(logits, net(torch.from_numpy(images)))


def test_a_backbone_without_known_blocks_is_said_to_have_no_map():
    net = ClassifierNet(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), nn.Linear(4, 2), 0, Normalization()
    )
    with pytest.raises(ExplanationUnavailableError, match="no explanation map for Sequential"):
        Explainer(net, CPU)


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


LONG_LEGAL_NAMES = [
    "000_" + "x" * 222 + ".jpg",  # 230 bytes, as in the survey
    "脑" * 78 + ".jpg",  # 238 bytes in 82 characters
    "d/" + "é" * 125 + "\udcff.png",  # a name with a byte that is not UTF-8
]


@pytest.mark.parametrize("path", LONG_LEGAL_NAMES, ids=["230-bytes", "cjk", "not-utf8"])
def test_a_long_image_name_gives_a_map_name_that_can_be_written(path, tmp_path):
    name = map_file_name(12, path)
    assert len(name.encode()) <= MAP_NAME_MAX_BYTES
    assert name.startswith("0012_" + PurePath(path).stem[:10])
    written = save_png(Image.new("RGB", (4, 4)), tmp_path / name)  # atomic_path's temp name too
    assert written.is_file()


def test_long_names_that_share_their_start_get_different_map_names():
    start = "scan_" + "a" * 200
    names = {map_file_name(0, f"{start}{end}.jpg") for end in ("1", "2", "_1")}
    assert len(names) == 3


def test_the_report_explains_images_with_long_names(tmp_path):
    explainer = Explainer(tiny_net(), CPU)
    images = np.random.default_rng(0).integers(0, 255, (6, 3, 32, 32), np.uint8)
    labels = np.array([0, 0, 1, 1, 2, 2])
    paths = [f"{['a', 'b', 'c'][label]}/{'脑' * 78}{i}.jpg" for i, label in enumerate(labels)]
    probabilities = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), 1)
    explained = explain_examples(
        explainer, images, labels, probabilities, ["a", "b", "c"], paths, tmp_path
    )
    assert len(explained.files) == len(set(explained.files)) == 6
    assert all(file.is_file() for file in explained.files) and explained.grid.is_file()
