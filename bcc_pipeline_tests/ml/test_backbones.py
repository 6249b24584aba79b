import os
import re
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
    fetch_weights,
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
    ("backbone", "weights", "size", "blocks", "setting", "message"),
    [
        ("vit_b_16", "DEFAULT", 128, 0, "image_size", "needs image_size 224"),
        ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", 224, 0, "image_size", "needs image_size 384"),
        ("vit_b_16", "NOPE", 224, 0, "weights", "has no weights"),
        ("vit_b_16", "none", 100, 0, "image_size", "cannot take 100-pixel images"),
        ("maxvit_t", "none", 300, 0, "image_size", "multiple of 224"),
        ("maxvit_t", "DEFAULT", 448, 0, "image_size", "needs image_size 224"),
        ("not_a_model", "none", 224, 0, "backbone", "unknown backbone"),
        ("squeezenet1_1", "none", 224, 0, "backbone", "no Linear classifier layer"),
        ("resnet18", "none", 16, 0, "image_size", "at least 32"),
        ("resnet18", "none", 224, 5, "trainable_blocks", "exceeds the 4 blocks"),
        ("regnet_x_400mf", "none", 224, 5, "trainable_blocks", "exceeds the 4 blocks"),
        ("vit_tiny", "DEFAULT", 64, 0, "weights", "no pretrained weights"),
        ("vit_tiny", "none", 40, 0, "image_size", "multiple of 16"),
        ("vit_tiny", "none", 64, -2, "trainable_blocks", "must be -1"),
    ],
)
def test_incompatible_config_is_said_naming_the_setting(
    backbone, weights, size, blocks, setting, message
):
    with pytest.raises(BackboneConfigError, match=message) as error:
        check_backbone(backbone, weights, size, blocks)
    assert error.value.setting == setting


@pytest.mark.parametrize(
    ("backbone", "weights", "size", "blocks"),
    [
        ("resnet18", "none", 100, 0),
        ("vit_b_16", "none", 96, 2),
        ("vit_b_16", "DEFAULT", 224, -1),
        ("vit_tiny", "none", 48, 4),
        ("regnet_x_400mf", "none", 224, 0),  # computes its widths with tensors while built
        ("maxvit_t", "none", 448, -1),  # built for the size, like a ViT from scratch
    ],
)
def test_workable_config_passes_the_check(backbone, weights, size, blocks):
    check_backbone(backbone, weights, size, blocks)


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
    assert error.value.setting == "weights"


def test_fetch_downloads_missing_weights_once_into_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    downloads = []

    def fake_download(url, destination, hash_prefix, progress):
        downloads.append((url, hash_prefix))
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = fetch_weights("mobilenet_v3_small", "DEFAULT")
    second = fetch_weights("mobilenet_v3_small", "DEFAULT")
    assert first == second == tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert downloads == [(torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url, "047dcff4")]
    assert fetch_weights("mobilenet_v3_small", "none") is None


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


def test_loaded_weights_replace_a_network_that_was_never_randomly_initialised(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    local = tmp_path / "local.pth"
    torch.save(torchvision.models.resnet18().state_dict(), local)
    for weights in ("DEFAULT", str(local)):
        before = torch.random.get_rng_state()
        load_backbone("resnet18", weights, 224)
        assert torch.equal(torch.random.get_rng_state(), before), weights
    load_backbone("resnet18", "none", 224)
    assert not torch.equal(torch.random.get_rng_state(), before)  # random init draws


def test_a_local_file_in_half_precision_loads_as_float32(tmp_path):
    reference = torchvision.models.resnet18().half()
    path = tmp_path / "resnet18_fp16.pth"
    torch.save(reference.state_dict(), path)
    model, _ = load_backbone("resnet18", str(path), 224)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.fc.weight, reference.fc.weight.float())


def test_a_local_file_rewritten_after_loading_leaves_the_model_as_loaded(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model, _ = load_backbone("resnet18", str(path), 224)
    torch.save(torchvision.models.resnet18().state_dict(), path)  # same file, new weights
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("backbone", ["googlenet", "inception_v3"])
def test_networks_with_auxiliary_classifiers_train_on_their_main_output(backbone):
    model, _ = load_backbone(backbone, "none", 224)
    model, head = replace_head(model, 3)
    logits = head(model.train()(torch.zeros(2, 3, 224, 224)))  # inception_v3's aux needs 299
    assert logits.shape == (2, 3)


def test_pretrained_googlenet_rescales_its_input_as_torchvision_builds_it(
    googlenet_in_torch_cache,
):
    model, _ = load_backbone("googlenet", "DEFAULT", 224)
    assert model.transform_input and model.aux1 is None and model.aux2 is None
    assert not load_backbone("googlenet", "none", 224)[0].transform_input


def test_the_check_loads_a_local_file_to_prove_it_fits(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    check_backbone("resnet18", str(path), 224, 0)
    with pytest.raises(BackboneConfigError, match="do not fit") as error:
        check_backbone("mobilenet_v2", str(path), 224, 0)
    assert error.value.setting == "weights"
    not_a_state_dict = tmp_path / "notes.pth"
    not_a_state_dict.write_text("hello")
    with pytest.raises(BackboneConfigError, match="is not a torch state dict: empty, damaged"):
        check_backbone("resnet18", str(not_a_state_dict), 224, 0)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda path: path.mkdir(), "is a folder; give the state-dict file itself"),
        (lambda path: os.mkfifo(path), "is not a regular file (a pipe or device)"),
        (
            lambda path: torch.save(
                {"format": 1, "state_dict": torchvision.models.resnet18().state_dict()}, path
            ),
            "are a training checkpoint (a bcc_pipeline model.pt or a Lightning .ckpt",
        ),
    ],
)
def test_weights_that_are_no_state_dict_file_say_what_they_are(tmp_path, make, said):
    """A pipe is never opened: reading it would wait for a writer for ever."""
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(BackboneConfigError, match=re.escape(said)) as error:
        check_backbone("resnet18", str(path), 224, 0)
    assert error.value.setting == "weights"
