"""Retraining as CI runs it: `dagster job execute` on a throwaway instance each time, with
only the artifacts root carried from one run to the next."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bcc_pipeline.data.tensors import TensorSplits
from bcc_pipeline.ml.checkpoint import load_classifier
from bcc_pipeline.ml.network import predict_logits
from bcc_pipeline_tests.growth import SAMPLE_PER_CLASS, add_exact_copy, add_new_images, copy_sample

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _execute(tmp_path: Path, data: Path, artifacts: Path, floor: float, name: str):
    """One `dagster job execute -j training_job` with its own DAGSTER_HOME."""
    config = {
        "resources": {
            "dataset": {"config": {"data_dir": str(data)}},
            "artifacts": {"config": {"root": str(artifacts)}},
            "accelerator": {"config": {"accelerator": "cpu"}},
            "quality": {"config": {"accuracy_floor": floor}},
        },
        "ops": {
            "stratified_split": {"config": {"seed": 3}},
            "preprocessed_tensors": {"config": {"image_size": 32}},
            "vit_checkpoint": {
                "config": {"backbone": "vit_tiny", "weights": "none", "trainable_blocks": -1,
                           "max_epochs": 2, "batch_size": 16, "learning_rate": 0.001}
            },
        },
    }  # fmt: skip
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    home = tmp_path / f"dagster_home_{name}"
    home.mkdir()
    command = [DAGSTER, "job", "execute", "-m", "bcc_pipeline.definitions", "-j", "training_job"]
    return subprocess.run(
        [*command, "-c", str(config_file)],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _history(artifacts: Path) -> pd.DataFrame:
    return pd.read_csv(artifacts / "production_model" / "history.csv")


@pytest.mark.slow
def test_retraining_on_a_grown_folder_keeps_splits_and_compares_on_the_same_images(
    sample_root, tmp_path
):
    data, artifacts = copy_sample(sample_root, tmp_path / "data"), tmp_path / "artifacts"
    first = _execute(tmp_path, data, artifacts, floor=0.0, name="first")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    first_run = _history(artifacts)["run_id"].iloc[0]
    before = pd.read_parquet(artifacts / "stratified_split" / first_run / "split.parquet")
    add_new_images(data, SAMPLE_PER_CLASS + 4)
    add_exact_copy(data, before.loc[before["split"] == "test", "path"].iloc[0])

    second = _execute(tmp_path, data, artifacts, floor=0.0, name="second")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    history = _history(artifacts)
    assert history["promoted"].iloc[0] and history["reason"].iloc[0].startswith("first model")
    decision = history.iloc[1]
    after = pd.read_parquet(artifacts / "stratified_split" / decision["run_id"] / "split.parquet")
    assert len(after) == len(before) + 13
    old = after.set_index("path").loc[before["path"], "split"]
    assert old.tolist() == before["split"].tolist(), "no image changed split"

    # Both accuracies are of the second run's whole test split: the first model trained on
    # none of it. Score the first model there independently.
    tensors = TensorSplits.open(artifacts / "preprocessed_tensors" / decision["run_id"])
    assert decision["n_compared"] == len(tensors.labels("test")) == decision["n_test"]
    assert decision["dropped_seen_by_champion"] == 0
    champion, _ = load_classifier(artifacts / "vit_checkpoint" / first_run / "model.pt")
    logits = predict_logits(champion, tensors.images("test"), torch.device("cpu"))
    labels = torch.from_numpy(tensors.labels("test"))
    champion_accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
    assert decision["champion_accuracy"] == pytest.approx(champion_accuracy)
    assert decision["challenger_accuracy"] == pytest.approx(decision["challenger_test_accuracy"])


@pytest.mark.slow
def test_a_model_below_the_floor_fails_the_cli_run_after_the_refusal_is_recorded(
    sample_root, tmp_path
):
    artifacts = tmp_path / "artifacts"
    run = _execute(tmp_path, sample_root, artifacts, floor=1.0, name="strict")
    assert run.returncode != 0
    assert "accuracy_meets_floor" in run.stdout + run.stderr
    refusal = _history(artifacts).iloc[-1]
    assert not refusal["promoted"] and "below the floor 1.0000" in refusal["reason"]
    assert not (artifacts / "production_model" / "current.json").exists()
