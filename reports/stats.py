"""Uncertainty: seed confidence intervals, the paired Δ over queries and seeds, power, noise.

Every run's final evaluation is stored per query (``per_query.npz``: AP and first-match rank of
each valid query). Two variants are compared query by query, with runs paired by seed:

* ``D[s, q]`` = metric of the variant − metric of the Baseline for seed ``s`` and query ``q``
  (AP × 100 for mAP; 100 · [first match at rank 1] for R-1), so ``mean(D)`` is exactly the Δ of
  the table's means over the paired seeds.
* ``D = Δ + a_s + b_q + e_sq``: how a training run falls (a), which people the test set holds
  (b, shared by every seed) and their interaction (e). The Δ of S seeds and Q queries has
  ``Var = σ²_a/S + σ²_b/Q + σ²_e/(S·Q)``, estimated without bias by ``v_seed + v_query`` with
  ``v_seed`` = Var(per-seed Δ) / S (the seed-to-seed spread, e included: S − 1 degrees of
  freedom) and ``v_query`` = σ̂²_b / Q (the query part every seed shares, from the two-way
  method of moments, ``noise_parts``; clipped at 0).
* The 95 % interval is Δ ± t(ν) · √(v_seed + v_query), Student's t with
  ``1/ν = share / (S − 1) + (the query part's Satterthwaite term)``, ``share`` =
  v_seed / (v_seed + v_query): t with S − 1 degrees of freedom when the seeds' spread is all
  there is, normal when the shared query part is. Satterthwaite's own ν (share squared) covers
  only 92 % at 3 seeds when the seed spread makes up 80–95 % of the variance (an unlucky small
  spread also raises its ν); counted once, the share keeps the coverage within 94–96.5 % at
  3–8 seeds whatever the split (``benchmarks/interval_coverage.py``). p: the t-test of Δ = 0.
* A Δ is *better* when its whole interval is above 0, *worse* when below, else *within noise*.

With one seed, only query sampling is covered (t over the queries; the report says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# The interval itself lives beside the runner, which reads it for --until-halfwidth and never
# imports reports/; re-exported here unchanged.
from ablations.intervals import (  # noqa: F401
    CONFIDENCE,
    Delta,
    NoiseParts,
    _parts,
    delta_interval,
    mean_squares,
    noise_parts,
    paired_matrix,
    query_metric,
    t_design,
)

N_RESAMPLES = 10_000
"""Resamples of the bootstraps that remain (Kendall τ's interval in ``reports.claims``)."""
SEED = 0
"""The bootstrap's own seed: reports are reproducible."""
POWER = 0.8
"""Power of the smallest detectable Δ (two-sided, α = 1 − CONFIDENCE)."""


def seed_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean over seeds (NaN below two seeds)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    lo, hi = stats.t.interval(
        confidence, len(values) - 1, loc=values.mean(), scale=stats.sem(values)
    )
    return float(lo), float(hi)


def detectable(
    delta: Delta, seeds: int | None = None, power: float = POWER, confidence: float = CONFIDENCE
) -> float:
    """The smallest |Δ| found at ``power`` with ``seeds`` paired seeds (default: as measured):
    (t₁₋α/₂ + t_power) · SE with the interval's ν — as measured, or for ``seeds`` what the
    noise parts give on the same test set (its query part does not shrink with seeds). With one
    measured seed, query sampling only, whatever ``seeds``."""
    parts = delta.parts
    if seeds is None or parts is None or math.isnan(parts.seed):
        se, df = delta.se, delta.df
    elif seeds < 2:
        return math.inf
    else:
        se, df = math.sqrt(parts.variance(seeds)), parts.df(seeds)
    return float((stats.t.ppf(1 - (1 - confidence) / 2, df) + stats.t.ppf(power, df)) * se)


def seeds_needed(delta: Delta, gap: float, max_seeds: int = 1000) -> int | None:
    """The fewest paired seeds whose detectable Δ is ≤ ``gap``; None when query sampling alone
    is too noisy (more queries, not seeds, would be needed) or the seed spread is unknown."""
    if math.isnan(delta.sd_seed) or detectable(delta, max_seeds) > gap:
        return None
    return next(s for s in range(2, max_seeds + 1) if detectable(delta, s) <= gap)


@dataclass
class ChaosFloor:
    """A row's seed-to-seed spread of R-1 beside what per-query chance alone would give.

    If the runs of a row differed only in *which* queries they get right — each query right at
    its own rate p_q, independently from run to run — R-1 would vary over seeds with SD
    ``floor = 100 · √(Σ_q p_q (1 − p_q)) / Q`` points. A measured SD near the floor says the
    runs are equally good and only the test set's size limits the spread (more test queries
    help); far above it, runs from different seeds differ in quality over the whole test set
    (better-converged training helps, more queries do not)."""

    seeds: int
    queries: int
    seed_sd: float
    """SD over seeds of the row's R-1 on these queries (points)."""
    floor: float
    """The SD per-query independence predicts (points)."""

    @property
    def ratio(self) -> float:
        return self.seed_sd / self.floor if self.floor > 0 else math.nan


def chaos_floor(hits: dict[int, dict[int, float]]) -> ChaosFloor:
    """``ChaosFloor`` of one row from ``{seed: {query: 100 · [first match at rank 1]}}``
    (``query_metric(…, "rank1")`` per seed), over the queries every seed evaluated. p_q is the
    query's rate of rank-1 hits over the S seeds; p_q(1 − p_q) is taken as S / (S − 1) times the
    plug-in value (the sample variance of its hits), which is unbiased, like the measured SD's
    ddof = 1. NaN below two seeds."""
    seeds = sorted(hits)
    queries = sorted(set.intersection(*(set(hits[s]) for s in seeds))) if seeds else []
    if len(seeds) < 2 or not queries:
        return ChaosFloor(len(seeds), len(queries), math.nan, math.nan)
    y = np.array([[hits[s][q] for q in queries] for s in seeds], dtype=float)  # (S, Q), 0 or 100
    floor = math.sqrt(y.var(axis=0, ddof=1).sum()) / len(queries)
    return ChaosFloor(len(seeds), len(queries), float(y.mean(axis=1).std(ddof=1)), floor)
