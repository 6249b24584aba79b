import json

import pytest
import torch

from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.checkpoint import (
    CheckpointError,
    load_classifier,
    read_checkpoint,
    save_checkpoint,
    stored_inference_dtype,
    stored_temperature,
)
from bcc_pipeline.ml.network import build_network
from bcc_pipeline_tests.conftest import CLASSES, save_tiny_checkpoint

UNUSUAL = Normalization(mean=(0.1, 0.5, 0.9), std=(0.5, 0.1, 0.3))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = build_network(len(CLASSES), 32, "vit_tiny", "none", 0, UNUSUAL).eval()
    path = save_tiny_checkpoint(
        tmp_path / "model.pt",
        net,
        {"split_fingerprint": "abc"},
        inference_dtype=torch.bfloat16,
    )
    return path, net


def test_checkpoint_is_plain_data_loadable_with_weights_only(checkpoint):
    path, _ = checkpoint
    payload = torch.load(path, weights_only=True)
    assert payload["class_names"] == CLASSES
    assert payload["image_size"] == 32
    assert payload["normalization"]["mean"] == pytest.approx(list(UNUSUAL.mean))
    assert payload["backbone"] == {"name": "vit_tiny", "weights": "none", "trainable_blocks": 0}
    assert payload["split_fingerprint"] == "abc"
    assert payload["inference_dtype"] == "bfloat16"
    assert stored_inference_dtype(payload) == torch.bfloat16
    assert set(payload["versions"]) >= {"torch", "torchvision", "pytorch_lightning"}


def test_temperature_is_a_plain_float_and_older_files_read_as_uncalibrated(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "model.pt", temperature=1.75)
    payload = torch.load(path, weights_only=True)
    assert payload["temperature"] == 1.75 and stored_temperature(payload) == 1.75
    del payload["temperature"]
    assert stored_temperature(payload) == 1.0


def _reloads_predicting_the_same(tmp_path, backbone: str, weights: str, size: int):
    """Build, save, reload: the reloaded network (returned) predicts as the original did."""
    net = build_network(len(CLASSES), size, backbone, weights, 0).eval()
    path = save_checkpoint(
        tmp_path / "model.pt",
        net,
        class_names=CLASSES,
        image_size=size,
        backbone=backbone,
        weights=weights,
        inference_dtype=torch.float32,
        extra={},
    )
    reloaded, _ = load_classifier(path)
    images = torch.randint(0, 255, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), net(images))
    return reloaded


def test_a_regnet_checkpoint_reloads_though_regnets_cannot_be_built_on_the_meta_device(
    tmp_path,
):
    _reloads_predicting_the_same(tmp_path, "regnet_x_400mf", "none", 32)


def test_a_checkpoint_reloads_into_the_architecture_its_pretrained_weights_chose(
    tmp_path, googlenet_in_torch_cache
):
    """Pretrained GoogLeNet rescales its input inside the model: a flag, not a weight."""
    reloaded = _reloads_predicting_the_same(tmp_path, "googlenet", "DEFAULT", 64)
    assert reloaded.backbone.transform_input


def test_reloaded_model_predicts_identically(checkpoint):
    path, net = checkpoint
    reloaded, _ = load_classifier(path)
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), net(images))


def test_foreign_file_is_refused_clearly(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a"):
        read_checkpoint(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(garbage)


class Payload:
    """Not plain data: loading it with weights_only=False would run this class's code."""


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty (0 bytes), not a checkpoint"),
        (b"not a checkpoint\n", "is not a checkpoint: it is text starting 'not a checkpoint'"),
        (b"<html>Sign in</html>", "is not a checkpoint: it is text starting '<html>"),
        (b'{"run_id": "abc"}', "not a production pointer (production_model's current.json, with"),
        (b"PK\x03\x04" + bytes(40), "is a damaged or truncated checkpoint"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, content, says):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert says in str(error.value)
    assert "(101)" not in str(error.value) and "weights_only" not in str(error.value)


def test_a_checkpoint_with_code_in_it_is_refused_without_advising_unsafe_loading(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": "bcc_pipeline.vit_checkpoint/1", "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors") as error:
        read_checkpoint(path)
    assert "weights_only" not in str(error.value) and "trust" not in str(error.value)


def test_missing_checkpoint_and_folder_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*No such file"):
        read_checkpoint(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*not a regular file"):
        read_checkpoint(tmp_path)


def _tampered(tmp_path, **changes):
    """A tiny checkpoint with top-level entries replaced, as a damaged or hand-edited file."""
    payload = torch.load(save_tiny_checkpoint(tmp_path / "good.pt"), weights_only=True)
    path = tmp_path / "model.pt"
    torch.save({**payload, **changes}, path)
    return path


@pytest.mark.parametrize("temperature", [0.0, -1.5, float("nan"), float("inf"), "2"])
def test_a_temperature_that_is_no_positive_number_is_refused(tmp_path, temperature):
    path = _tampered(tmp_path, temperature=temperature)
    with pytest.raises(CheckpointError, match="its temperature .* is not a positive finite"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("normalization", "says"),
    [
        ({"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.0, 0.2]}, "std [0.2, 0.0, 0.2] is not above 0"),
        ({"mean": [0.5, 0.5, 0.5], "std": [0.2, -0.1, 0.2]}, "is not above 0"),
        ({"mean": [0.5, 0.5, 0.5], "std": [0.2, float("nan"), 0.2]}, "three finite numbers"),
        ({"mean": [float("inf"), 0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "three finite numbers"),
        ({"mean": [0.5], "std": [0.2]}, "three finite numbers"),
        ({"mean": [0.5, 0.5, 0.5]}, "three finite numbers"),
        ("imagenet", "three finite numbers"),
    ],
)
def test_a_normalization_that_would_give_nan_is_refused(tmp_path, normalization, says):
    path = _tampered(tmp_path, normalization=normalization)
    with pytest.raises(CheckpointError, match="damaged checkpoint: its normalization") as error:
        read_checkpoint(path)
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("backbone", "image_size", "says"),
    [
        ({"name": "vit_small"}, 32, "names backbone 'vit_small' (image_size 32, trainable_blocks "
         "0), which this version of bcc_pipeline cannot build: unknown backbone 'vit_small'"),
        ({}, 40, "(image_size 40, trainable_blocks 0), which this version of bcc_pipeline cannot "
         "build: vit_tiny takes whole 16-pixel patches"),
        ({"trainable_blocks": 99}, 32, "trainable_blocks 99 exceeds the 4 blocks"),
    ],
)  # fmt: skip
def test_a_network_this_version_cannot_build_is_a_checkpoint_error(
    tmp_path, backbone, image_size, says
):
    good = torch.load(save_tiny_checkpoint(tmp_path / "good.pt"), weights_only=True)
    path = _tampered(tmp_path, backbone={**good["backbone"], **backbone}, image_size=image_size)
    with pytest.raises(CheckpointError) as error:
        load_classifier(path)
    assert says in str(error.value)
    assert "; use" not in str(error.value), "a run config's advice cannot mend a file"


@pytest.mark.parametrize("relative", [False, True])
def test_the_production_pointer_reads_the_checkpoint_it_names(checkpoint, tmp_path, relative):
    path, _ = checkpoint
    pointer = tmp_path / "production_model" / "current.json"
    pointer.parent.mkdir()
    target = f"../{path.name}" if relative else str(path)
    pointer.write_text(json.dumps({"checkpoint": target, "run_id": "abc", "accuracy": 0.9}))
    assert read_checkpoint(pointer)["class_names"] == CLASSES
    reloaded, payload = load_classifier(pointer)
    assert payload["split_fingerprint"] == "abc"


def test_a_pointer_to_a_missing_model_says_which_file_is_missing(tmp_path):
    pointer = tmp_path / "current.json"
    pointer.write_text(json.dumps({"checkpoint": str(tmp_path / "gone" / "model.pt")}))
    with pytest.raises(CheckpointError, match="gone/model.pt: No such file"):
        read_checkpoint(pointer)
