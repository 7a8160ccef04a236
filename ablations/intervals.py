"""The paired Δ interval the reports give (and the runner's ``--until-halfwidth`` rule reads).

Two rows are compared query by query, with runs paired by seed: ``D[s, q]`` = the row's metric
− the reference's for seed ``s`` and query ``q`` (``paired_matrix``), ``D = Δ + a_s + b_q +
e_sq`` (seed, query and interaction effects), and the 95 % interval is Δ ± t(ν) · √(v_seed +
v_query) (``delta_interval``); ``reports/stats.py`` describes it in full and re-exports it. Here
so that the runner (``ablations/``), which never imports ``reports/``, computes the very interval
the reports print. numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

CONFIDENCE = 0.95


def query_metric(per_query: dict[str, np.ndarray], metric: str) -> dict[int, float]:
    """``{query index: value}`` in percent for ``rank1`` or ``mAP`` from a per_query.npz."""
    if metric == "rank1":
        values = 100.0 * (np.asarray(per_query["first_rank"]) == 1)
    elif metric == "mAP":
        values = 100.0 * np.asarray(per_query["ap"], dtype=float)
    else:
        raise ValueError(f"per-query metric {metric}: rank1 or mAP")
    return dict(zip(np.asarray(per_query["index"]).tolist(), values.tolist()))


def paired_matrix(
    variant: dict[int, dict[int, float]], base: dict[int, dict[int, float]]
) -> np.ndarray:
    """``D`` (seeds × queries): per-query differences for the seeds both have, over the queries
    every paired run evaluated (the same test set gives the same valid queries)."""
    seeds = sorted(set(variant) & set(base))
    if not seeds:
        return np.zeros((0, 0))
    queries = sorted(set.intersection(*(set(variant[s]) & set(base[s]) for s in seeds)))
    return np.array([[variant[s][q] - base[s][q] for q in queries] for s in seeds], dtype=float)


def mean_squares(d: np.ndarray) -> tuple[float, float, float]:
    """The two-way mean squares of a (seeds × queries) matrix with ≥ 2 rows and columns:
    seeds ``Q · Var(row means)``, queries ``S · Var(column means)`` and the residual
    ``Σ resid² / ((S−1)(Q−1))``; their expectations are σ²_e + Q σ²_a, σ²_e + S σ²_b and σ²_e."""
    s_count, q_count = d.shape
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    resid = d - rows[:, None] - cols[None, :] + d.mean()  # (S, Q)
    return (
        float(q_count * rows.var(ddof=1)),
        float(s_count * cols.var(ddof=1)),
        float((resid**2).sum() / ((s_count - 1) * (q_count - 1))),
    )


def t_design(
    ms_seed: float, ms_query: float, ms_resid: float, seeds: int, queries: int
) -> tuple[float, float]:
    """(variance of Δ, degrees of freedom of its t) from the mean squares of ``seeds`` ≥ 2 ×
    ``queries``: ``v_seed = MS_seed / (S·Q)``, ``v_query = max(0, MS_query − MS_resid) / (S·Q)``,
    ``1/ν = share / (S − 1) + (v_query's Satterthwaite term) / (v_seed + v_query)²``, ν at
    least S − 1: the term of a difference of mean squares grows without bound when the query
    part is small and its mean squares large (S = 2, Q = 20: ν 0.26, a ±23,000-point interval)."""
    sq = seeds * queries
    v_seed, v_query = ms_seed / sq, max(0.0, ms_query - ms_resid) / sq
    var = v_seed + v_query
    if not var > 0:
        return 0.0, math.inf
    inv = v_seed / var / (seeds - 1)
    if v_query > 0:
        inv += (
            (ms_query / sq) ** 2 / (queries - 1)
            + (ms_resid / sq) ** 2 / ((seeds - 1) * (queries - 1))
        ) / var**2
    return var, max(1.0 / inv, seeds - 1.0)


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
    (NaN). A real dataset's queries are fixed, so only S can grow there. The half-width of a
    design is the interval's (``t_design`` on the mean squares these parts expect)."""

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

    def df(self, seeds: int | None = None, queries: int | None = None) -> float:
        """Degrees of freedom of the interval's t for ``seeds`` ≥ 2 × ``queries`` (default:
        these), from the mean squares this noise expects; NaN while the seed part is unknown."""
        s, q = seeds or self.seeds, queries or self.queries
        if math.isnan(self.seed) or s < 2 or q < 2:
            return math.nan
        e = self.interaction
        return t_design(e + q * self.seed, e + s * self.query, e, s, q)[1]

    def shares(self) -> tuple[float, float, float]:
        """The seed, query and interaction parts of the variance as measured, in %."""
        total = self.variance()
        if not total > 0:  # NaN (nothing paired) or no noise at all
            return math.nan, math.nan, math.nan
        s, q = self.seeds, self.queries
        parts = (self.seed / s, self.query / q, self.interaction / (s * q))
        return tuple(100 * v / total for v in parts)

    def half_width(
        self, seeds: int | None = None, queries: int | None = None, confidence: float = CONFIDENCE
    ) -> float:
        """The 95 % interval's half-width for this design: t(ν) · √variance (``df``); infinite
        for one seed (no interval over training noise), NaN while the seed part is unknown."""
        s = seeds or self.seeds
        if s == 1 and not math.isnan(self.seed):
            return math.inf
        df = self.df(s, queries)
        if math.isnan(df):
            return math.nan
        t = stats.t.ppf(1 - (1 - confidence) / 2, df)
        return float(t * math.sqrt(self.variance(s, queries)))

    def seeds_for(
        self, half: float, queries: int | None = None, max_seeds: int = 10_000
    ) -> int | None:
        """The fewest seeds whose half-width is ≤ ``half`` on ``queries`` queries (default: these);
        None when the query part alone is wider, or the seed part is unknown."""
        if math.isnan(self.seed) or self.half_width(max_seeds, queries) > half:
            return None
        return next(s for s in range(2, max_seeds + 1) if self.half_width(s, queries) <= half)

    def queries_for(
        self, half: float, seeds: int | None = None, max_queries: int = 10**7
    ) -> int | None:
        """The fewest queries whose half-width is ≤ ``half`` with ``seeds`` seeds (default: these);
        None when the seed part alone is wider, or it is unknown."""
        if math.isnan(self.seed) or self.half_width(seeds, max_queries) > half:
            return None
        lo, hi = 2, max_queries  # the half-width falls as queries grow: bisect
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.half_width(seeds, mid) <= half else (mid + 1, hi)
        return lo


def noise_parts(d: np.ndarray) -> NoiseParts:
    """``NoiseParts`` of a paired (seeds × queries) Δ matrix (``paired_matrix``)."""
    s_count, q_count = d.shape
    if s_count == 0 or q_count < 2:
        return NoiseParts(math.nan, math.nan, math.nan, s_count, q_count)
    if s_count == 1:  # seed and interaction are one: only the query part is known
        return NoiseParts(math.nan, float(d[0].var(ddof=1)), 0.0, 1, q_count)
    return _parts(*mean_squares(d), s_count, q_count)


def _parts(
    ms_seed: float, ms_query: float, ms_resid: float, seeds: int, queries: int
) -> NoiseParts:
    seed = max(0.0, (ms_seed - ms_resid) / queries)
    query = max(0.0, (ms_query - ms_resid) / seeds)
    return NoiseParts(seed, query, ms_resid, seeds, queries)


@dataclass
class Delta:
    delta: float
    lo: float
    hi: float
    p: float
    seeds: int
    queries: int
    se: float
    """Standard error of Δ: √(v_seed + v_query) (one seed: the query standard error)."""
    df: float
    """Degrees of freedom of the interval's Student t."""
    se_query: float
    """The part of the noise that query sampling alone gives (seeds fixed): √(MS_query / (S·Q))."""
    sd_seed: float
    """Standard deviation of the per-seed Δ (NaN with one seed)."""
    parts: NoiseParts | None = None
    """The variance components, for the design of other seed counts (``detectable``)."""

    @property
    def mark(self) -> str:
        if self.lo > 0:
            return "better"
        if self.hi < 0:
            return "worse"
        return "within noise"

    @property
    def covers(self) -> str:
        if self.seeds > 1:
            return "query sampling and training seed"
        return "query sampling only (one seed)"


def delta_interval(d: np.ndarray, confidence: float = CONFIDENCE) -> Delta:
    """The Δ of a paired (seeds × queries) matrix with its t interval and p (module docstring)."""
    s_count, q_count = d.shape
    if s_count == 0 or q_count < 2:
        nan = math.nan
        mean = float(d.mean()) if d.size else nan
        return Delta(mean, nan, nan, nan, s_count, q_count, nan, nan, nan, nan)
    mean = float(d.mean())
    if s_count == 1:
        parts = noise_parts(d)
        var, df = float(d[0].var(ddof=1)) / q_count, q_count - 1.0
        se_query, sd_seed = math.sqrt(var), math.nan
    else:
        ms_seed, ms_query, ms_resid = mean_squares(d)
        parts = _parts(ms_seed, ms_query, ms_resid, s_count, q_count)
        var, df = t_design(ms_seed, ms_query, ms_resid, s_count, q_count)
        se_query = math.sqrt(ms_query / (s_count * q_count))
        sd_seed = float(d.mean(axis=1).std(ddof=1))
    se = math.sqrt(var)
    if se == 0:  # every paired difference the same: the interval is that point
        return Delta(
            mean,
            mean,
            mean,
            1.0 if mean == 0 else 0.0,
            s_count,
            q_count,
            0.0,
            df,
            se_query,
            sd_seed,
            parts,
        )
    half = float(special.stdtrit(df, 1 - (1 - confidence) / 2)) * se  # Student t quantile
    p = float(2 * special.stdtr(df, -abs(mean) / se))
    return Delta(
        mean, mean - half, mean + half, p, s_count, q_count, se, df, se_query, sd_seed, parts
    )
