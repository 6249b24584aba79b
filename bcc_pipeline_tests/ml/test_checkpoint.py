import numpy as np
import pytest
import torch
from PIL import Image

from bcc_pipeline.ml.checkpoint import (
    CheckpointError,
    load_classifier,
    read_checkpoint,
    save_checkpoint,
)
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.ml.predict import predict_files

CLASSES = ["brain_glioma", "brain_menin", "brain_tumor"]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    module = BrainMRIClassifier(CLASSES, image_size=32, backbone="vit_tiny", weights="none")
    path = save_checkpoint(tmp_path / "model.pt", module, {"split_fingerprint": "abc"})
    return path, module.eval()


def test_checkpoint_is_plain_data_loadable_with_weights_only(checkpoint):
    path, _ = checkpoint
    payload = torch.load(path, weights_only=True)
    assert payload["class_names"] == CLASSES
    assert payload["image_size"] == 32
    assert payload["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert payload["backbone"] == {"name": "vit_tiny", "weights": "none", "trainable_blocks": 0}
    assert payload["split_fingerprint"] == "abc"
    assert set(payload["versions"]) >= {"torch", "torchvision", "pytorch_lightning"}


def test_reloaded_model_predicts_identically(checkpoint):
    path, module = checkpoint
    reloaded, _ = load_classifier(path)
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), module(images))


def test_foreign_file_is_refused_clearly(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a"):
        read_checkpoint(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        read_checkpoint(garbage)


def test_predict_uses_stored_preprocessing_and_reports_bad_files(checkpoint, tmp_path):
    path, module = checkpoint
    good = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 80), np.uint8)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_text("<html>")
    results = list(predict_files(path, [good, bad, tmp_path / "missing.jpg"]))
    assert [r["path"] for r in results] == [str(good), str(bad), str(tmp_path / "missing.jpg")]
    first = results[0]
    assert first["prediction"] in CLASSES
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "error" in results[1] and "error" in results[2]
