"""Evaluation (Market-1501 protocol): the fast ranking against the literal loop and hand-computed cases."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import ftn_core.evaluation as evaluation
from ftn_core.errors import FTNError
from ftn_core.evaluation import (
    RankResult,
    activation_map,
    compute_distmat,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_reference,
    foreground_focus,
)


@pytest.fixture(params=["sort", "compare", "device"])
def path(request, monkeypatch) -> str:
    """Run a test through every way of ranking a query's candidates: sorted or compared by
    numpy, or sorted by torch where the distances live (the GPU path, here on the CPU)."""
    monkeypatch.setattr(evaluation, "_SORT_MAX", 1 << 30 if request.param == "sort" else 0)
    if request.param == "device":
        for name in ("evaluate_rank", "evaluate_features"):
            fn = getattr(evaluation, name)
            monkeypatch.setitem(globals(), name, functools.partial(fn, device="cpu"))
    return request.param


# Gallery of the hand-computed case: (pid, cam) per index.
#   g0 (1, 0)  g1 (2, 1)  g2 (1, 1)  g3 (0, 2) distractor  g4 (1, 2)  g5 (3, 1)
G_PIDS = [1, 2, 1, 0, 1, 3]
G_CAMS = [0, 1, 1, 2, 2, 1]
# q0 pid 1 cam 0: g0 is junk (same pid, same cam). Kept order g2 g1 g3 g5 g4 → matches at
#    ranks 1 and 5: AP = (1/1 + 2/5) / 2 = 0.7, INP = 2/5, first match at rank 1.
# q1 pid 2 cam 0: order by (distance, index) g4 g1 g2 g3 g0 g5 — g1 wins the 0.3 tie by
#    its lower index → rank 2: AP = 1/2, INP = 1/2.
# q2 pid 3 cam 0: all distances tie, the match g5 has the highest index → rank 6:
#    AP = INP = 1/6.
# q3 pid 3 cam 1: its only match g5 is in the same camera → junk → skipped.
# q4 pid 7: not in the gallery → skipped.
# mAP = (0.7 + 0.5 + 1/6) / 3 = 41/90, mINP = (0.4 + 0.5 + 1/6) / 3 = 16/45,
# first-match ranks 1, 2, 6 → CMC = [1/3, 2/3, 2/3, 2/3, 2/3, 1, 1, 1] for max_rank = 8.
Q_PIDS = [1, 2, 3, 3, 7]
Q_CAMS = [0, 0, 0, 1, 0]
DIST = [
    [0.1, 0.3, 0.2, 0.4, 0.6, 0.5],
    [0.5, 0.3, 0.3, 0.3, 0.1, 0.9],
    [0.2] * 6,
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
]


@pytest.mark.parametrize("fn", ["evaluate_rank", "evaluate_rank_reference"])
def test_hand_computed_case(fn, path: str) -> None:
    res = globals()[fn](
        np.array(DIST, dtype=np.float32), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=8
    )
    assert isinstance(res, RankResult)
    assert res.num_valid_queries == 3
    assert res.mAP == pytest.approx(41 / 90, abs=1e-9)
    assert res.mINP == pytest.approx(16 / 45, abs=1e-9)
    np.testing.assert_allclose(res.cmc, [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1], atol=1e-12)
    assert res.metrics()["rank1"] == pytest.approx(1 / 3)
    assert res.metrics()["rank5"] == pytest.approx(2 / 3)


def test_torch_inputs_give_the_same_result() -> None:
    res = evaluate_rank(
        torch.tensor(DIST),
        torch.tensor(Q_PIDS),
        torch.tensor(G_PIDS),
        torch.tensor(Q_CAMS),
        torch.tensor(G_CAMS),
        max_rank=8,
    )
    assert res.mAP == pytest.approx(41 / 90, abs=1e-7)
    assert res.num_valid_queries == 3


def _random_problem(seed: int, kind: str):
    rng = np.random.default_rng(seed)
    num_q, num_g, num_ids, num_cams = int(rng.integers(5, 40)), int(rng.integers(20, 120)), 8, 3
    g_pids = rng.integers(1, num_ids + 1, num_g)
    g_pids[rng.random(num_g) < 0.2] = 0  # pid 0 distractors stay in the gallery
    q_pids = rng.integers(1, num_ids + 3, num_q)  # ids above num_ids: no match → skipped
    g_cams = rng.integers(0, num_cams, num_g)
    q_cams = rng.integers(0, num_cams, num_q)
    # Same-camera-only queries: their id appears only in their own camera → skipped.
    q_pids[:2], q_cams[:2] = 50, 1
    g_pids[:3], g_cams[:3] = 50, 1
    if kind == "ties":
        dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    elif kind == "signed":  # cosine-like values around 0, with -0.0 and +0.0 that must tie
        values = np.array([-0.0, 0.0, -1e-7, 1e-7, -0.5, 0.25], np.float32)
        dist = rng.choice(values, (num_q, num_g))
    else:
        dist = rng.random((num_q, num_g), dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("kind", ["continuous", "ties", "signed"])
@pytest.mark.parametrize("seed", range(8))
def test_fast_path_equals_literal_loop(kind: str, seed: int, path: str) -> None:
    dist, *labels = _random_problem(seed, kind)
    fast = evaluate_rank(dist, *labels, max_rank=20)
    ref = evaluate_rank_reference(dist, *labels, max_rank=20)
    assert fast.num_valid_queries == ref.num_valid_queries < dist.shape[0]  # some skipped
    np.testing.assert_allclose(fast.cmc, ref.cmc, atol=1e-6, rtol=0)
    assert fast.mAP == pytest.approx(ref.mAP, abs=1e-6)
    assert fast.mINP == pytest.approx(ref.mINP, abs=1e-6)
    # Per query: the valid queries, whose AP / first-match rank / INP average to the totals.
    pq = fast.per_query
    assert len(pq.index) == ref.num_valid_queries and np.all(np.diff(pq.index) > 0)
    assert pq.ap.mean() == pytest.approx(ref.mAP, abs=1e-6) and pq.inp.mean() == pytest.approx(
        ref.mINP, abs=1e-6
    )
    np.testing.assert_allclose(
        [(pq.first_rank <= k).mean() for k in range(1, 21)], ref.cmc, atol=1e-6
    )
    rows = np.asarray(dist, np.float32)[pq.index]
    expected = np.argsort(rows, axis=1, kind="stable")[:, :10]  # nearest first, ties by index
    np.testing.assert_array_equal(pq.top, expected)


def test_per_query_results_by_hand() -> None:
    # Gallery pids [1, 3, 1], all in another camera. q0 (pid 1): matches at ranks 1 and 3 →
    # AP (1/1 + 2/3) / 2, first rank 1; q1 (pid 9): no match → absent; q2 (pid 3): its match
    # at rank 2 → AP 1/2, first rank 2.
    dist = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.05, 0.1, 0.2]], np.float32)
    r = evaluate_rank(dist, [1, 9, 3], [1, 3, 1], [0, 0, 0], [1, 1, 1], max_rank=3)
    assert r.per_query.index.tolist() == [0, 2]
    assert r.per_query.first_rank.tolist() == [1, 2]
    np.testing.assert_allclose(r.per_query.ap, [(1 + 2 / 3) / 2, 0.5])
    assert r.per_query.top.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_many_matches_and_a_large_block(path: str) -> None:
    """Queries with very different match counts end up in differently sized blocks."""
    rng = np.random.default_rng(3)
    g_pids = np.concatenate([np.full(300, 1), rng.integers(2, 40, 700)])
    g_cams, q_pids = rng.integers(0, 6, 1000), np.concatenate([[1, 1], rng.integers(2, 40, 60)])
    q_cams, dist = rng.integers(0, 6, 62), rng.integers(0, 50, (62, 1000)).astype(np.float32)
    labels = (q_pids, g_pids, q_cams, g_cams)
    fast, ref = evaluate_rank(dist, *labels), evaluate_rank_reference(dist, *labels)
    np.testing.assert_allclose(fast.cmc, ref.cmc, atol=1e-6, rtol=0)
    assert (fast.mAP, fast.mINP) == pytest.approx((ref.mAP, ref.mINP), abs=1e-6)


def test_swapped_tie_break_would_be_detected(path: str) -> None:
    """The order among equal distances matters: reversing the gallery changes the answer."""
    dist = np.zeros((1, 4), np.float32)
    res = evaluate_rank(dist, [1], [0, 1, 0, 1], [0], [1, 1, 1, 1])  # matches at ranks 2, 4
    rev = evaluate_rank(dist, [1], [1, 0, 1, 0], [0], [1, 1, 1, 1])  # matches at ranks 1, 3
    assert res.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert rev.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_cmc_is_padded_when_max_rank_exceeds_gallery() -> None:
    res = evaluate_rank(np.array([[0.2, 0.1]], np.float32), [1], [1, 2], [0], [1, 1], max_rank=5)
    np.testing.assert_allclose(res.cmc, [0, 1, 1, 1, 1])


def test_no_valid_query_is_a_user_error() -> None:
    with pytest.raises(FTNError, match="no query has a true match"):
        evaluate_rank(np.zeros((2, 2), np.float32), [1, 2], [1, 2], [0, 0], [0, 0])


def test_nan_distances_are_a_user_error() -> None:
    with pytest.raises(FTNError, match="NaN"):
        evaluate_rank(np.array([[np.nan, 1.0]], np.float32), [1], [1, 2], [0], [1, 1])


def test_label_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="do not match"):
        evaluate_rank(np.zeros((2, 3), np.float32), [1, 2], [1, 2], [0, 0], [0, 0, 1])


def test_known_euclidean_and_cosine_distances() -> None:
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, 0.0], [3.0, 4.0]])
    euc = compute_distmat(q, g, "euclidean")
    cos = compute_distmat(q, g, "cosine")
    torch.testing.assert_close(euc, torch.tensor([[math.sqrt(2), 1.0, 2.0, math.sqrt(20)]]))
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0, 2.0, 1 - 3 / 5]]))
    assert euc.dtype == torch.float32


def test_chunked_distmat_equals_cdist() -> None:
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(10, 7, generator=gen), torch.randn(13, 7, generator=gen)
    torch.testing.assert_close(
        compute_distmat(q, g, chunk=3), torch.cdist(q, g), atol=1e-5, rtol=1e-5
    )
    assert compute_distmat(q, g, chunk=3).shape == (10, 13)


def test_unknown_metric_is_a_user_error() -> None:
    with pytest.raises(FTNError, match="unknown distance metric"):
        compute_distmat(torch.zeros(1, 2), torch.zeros(1, 2), "manhattan")


def _features(seed: int, integer: bool):
    rng = np.random.default_rng(seed)
    g_pids, g_cams = rng.integers(0, 10, 150), rng.integers(0, 4, 150)
    q_pids, q_cams = rng.integers(1, 10, 40), rng.integers(0, 4, 40)
    centres = rng.normal(size=(10, 6)) * 3
    g = centres[g_pids] + rng.normal(size=(150, 6))
    q = centres[q_pids] + rng.normal(size=(40, 6))
    if integer:  # exact float32 distances whatever the blocking, and many ties
        g, q = np.round(g), np.round(q)
    return (
        torch.tensor(q, dtype=torch.float32),
        torch.tensor(g, dtype=torch.float32),
        q_pids,
        g_pids,
        q_cams,
        g_cams,
    )


@pytest.mark.parametrize(
    "metric,integer", [("euclidean", True), ("euclidean", False), ("cosine", False)]
)
def test_evaluate_features_equals_reference_on_the_full_matrix(
    metric: str, integer: bool, path: str
) -> None:
    q, g, *labels = _features(1, integer)
    streamed = evaluate_features(q, g, *labels, metric=metric, max_rank=10)
    ref = evaluate_rank_reference(compute_distmat(q, g, metric), *labels, max_rank=10)
    assert streamed.num_valid_queries == ref.num_valid_queries
    np.testing.assert_allclose(streamed.cmc, ref.cmc, atol=1e-6, rtol=0)
    assert (streamed.mAP, streamed.mINP) == pytest.approx((ref.mAP, ref.mINP), abs=1e-6)
    assert 0.3 < streamed.mAP <= 1.0  # clustered features: far better than chance


def test_activation_map_is_channel_mean_of_squares() -> None:
    feat = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(activation_map(feat), torch.tensor([[[5.0, 2.0]]]))


def test_foreground_focus_hand_made_maps() -> None:
    half = torch.zeros(1, 4, 4)
    half[..., :2] = 1  # left half is the person
    const = torch.ones(1, 2, 2)
    assert foreground_focus(const, torch.ones(1, 4, 4)).item() == pytest.approx(1.0)
    assert foreground_focus(const, half).item() == pytest.approx(0.5)
    # act [1, 0] upsampled bilinearly (align_corners=False) to width 4 → [1, .75, .25, 0]:
    # left half holds 1.75 of the mass 2.
    left = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2)
    mask = torch.zeros(1, 1, 1, 4)
    mask[..., :2] = 255  # (B, 1, H, W), {0, 255} also accepted
    assert foreground_focus(left, mask).item() == pytest.approx(0.875)
    assert foreground_focus(-left, mask).item() == pytest.approx(0.875)  # abs first
    both = foreground_focus(torch.stack([const[0], torch.zeros(2, 2)]), half.expand(2, 4, 4))
    assert both[0].item() == pytest.approx(0.5) and math.isnan(both[1].item())
