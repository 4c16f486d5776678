"""launch.data.stream: exact duplicates found at 16 bytes a story."""

import hashlib

import numpy as np

from launch.data.stream import DigestSet


def test_digest_set_finds_duplicates_within_and_across_batches():
    digests = np.frombuffer(
        b"".join(hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(3000)), dtype="V16"
    )
    seen = DigestSet()
    firsts = [seen.add_new(digests[a : a + 100]) for a in range(0, 2000, 100)]  # 20 batches, merged into runs
    assert all(f.all() for f in firsts) and len(seen.runs) < 20
    again = seen.add_new(np.concatenate([digests[1990:2010], digests[2005:2006]]))
    assert again.tolist() == [False] * 10 + [True] * 10 + [False]  # seen before, new, repeated within the batch


def test_a_batch_with_nothing_new_adds_no_empty_run():
    digests = np.frombuffer(
        b"".join(hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(8)), "V16"
    )
    seen = DigestSet()
    assert seen.add_new(digests).all()
    assert not seen.add_new(digests[:3]).any()  # every one seen before
    assert not seen.add_new(digests[:0]).any() and all(len(run) for run in seen.runs)
    assert seen.contains(digests).all()
