"""Uncertainty: seed confidence intervals, paired bootstrap Δ over queries and seeds, power.

Every run's final evaluation is stored per query (``per_query.npz``: AP and first-match rank of
each valid query). Two variants are compared query by query, with runs paired by seed:

* ``D[s, q]`` = metric of the variant − metric of the Baseline for seed ``s`` and query ``q``
  (AP × 100 for mAP; 100 · [first match at rank 1] for R-1), so ``mean(D)`` is exactly the Δ of
  the table's means over the paired seeds.
* The bootstrap resamples queries (the test set is a sample of people) and, with ≥ 2 paired
  seeds, seeds too (training is a sample of runs): ``n_resamples`` draws with numpy's
  ``Generator``, 95 % percentile interval, two-sided p = twice the smaller tail share of Δ* at 0.
* A Δ is *better* when its whole interval is above 0, *worse* when below, else *within noise*.

With one seed, only query-sampling noise is covered (the report says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0
"""The bootstrap's own seed: reports are reproducible."""
POWER = 0.8
"""Power of the smallest detectable Δ (two-sided, α = 1 − CONFIDENCE)."""


def query_metric(per_query: dict[str, np.ndarray], metric: str) -> dict[int, float]:
    """``{query index: value}`` in percent for ``rank1`` or ``mAP`` from a per_query.npz."""
    if metric == "rank1":
        values = 100.0 * (np.asarray(per_query["first_rank"]) == 1)
    elif metric == "mAP":
        values = 100.0 * np.asarray(per_query["ap"], dtype=float)
    else:
        raise ValueError(f"per-query metric {metric}: rank1 or mAP")
    return dict(zip(np.asarray(per_query["index"]).tolist(), values.tolist()))


def paired_matrix(variant: dict[int, dict[int, float]], base: dict[int, dict[int, float]]) -> np.ndarray:
    """``D`` (seeds × queries): per-query differences for the seeds both have, over the queries
    every paired run evaluated (the same test set gives the same valid queries)."""
    seeds = sorted(set(variant) & set(base))
    if not seeds:
        return np.zeros((0, 0))
    queries = sorted(set.intersection(*(set(variant[s]) & set(base[s]) for s in seeds)))
    return np.array([[variant[s][q] - base[s][q] for q in queries] for s in seeds], dtype=float)


@dataclass
class Delta:
    delta: float
    lo: float
    hi: float
    p: float
    seeds: int
    queries: int
    n_resamples: int
    se: float
    """Bootstrap standard error of Δ."""
    se_query: float
    """The part of it that query sampling alone gives (seeds fixed)."""
    sd_seed: float
    """Standard deviation of the per-seed Δ (NaN with one seed)."""

    @property
    def mark(self) -> str:
        if self.lo > 0:
            return "better"
        if self.hi < 0:
            return "worse"
        return "within noise"

    @property
    def covers(self) -> str:
        return "query sampling and training seed" if self.seeds > 1 else "query sampling only (one seed)"


def bootstrap_delta(d: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                    confidence: float = CONFIDENCE) -> Delta:
    """Paired bootstrap of ``mean(D)`` over queries and (with ≥ 2 rows) seeds."""
    s_count, q_count = d.shape
    if s_count == 0 or q_count == 0:
        nan = math.nan
        return Delta(nan, nan, nan, nan, s_count, q_count, 0, nan, nan, nan)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    query_only = np.empty(n_resamples)
    seed_means = d.mean(axis=0)  # (Q,) the per-query Δ averaged over seeds
    chunk = max(1, 2_000_000 // (s_count * q_count))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        q_idx = rng.integers(0, q_count, size=(b, q_count))
        s_idx = rng.integers(0, s_count, size=(b, s_count)) if s_count > 1 else np.zeros((b, 1), int)
        draws[start:start + b] = d[s_idx[:, :, None], q_idx[:, None, :]].mean(axis=(1, 2))
        query_only[start:start + b] = seed_means[q_idx].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    sd_seed = float(d.mean(axis=1).std(ddof=1)) if s_count > 1 else math.nan
    return Delta(float(d.mean()), float(lo), float(hi), float(p), s_count, q_count, n_resamples,
                 float(draws.std(ddof=1)), float(query_only.std(ddof=1)), sd_seed)


def seed_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean over seeds (NaN below two seeds)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return float(lo), float(hi)


def detectable(delta: Delta, seeds: int | None = None, power: float = POWER,
               confidence: float = CONFIDENCE) -> float:
    """The smallest |Δ| found at ``power`` with ``seeds`` paired seeds (default: as measured):
    (z₁₋α/₂ + z_power) · SE, with SE² = SD_seed² / seeds + SE_query² (the test set is the
    same whatever the seeds, so its part does not shrink)."""
    seeds = seeds or delta.seeds
    z = stats.norm.ppf(1 - (1 - confidence) / 2) + stats.norm.ppf(power)
    seed_part = (delta.sd_seed ** 2 / seeds) if not math.isnan(delta.sd_seed) else 0.0
    return float(z * math.sqrt(seed_part + delta.se_query ** 2))


def seeds_needed(delta: Delta, gap: float, max_seeds: int = 1000) -> int | None:
    """The fewest paired seeds whose detectable Δ is ≤ ``gap``; None when query sampling alone
    is too noisy (more queries, not seeds, would be needed) or the seed spread is unknown."""
    if math.isnan(delta.sd_seed) or detectable(delta, max_seeds) > gap:
        return None
    return next(s for s in range(2, max_seeds + 1) if detectable(delta, s) <= gap)


@dataclass
class NoiseParts:
    """Where a paired Δ's noise comes from: ``D[s, q] = Δ + a_s + b_q + e_sq`` with seed
    effects a (variance ``seed``: how a training run falls), query effects b (``query``: which
    people the test set holds) and their interaction e (``interaction``), estimated from the
    (seeds × queries) matrix by the two-way random-effects method of moments:

        σ²_e = Σ residual² / ((S−1)(Q−1)),  σ²_a = Var(row means) − σ²_e / Q,
        σ²_b = Var(column means) − σ²_e / S   (negative estimates clipped to 0).

    The Δ of S seeds on Q queries then has ``Var = σ²_a/S + σ²_b/Q + σ²_e/(S·Q)``: seeds shrink
    the first and last part, queries the last two. With one seed, σ²_a cannot be told from σ²_e
    (NaN). A real dataset's queries are fixed, so only S can grow there."""

    seed: float
    query: float
    interaction: float
    seeds: int
    queries: int

    def variance(self, seeds: int | None = None, queries: int | None = None) -> float:
        s, q = seeds or self.seeds, queries or self.queries
        if not s or not q:  # no paired seed: nothing measured
            return math.nan
        return self.seed / s + self.query / q + self.interaction / (s * q)

    def shares(self) -> tuple[float, float, float]:
        """The seed, query and interaction parts of the variance as measured, in %."""
        total = self.variance()
        if not total > 0:  # NaN (nothing paired) or no noise at all
            return math.nan, math.nan, math.nan
        s, q = self.seeds, self.queries
        return tuple(100 * v / total for v in (self.seed / s, self.query / q, self.interaction / (s * q)))

    def half_width(self, seeds: int | None = None, queries: int | None = None,
                   confidence: float = CONFIDENCE) -> float:
        """The 95 % interval's half-width the normal approximation gives for this design."""
        return float(stats.norm.ppf(1 - (1 - confidence) / 2) * math.sqrt(self.variance(seeds, queries)))

    def seeds_for(self, half: float, queries: int | None = None, max_seeds: int = 10_000) -> int | None:
        """The fewest seeds whose half-width is ≤ ``half`` on ``queries`` queries (default: these);
        None when the query part alone is wider, or the seed part is unknown."""
        if math.isnan(self.seed) or self.half_width(max_seeds, queries) > half:
            return None
        return next(s for s in range(1, max_seeds + 1) if self.half_width(s, queries) <= half)

    def queries_for(self, half: float, seeds: int | None = None, max_queries: int = 10**7) -> int | None:
        """The fewest queries whose half-width is ≤ ``half`` with ``seeds`` seeds (default: these);
        None when the seed part alone is wider, or it is unknown."""
        if math.isnan(self.seed) or self.half_width(seeds, max_queries) > half:
            return None
        lo, hi = 1, max_queries  # half_width falls as queries grow: bisect
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.half_width(seeds, mid) <= half else (mid + 1, hi)
        return lo


def noise_parts(d: np.ndarray) -> NoiseParts:
    """``NoiseParts`` of a paired (seeds × queries) Δ matrix (``paired_matrix``)."""
    s_count, q_count = d.shape
    if s_count == 0 or q_count < 2:
        return NoiseParts(math.nan, math.nan, math.nan, s_count, q_count)
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    if s_count == 1:  # seed and interaction are one: only the query part is known
        return NoiseParts(math.nan, float(cols.var(ddof=1)), 0.0, 1, q_count)
    resid = d - rows[:, None] - cols[None, :] + d.mean()
    interaction = float((resid ** 2).sum() / ((s_count - 1) * (q_count - 1)))
    seed = max(0.0, float(rows.var(ddof=1)) - interaction / q_count)
    query = max(0.0, float(cols.var(ddof=1)) - interaction / s_count)
    return NoiseParts(seed, query, interaction, s_count, q_count)
