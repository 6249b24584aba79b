import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.evaluation import classification_report, predict_logits
from bcc_pipeline.ml.training import TrainingSettings, fit_classifier

CPU = TrainerDevice.resolve(accelerator="cpu")
TINY = TrainingSettings(
    backbone="vit_tiny",
    weights="none",
    trainable_blocks=0,
    max_epochs=4,
    early_stopping_patience=2,
    batch_size=16,
    learning_rate=3e-3,
    seed=0,
)


def _fit(tensors, tmp_path, **changes):
    settings = dataclasses.replace(TINY, **changes)
    work = tmp_path / f"work{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    return fit_classifier(tensors, settings, CPU, work)


def _test_report(result, tensors) -> dict:
    logits = predict_logits(result.module, tensors.images("test"), torch.device("cpu"))
    labels = torch.from_numpy(tensors.labels("test"))
    return classification_report(logits, labels, tensors.class_names)


def test_returned_model_is_the_best_val_loss_epoch(sample_tensors, tmp_path):
    result = _fit(sample_tensors, tmp_path, feature_cache="off", max_epochs=5)
    history = result.history
    assert len(history) == result.epochs_run
    assert result.best_val_loss == pytest.approx(history["val_loss"].min())
    logits = predict_logits(result.module, sample_tensors.images("val"), torch.device("cpu"))
    val_loss = F.cross_entropy(logits, torch.from_numpy(sample_tensors.labels("val")))
    assert float(val_loss) == pytest.approx(result.best_val_loss, abs=1e-4)


def test_same_config_same_metrics_on_cpu(sample_tensors, tmp_path):
    first = _fit(sample_tensors, tmp_path, trainable_blocks=-1, max_epochs=2)
    second = _fit(sample_tensors, tmp_path, trainable_blocks=-1, max_epochs=2)
    assert first.history.equals(second.history)
    assert first.used_feature_cache is False


def test_early_stopping_honours_patience(sample_tensors, tmp_path):
    result = _fit(
        sample_tensors, tmp_path, learning_rate=1.0, max_epochs=30, early_stopping_patience=1
    )
    assert result.epochs_run < 30
    assert result.epochs_run - result.best_epoch <= 1 or result.epochs_run == 30


def test_cached_bf16_features_match_the_uncached_float32_path(sample_tensors, tmp_path):
    """Head-only training on the cache (reduced precision, both flip views) reaches the same
    test accuracy as the plain path that runs the frozen backbone every epoch."""
    cached = _fit(sample_tensors, tmp_path, feature_cache="auto", max_epochs=6)
    plain = _fit(sample_tensors, tmp_path, feature_cache="off", max_epochs=6)
    assert cached.used_feature_cache and not plain.used_feature_cache
    cached_report = _test_report(cached, sample_tensors)
    plain_report = _test_report(plain, sample_tensors)
    assert abs(cached_report["accuracy"] - plain_report["accuracy"]) <= 1 / 9 + 1e-6
    assert cached.best_epoch == plain.best_epoch
    assert cached.best_val_loss == pytest.approx(plain.best_val_loss, abs=0.02)
    torch.testing.assert_close(
        cached.module.net.head.weight, plain.module.net.head.weight, atol=0.02, rtol=0.05
    )


def test_last_blocks_train_on_cached_tokens(sample_tensors, tmp_path):
    result = _fit(sample_tensors, tmp_path, trainable_blocks=2, max_epochs=2)
    assert result.used_feature_cache
    report = _test_report(result, sample_tensors)
    assert report["n_test"] == 9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_matches_the_cpu_recipe(sample_tensors, tmp_path):
    gpu = TrainerDevice.resolve(accelerator="gpu", devices="1", precision="bf16-mixed")
    work = tmp_path / "gpu"
    work.mkdir()
    result = fit_classifier(sample_tensors, dataclasses.replace(TINY, max_epochs=2), gpu, work)
    assert result.used_feature_cache
    assert _test_report(result, sample_tensors)["n_test"] == 9
