"""A data folder that grows between two runs, as a retraining user's folder does."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bcc_pipeline.data.images import perceptual_hash
from bcc_pipeline.data.near_duplicates import hamming_distances, packed_hashes
from bcc_pipeline.sample_data import generate_sample_dataset

SAMPLE_PER_CLASS, SAMPLE_SIZE, SAMPLE_SEED = 30, 128, 1
"""How conftest's sample_root is generated; a larger per_class extends it by new images."""


def copy_sample(sample_root: Path, to: Path) -> Path:
    shutil.copytree(sample_root, to)
    return to


def add_new_images(root: Path, per_class: int) -> None:
    """Grow the sample to per_class images per class: the old files stay byte-identical."""
    generate_sample_dataset(root, per_class=per_class, size=SAMPLE_SIZE, seed=SAMPLE_SEED)


def add_exact_copy(root: Path, relative: str) -> str:
    """A byte-identical '... - Copy.jpg', as in the Kaggle download."""
    source = root / relative
    copy = source.with_name(f"{source.stem} - Copy{source.suffix}")
    copy.write_bytes(source.read_bytes())
    return copy.relative_to(root).as_posix()


def add_reencoded_copy(root: Path, relative: str) -> str:
    """The same picture, smaller and recompressed: other bytes, a hash a few bits away."""
    source = root / relative
    copy = source.with_name(f"{source.stem}_reencoded.jpg")
    Image.open(source).resize((120, 120)).save(copy, quality=60)
    return copy.relative_to(root).as_posix()


def find_bridge(
    root: Path, split_table: pd.DataFrame, max_distance: int
) -> tuple[Image.Image, str, str]:
    """A blend of two images of one class in different splits whose hash lies within
    max_distance bits of both and of nothing else: a new image that duplicates both.
    Returns the blend and the two paths."""
    table = split_table.reset_index(drop=True)
    packed = packed_hashes(list(table["phash"]))
    rows = np.arange(len(table))
    for first in table.itertuples():
        others = table[(table["label"] == first.label) & (table["split"] != first.split)]
        for second in others.itertuples():
            blend = Image.blend(
                Image.open(root / first.path).convert("L"),
                Image.open(root / second.path).convert("L"),
                0.5,
            )
            with_blend = np.vstack([packed, packed_hashes([perceptual_hash(blend)])])
            distances = hamming_distances(with_blend, rows, np.full(len(table), len(table)))
            if set(table["path"][distances <= max_distance]) == {first.path, second.path}:
                return blend, first.path, second.path
    raise AssertionError(f"no blend of two images bridges two splits within {max_distance} bits")
