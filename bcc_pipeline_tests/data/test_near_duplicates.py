import numpy as np
import pytest

from bcc_pipeline.data.near_duplicates import HASH_BITS, near_duplicate_pairs, packed_hashes

POPCOUNT = np.array([bin(i).count("1") for i in range(256)])


def all_pairs(hashes: list[str], max_distance: int) -> np.ndarray:
    """The reference: compare every pair."""
    packed = packed_hashes(hashes)
    distance = POPCOUNT[packed[:, None, :] ^ packed[None, :, :]].sum(axis=2)
    rows, cols = np.nonzero(np.triu(distance <= max_distance, k=1))
    return np.stack([rows, cols], axis=1)


def as_hex(bits: np.ndarray) -> list[str]:
    return [bytes(row).hex() for row in np.packbits(bits.astype(np.uint8), axis=1)]


def clustered_hashes(seed: int, clusters: int = 30, per_cluster: int = 6) -> list[str]:
    """Hashes around random centres at 0 to 20 bits, with repeats: every distance a
    near-duplicate search has to get right, not just far-apart random ones."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (clusters, HASH_BITS))
    rows = []
    for centre in centres:
        for _ in range(per_cluster):
            row = centre.copy()
            row[rng.choice(HASH_BITS, rng.integers(0, 21), replace=False)] ^= 1
            rows.append(row)
    rows += rows[:5]  # identical hashes
    return as_hex(np.array(rows)[rng.permutation(len(rows))])


@pytest.mark.parametrize("max_distance", [0, 1, 2, 6, 13, 40, 127])
@pytest.mark.parametrize("seed", range(4))
def test_pairs_are_exactly_the_all_pairs_answer(max_distance, seed):
    hashes = clustered_hashes(seed)
    expected = all_pairs(hashes, max_distance)
    np.testing.assert_array_equal(near_duplicate_pairs(hashes, max_distance), expected)
    assert max_distance < 6 or len(expected) > 0, "the data must hold pairs to find"


@pytest.mark.parametrize("max_distance", [0, 1, 5, 6, 31])
def test_pairs_that_differ_in_every_chunk_but_one_are_found(max_distance):
    """The pigeonhole edge: one differing bit in each of max_distance chunks leaves exactly
    one chunk equal; one bit in every chunk (max_distance + 1 bits) is out of reach anyway."""
    edges = np.linspace(0, HASH_BITS, max_distance + 2).round().astype(int)
    base = np.zeros(HASH_BITS, dtype=np.uint8)
    at_limit, beyond = base.copy(), base.copy()
    at_limit[edges[1:-1] - 1] = 1  # the last bit of every chunk but the last one
    beyond[edges[:-1]] = 1  # the first bit of every chunk
    for other in (at_limit, beyond):
        hashes = as_hex(np.stack([base, other]))
        np.testing.assert_array_equal(
            near_duplicate_pairs(hashes, max_distance), all_pairs(hashes, max_distance)
        )
    assert len(near_duplicate_pairs(as_hex(np.stack([base, at_limit])), max_distance)) == 1


def test_many_hashes_sharing_a_chunk_are_checked_in_full():
    """Adversarial buckets: 300 hashes equal on every chunk but one bit each elsewhere."""
    rng = np.random.default_rng(0)
    rows = np.zeros((300, HASH_BITS), dtype=np.uint8)
    rows[np.arange(300), rng.integers(0, HASH_BITS, 300)] = 1
    rows[::3] ^= rng.integers(0, 2, (100, HASH_BITS)).astype(np.uint8)
    hashes = as_hex(rows)
    for max_distance in (1, 2, 6):
        np.testing.assert_array_equal(
            near_duplicate_pairs(hashes, max_distance), all_pairs(hashes, max_distance)
        )


def test_no_hashes_and_one_hash_have_no_pairs():
    assert near_duplicate_pairs([], 6).shape == (0, 2)
    assert near_duplicate_pairs(["0" * 64], 6).shape == (0, 2)


@pytest.mark.parametrize(
    ("hashes", "max_distance", "message"),
    [
        (["abc"], 6, "64 hex digits"),
        (["0" * 64], HASH_BITS, "max_distance"),
        (["0" * 64], -1, "max_distance"),
    ],
)
def test_bad_input_is_a_clear_error(hashes, max_distance, message):
    with pytest.raises(ValueError, match=message):
        near_duplicate_pairs(hashes, max_distance)
