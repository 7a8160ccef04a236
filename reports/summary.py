"""The summary statistics of a study's runs: one row per variant with its mean ± std over
seeds, its paired Δ against the study's reference row and that Δ's interval, beside the paper's
numbers.

Δ is taken against the study's reference row (``Study.reference``: the Baseline in the paper's
tables, any row in a study file).

Our metrics are the last logged ``val/*`` values of each run, in percent like the paper's.
``±`` is the sample standard deviation (ddof = 1) over seeds; one seed gives no ±.
Controls (``Variant.control``: not rows of the paper) get no paper numbers, stay out of the
rank agreement and are compared with their own reference (``reports.verdicts``).

Every Δ pairs runs by seed and uses only the seeds both sides have complete: a FINISHED run
and, once any run of the experiment has per-query results, its ``per_query.npz``. A seed one
side lacks is named (``reports.gaps``) and left out of that Δ, its interval, mark and claims;
the row's own mean ± std still uses all its runs, and its seed count says how many were paired.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ablations.variants import paper_results
from reports import stats
from reports.load import TableRuns

METRICS = {"rank1": "R-1", "rank5": "R-5", "mAP": "mAP", "mINP": "mINP"}
"""Our columns, in order (name in ``val/<name>`` → column title)."""


DELTA_METRICS = ("rank1", "mAP")
"""The paper reports R-1 and mAP only, so Δ is compared on those."""


def paper_dataset(dataset: str) -> str:
    """The paper dataset our numbers are set beside: synthetic data → Market-1501's."""
    return "market1501" if dataset.startswith("synthetic") else dataset


def complete_runs(
    tr: TableRuns, per_query: dict[tuple[str, int], dict] | None = None
) -> set[tuple[str, int]]:
    """The (variant, seed) runs a Δ can use: every kept run, or, once any run has per-query
    results, only those that have them (a Δ and its interval must rest on the same seeds)."""
    runs = {(str(v), int(s)) for v, s in zip(tr.runs["variant"], tr.runs["seed"])}
    return runs & set(per_query) if per_query else runs


def paired_seeds(complete: set[tuple[str, int]], a: str, b: str) -> list[int]:
    """The seeds at which both ``a`` and ``b`` have a complete run."""
    return sorted(s for v, s in complete if v == a and (b, s) in complete)


def reference_of(tr: TableRuns, variant: str) -> str:
    """The row a variant's own comparison is against: the study's reference, or a control's own."""
    return tr.study.reference_of(variant)


def reference_key(summary: pd.DataFrame) -> str:
    """The key of the row every Δ of ``summary`` is against: its ``is_reference`` row, or, where
    that row has no runs, the ``reference`` of its rows that are not controls ("" if none)."""
    marked = summary.loc[summary["is_reference"].astype(bool), "variant"]
    if len(marked):
        return str(marked.iloc[0])
    plain = summary.loc[~is_control(summary), "reference"]
    return str(plain.iloc[0]) if len(plain) else ""


def is_reference_row(r) -> bool:
    """Whether the summary row ``r`` (a named tuple) is the reference row."""
    return bool(r.is_reference)


def is_control(summary: pd.DataFrame) -> pd.Series:
    if "control" in summary:
        return summary["control"].fillna(False).astype(bool)
    return pd.Series(False, index=summary.index)


def paired_delta(
    tr: TableRuns, complete: set[tuple[str, int]], a: str, b: str, metric: str
) -> tuple[float, int]:
    """(mean over the paired seeds of ``a`` − ``b`` in ``val/<metric>``, number of seeds);
    NaN without a paired seed."""
    col = f"metrics.val/{metric}"
    seeds = paired_seeds(complete, a, b)
    if col not in tr.runs or not seeds or not tr.same_data(a, b):
        return math.nan, 0
    value = {
        (v, int(sd)): float(x)
        for v, sd, x in zip(tr.runs["variant"], tr.runs["seed"], tr.runs[col])
    }
    return float(np.mean([value[(a, sd)] - value[(b, sd)] for sd in seeds])), len(seeds)


def missing_runs(
    tr: TableRuns, per_query: dict[tuple[str, int], dict] | None = None
) -> dict[tuple[str, int], list[str]]:
    """``{(row, seed): the Δs that lack it}`` for every run a Δ misses: a seed the other side has
    (a reference row with no runs at all misses every seed of the rows against it)."""
    complete = complete_runs(tr, per_query)
    seeds = {v: {int(sd) for sd in tr.runs.loc[tr.runs["variant"] == v, "seed"]} for v in tr.order}
    missing: dict[tuple[str, int], list[str]] = {}
    for v in tr.order:
        ref = reference_of(tr, v)
        if v == tr.study.reference or v == ref or not tr.same_data(v, ref):
            continue
        for sd in sorted(seeds[v] | seeds.get(ref, set())):
            for side in (v, ref):
                if (side, sd) not in complete:
                    missing.setdefault((side, sd), []).append(f"{v} − {ref}")
    return missing


def summarize(tr: TableRuns, per_query: dict[tuple[str, int], dict] | None = None) -> pd.DataFrame:
    """One row per variant (table order): ``control``, ``is_reference`` (the study's reference
    row), ``reference`` (the row its own sentence compares it with), ``explains`` (the row whose
    Δ a control accounts for a share of: ``Variant.explains``), ``n``, ``<m>_mean`` / ``<m>_std`` for METRICS and ``fg_focus``, ``paper_<m>`` (NaN for
    controls and studies without paper numbers), ``d_<m>`` (ours − our Baseline over the seeds
    both have complete; ``n_paired`` of them) and ``paper_d_<m>``."""
    runs = tr.runs
    complete = complete_runs(tr, per_query)
    study = tr.study
    base = study.reference
    controls = {v.key for v in study.rows if v.control}
    paper = {
        r["row"]: r
        for r in paper_results(study)
        if r["dataset"] == paper_dataset(tr.dataset) and r["row"] not in controls
    }
    keys = {v.key for v in study.rows}
    rows = []
    for key in tr.order:
        sub = runs[runs["variant"] == key]
        row: dict = {
            "variant": key,
            "variant_label": sub["variant_label"].iloc[0],
            "control": key in controls,
            "is_reference": key == base,
            "reference": reference_of(tr, key),
            "explains": study.row(key).explains if key in keys else None,
            "n": len(sub),
            "seeds": " ".join(str(s) for s in sorted(sub["seed"])),
        }
        for m in (*METRICS, "fg_focus"):
            col = f"metrics.val/{m}"
            values = sub[col].astype(float) if col in sub else pd.Series(dtype=float)
            row[f"{m}_mean"] = values.mean() if values.notna().any() else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else math.nan
        for m in DELTA_METRICS:
            row[f"paper_{m}"] = paper[key][m] if key in paper else math.nan
            row[f"d_{m}"], paired = paired_delta(tr, complete, key, base, m)
            row[f"d_{m}_vs_ref"] = paired_delta(tr, complete, key, reference_of(tr, key), m)[0]
        row["n_paired"] = paired if key != base else len(sub)
        _paired_means(row, tr, complete, key, base)
        rows.append(row)
    df = pd.DataFrame(rows)
    for m in DELTA_METRICS:
        paper0 = paper[base][m] if base in paper else math.nan
        df[f"paper_d_{m}"] = df[f"paper_{m}"] - paper0
    return df


def _paired_means(
    row: dict, tr: TableRuns, complete: set[tuple[str, int]], key: str, base: str
) -> None:
    """The seeds the row's Δ pairs (``paired_seeds``: the reference row's own complete ones)
    and, over them, the row's mean ± std (``<m>_pmean`` / ``<m>_pstd``) and the reference's mean
    (``ref_<m>_pmean``), so that an opening table's row mean − reference mean is its Δ."""
    seeds = (
        sorted(s for v, s in complete if v == key)
        if key == base
        else paired_seeds(complete, key, base)
        if tr.same_data(key, base)
        else []
    )
    row["paired_seeds"] = " ".join(map(str, seeds))
    for m in DELTA_METRICS:
        col = f"metrics.val/{m}"
        vals = (
            {
                (v, int(sd)): float(x)
                for v, sd, x in zip(tr.runs["variant"], tr.runs["seed"], tr.runs[col])
            }
            if col in tr.runs
            else {}
        )
        own = [vals[(key, sd)] for sd in seeds if (key, sd) in vals]
        ref = [vals[(base, sd)] for sd in seeds if (base, sd) in vals]
        row[f"{m}_pmean"] = float(np.mean(own)) if own else math.nan
        row[f"{m}_pstd"] = float(np.std(own, ddof=1)) if len(own) > 1 else math.nan
        row[f"ref_{m}_pmean"] = float(np.mean(ref)) if ref else math.nan


def by_seed(
    per_query: dict[tuple[str, int], dict], variant: str, metric: str
) -> dict[int, dict[int, float]]:
    """``{seed: {query: value}}`` of one variant's runs that have per-query results."""
    return {
        seed: stats.query_metric(arrays, metric)
        for (v, seed), arrays in per_query.items()
        if v == variant
    }


def compare(
    per_query: dict[tuple[str, int], dict],
    variant: str,
    reference: str,
    metric: str,
    n_resamples: int | None = None,
) -> stats.Delta:
    """The paired Δ (``variant`` − ``reference``) over queries and seeds with its t interval
    (``stats.delta_interval``; ``n_resamples`` is unused: the interval needs no resampling)."""
    d = stats.paired_matrix(
        by_seed(per_query, variant, metric), by_seed(per_query, reference, metric)
    )
    return stats.delta_interval(d)


NOISE_TARGETS = ((1.0, "1"), (0.5, "05"))
"""The half-widths (points) whose seeds / queries the noise columns give: ±1 and ±0.5."""


def _count(n: int | None) -> float:
    return float(n) if n is not None else math.nan


def add_uncertainty(
    summary: pd.DataFrame, tr: TableRuns, per_query: dict[tuple[str, int], dict]
) -> pd.DataFrame:
    """``summary`` with, for R-1 and mAP: the 95 % t-interval of the mean over seeds
    (``<m>_ci_lo/hi``) and the paired Δ's 95 % interval against the Baseline
    (``stats.delta_interval``: ``d_<m>_lo/hi``, ``d_<m>_p``, ``d_<m>_mark``,
    ``d_<m>_detectable``: the smallest Δ these seeds detect at 80 % power), plus ``covers``
    (which noise the interval covers); each row's R-1 seed SD on its per-query results beside
    its chaos floor (``rank1_seed_sd``, ``rank1_floor`` over ``rank1_floor_seeds`` seeds:
    ``stats.chaos_floor``); and where
    the Δ's noise comes from (``stats.noise_parts``): the achieved half-width ``d_<m>_half``,
    the seed / query / interaction shares of its variance in % (``d_<m>_<part>_share``) and the
    seeds (on these queries) and queries (with these seeds) that ±1 and ±0.5 would need
    (``d_<m>_seeds_1``, ``d_<m>_queries_05``, …; NaN: out of reach that way)."""
    df = summary.copy()
    base = tr.study.reference
    for m in DELTA_METRICS:
        cis = [
            stats.seed_interval(
                tr.runs.loc[tr.runs["variant"] == v, f"metrics.val/{m}"].to_numpy(float)
            )
            if f"metrics.val/{m}" in tr.runs
            else (math.nan, math.nan)
            for v in df["variant"]
        ]
        df[f"{m}_ci_lo"], df[f"{m}_ci_hi"] = [c[0] for c in cis], [c[1] for c in cis]
        mats = [
            stats.paired_matrix(by_seed(per_query, v, m), by_seed(per_query, base, m))
            if v != base and tr.same_data(v, base)
            else None
            for v in df["variant"]
        ]
        deltas = [stats.delta_interval(d) if d is not None else None for d in mats]
        parts = [stats.noise_parts(d) if d is not None else None for d in mats]
        df[f"d_{m}_half"] = [(d.hi - d.lo) / 2 if d else math.nan for d in deltas]
        for i, name in enumerate(("seed", "query", "interaction")):
            df[f"d_{m}_{name}_share"] = [p.shares()[i] if p else math.nan for p in parts]
        for half, tag in NOISE_TARGETS:
            df[f"d_{m}_seeds_{tag}"] = [_count(p.seeds_for(half)) if p else math.nan for p in parts]
            df[f"d_{m}_queries_{tag}"] = [
                _count(p.queries_for(half)) if p else math.nan for p in parts
            ]
        df[f"d_{m}_lo"] = [d.lo if d else math.nan for d in deltas]
        df[f"d_{m}_hi"] = [d.hi if d else math.nan for d in deltas]
        df[f"d_{m}_p"] = [d.p if d else math.nan for d in deltas]
        df[f"d_{m}_mark"] = [d.mark if d and not math.isnan(d.lo) else "" for d in deltas]
        df[f"d_{m}_detectable"] = [
            stats.detectable(d) if d and not math.isnan(d.lo) else math.nan for d in deltas
        ]
        if m == DELTA_METRICS[0]:
            df["covers"] = [d.covers if d and d.seeds else "" for d in deltas]
    for m in DELTA_METRICS:  # a control against the row it is for (``reference`` in the study)
        vs = []
        for v in df["variant"]:
            ref = reference_of(tr, v)
            d = None
            if v != base and ref != base and tr.same_data(v, ref):
                d = stats.delta_interval(
                    stats.paired_matrix(by_seed(per_query, v, m), by_seed(per_query, ref, m))
                )
            vs.append(d if d is not None and not math.isnan(d.lo) else None)
        df[f"d_{m}_vs_ref_lo"] = [d.lo if d else math.nan for d in vs]
        df[f"d_{m}_vs_ref_hi"] = [d.hi if d else math.nan for d in vs]
        df[f"d_{m}_vs_ref_mark"] = [d.mark if d else "" for d in vs]
    floors = [stats.chaos_floor(by_seed(per_query, v, "rank1")) for v in df["variant"]]
    df["rank1_seed_sd"], df["rank1_floor"] = [f.seed_sd for f in floors], [f.floor for f in floors]
    df["rank1_floor_seeds"] = [f.seeds for f in floors]
    return df


def rank_agreement(summary: pd.DataFrame, metric: str) -> tuple[float, int]:
    """Spearman ρ between our Δ and the paper's Δ over the non-Baseline paper rows (controls
    left out) that have both; NaN when fewer than 3 or when either ordering is constant.
    Returns (ρ, n)."""
    keep = (summary["variant"] != reference_key(summary)) & ~is_control(summary)
    df = summary[keep][[f"d_{metric}", f"paper_d_{metric}"]].dropna()
    x, y = df.iloc[:, 0].to_numpy(), df.iloc[:, 1].to_numpy()
    if len(df) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, len(df)
    return float(spearmanr(x, y).statistic), len(df)
