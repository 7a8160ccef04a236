"""How often the report's 95 % interval of a paired Δ holds the true Δ: a simulation.

  python benchmarks/interval_coverage.py     # docs/tracking-and-reports.md's table (about 20 min)
  python benchmarks/interval_coverage.py --replicates 500 --old-replicates 0   # a quick look

Each replicate draws a paired (seeds × queries) matrix ``D`` whose true Δ is 0 and asks whether
the interval holds 0. Three models of ``D``, each seed-dominated (seed SD of the Δ 2.0 points, as
Table 1's cfa − base) and query-dominated (0.2 points, as its w/o PA row), with one seed's query
standard error about 0.7 points on 3,547 queries:

* ``gauss``: ``D = a_s + b_q + e_sq``, all normal; the query part every seed shares (b) is a
  third of one seed's query variance.
* ``r1``: R-1, per-query hits. Query q is hit at rate Φ(θ_q + c_q + α_s) in each arm (Baseline
  and variant alike, so the true Δ is 0): difficulty θ_q ~ N(−0.3, 2.2²) shared by both arms
  (R-1 ≈ 45 %), an arm's own query effect c_q ~ N(0, 0.3²), an arm's seed effect α_s; D is
  100 × (hit of the variant − hit of the Baseline), so −100, 0 or +100 per query.
* ``ap``: the same with a continuous per-query score, 100 · Φ(θ_q + c_q + α_s + ε_sq), ε ~ N(0, 1)
  (an AP-like value in [0, 100], skewed).

Intervals: ``new``, the report's (``reports.stats.delta_interval``); ``old``, the percentile
bootstrap over seeds and queries the reports used before (1,000 resamples; drawn as resample
counts, the same distribution as index resampling, to run in minutes); ``t-seeds``, a Student t
over the per-seed Δs alone. ``±`` is the new interval's median half-width.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats as sps

from reports import stats

QUERY_SE = 0.7
"""One seed's query standard error of the Δ in the ``gauss`` model (points, at 3,547 queries)."""
B_SHARE = 1 / 3
"""The ``gauss`` model's shared query part, as a share of one seed's query variance."""
MU, TAU, KAPPA, AP_NOISE = -0.3, 2.2, 0.3, 1.0
MODELS = ("gauss", "r1", "ap")
REGIMES = {"seed": 2.0, "query": 0.2}
"""Seed SD of the Δ (σ_a, points) per regime."""


def _slope(model: str) -> float:
    """d E[per-query score] / d α (per unit of α, score in 0–1): a seed effect α shifts the mean
    score by this much, so an arm's α ~ N(0, ω²) gives the Δ a seed SD of 100 · √2 · ω · slope."""
    spread = math.sqrt(1 + TAU**2 + KAPPA**2 + (AP_NOISE**2 if model == "ap" else 0.0))
    return float(sps.norm.pdf(MU / spread) / spread)


def simulate(
    model: str, sd_seed: float, seeds: int, queries: int, rng: np.random.Generator
) -> np.ndarray:
    """One (seeds × queries) matrix D with true Δ = 0."""
    if model == "gauss":
        var_q = QUERY_SE**2 * 3547  # one seed's per-query variance (points²)
        return (
            rng.normal(0, sd_seed, (seeds, 1))
            + rng.normal(0, math.sqrt(B_SHARE * var_q), (1, queries))
            + rng.normal(0, math.sqrt((1 - B_SHARE) * var_q), (seeds, queries))
        )
    omega = sd_seed / (100 * math.sqrt(2) * _slope(model))
    theta = rng.normal(MU, TAU, queries)
    latent = (
        theta + rng.normal(0, KAPPA, (2, 1, queries)) + rng.normal(0, omega, (2, seeds, 1))
    )  # (arm, S, Q)
    if model == "r1":
        score = (rng.random(latent.shape) < sps.norm.cdf(latent)).astype(float)
    else:
        score = sps.norm.cdf(latent + rng.normal(0, AP_NOISE, latent.shape))
    return 100.0 * (score[1] - score[0])


def old_interval(d: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    """The former report interval: 95 % percentile bootstrap of mean(D), seeds and queries
    resampled with replacement (as resample counts n_s, m_q: mean = Σ n_s m_q D[s, q] / (S·Q))."""
    s_count, q_count = d.shape
    rows = np.arange(resamples, dtype=np.int32)[:, None]
    q_idx = rng.integers(0, q_count, (resamples, q_count), dtype=np.int32) + rows * q_count
    m = np.bincount(q_idx.ravel(), minlength=resamples * q_count).reshape(resamples, q_count)
    s_idx = rng.integers(0, s_count, (resamples, s_count), dtype=np.int32) + rows * s_count
    n = np.bincount(s_idx.ravel(), minlength=resamples * s_count).reshape(resamples, s_count)
    draws = ((n @ d) * m).sum(axis=1) / (s_count * q_count)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(lo), float(hi)


def t_seeds(d: np.ndarray) -> tuple[float, float]:
    """Student t over the per-seed Δs alone (S − 1 degrees of freedom)."""
    return stats.seed_interval(d.mean(axis=1))


def coverage(
    model: str,
    regime: str,
    seeds: int,
    replicates: int,
    old_replicates: int,
    resamples: int,
    queries: int,
    seed: int = 0,
) -> dict[str, float]:
    """Coverage in % of each interval, and the new interval's median half-width."""
    rng = np.random.default_rng([seed, seeds, list(REGIMES).index(regime), MODELS.index(model)])
    held = {"new": 0, "old": 0, "t-seeds": 0}
    halves = []
    for r in range(max(replicates, old_replicates)):
        d = simulate(model, REGIMES[regime], seeds, queries, rng)
        if r < replicates:
            delta = stats.delta_interval(d)
            held["new"] += delta.lo <= 0 <= delta.hi
            halves.append((delta.hi - delta.lo) / 2)
            lo, hi = t_seeds(d)
            held["t-seeds"] += lo <= 0 <= hi
        if r < old_replicates:
            lo, hi = old_interval(d, rng, resamples)
            held["old"] += lo <= 0 <= hi
    count = {"new": replicates, "old": old_replicates, "t-seeds": replicates}
    out = {k: 100 * v / count[k] if count[k] else math.nan for k, v in held.items()}
    out["half"] = float(np.median(halves)) if halves else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[3, 5, 8])
    ap.add_argument(
        "--replicates", type=int, default=4000, help="replicates of the new and t intervals"
    )
    ap.add_argument(
        "--old-replicates", type=int, default=500, help="replicates of the old bootstrap (0: skip)"
    )
    ap.add_argument("--resamples", type=int, default=1000, help="resamples of the old bootstrap")
    ap.add_argument("--queries", type=int, default=3547)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(
        f"95 % intervals, true Δ = 0, {args.queries:,} queries; {args.replicates:,} replicates "
        f"(old: {args.old_replicates:,}, {args.resamples:,} resamples)"
    )
    print("| model | regime | seeds | old % | new % | t-seeds % | new ± (points) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in args.models:
        for regime in REGIMES:
            for s in args.seeds:
                c = coverage(
                    model,
                    regime,
                    s,
                    args.replicates,
                    args.old_replicates,
                    args.resamples,
                    args.queries,
                )
                print(
                    f"| {model} | {regime} | {s} | {c['old']:.1f} | {c['new']:.1f} | "
                    f"{c['t-seeds']:.1f} | {c['half']:.2f} |",
                    flush=True,
                )
    se = 100 * math.sqrt(0.95 * 0.05 / max(1, args.replicates))
    se_old = 100 * math.sqrt(0.95 * 0.05 / max(1, args.old_replicates))
    print(
        f"Monte Carlo SE of a 95 % coverage: ±{se:.2f} (new, t-seeds); ±{se_old:.2f} (old). "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
