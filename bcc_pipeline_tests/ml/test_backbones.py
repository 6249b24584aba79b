import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from bcc_pipeline.ml.backbones import (
    IMAGENET_MEAN,
    BackboneConfigError,
    WeightsUnavailableError,
    check_backbone,
    load_backbone,
    replace_head,
)


@pytest.mark.parametrize(
    ("backbone", "head_path", "features"),
    [
        ("vit_tiny", "heads.head", 192),
        ("vit_b_16", "heads.head", 768),
        ("mobilenet_v2", "classifier.1", 1280),
        ("resnet18", "fc", 512),
    ],
)
def test_head_is_replaced_whatever_it_is_called(backbone, head_path, features):
    model, _ = load_backbone(backbone, "none", 224 if backbone != "vit_tiny" else 64)
    model, head = replace_head(model, 3)
    assert isinstance(model.get_submodule(head_path), torch.nn.Identity)
    assert (head.in_features, head.out_features) == (features, 3)
    size = 64 if backbone == "vit_tiny" else 224
    with torch.no_grad():
        assert head(model.eval()(torch.zeros(1, 3, size, size))).shape == (1, 3)


def test_vit_tiny_is_built_for_the_image_size():
    model, _ = load_backbone("vit_tiny", "none", 96)
    assert model.image_size == 96


@pytest.mark.parametrize(
    ("backbone", "weights", "size", "message"),
    [
        ("vit_b_16", "DEFAULT", 128, "needs image_size 224"),
        ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", 224, "needs image_size 384"),
        ("vit_b_16", "NOPE", 224, "has no weights"),
        ("not_a_model", "none", 224, "unknown backbone"),
        ("vit_tiny", "DEFAULT", 64, "no pretrained weights"),
        ("vit_tiny", "none", 40, "multiple of 16"),
    ],
)
def test_incompatible_config_is_said_before_any_work(backbone, weights, size, message):
    with pytest.raises(BackboneConfigError, match=message):
        check_backbone(backbone, weights, size)


def _fail_download(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


def test_offline_without_cache_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download)
    with pytest.raises(WeightsUnavailableError) as error:
        load_backbone("mobilenet_v3_small", "DEFAULT", 224)
    expected = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert str(expected) in str(error.value)
    assert "none" in str(error.value)


def test_weights_in_the_torch_cache_load_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download)
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    reference = torchvision.models.mobilenet_v3_small()
    cached = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    model, normalization = load_backbone("mobilenet_v3_small", "DEFAULT", 224)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert normalization.mean == IMAGENET_MEAN


def test_local_state_dict_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model, _ = load_backbone("resnet18", str(path), 224)
    assert torch.equal(model.fc.weight, reference.fc.weight)
    with pytest.raises(BackboneConfigError, match="do not fit"):
        load_backbone("mobilenet_v2", str(path), 224)
    with pytest.raises(BackboneConfigError, match="does not exist"):
        load_backbone("resnet18", str(tmp_path / "missing.pth"), 224)
