"""Leak-free stratified split that holds still as the data grows.

Duplicate groups (identical bytes, or perceptual hashes within a few bits) move together, so no
test image is seen in training; the result depends only on the content and the seed, never on
file order. Given the previous assignment (content digest -> split and label), every image
already assigned keeps its split and only new content is placed: a new image joins the split of
the group it duplicates, is excluded when it would join groups in two splits, and otherwise
forms a new group placed so that each class's shares come back toward the fractions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bcc_pipeline.data.manifest import OK
from bcc_pipeline.data.near_duplicates import HASH_BITS, near_duplicate_pairs
from bcc_pipeline.errors import ConfigError

NEAR_DUPLICATE_DISTANCE = 6
"""Perceptual-hash bits within which two images are one group: re-encoded or rescaled copies
differ by 0-6 bits, distinct slices by 8 or more."""
IDENTICAL_ONLY = -1
"""near_duplicate_distance that groups byte-identical files only."""
SPLITS = ("train", "val", "test")
LEDGER_COLUMNS = ["sha256", "split", "label"]
CARRIED_OVER, JOINED_GROUP, NEW_GROUP = "carried_over", "joined_group", "new_group"
"""Values of the split table's `assignment` column: the content was assigned before; new
content that follows the split of a group it duplicates; new content placed as a new group."""
EXCLUDED = ("conflict", "bridging")
"""Decisions for new content that is left out: a label conflict, or duplicates in two splits."""


class SplitConfigError(ConfigError):
    """Fractions or data that cannot produce a split."""


@dataclass(frozen=True)
class SplitResult:
    table: pd.DataFrame
    """Usable images with `group`, `split` and `assignment` columns."""
    conflicts: pd.DataFrame
    """Images excluded because the same content carries different labels."""
    bridging: pd.DataFrame
    """New images excluded because they duplicate groups that sit in different splits."""
    duplicate_groups: pd.DataFrame
    """Groups of more than one image: group, label, split, size, paths."""
    ledger: pd.DataFrame
    """The previous assignment plus this one (sha256, split, label): the next run's input."""


def check_fractions(fractions: dict[str, float]) -> None:
    """Each fraction strictly between 0 and 1 (which NaN and infinity are not), summing to 1."""
    if not all(0 < value < 1 for value in fractions.values()):
        raise SplitConfigError(
            f"every fraction must be above 0 and below 1; got {fractions}: training needs val "
            "for early stopping, and the report needs test"
        )
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise SplitConfigError(f"split fractions must sum to 1; got {fractions} (sum {total:g})")


def _duplicate_edges(table: pd.DataFrame, near_duplicate_distance: int) -> np.ndarray:
    """(e, 2) row pairs that belong together: identical bytes, and near-identical pixels
    (perceptual hashes within near_duplicate_distance bits) unless that is IDENTICAL_ONLY."""
    edges = []
    identical_only = near_duplicate_distance == IDENTICAL_ONLY
    for column in ("sha256",) if identical_only else ("sha256", "phash"):
        codes, uniques = pd.factorize(table[column], sort=True)
        first_row = _first_rows(codes, len(uniques))
        edges.append(np.stack([np.arange(len(table)), first_row[codes]], axis=1))
        if column == "phash":
            pairs = near_duplicate_pairs(list(uniques), near_duplicate_distance)
            edges.append(first_row[pairs])
    return np.concatenate(edges)


def _first_rows(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """For each code 0..n_codes-1, the first row that holds it."""
    first_row = np.full(n_codes, len(codes))
    np.minimum.at(first_row, codes, np.arange(len(codes)))
    return first_row


def _components(count: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component id per row of a graph given by its edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def _group_names(sorted_digests: pd.Series, components: np.ndarray) -> np.ndarray:
    """Name each group by its smallest member digest: stable whatever the file order. The rows
    are sorted by digest, so a group's first row holds its smallest."""
    first_row = _first_rows(components, components.max(initial=-1) + 1)
    return ("g" + sorted_digests.str[:16]).to_numpy()[first_row[components]]


def _targets(count: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of count * fraction."""
    raw = {name: count * fractions[name] for name in SPLITS}
    targets = {name: int(np.floor(value)) for name, value in raw.items()}
    by_remainder = sorted(SPLITS, key=lambda name: raw[name] - targets[name], reverse=True)
    for name in by_remainder[: count - sum(targets.values())]:
        targets[name] += 1
    return targets


def _place_new_groups(kept: pd.DataFrame, fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Split per new group: per class, in seeded order, into the split furthest below its
    target, counting the images already placed, so shares come back toward the fractions."""
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(kept["label"].unique()):
        of_label = kept[kept["label"] == label]
        placed = of_label[of_label["split"].notna()]
        sizes = of_label[of_label["split"].isna()].groupby("group").size().sort_index()
        targets = _targets(len(of_label), fractions)
        filled = {name: int((placed["split"] == name).sum()) for name in SPLITS}
        order = rng.permutation(len(sizes))
        for group, size in zip(sizes.index[order], sizes.to_numpy()[order], strict=True):
            split = max(
                SPLITS, key=lambda name: (targets[name] - filled[name]) / max(targets[name], 1)
            )
            assignment[group] = split
            filled[split] += int(size)
    return assignment


def _previous_assignment(previous: pd.DataFrame | None) -> pd.DataFrame:
    if previous is None:
        return pd.DataFrame({column: pd.Series(dtype=str) for column in LEDGER_COLUMNS})
    return previous[LEDGER_COLUMNS]


def _decide_new_content(
    usable: pd.DataFrame, edges: np.ndarray, previous: pd.DataFrame
) -> pd.DataFrame:
    """Per row: `assignment` (carried_over, joined_group, new_group, or conflict / bridging
    for rows to exclude), the split it must take (none for a new group), and for bridging rows
    the splits it would join.

    A row is old when its content was assigned before under the same label; it keeps that
    split. New rows are decided per cluster (new rows connected through new rows) by what the
    cluster touches: the splits and labels of the old rows it duplicates, its own labels, and
    the split its content had under another label (a file moved to another class folder)."""
    known = previous.set_index("sha256").reindex(usable["sha256"].to_numpy())
    known_split = known["split"].to_numpy()
    labels = usable["label"].to_numpy()
    is_old = known["label"].to_numpy() == labels
    new_edges = edges[~is_old[edges[:, 0]] & ~is_old[edges[:, 1]]]
    cluster = np.where(is_old, -1, _components(len(usable), new_edges))
    crossing = edges[is_old[edges[:, 0]] != is_old[edges[:, 1]]]
    old_end = np.where(is_old[crossing[:, 0]], crossing[:, 0], crossing[:, 1])
    new_end = np.where(is_old[crossing[:, 0]], crossing[:, 1], crossing[:, 0])
    touches = pd.concat(
        [
            # the old rows a cluster duplicates: their splits and labels
            pd.DataFrame(
                {
                    "cluster": cluster[new_end],
                    "split": known_split[old_end],
                    "label": labels[old_end],
                }
            ),
            # its own rows: their labels, and the split their content had under another label
            pd.DataFrame(
                {
                    "cluster": cluster[~is_old],
                    "split": known_split[~is_old],
                    "label": labels[~is_old],
                }
            ),
        ]
    )
    per_cluster = touches.groupby("cluster").agg(
        labels=("label", "nunique"), splits=("split", "nunique"), split=("split", "first")
    )
    of_row = per_cluster.reindex(cluster)
    conflict = (of_row["labels"] > 1).to_numpy()
    bridging = ~conflict & (of_row["splits"] > 1).to_numpy()
    joined = ~conflict & (of_row["splits"] == 1).to_numpy()
    bridged = touches[touches["cluster"].isin(of_row.index[bridging]) & touches["split"].notna()]
    split_names = bridged.groupby("cluster")["split"].agg(lambda s: ", ".join(sorted(set(s))))
    return pd.DataFrame(
        {
            "assignment": np.select(
                [is_old, conflict, bridging, joined],
                [CARRIED_OVER, *EXCLUDED, JOINED_GROUP],
                NEW_GROUP,
            ),
            "split": np.where(is_old, known_split, np.where(joined, of_row["split"], None)),
            "bridged_splits": split_names.reindex(cluster).to_numpy(),
        }
    )


def stratified_group_split(
    manifest: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
    previous: pd.DataFrame | None = None,
) -> SplitResult:
    """Split the `ok` rows of a manifest by class, whole duplicate groups at a time, keeping
    the content listed in `previous` (sha256, split, label) where it was."""
    check_fractions(fractions)
    if not IDENTICAL_ONLY <= near_duplicate_distance < HASH_BITS:
        raise SplitConfigError(
            f"near_duplicate_distance must be -1 (identical files only) or 0 to "
            f"{HASH_BITS - 1} bits; got {near_duplicate_distance}"
        )
    previous = _previous_assignment(previous)
    usable = manifest[manifest["status"] == OK]
    usable = usable.sort_values(["sha256", "path"], kind="stable").reset_index(drop=True)
    edges = _duplicate_edges(usable, near_duplicate_distance)
    usable["group"] = _group_names(usable["sha256"], _components(len(usable), edges))
    decided = _decide_new_content(usable, edges, previous)
    usable["split"] = decided["split"]
    usable["assignment"] = decided["assignment"]

    keep = ~decided["assignment"].isin(EXCLUDED).to_numpy()
    kept = usable[keep].reset_index(drop=True)
    _check_every_class_kept(usable, kept)
    renumber = np.cumsum(keep) - 1
    kept_edges = renumber[edges[keep[edges[:, 0]] & keep[edges[:, 1]]]]
    kept["group"] = _group_names(kept["sha256"], _components(len(kept), kept_edges))
    new_group_split = _place_new_groups(kept, fractions, seed)
    kept["split"] = kept["split"].fillna(kept["group"].map(new_group_split)).astype(str)
    _check_groups_hold_together(kept)
    _check_no_split_is_empty(kept)

    kept = kept.sort_values("path", kind="stable").reset_index(drop=True)
    kept.attrs["fractions"] = dict(fractions)  # stored in the parquet file for the checks
    ledger = (
        pd.concat([previous, kept[LEDGER_COLUMNS]])
        .drop_duplicates("sha256", keep="last")
        .sort_values("sha256")
        .reset_index(drop=True)
    )
    conflict, bridging = (decided["assignment"] == name for name in EXCLUDED)
    return SplitResult(
        table=kept,
        conflicts=usable[conflict].drop(columns=["split", "assignment"]),
        bridging=usable.loc[bridging, ["path", "label", "sha256"]]
        .assign(splits=decided.loc[bridging, "bridged_splits"])
        .reset_index(drop=True),
        duplicate_groups=_duplicate_summary(kept),
        ledger=ledger,
    )


def _check_every_class_kept(usable: pd.DataFrame, kept: pd.DataFrame) -> None:
    """A class whose every image is left out (its content also lies in another class folder)
    would vanish from the model without a word."""
    lost = sorted(set(usable["label"]) - set(kept["label"]))
    if lost:
        rows = usable[usable["label"] == lost[0]]
        example = rows.iloc[0]
        others = sorted(set(usable.loc[usable["group"] == example["group"], "label"]) - {lost[0]})
        raise SplitConfigError(
            f"class {lost[0]!r} has no image left: each of its {len(rows)} images has the "
            f"content of an image of {', '.join(others)} too (e.g. {example['path']!r}), so "
            "its label is in doubt and it is left out. Were files copied into two class "
            "folders? Keep each image in one."
        )


def _check_groups_hold_together(kept: pd.DataFrame) -> None:
    """Earlier runs put near-duplicates in two splits only when one of them was absent (or
    hashed differently) when the other was assigned: say so instead of leaking."""
    splits_per_group = kept.groupby("group")["split"].nunique()
    broken = splits_per_group[splits_per_group > 1].index
    if len(broken):
        examples = kept.loc[kept["group"] == broken[0], ["path", "split"]].to_dict("records")
        raise SplitConfigError(
            f"{len(broken)} duplicate groups hold images that earlier runs assigned to different "
            f"splits, e.g. {examples} (one was absent, or hashed differently, when the other "
            "was assigned). Remove one image of each such group from the data folder, or "
            "start a fresh split on purpose with another seed."
        )


def _check_no_split_is_empty(kept: pd.DataFrame) -> None:
    """Each class is split on its own: many small classes can leave a split empty however many
    images there are in all, so the message names the smallest."""
    empty = [name for name in SPLITS if not (kept["split"] == name).any()]
    if empty:
        groups = kept.groupby("label")["group"].nunique().sort_values()
        smallest = ", ".join(f"{label} ({count})" for label, count in groups.head(3).items())
        raise SplitConfigError(
            f"{len(kept)} usable images leave the {', '.join(empty)} split empty: each class is "
            f"split on its own, whole duplicate groups at a time, and the smallest classes hold "
            f"few groups ({smallest}). Add images to them, or change the fractions"
        )


def _duplicate_summary(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per group of more than one image (few: listing every group would be slow)."""
    in_multi = kept.groupby("group")["path"].transform("size") > 1
    summary = (
        kept[in_multi]
        .groupby("group")
        .agg(
            label=("label", "first"),
            split=("split", "first"),
            size=("path", "size"),
            paths=("path", list),
        )
    )
    return summary.reset_index()


def split_fingerprint(table: pd.DataFrame) -> str:
    """Digest of which content went where: a checkpoint names the split it was trained on."""
    digest = hashlib.sha256()
    for row in table.sort_values(["split", "sha256", "path"]).itertuples():
        digest.update(f"{row.split}\t{row.sha256}\t{row.path}\n".encode())
    return digest.hexdigest()[:16]
