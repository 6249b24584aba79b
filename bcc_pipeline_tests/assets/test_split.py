import dagster as dg
import pandas as pd

from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.assets.conftest import (
    launch_failure,
    materialization,
    pipeline_assets,
    resources,
)


def test_split_leaves_duplicates_together_and_reports_them(messy_root, tmp_path):
    root, _ = messy_root
    tumour = root / KAGGLE_SUBDIR / "brain_tumor"
    for image in sorted(tumour.glob("brain_tumor_000*.jpg"))[:5]:
        (tumour / f"{image.stem} - Copy.jpg").write_bytes(image.read_bytes())
    result = dg.materialize(
        pipeline_assets()[:2],
        resources=resources(root, tmp_path),
        run_config=dg.RunConfig(ops={"stratified_split": {"config": {"seed": 5}}}),
    )
    metadata = materialization(result, "stratified_split")
    table = pd.read_parquet(metadata["artifact_path"])
    assert table.groupby("group")["split"].nunique().max() == 1
    assert metadata["duplicate_groups"] >= 5
    assert {"path", "label", "sha256", "group", "split"} <= set(table.columns)
    manifest = pd.read_parquet(materialization(result, "raw_image_manifest")["artifact_path"])
    assert metadata["dagster/row_count"] == len(table) == (manifest["status"] == "ok").sum()


def test_fractions_that_do_not_sum_to_one_stop_the_run_at_launch(sample_root, tmp_path):
    result = dg.materialize(
        pipeline_assets()[:2],
        resources=resources(sample_root, tmp_path),
        run_config=dg.RunConfig(
            ops={"stratified_split": {"config": {"train_fraction": 0.8, "val_fraction": 0.2}}}
        ),
        raise_on_error=False,
    )
    message = launch_failure(result)
    assert "ops.stratified_split.config: split fractions must sum to 1" in message
