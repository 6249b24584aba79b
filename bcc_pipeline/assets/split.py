"""stratified_split: train/val/test by class, duplicate groups kept on one side, and every
image kept in the split it had when the folder grows."""

import dagster as dg
import pandas as pd

from bcc_pipeline.assets.common import GROUP, artifact_metadata, markdown_table, user_errors
from bcc_pipeline.config import SplitConfig
from bcc_pipeline.data.split import (
    SPLITS,
    SplitConfigError,
    split_fingerprint,
)
from bcc_pipeline.data.split_ledger import LedgerError, split_with_ledger
from bcc_pipeline.resources import ArtifactsResource, LaunchChecksResource
from bcc_pipeline.storage import write_parquet

SPLIT_FILE = "split.parquet"
LEDGER_FOLDER = "ledger"
"""Under artifacts/stratified_split/: the assignment every later run keeps."""
CODE_VERSION = "1"
"""Bump when the split logic changes: the UI then marks this asset and what follows stale."""


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    code_version=CODE_VERSION,
    description=(
        "Usable images with a train/val/test split: seeded, stratified by class, with exact "
        "and near-duplicate groups never crossing splits and conflicting labels excluded. "
        "With the same settings, images split before keep their split as the folder grows "
        "(ledger under artifacts/stratified_split/ledger/); only new images are assigned."
    ),
)
def stratified_split(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    config: SplitConfig,
    artifacts: ArtifactsResource,
    raw_image_manifest: str,
) -> dg.Output[str]:
    manifest = pd.read_parquet(raw_image_manifest)
    with user_errors(SplitConfigError, LedgerError):
        split = split_with_ledger(
            manifest,
            config.fractions,
            config.seed,
            config.near_duplicate_distance,
            artifacts.path / "stratified_split" / LEDGER_FOLDER,
            context.run.run_id,
        )
    result = split.result
    table = result.table
    path = artifacts.run_dir("stratified_split", context.run.run_id) / SPLIT_FILE
    write_parquet(path, table)
    if split.redrawn:
        context.log.warning(split.basis)
    if not result.conflicts.empty:
        context.log.warning(
            f"excluded {len(result.conflicts)} images whose content carries different labels"
        )
    if not result.bridging.empty:
        context.log.warning(
            f"excluded {len(result.bridging)} new images that duplicate groups in different "
            "splits: including them would leak one split into another"
        )
    counts = pd.crosstab(table["label"], table["split"]).reindex(columns=list(SPLITS), fill_value=0)
    context.log.info(
        f"split {len(table)} images ({split.carried_over} carried over, "
        f"{split.newly_assigned} newly assigned):\n{counts.to_string()}"
    )
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            "dagster/row_count": len(table),
            "counts": markdown_table(counts.reset_index()),
            "carried_over": split.carried_over,
            "newly_assigned": split.newly_assigned,
            "moved": split.moved,
            "excluded_new": len(result.bridging),
            "excluded_new_images": markdown_table(result.bridging),
            "split_redrawn": split.redrawn,
            "split_basis": split.basis,
            "ledger": dg.MetadataValue.path(str(split.ledger_path)),
            "duplicate_groups": len(result.duplicate_groups),
            "images_in_duplicate_groups": int(result.duplicate_groups["size"].sum()),
            "duplicates": markdown_table(result.duplicate_groups),
            "conflicting_label_images": len(result.conflicts),
            "conflicts": markdown_table(result.conflicts[["path", "label", "group"]]),
            "split_fingerprint": split_fingerprint(table),
            "seed": config.seed,
        },
    )
