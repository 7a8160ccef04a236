"""The tuning split: held-out training identities as query/gallery, never the test split."""

from __future__ import annotations

import dataclasses

import pytest

from ftn_core.data.holdout import _pick_queries, holdout_split
from ftn_core.data.types import DatasetSplits, Sample
from ftn_core.errors import FTNError


def _samples(pid: int, cams: dict[int, int]) -> list[Sample]:
    """``cams`` = {camera: number of images} for one identity; paths sort by camera then index."""
    return [
        Sample(f"p{pid:02d}_c{cam}_{i}.jpg", pid, cam, f"m{pid:02d}_c{cam}_{i}.png")
        for cam, n in cams.items()
        for i in range(n)
    ]


def _splits(layout: dict[int, dict[int, int]]) -> DatasetSplits:
    train = [s for pid, cams in layout.items() for s in _samples(pid, cams)]
    test = [Sample("q.jpg", 100, 0)]
    return DatasetSplits("toy", "/data/toy", train, test, test)


def _cross_camera_match(query: list[Sample], gallery: list[Sample]) -> bool:
    return all(any(g.pid == q.pid and g.camid != q.camid for g in gallery) for q in query)


@pytest.mark.parametrize(
    "cams,query_cams,expect_query,expect_gallery",
    [
        # Two cameras, one image each: one query; the other image is its only match.
        ({0: 1, 1: 1}, 2, ["c0_0"], ["c1_0"]),
        # A second query from camera 1 would leave camera 0's query without a match.
        ({0: 2, 1: 1}, 2, ["c0_0"], ["c0_1", "c1_0"]),
        # The two cameras with the most images give the queries (camera 2 has the fewest).
        ({2: 1, 0: 3, 1: 2}, 2, ["c0_0", "c1_0"], ["c0_1", "c0_2", "c1_1", "c2_0"]),
        # Three cameras of one image, three allowed: the third query would leave none a match.
        ({0: 1, 1: 1, 2: 1}, 3, ["c0_0", "c1_0"], ["c2_0"]),
        ({0: 2, 1: 2, 2: 2}, 1, ["c0_0"], ["c0_1", "c1_0", "c1_1", "c2_0", "c2_1"]),
        # One camera only: no query can have a cross-camera match; all images are gallery.
        ({3: 4}, 2, [], ["c3_0", "c3_1", "c3_2", "c3_3"]),
    ],
)
def test_queries_per_identity_by_hand(cams, query_cams, expect_query, expect_gallery):
    samples = _samples(7, cams)
    query = _pick_queries(samples, query_cams)
    gallery = [s for s in samples if s not in query]
    assert [s.path[4:-4] for s in query] == expect_query
    assert sorted(s.path[4:-4] for s in gallery) == expect_gallery
    assert _cross_camera_match(query, gallery)


def test_holdout_split_keeps_identities_apart_and_relabels():
    layout = {pid: {pid % 3: 2, (pid + 1) % 3: 1 + pid % 2} for pid in range(10)}
    splits = _splits(layout)
    out = holdout_split(splits, fraction=0.2, seed=0)
    held = {s.pid for s in out.query} | {s.pid for s in out.gallery}
    assert len(held) == 2  # round(0.2 * 10)
    kept = sorted(set(range(10)) - held)
    # Train: the other 8 identities relabelled 0..7 in sorted order, images unchanged.
    assert sorted({s.pid for s in out.train}) == list(range(8))
    by_path = {s.path: s for s in splits.train}
    for s in out.train:
        original = by_path[s.path]
        assert s.pid == kept.index(original.pid) and s.camid == original.camid
        assert s.mask_path == original.mask_path
    # Every training image lands in exactly one split; the test split is never used.
    paths = [s.path for s in out.train + out.query + out.gallery]
    assert sorted(paths) == sorted(by_path) and "q.jpg" not in paths
    # Held-out samples keep their pid and mask. Odd pids have 2 + 2 images in two cameras
    # (two queries); even pids 2 + 1, where a second query would leave the first unmatched.
    assert all(by_path[s.path] == s for s in out.query + out.gallery)
    assert len(out.query) == sum(2 if pid % 2 else 1 for pid in held) and _cross_camera_match(
        out.query, out.gallery
    )
    assert out.name == "toy-holdout" and out.root == "/data/toy" and out.num_train_pids == 8


def test_holdout_split_is_deterministic_and_seeded():
    splits = _splits({pid: {0: 2, 1: 2} for pid in range(20)})
    first = holdout_split(splits, 0.25, seed=3)
    assert first == holdout_split(splits, 0.25, seed=3)
    helds = {
        frozenset(s.pid for s in holdout_split(splits, 0.25, seed=k).gallery) for k in range(5)
    }
    assert all(len(h) == 5 for h in helds) and len(helds) > 1
    # The order of the input list does not change the choice of identities.
    shuffled = DatasetSplits("toy", "/data/toy", splits.train[::-1], splits.query, splits.gallery)
    assert {s.pid for s in holdout_split(shuffled, 0.25, seed=3).query} == {
        s.pid for s in first.query
    }


def test_holdout_digest_names_the_source_data_and_the_options():
    splits = _splits({pid: {0: 2, 1: 2} for pid in range(20)})
    assert holdout_split(splits, 0.25, seed=3).digest == ""  # a source without a digest
    splits = dataclasses.replace(splits, digest="a" * 16)
    first = holdout_split(splits, 0.25, seed=3).digest
    assert len(first) == 16 and first != splits.digest
    assert holdout_split(splits, 0.25, seed=3).digest == first
    others = {
        holdout_split(splits, 0.2, seed=3).digest,
        holdout_split(splits, 0.25, seed=4).digest,
        holdout_split(splits, 0.25, seed=3, query_cams=1).digest,
        holdout_split(dataclasses.replace(splits, digest="b" * 16), 0.25, seed=3).digest,
    }
    assert first not in others and len(others) == 4


def test_small_fractions_hold_out_one_identity_and_keep_one():
    splits = _splits({0: {0: 1, 1: 1}, 1: {0: 1, 1: 1}})
    out = holdout_split(splits, fraction=0.01)
    assert out.num_train_pids == 1 and len({s.pid for s in out.gallery}) == 1
    assert holdout_split(splits, fraction=0.99).num_train_pids == 1


@pytest.mark.parametrize(
    "layout,fraction,message",
    [
        ({0: {0: 2, 1: 2}, 1: {0: 2, 1: 2}}, 0.0, "must be between 0 and 1"),
        ({0: {0: 2, 1: 2}, 1: {0: 2, 1: 2}}, 1.0, "must be between 0 and 1"),
        ({0: {0: 2, 1: 2}}, 0.5, "needs at least 2"),
        ({0: {0: 3}, 1: {1: 3}, 2: {2: 3}}, 0.5, "no held-out identity is seen by two cameras"),
    ],
)
def test_bad_holdouts_are_one_line_errors(layout, fraction, message):
    with pytest.raises(FTNError, match=message):
        holdout_split(_splits(layout), fraction)


def test_holdout_of_the_synthetic_benchmark(data_root):
    from ftn_core.data.synthetic import load_synthetic

    splits = load_synthetic(str(data_root), "tiny", 0)
    out = holdout_split(splits, 0.2, seed=0)
    assert out.num_train_pids == splits.num_train_pids - 3  # round(0.2 * 16)
    assert out.query and _cross_camera_match(out.query, out.gallery)
    assert all(s.mask_path for s in out.query)
