"""Leak-free stratified split: duplicate groups move together, so no test image is seen in
training, and the result depends only on the content and the seed, never on file order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class SplitConfigError(ValueError):
    """Fractions or data that cannot produce a split."""


@dataclass(frozen=True)
class SplitResult:
    table: pd.DataFrame
    """Usable images with `group` and `split` columns."""
    conflicts: pd.DataFrame
    """Images excluded because the same content carries different labels."""
    duplicate_groups: pd.DataFrame
    """Groups of more than one image: group, label, size, paths."""


def check_fractions(fractions: dict[str, float]) -> None:
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitConfigError(f"split fractions must sum to 1; got {fractions} (sum {total:g})")
    if min(fractions.values()) <= 0:
        raise SplitConfigError(
            "every fraction must be above 0: training needs val for early stopping, "
            "and the report needs test"
        )


def _hamming_neighbours(hex_hashes: pd.Series, max_distance: int) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose hashes differ in at most max_distance bits."""
    as_bytes = np.stack([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hex_hashes])
    pairs = []
    for start in range(0, len(as_bytes), 256):
        xor = as_bytes[start : start + 256, None, :] ^ as_bytes[None, :, :]
        distance = _POPCOUNT[xor].sum(axis=2, dtype=np.int32)
        rows, cols = np.nonzero(distance <= max_distance)
        rows += start
        keep = rows < cols
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    return pairs


def duplicate_groups(table: pd.DataFrame, near_duplicate_distance: int | None) -> np.ndarray:
    """Group id per row: identical bytes always join; near-identical pixels (perceptual
    hashes within near_duplicate_distance bits) join unless that is None."""
    parent = list(range(len(table)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)

    first_seen: dict[str, int] = {}
    for i, digest in enumerate(table["sha256"]):
        union(i, first_seen.setdefault(digest, i))
    if near_duplicate_distance is not None and len(table) > 1:
        for i, j in _hamming_neighbours(table["phash"], near_duplicate_distance):
            union(i, j)
    roots = np.array([find(i) for i in range(len(table))])
    # Name each group by its smallest member digest: stable whatever the file order.
    smallest = pd.Series(table["sha256"].to_numpy()).groupby(roots).transform("min")
    return ("g" + smallest.str[:16]).to_numpy()


def _targets(count: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of count * fraction."""
    raw = {name: count * fractions[name] for name in SPLITS}
    targets = {name: int(np.floor(value)) for name, value in raw.items()}
    by_remainder = sorted(SPLITS, key=lambda name: raw[name] - targets[name], reverse=True)
    for name in by_remainder[: count - sum(targets.values())]:
        targets[name] += 1
    return targets


def stratified_group_split(
    manifest: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    near_duplicate_distance: int | None = 6,
) -> SplitResult:
    """Split the `ok` rows of a manifest by class, whole duplicate groups at a time."""
    check_fractions(fractions)
    usable = manifest[manifest["status"] == "ok"]
    usable = usable.sort_values(["sha256", "path"], kind="stable").reset_index(drop=True)
    usable["group"] = duplicate_groups(usable, near_duplicate_distance)

    labels_per_group = usable.groupby("group")["label"].nunique()
    conflicting = labels_per_group[labels_per_group > 1].index
    conflicts = usable[usable["group"].isin(conflicting)].copy()
    kept = usable[~usable["group"].isin(conflicting)].copy()

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(kept["label"].unique()):
        sizes = kept[kept["label"] == label].groupby("group").size().sort_index()
        targets = _targets(int(sizes.sum()), fractions)
        filled = dict.fromkeys(SPLITS, 0)
        order = rng.permutation(len(sizes))
        for group, size in zip(sizes.index[order], sizes.to_numpy()[order], strict=True):
            split = max(
                SPLITS, key=lambda name: (targets[name] - filled[name]) / max(targets[name], 1)
            )
            assignment[group] = split
            filled[split] += int(size)
    kept["split"] = kept["group"].map(assignment)
    kept = kept.sort_values("path", kind="stable").reset_index(drop=True)
    kept.attrs["fractions"] = dict(fractions)  # stored in the parquet file for the checks

    sizes = kept.groupby("group")["path"].agg(["size", list])
    multi = sizes[sizes["size"] > 1]
    duplicates = pd.DataFrame(
        {
            "group": multi.index,
            "label": kept.groupby("group")["label"].first().loc[multi.index].to_numpy(),
            "split": kept.groupby("group")["split"].first().loc[multi.index].to_numpy(),
            "size": multi["size"].to_numpy(),
            "paths": multi["list"].to_numpy(),
        }
    )
    return SplitResult(table=kept, conflicts=conflicts, duplicate_groups=duplicates)


def split_fingerprint(table: pd.DataFrame) -> str:
    """Digest of which content went where: a checkpoint names the split it was trained on."""
    digest = hashlib.sha256()
    for row in table.sort_values(["split", "sha256", "path"]).itertuples():
        digest.update(f"{row.split}\t{row.sha256}\t{row.path}\n".encode())
    return digest.hexdigest()[:16]
