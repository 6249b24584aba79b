import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcc_pipeline.data.split import SPLITS
from bcc_pipeline_tests.assets.conftest import materialization

# The shared pipeline run trains a model.
pytestmark = pytest.mark.slow


def test_tensors_asset_writes_memory_mappable_splits(pipeline_run):
    result, artifacts_root = pipeline_run.result, pipeline_run.artifacts_root
    metadata = materialization(result, "preprocessed_tensors")
    folder = Path(metadata["artifact_path"])
    assert folder.parent == artifacts_root / "preprocessed_tensors"
    meta = json.loads((folder / "meta.json").read_text())
    images = np.load(folder / "train_images.npy", mmap_mode="r")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert meta["splits"]["train"]["count"] == len(images)
    assert metadata["image_size"] == 32
    split = pd.read_parquet(materialization(result, "stratified_split")["artifact_path"])
    assert sum(meta["splits"][name]["count"] for name in SPLITS) == len(split)
    assert metadata["class_names"] == sorted(split["label"].unique())
