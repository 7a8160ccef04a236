"""Uncertainty statistics on synthetic per-query data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports import claims, stats, tables


def _per_query(ap: np.ndarray, first_rank: np.ndarray, index: np.ndarray | None = None) -> dict:
    index = np.arange(len(ap)) if index is None else index
    return {"index": index, "ap": ap, "first_rank": first_rank, "inp": ap}


def _runs(rng, shift: float, seeds: int = 3, queries: int = 200) -> dict:
    """Baseline and variant per-query results; the variant's AP is the Baseline's + ``shift`` +
    zero-mean per-query noise (no true difference when ``shift`` is 0)."""
    out = {}
    for s in range(seeds):
        base_ap = rng.uniform(0.2, 0.8, queries)
        var_ap = np.clip(base_ap + shift + rng.normal(0, 0.15, queries), 0, 1)
        out[("base", s)] = _per_query(base_ap, np.where(base_ap > 0.5, 1, 3))
        out[("v", s)] = _per_query(var_ap, np.where(var_ap > 0.5, 1, 3))
    return out


def test_query_metric_and_paired_matrix_by_hand():
    pq = _per_query(np.array([0.5, 1.0]), np.array([2, 1]), np.array([3, 7]))
    assert stats.query_metric(pq, "rank1") == {3: 0.0, 7: 100.0}
    assert stats.query_metric(pq, "mAP") == {3: 50.0, 7: 100.0}
    d = stats.paired_matrix({0: {1: 10.0, 2: 20.0}, 1: {1: 0.0, 2: 5.0}, 5: {1: 1.0}},
                            {0: {1: 4.0, 2: 20.0, 9: 1.0}, 1: {1: 1.0, 2: 1.0}})
    assert d.tolist() == [[6.0, 0.0], [-1.0, 4.0]]  # seeds 0 and 1, queries 1 and 2


def test_seed_interval_is_the_student_t_interval():
    lo, hi = stats.seed_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) · s / √n, s = 1
    assert (lo, hi) == pytest.approx((2 - half, 2 + half))
    assert all(math.isnan(x) for x in stats.seed_interval(np.array([5.0])))


def test_a_zero_delta_is_within_noise_in_at_least_95_percent_of_repetitions():
    rng = np.random.default_rng(0)
    marks = []
    for rep in range(200):
        pq = _runs(rng, 0.0)
        marks.append(tables.compare(pq, "v", "base", "mAP", n_resamples=500).mark)
    assert marks.count("within noise") / len(marks) >= 0.95


def test_a_large_delta_is_better_and_its_interval_holds_the_truth():
    pq = _runs(np.random.default_rng(1), 0.10)
    d = tables.compare(pq, "v", "base", "mAP", n_resamples=2000)
    assert d.mark == "better" and d.p < 0.001 and d.seeds == 3 and d.queries == 200
    assert d.lo < d.delta < d.hi and d.lo > 0
    assert tables.compare(pq, "base", "v", "mAP", n_resamples=2000).mark == "worse"


def test_one_seed_covers_query_sampling_only():
    pq = {k: v for k, v in _runs(np.random.default_rng(2), 0.0).items() if k[1] == 0}
    d = tables.compare(pq, "v", "base", "rank1", n_resamples=500)
    assert d.seeds == 1 and "query sampling only" in d.covers and math.isnan(d.sd_seed)
    assert stats.seeds_needed(d, 1.0) is None  # the seed spread is unknown


def test_power_shrinks_with_seeds_down_to_the_query_floor():
    d = stats.Delta(1.0, 0.0, 2.0, 0.05, seeds=3, queries=300, n_resamples=100, se=1.0, se_query=0.5,
                    sd_seed=2.0)
    z = 1.959963984540054 + 0.8416212335729143
    assert stats.detectable(d, 4) == pytest.approx(z * math.sqrt(4.0 / 4 + 0.25))
    assert stats.detectable(d, 10) < stats.detectable(d, 3)
    n = stats.seeds_needed(d, 2.0)
    assert stats.detectable(d, n) <= 2.0 < stats.detectable(d, n - 1)
    assert stats.seeds_needed(d, 0.5 * z) is None  # below the query-sampling floor: seeds cannot help


def test_ordering_claims_hold_fail_or_stay_inconclusive():
    rng = np.random.default_rng(3)
    pq = _runs(rng, 0.15)
    assert claims.ordering_verdict(pq, [("v", "base")], "mAP", 1000)[0] == "holds"
    assert claims.ordering_verdict(pq, [("base", "v")], "mAP", 1000)[0] == "fails"
    same = _runs(rng, 0.0)
    same.update({("w", s): pq[("v", s)] for s in range(3)})
    verdict, evidence = claims.ordering_verdict(same, [("v", "base")], "mAP", 1000)
    assert verdict == "inconclusive" and evidence.startswith("v−base ")


def test_noise_parts_of_an_additive_matrix_by_hand():
    # D = Δ + a_s + b_q exactly: no interaction, the seed and query variances are a's and b's.
    a, b = np.array([-1.0, 0.0, 1.0, 2.0]), np.array([-6.0, -2.0, 0.0, 2.0, 6.0] * 20)
    d = 0.5 + a[:, None] + b[None, :]
    p = stats.noise_parts(d)
    assert p.interaction == pytest.approx(0, abs=1e-12)
    assert p.seed == pytest.approx(a.var(ddof=1)) and p.query == pytest.approx(b.var(ddof=1))
    assert (p.seeds, p.queries) == (4, 100)
    var = a.var(ddof=1) / 4 + b.var(ddof=1) / 100
    assert p.variance() == pytest.approx(var)
    assert p.half_width() == pytest.approx(1.959964 * math.sqrt(var), rel=1e-5)
    seed_share, query_share, inter = p.shares()
    assert seed_share == pytest.approx(100 * a.var(ddof=1) / 4 / var) and inter == pytest.approx(0, abs=1e-9)
    # ±1: the fewest seeds on these 100 queries, and the fewest queries with these 4 seeds.
    s = p.seeds_for(1.0)
    assert p.half_width(s) <= 1.0 < p.half_width(s - 1)
    q = p.queries_for(1.0)
    assert q is None  # the seed part alone (1.96 · √(1.667/4) = 1.27) is wider than ±1
    q = p.queries_for(1.5)
    assert p.half_width(queries=q) <= 1.5 < p.half_width(queries=q - 1)
    assert p.seeds_for(0.1) is None  # below the query part's floor: seeds cannot get there


def test_noise_parts_recovers_known_variances_and_one_seed_leaves_the_seed_part_unknown():
    rng = np.random.default_rng(0)
    s_sd, q_sd, e_sd = 2.0, 10.0, 20.0
    d = (rng.normal(0, s_sd, (40, 1)) + rng.normal(0, q_sd, (1, 2000)) + rng.normal(0, e_sd, (40, 2000)))
    p = stats.noise_parts(d)
    assert p.interaction == pytest.approx(e_sd ** 2, rel=0.02)
    assert p.query == pytest.approx(q_sd ** 2, rel=0.1)
    assert p.seed == pytest.approx(s_sd ** 2, rel=0.5)
    one = stats.noise_parts(d[:1])
    assert math.isnan(one.seed) and one.seeds_for(1.0) is None and one.queries_for(1.0) is None


def test_noise_parts_of_nothing_paired_are_unknown():
    p = stats.noise_parts(np.zeros((0, 0)))
    assert all(math.isnan(v) for v in (*p.shares(), p.half_width()))
    assert p.seeds_for(1.0) is None and p.queries_for(1.0) is None
