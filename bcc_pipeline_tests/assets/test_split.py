from pathlib import Path

import dagster as dg
import pandas as pd

from bcc_pipeline import checks
from bcc_pipeline.resources import QualityGatesResource
from bcc_pipeline.sample_data import KAGGLE_SUBDIR
from bcc_pipeline_tests.assets.conftest import (
    launch_failure,
    materialization,
    pipeline_assets,
    resources,
)
from bcc_pipeline_tests.growth import (
    SAMPLE_PER_CLASS,
    add_exact_copy,
    add_new_images,
    add_reencoded_copy,
    copy_sample,
    find_bridge,
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


BRIDGE_DISTANCE = 12
"""Near enough that a 50/50 blend of two sample images duplicates both, yet below the
closest distinct pair of the sample (24 bits): no old image is grouped with another."""


def _split_run(root: Path, artifacts: Path, **config) -> dict:
    """One run on a fresh (ephemeral) instance, as CI runs it without DAGSTER_HOME."""
    result = dg.materialize(
        pipeline_assets()[:2],
        resources=resources(root, artifacts),
        run_config=dg.RunConfig(ops={"stratified_split": {"config": config}}),
        instance=dg.DagsterInstance.ephemeral(),
    )
    return materialization(result, "stratified_split")


def test_grown_folder_keeps_every_old_image_in_its_split(sample_root, tmp_path):
    root, artifacts = copy_sample(sample_root, tmp_path / "data"), tmp_path / "artifacts"
    config = {"seed": 5, "near_duplicate_distance": BRIDGE_DISTANCE}
    first = _split_run(root, artifacts, **config)
    before = pd.read_parquet(first["artifact_path"])
    original = before.loc[before["split"] == "test", "path"].iloc[0]
    add_new_images(root, SAMPLE_PER_CLASS + 4)
    exact, reencoded = add_exact_copy(root, original), add_reencoded_copy(root, original)
    blend, train_or_val, test_or_val = find_bridge(root, before, BRIDGE_DISTANCE)
    bridge = (Path(train_or_val).parent / "bridge.png").as_posix()
    blend.save(root / bridge)

    second = _split_run(root, artifacts, **config)
    after = pd.read_parquet(second["artifact_path"]).set_index("path")
    assert after.loc[before["path"], "split"].tolist() == before["split"].tolist()
    assert (after.loc[[exact, reencoded], "split"] == "test").all()
    assert bridge not in after.index and bridge in second["excluded_new_images"]
    assert second["carried_over"] == 91, "90 old images and the exact copy of one"
    assert second["newly_assigned"] == 13, "12 new images and the re-encoded copy"
    assert (second["moved"], second["excluded_new"], second["split_redrawn"]) == (0, 1, False)
    assert second["ledger"] == first["ledger"]
    assert checks.no_leak_across_splits(second["artifact_path"]).passed
    assert checks.split_proportions_within_tolerance(
        second["artifact_path"], QualityGatesResource()
    ).passed


def test_changed_seed_is_reported_as_a_redraw(sample_root, tmp_path):
    _split_run(sample_root, tmp_path, seed=1)
    redrawn = _split_run(sample_root, tmp_path, seed=2)
    assert redrawn["split_redrawn"] and redrawn["moved"] > 0
    assert "RE-DRAWN" in redrawn["split_basis"] and redrawn["carried_over"] == 0


def test_damaged_ledger_fails_the_split_with_what_to_do(sample_root, tmp_path):
    first = _split_run(sample_root, tmp_path, seed=1)
    Path(first["ledger"]).write_text("damaged")
    result = dg.materialize(
        pipeline_assets()[:2],
        resources=resources(sample_root, tmp_path),
        run_config=dg.RunConfig(ops={"stratified_split": {"config": {"seed": 1}}}),
        raise_on_error=False,
    )
    message = result.failure_data_for_node("stratified_split").error.message
    assert "LedgerError" in message and "restore it from a backup" in message
