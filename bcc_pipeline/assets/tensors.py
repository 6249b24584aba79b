"""preprocessed_tensors: each split decoded and resized once, for training to memory-map."""

import time

import dagster as dg
import pandas as pd

from bcc_pipeline.assets.common import (
    GROUP,
    artifact_metadata,
    markdown_table,
    user_errors,
)
from bcc_pipeline.config import TensorsConfig
from bcc_pipeline.data.split import SPLITS, split_fingerprint
from bcc_pipeline.data.tensors import ImageChangedError, TensorSplits, write_tensor_splits
from bcc_pipeline.resources import ArtifactsResource, DatasetResource, LaunchChecksResource
from bcc_pipeline.storage import link_files, reused_or_filled

CODE_VERSION = "2"
"""Bump when the decoding logic changes: the UI then marks this asset and what follows stale,
and stored tensors of the old decoder are no longer reused."""


@dg.asset(
    group_name=GROUP,
    kinds={"numpy"},
    code_version=CODE_VERSION,
    description=(
        "Every split decoded once (JPEG draft mode, all cores), padded to square and resized "
        "with antialiasing: uint8 NCHW RGB arrays, labels and class names. Not normalised: "
        "the backbone's own statistics apply at training time. Each file's sha256 is checked "
        "against the split table first, so a file changed since the scan stops the run."
    ),
)
def preprocessed_tensors(
    context: dg.AssetExecutionContext,
    launch_checks: LaunchChecksResource,
    config: TensorsConfig,
    dataset: DatasetResource,
    artifacts: ArtifactsResource,
    stratified_split: str,
) -> dg.Output[str]:
    table = pd.read_parquet(stratified_split)
    fingerprint = split_fingerprint(table)
    # The same split, size and decoder give the same arrays: decode them once, ever.
    store = artifacts.store_dir("tensors") / f"{fingerprint}-{config.image_size}px-v{CODE_VERSION}"
    start = time.perf_counter()
    with user_errors(ImageChangedError):
        tensors, reused = reused_or_filled(
            store,
            lambda partial: write_tensor_splits(
                table, dataset.path, partial, config.image_size, fingerprint
            ),
            TensorSplits.open_whole,
            context.log.warning,
        )
    seconds = time.perf_counter() - start
    folder = artifacts.run_dir("preprocessed_tensors", context.run.run_id)
    link_files(store, folder)
    shapes = pd.DataFrame(
        [
            {"split": split, "shape": str(array.shape), "MiB": round(array.nbytes / 2**20, 1)}
            for split, array in ((split, tensors.images(split)) for split in SPLITS)
        ]
    )
    if reused:
        context.log.info(f"reused the tensors of {len(table)} images decoded by an earlier run")
    else:
        context.log.info(f"decoded {len(table)} images in {seconds:.1f}s")
    return dg.Output(
        str(folder),
        metadata={
            **artifact_metadata(folder),
            "shapes": markdown_table(shapes),
            "total_MiB": float(shapes["MiB"].sum()),
            "reused": reused,
            "seconds": round(seconds, 2),
            "images_per_second": round(len(table) / max(seconds, 1e-9), 1),
            "class_names": dg.MetadataValue.json(tensors.class_names),
            "image_size": config.image_size,
        },
    )
