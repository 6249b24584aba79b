"""Pairs of perceptual hashes within a few bits of each other, in about linear time.

Comparing every pair costs the square of the dataset (100k images: 5e9 comparisons). This uses
multi-index hashing instead: cut the 256 bits into max_distance + 1 chunks. Two hashes that
differ in at most max_distance bits cannot differ in every chunk (pigeonhole), so they agree
exactly on at least one. Candidates therefore come from images sharing a chunk value (one sort
per chunk), and only candidates get their full distance checked. The result is exactly the
all-pairs answer; the cost grows with the images plus the candidate pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HASH_BITS = 256
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def packed_hashes(hex_hashes: Sequence[str]) -> np.ndarray:
    """(n, 32) uint8 rows of 256-bit hashes given as hex."""
    lengths = {len(h) for h in hex_hashes}
    if lengths - {HASH_BITS // 4}:
        raise ValueError(f"perceptual hashes must be {HASH_BITS // 4} hex digits; got {lengths}")
    data = bytes.fromhex("".join(hex_hashes))
    return np.frombuffer(data, dtype=np.uint8).reshape(len(hex_hashes), HASH_BITS // 8)


def hamming_distances(packed: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Bits in which rows left[k] and right[k] of `packed` differ."""
    return _POPCOUNT[packed[left] ^ packed[right]].sum(axis=1, dtype=np.int32)


def _chunk_keys(packed: np.ndarray, low: int, high: int) -> np.ndarray:
    """Bucket id per row for bits [low, high): equal ids exactly when those bits are equal."""
    first_byte, last_byte = low // 8, (high - 1) // 8 + 1
    bits = np.unpackbits(packed[:, first_byte:last_byte], axis=1)
    chunk = np.packbits(bits[:, low - 8 * first_byte : high - 8 * first_byte], axis=1)
    width = -(-chunk.shape[1] // 8) * 8
    padded = np.zeros((len(chunk), width), dtype=np.uint8)
    padded[:, : chunk.shape[1]] = chunk
    words = padded.view(np.uint64)
    if words.shape[1] == 1:
        return np.unique(words[:, 0], return_inverse=True)[1]
    return np.unique(words, axis=0, return_inverse=True)[1].ravel()


def _pairs_sharing_a_key(keys: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every pair of rows with equal keys, in batches of (left, right) index arrays. Batch k
    pairs each row with the row k places later in its bucket, so no batch is larger than n."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    rank = np.arange(len(keys)) - np.repeat(starts, sizes)
    bucket_size = np.repeat(sizes, sizes)
    batches = []
    offset = 1
    active = np.flatnonzero(rank + offset < bucket_size)
    while active.size:
        batches.append((order[active], order[active + offset]))
        offset += 1
        active = active[rank[active] + offset < bucket_size[active]]
    return batches


def near_duplicate_pairs(hex_hashes: Sequence[str], max_distance: int) -> np.ndarray:
    """(p, 2) array of index pairs (i < j, sorted) whose hashes differ in at most max_distance
    bits: the same pairs as comparing all of them."""
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {HASH_BITS - 1}]; got {max_distance}")
    packed = packed_hashes(hex_hashes)
    edges = np.linspace(0, HASH_BITS, max_distance + 2).round().astype(int)
    found = [np.empty((0, 2), dtype=np.int64)]
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        for left, right in _pairs_sharing_a_key(_chunk_keys(packed, low, high)):
            close = hamming_distances(packed, left, right) <= max_distance
            pair = np.stack([left[close], right[close]], axis=1).astype(np.int64)
            found.append(np.sort(pair, axis=1))
    return np.unique(np.concatenate(found), axis=0)
