"""raw_image_manifest: every file under the data folder, usable or rejected with a reason."""

import time

import dagster as dg

from bcc_pipeline.assets.common import GROUP, artifact_metadata, markdown_table, user_errors
from bcc_pipeline.data.manifest import (
    OK,
    OUTSIDE_CLASS_FOLDERS,
    DataFolderError,
    require_usable,
    scan_folder,
)
from bcc_pipeline.resources import ArtifactsResource, DatasetResource, LaunchChecksResource
from bcc_pipeline.storage import UnwritableDirError, remove_stale_temp_files, write_parquet

MANIFEST_FILE = "manifest.parquet"
LIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
CODE_VERSION = "2"
"""Bump when the scan logic changes: the UI then marks this asset and what follows stale."""


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    code_version=CODE_VERSION,
    description=(
        "One row per regular file under the data folder: path, class, sha256, size, image "
        "format and mode, and a status (ok, or why it was rejected). Nothing is skipped."
    ),
)
def raw_image_manifest(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    dataset: DatasetResource,
    artifacts: ArtifactsResource,
) -> dg.Output[str]:
    with user_errors(UnwritableDirError):
        path = artifacts.run_dir("raw_image_manifest", context.run.run_id) / MANIFEST_FILE
    live_runs = context.instance.get_run_ids(dg.RunsFilter(statuses=LIVE_RUN_STATUSES))
    stale = remove_stale_temp_files(artifacts.path, artifacts.stale_temp_hours * 3600, live_runs)
    if stale:
        context.log.info(f"removed {len(stale)} temp files of killed runs: {list(map(str, stale))}")
    start = time.perf_counter()
    with user_errors(DataFolderError):
        manifest = scan_folder(
            dataset.path,
            max_file_bytes=dataset.max_file_bytes,
            class_folders=dataset.class_folders,
        )
        require_usable(manifest, dataset.path)
    seconds = time.perf_counter() - start
    write_parquet(path, manifest)

    by_status = manifest["status"].value_counts()
    usable = manifest[manifest["status"] == OK]
    rejected = manifest[manifest["status"] != OK]
    outside = manifest[manifest["status"] == OUTSIDE_CLASS_FOLDERS]
    context.log.info(f"scanned {len(manifest)} files in {seconds:.1f}s: {by_status.to_dict()}")
    if not outside.empty:
        context.log.warning(
            f"{len(outside)} images sit outside the class folders "
            f"({', '.join(sorted(usable['label'].unique()))}) and are not used, e.g. "
            f"{outside['path'].tolist()[:5]}; move them, or set dataset class_folders"
        )
    per_class = usable.groupby("label").size().rename("images").reset_index()
    return dg.Output(
        str(path),
        metadata={
            **artifact_metadata(path),
            "dagster/row_count": len(manifest),
            "usable_images": int(len(usable)),
            "rejected_files": int(len(rejected)),
            "outside_class_folders": int(len(outside)),
            "stale_temp_files_removed": len(stale),
            "images_per_class": markdown_table(per_class),
            "files_per_status": markdown_table(by_status.rename("files").reset_index()),
            "rejected": markdown_table(rejected[["path", "status", "error"]]),
            "preview": markdown_table(manifest[["path", "label", "status", "width", "height"]], 10),
            "data_dir": dg.MetadataValue.path(str(dataset.path.resolve())),
            "scan_seconds": round(seconds, 2),
        },
    )
