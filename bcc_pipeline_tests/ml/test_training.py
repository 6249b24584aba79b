import gc

import pytest
import torch
import torch.nn.functional as F

from bcc_pipeline.data.manifest import scan_folder
from bcc_pipeline.data.split import split_fingerprint, stratified_group_split
from bcc_pipeline.data.tensors import TensorSplits, write_tensor_splits
from bcc_pipeline.ml import training
from bcc_pipeline.ml.devices import TrainerDevice
from bcc_pipeline.ml.module import BrainMRIClassifier
from bcc_pipeline.ml.network import predict_logits
from bcc_pipeline.ml.settings import DeviceSettings, TrainingSettings
from bcc_pipeline.ml.training import FitResult, fit_classifier
from bcc_pipeline_tests.conftest import FRACTIONS

pytestmark = pytest.mark.slow

CPU = TrainerDevice.resolve(DeviceSettings(accelerator="cpu"))
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


def _fit(tensors, tmp_path, device: TrainerDevice = CPU, **changes) -> FitResult:
    work = tmp_path / f"work{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    return fit_classifier(tensors, TINY.model_copy(update=changes), device, work)


def _logits(result: FitResult, tensors, split: str = "test") -> torch.Tensor:
    """Logits as the report computes them: in the precision the fit recorded."""
    return predict_logits(
        result.net, tensors.images(split), torch.device("cpu"), result.inference_dtype
    )


def _predictions(result: FitResult, tensors, split: str = "test") -> torch.Tensor:
    return _logits(result, tensors, split).argmax(dim=1)


def test_returned_model_is_the_best_val_loss_epoch(sample_tensors, tmp_path):
    result = _fit(sample_tensors, tmp_path, feature_cache="off", max_epochs=5)
    history = result.history
    assert len(history) == result.epochs_run
    assert result.best_val_loss == pytest.approx(history["val_loss"].min())
    logits = predict_logits(result.net, sample_tensors.images("val"), torch.device("cpu"))
    val_loss = F.cross_entropy(logits, torch.from_numpy(sample_tensors.labels("val")))
    assert float(val_loss) == pytest.approx(result.best_val_loss, abs=1e-4)


@pytest.mark.parametrize("feature_cache", ["auto", "off"])
def test_val_logits_are_the_best_epochs_as_validation_computed_them(
    sample_tensors, tmp_path, feature_cache
):
    """The logits the temperature is fitted on: the best epoch's (not the last one's; a high
    learning rate makes them differ), on the cached features when the cache was used."""
    result = _fit(
        sample_tensors,
        tmp_path,
        feature_cache=feature_cache,
        learning_rate=1.0,
        max_epochs=30,
        early_stopping_patience=1,
    )
    assert result.used_feature_cache == (feature_cache == "auto")
    assert result.best_epoch < result.epochs_run
    labels = torch.from_numpy(sample_tensors.labels("val"))
    assert result.val_logits.dtype == torch.float32
    assert float(F.cross_entropy(result.val_logits, labels)) == pytest.approx(
        result.best_val_loss, abs=1e-4
    )
    whole_model = _logits(result, sample_tensors, "val")
    torch.testing.assert_close(result.val_logits, whole_model, atol=0.05, rtol=0.01)


def test_same_config_same_metrics_on_cpu(sample_tensors, tmp_path):
    first = _fit(sample_tensors, tmp_path, trainable_blocks=-1, max_epochs=2)
    second = _fit(sample_tensors, tmp_path, trainable_blocks=-1, max_epochs=2)
    assert first.history.equals(second.history)
    assert not first.used_feature_cache and first.inference_dtype == torch.float32


def test_early_stopping_stops_patience_epochs_after_the_best(sample_tensors, tmp_path):
    result = _fit(
        sample_tensors, tmp_path, learning_rate=1.0, max_epochs=30, early_stopping_patience=1
    )
    assert result.epochs_run < 30
    assert result.epochs_run == result.best_epoch + 1


def test_cached_reduced_precision_path_matches_the_uncached_float32_path(sample_tensors, tmp_path):
    """Head-only training on the cache (reduced precision, both flip views), evaluated in the
    precision the report uses, classifies every val and test image as the plain path does
    (which runs the frozen backbone in float32 every epoch), with the same best epoch. Only a
    near-tie (float32 top two probabilities within 0.01) may go either way in bfloat16."""
    cached = _fit(sample_tensors, tmp_path, feature_cache="auto", max_epochs=6)
    plain = _fit(sample_tensors, tmp_path, feature_cache="off", max_epochs=6)
    assert cached.used_feature_cache and not plain.used_feature_cache
    assert cached.inference_dtype == CPU.inference_dtype
    assert plain.inference_dtype == torch.float32
    assert cached.best_epoch == plain.best_epoch
    assert cached.best_val_loss == pytest.approx(plain.best_val_loss, abs=0.02)
    for split in ("val", "test"):
        top_two = torch.softmax(_logits(plain, sample_tensors, split), dim=1).topk(2).values
        decided = top_two[:, 0] - top_two[:, 1] > 0.01
        assert decided.float().mean() > 0.5, f"{split}: too few images decided to compare"
        assert torch.equal(
            _predictions(cached, sample_tensors, split)[decided],
            _predictions(plain, sample_tensors, split)[decided],
        ), split


def test_last_blocks_train_on_cached_tokens(sample_tensors, tmp_path):
    result = _fit(sample_tensors, tmp_path, trainable_blocks=2, max_epochs=2)
    assert result.used_feature_cache
    trained = {n for n, p in result.net.named_parameters() if p.requires_grad}
    assert any("encoder_layer_3" in n for n in trained)
    assert not any("encoder_layer_1" in n for n in trained)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_matches_the_cpu_recipe(sample_tensors, tmp_path):
    gpu = TrainerDevice.resolve(
        DeviceSettings(accelerator="gpu", devices="1", precision="bf16-mixed")
    )
    on_gpu = _fit(sample_tensors, tmp_path, gpu, max_epochs=4)
    on_cpu = _fit(sample_tensors, tmp_path, CPU, max_epochs=4)
    assert on_gpu.used_feature_cache and on_gpu.inference_dtype == torch.bfloat16
    assert on_gpu.best_epoch == on_cpu.best_epoch
    assert on_gpu.best_val_loss == pytest.approx(on_cpu.best_val_loss, abs=0.05)
    agreement = _predictions(on_gpu, sample_tensors) == _predictions(on_cpu, sample_tensors)
    assert agreement.float().mean() >= 8 / 9


def test_two_process_ddp_caches_features_once_and_keeps_one_checkpoint(
    sample_tensors, tmp_path, monkeypatch
):
    """The frozen prefix runs once, in this process, before the workers start; only rank 0
    writes, so one best checkpoint and one metrics log come out, one row per epoch."""
    calls = []
    original = training.cached_feature_splits
    monkeypatch.setattr(
        training, "cached_feature_splits", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    ddp = TrainerDevice.resolve(DeviceSettings(accelerator="cpu", devices=2, strategy="ddp"))
    work = tmp_path / "ddp"
    work.mkdir()
    result = fit_classifier(sample_tensors, TINY.model_copy(update={"max_epochs": 2}), ddp, work)
    assert calls == [1]
    assert result.world_size == 2 and result.used_feature_cache
    assert result.history["epoch"].tolist() == [1, 2]
    assert len(list((work / "lightning").glob("*.ckpt"))) == 1
    assert len(list(work.rglob("metrics.csv"))) == 1
    single = _fit(sample_tensors, tmp_path, max_epochs=2)
    assert result.net.state_dict().keys() == single.net.state_dict().keys()


def test_two_process_validation_scores_each_val_image_once(sample_root, tmp_path):
    """With a val split that does not divide by the process count, the validation metrics are
    those of the val split, not of a split padded with repeats to share out evenly."""
    table = stratified_group_split(scan_folder(sample_root), FRACTIONS, seed=0).table
    table = table.drop(index=table.index[table["split"] == "val"][0])
    write_tensor_splits(table, sample_root, tmp_path / "odd", 32, split_fingerprint(table))
    tensors = TensorSplits.open(tmp_path / "odd")
    assert len(tensors.labels("val")) % 2 == 1
    ddp = TrainerDevice.resolve(DeviceSettings(accelerator="cpu", devices=2, strategy="ddp"))
    work = tmp_path / "ddp"
    work.mkdir()
    result = fit_classifier(tensors, TINY.model_copy(update={"max_epochs": 1}), ddp, work)
    labels = torch.from_numpy(tensors.labels("val"))
    accuracy = (result.val_logits.argmax(dim=1) == labels).float().mean().item()
    assert result.best_val_acc == pytest.approx(accuracy, abs=1e-6)
    loss = F.cross_entropy(result.val_logits, labels).item()
    assert result.best_val_loss == pytest.approx(loss, abs=1e-3)


def test_chunked_steps_on_cached_features_are_the_recipes_batch_steps(
    sample_tensors, tmp_path, monkeypatch
):
    """Several optimizer batches per Lightning batch change the bookkeeping, not the math:
    the same Adam steps on the same batches of 16 in the same order."""
    chunked = _fit(sample_tensors, tmp_path, max_epochs=3)
    monkeypatch.setattr(training, "CACHED_CHUNK", TINY.batch_size)
    one_by_one = _fit(sample_tensors, tmp_path, max_epochs=3)
    assert chunked.used_feature_cache and one_by_one.used_feature_cache
    torch.testing.assert_close(chunked.net.head.weight, one_by_one.net.head.weight)
    assert chunked.history["val_loss"].tolist() == pytest.approx(
        one_by_one.history["val_loss"].tolist()
    )


def test_long_epochs_report_progress_between_epoch_lines(sample_tensors, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "PROGRESS_EVERY_SECONDS", 0.0)
    lines: list[str] = []
    settings = TINY.model_copy(update={"max_epochs": 1, "feature_cache": "off"})
    fit_classifier(sample_tensors, settings, CPU, tmp_path, log=lines.append)
    batches = -(-len(sample_tensors.labels("train")) // settings.batch_size)
    progress = [line for line in lines if "batches in" in line]
    assert [line.split(" batches")[0] for line in progress] == [
        f"epoch 1/1: {done}/{batches}" for done in range(1, batches + 1)
    ]
    assert "val_loss" in lines[-1]


def test_training_leaves_no_optimizer_state_or_gradients_behind(sample_tensors, tmp_path):
    """Full fine-tuning: once fit_classifier returns, the LightningModule and its Adam state
    are freed (not left for a later full collection) and the returned network holds no
    gradients, so the next step does not carry training's memory."""

    def adam_states() -> set[int]:
        return {id(o) for o in gc.get_objects() if type(o) is torch.optim.Adam}

    gc.collect()
    before = adam_states()
    result = _fit(sample_tensors, tmp_path, trainable_blocks=-1, max_epochs=1)
    gc.disable()  # nothing but fit_classifier itself may have collected what it left
    try:
        assert adam_states() <= before
        assert not [o for o in gc.get_objects() if type(o) is BrainMRIClassifier]
    finally:
        gc.enable()
    assert all(parameter.grad is None for parameter in result.net.parameters())
