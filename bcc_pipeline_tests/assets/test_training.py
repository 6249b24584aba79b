import dagster as dg
import torch

from bcc_pipeline.resources import AcceleratorResource
from bcc_pipeline_tests.assets.conftest import (
    materialization,
    pipeline_assets,
    resources,
    tiny_run_config,
)


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
    assert metadata["images_per_second"] > 0
    assert "data:image/png;base64," in metadata["training_curves"]


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


def test_unavailable_gpu_fails_before_training(sample_root, tmp_path):
    if torch.cuda.is_available():
        return
    assets = pipeline_assets()
    res = resources(sample_root, tmp_path)
    res["accelerator"] = AcceleratorResource(accelerator="gpu")
    result = dg.materialize(
        assets[:4], resources=res, run_config=tiny_run_config(), raise_on_error=False
    )
    message = result.failure_data_for_node("vit_checkpoint").error.message
    assert "no CUDA GPU" in message and "Available: cpu" in message


def test_bad_backbone_config_is_a_clear_failure(sample_root, tmp_path):
    result = dg.materialize(
        pipeline_assets()[:4],
        resources=resources(sample_root, tmp_path),
        run_config=tiny_run_config(backbone="vit_b_16", weights="DEFAULT"),
        raise_on_error=False,
    )
    message = result.failure_data_for_node("vit_checkpoint").error.message
    assert "needs image_size 224" in message
