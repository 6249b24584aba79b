import numpy as np
import pytest
import torch
from PIL import Image

from bcc_pipeline.data.images import model_input
from bcc_pipeline.ml.backbones import Normalization
from bcc_pipeline.ml.checkpoint import (
    CheckpointError,
    load_classifier,
    read_checkpoint,
    stored_inference_dtype,
    stored_temperature,
)
from bcc_pipeline.ml.network import build_network
from bcc_pipeline.ml.predict import predict_files
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


def test_predict_normalises_with_the_stored_statistics(checkpoint, tmp_path):
    path, net = checkpoint
    scan = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 80), np.uint8)).save(scan)
    pixels = torch.from_numpy(model_input(scan.read_bytes(), 32))[None].float() / 255
    mean = torch.tensor(UNUSUAL.mean).view(1, 3, 1, 1)
    std = torch.tensor(UNUSUAL.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(net.head(net.backbone((pixels - mean) / std)), dim=1)[0]
    (result,) = predict_files(path, [scan])
    probabilities = torch.tensor([result["probabilities"][name] for name in CLASSES])
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)


def test_predict_reports_bad_files_and_goes_on(checkpoint, tmp_path):
    path, _ = checkpoint
    good = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 80), np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_text("<html>")
    results = list(predict_files(path, [good, bad, tmp_path / "missing.jpg"]))
    assert [r["path"] for r in results] == [str(good), str(bad), str(tmp_path / "missing.jpg")]
    assert results[0]["prediction"] in CLASSES
    assert sum(results[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "error" in results[1] and "error" in results[2]
