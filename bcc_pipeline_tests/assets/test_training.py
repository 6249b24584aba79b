from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch

from bcc_pipeline import garbage
from bcc_pipeline.assets.training import vit_checkpoint
from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.calibration import fit_temperature
from bcc_pipeline.ml.checkpoint import load_classifier, stored_inference_dtype
from bcc_pipeline.ml.network import predict_logits
from bcc_pipeline_tests.assets.conftest import materialization, resources, tiny_run_config

# The shared pipeline run trains a model.
pytestmark = pytest.mark.slow


def test_checkpoint_asset_is_plain_data_with_metadata(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "vit_checkpoint")
    payload = torch.load(metadata["artifact_path"], weights_only=True)
    assert payload["class_names"] == ["brain_glioma", "brain_menin", "brain_tumor"]
    assert payload["training"]["backbone"] == "vit_tiny"
    assert (
        payload["split_fingerprint"]
        == materialization(result, "stratified_split")["split_fingerprint"]
    )
    assert metadata["epochs_run"] == 2
    assert metadata["world_size"] == 1
    # The whole backbone trains (trainable_blocks -1): nothing to cache, evaluated in float32.
    assert not metadata["used_feature_cache"]
    assert payload["inference_dtype"] == metadata["inference_dtype"] == "float32"
    assert "data:image/png;base64," in metadata["training_curves"]


def test_epochs_are_numbered_from_one_everywhere(pipeline_run):
    metadata = materialization(pipeline_run.result, "vit_checkpoint")
    history = pd.read_csv(Path(metadata["artifact_path"]).parent / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert metadata["best_epoch"] == best
    assert metadata["history"].splitlines()[2].startswith("|       1 |")


def test_epoch_progress_reaches_the_run_log(pipeline_run):
    result = pipeline_run.result
    messages = [
        entry.user_message
        for entry in pipeline_run.instance.all_logs(result.run_id)
        if entry.step_key == "vit_checkpoint"
    ]
    epoch_lines = [m for m in messages if m.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert "val_loss" in epoch_lines[0] and "train_acc" in epoch_lines[0]


def test_temperature_is_fitted_on_the_best_models_val_logits(pipeline_run):
    result = pipeline_run.result
    metadata = materialization(result, "vit_checkpoint")
    net, payload = load_classifier(metadata["artifact_path"])
    tensors = TensorSplits.open(materialization(result, "preprocessed_tensors")["artifact_path"])
    logits = predict_logits(
        net, tensors.images("val"), torch.device("cpu"), stored_inference_dtype(payload)
    )
    expected = fit_temperature(logits, torch.from_numpy(tensors.labels("val")))
    assert isinstance(payload["temperature"], float)
    # Fitted on the logits validation computed from the cached float16 features; the whole
    # model in the stored precision gives nearly the same ones.
    assert payload["temperature"] == pytest.approx(expected, rel=0.02)
    assert metadata["temperature"] == round(payload["temperature"], 4)


def test_a_retrain_on_the_same_tensors_reads_the_stored_features_back(pipeline_run, tmp_path):
    tensors = materialization(pipeline_run.result, "preprocessed_tensors")["artifact_path"]

    @dg.asset(name="preprocessed_tensors")
    def same_tensors() -> str:
        return tensors

    runs = [
        dg.materialize(
            [same_tensors, vit_checkpoint],
            resources=resources(Path("."), tmp_path),
            run_config=dg.RunConfig(
                ops={"vit_checkpoint": tiny_run_config(trainable_blocks=0).ops["vit_checkpoint"]}
            ),
        )
        for _ in range(2)
    ]
    first, second = (materialization(run, "vit_checkpoint") for run in runs)
    assert first["used_feature_cache"] and not first["reused_features"]
    assert second["reused_features"]
    assert second["best_val_loss"] == first["best_val_loss"]
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 1


def test_training_imports_its_stack_frozen(pipeline_run, tmp_path, monkeypatch):
    """Lightning, torchmetrics and scipy are imported with collection paused, then frozen (see
    garbage.import_frozen), where the step imports them."""
    imported = []
    monkeypatch.setattr(garbage, "import_frozen", lambda *names: imported.append(names))
    tensors = materialization(pipeline_run.result, "preprocessed_tensors")["artifact_path"]

    @dg.asset(name="preprocessed_tensors")
    def same_tensors() -> str:
        return tensors

    result = dg.materialize(
        [same_tensors, vit_checkpoint],
        resources=resources(Path("."), tmp_path),
        run_config=dg.RunConfig(
            ops={"vit_checkpoint": tiny_run_config(max_epochs=1).ops["vit_checkpoint"]}
        ),
    )
    assert result.success
    assert ("bcc_pipeline.ml.trained_checkpoint",) in imported
