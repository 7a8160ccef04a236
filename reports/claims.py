"""A verdict per checkable claim of a study (the paper's, or a study file's ``[[claim]]``):
holds, fails or inconclusive, with its evidence.

An ordering claim "A > B" is judged by the paired Δ (A − B, over queries and the seeds both
have complete) and its t interval (``reports.stats.delta_interval``): *holds* when the 95 %
interval is above 0, *fails* when it is below 0, *inconclusive* when it contains 0 (never a
verdict from unpaired runs). A
claim made of several orderings is judged on all of them: it holds when all hold, fails when any
fails, and is *incomplete (why)* while some cannot be compared (a row not run, rows on different
data, no seed both have complete), *no evidence (why)* when none can. Every claim of the study
gets a line. The cost claim is measured by the runs (``efficiency.json``) at the paper's setting
(ResNet-50, 256×128) and holds within 0.1 M params, 0.01 GMAC and 5 points of the saving.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from ablations.study import Claim
from ablations.variants import paper_results
from reports import stats
from reports.cells import signed
from reports.load import TableRuns
from reports.summary import METRICS, compare, paper_dataset

PAPER_CFA = {"params_M": 1.3, "gmac": 0.168, "saving_pct": 83.4}


NO_EVIDENCE = "no evidence"
INCOMPLETE = "incomplete"


def ordering_verdict(
    per_query: dict,
    pairs: list[tuple[str, str]],
    metric: str = "rank1",
    n_resamples: int = stats.N_RESAMPLES,
    unjudged: dict[tuple[str, str], list[str]] | None = None,
) -> tuple[str, str]:
    """(verdict, evidence) for "A > B" for every (A, B) in ``pairs``; ``unjudged``: the pairs
    that cannot be compared, with why (``["y not run"]``). Holds, fails or inconclusive only on
    every pair; else "no evidence (why)" or "incomplete (why)"."""
    parts, marks, reasons = [], [], []
    for a, b in pairs:
        why = list((unjudged or {}).get((a, b), ()))
        if not why:
            d = compare(per_query, a, b, metric, n_resamples)
            if d.seeds == 0 or math.isnan(d.lo):
                why = [f"no seed with complete runs of both {a} and {b}"]
        if why:
            reasons += why
            parts.append(f"{a}−{b}: {'; '.join(why)}")
            continue
        marks.append(d.mark)
        seeds = f" ({d.seeds} seed{'s' if d.seeds > 1 else ''})" if len(pairs) == 1 else ""
        parts.append(f"{a}−{b} {signed(d.delta)} [{signed(d.lo)}, {signed(d.hi)}]{seeds}")
    if reasons:
        verdict = f"{INCOMPLETE if marks else NO_EVIDENCE} ({_said(reasons)})"
    elif "worse" in marks:
        verdict = "fails"
    elif all(m == "better" for m in marks):
        verdict = "holds"
    else:
        verdict = "inconclusive"
    return verdict, "; ".join(parts)


def _said(reasons: list[str]) -> str:
    """The reasons once each, the rows simply not run named together ("y, w not run")."""
    reasons = list(dict.fromkeys(reasons))
    plain = [r for r in reasons if re.fullmatch(r"\S+ not run", r)]
    if len(plain) > 1:
        at = reasons.index(plain[0])
        reasons = [r for r in reasons if r not in plain]
        reasons.insert(at, ", ".join(r.removesuffix(" not run") for r in plain) + " not run")
    return "; ".join(reasons)


def _unjudged(
    tr: TableRuns, per_query: dict, pairs: tuple[tuple[str, str], ...]
) -> dict[tuple[str, str], list[str]]:
    """Why each pair of ``pairs`` that cannot be compared cannot: a row without runs (a control
    not asked for, a row whose runs are of another setting than the file's), rows on different
    data, or no per-query results at all."""
    present = set(tr.order)
    controls = {v.key for v in tr.study.rows if v.control}

    def absent(row: str) -> str:
        if row in tr.stale:
            return f"{row} not run as the study file has it now"
        if row in tr.dropped:
            return f"{row}'s runs all left out (the report's notes say why)"
        if row in controls:
            return f"{row} not run: a control, run it with --controls"
        return f"{row} not run"

    out = {}
    for a, b in pairs:
        why = [absent(x) for x in dict.fromkeys((a, b)) if x not in present]
        if not why and not tr.same_data(a, b):
            why = [f"{a} and {b} are on different data: never paired"]
        if not why and not tr.same_setting(a, b):
            why = [f"{a} and {b} trained with different --set: not the claim's comparison"]
        if not why and not per_query:
            why = ["no per-query results in these runs: `python ablations/per_query.py` adds them"]
        if why:
            out[(a, b)] = why
    return out


def kendall(
    tr: TableRuns, per_query: dict, dataset: str, metric: str = "rank1", n_resamples: int = 2000
) -> tuple[float, float, float, int]:
    """Kendall τ between our per-variant means and the paper's (paper rows only), with a
    95 % bootstrap interval (queries and seeds resampled, as for Δ). Returns (τ, lo, hi, n)."""
    paper = {r["row"]: r[metric] for r in paper_results(tr.study) if r["dataset"] == dataset}
    keys = [
        k
        for k in tr.order
        if k in paper
        and any(v == k for v, _ in per_query)
        and tr.same_data(k, tr.study.reference)
        and tr.same_setting(k, tr.study.reference)
    ]
    if len(keys) < 3:
        return math.nan, math.nan, math.nan, len(keys)
    seeds = sorted(set.intersection(*({s for v, s in per_query if v == k} for k in keys)))
    if not seeds:
        return math.nan, math.nan, math.nan, len(keys)
    values = {(k, s): stats.query_metric(per_query[(k, s)], metric) for k in keys for s in seeds}
    queries = sorted(set.intersection(*(set(v) for v in values.values())))
    x = np.array(
        [[[values[(k, s)][q] for q in queries] for s in seeds] for k in keys]
    )  # (variants, seeds, queries)
    ref = [paper[k] for k in keys]
    tau = float(kendalltau(x.mean(axis=(1, 2)), ref).statistic)
    rng = np.random.default_rng(stats.SEED)
    draws = []
    for _ in range(n_resamples):
        s_idx = rng.integers(0, len(seeds), len(seeds))
        q_idx = rng.integers(0, len(queries), len(queries))
        draws.append(kendalltau(x[:, s_idx][:, :, q_idx].mean(axis=(1, 2)), ref).statistic)
    lo, hi = np.nanquantile(draws, [0.025, 0.975])
    return tau, float(lo), float(hi), len(keys)


def cfa_cost(attention: dict) -> tuple[str, str]:
    """The paper's cost claim for CFA at its setting (C = 1024, 16×8), from what a run measured
    (``efficiency.json``'s ``attention_costs``: parameters and GMAC of CFA and PAM-CAM)."""
    cfa, pam = attention["CFA"], attention["PAM-CAM"]
    saving = 100 * (1 - cfa["gmac"] / pam["gmac"])
    close = (
        abs(cfa["params"] / 1e6 - PAPER_CFA["params_M"]) <= 0.1
        and abs(cfa["gmac"] - PAPER_CFA["gmac"]) <= 0.01
    )
    verdict = "holds" if close and abs(saving - PAPER_CFA["saving_pct"]) <= 5 else "fails"
    return verdict, (
        f"CFA {cfa['params'] / 1e6:.3f} M params, {cfa['gmac']:.3f} GMAC (paper 1.3 M, "
        f"0.168 G); {saving:.1f} % fewer MACs than our PAM-CAM (paper 83.4 %)"
    )


def claims(
    tr: TableRuns,
    summary: pd.DataFrame,
    per_query: dict,
    cost: bool = True,
    attention: dict | None = None,
    n_resamples: int = stats.N_RESAMPLES,
) -> pd.DataFrame:
    """Every claim of the study with its verdict: claim, source, evidence, verdict, in the order
    of its ``[[claim]]`` entries: orderings, each judged on all of its comparisons (or saying
    which are missing); CFA's cost (not read without ``cost``); a row's foreground focus. A
    paper table adds the rank agreement with the paper."""
    rows = []
    for claim in tr.study.claims:
        if claim.check == "cfa_cost":
            rows.append(_cost_claim(claim, attention, cost))
        elif claim.check == "focus":
            rows.append(_focus_claim(tr, claim))
        else:
            unjudged = _unjudged(tr, per_query, claim.pairs)
            verdict, evidence = ordering_verdict(
                per_query, list(claim.pairs), claim.metric, n_resamples, unjudged
            )
            title = METRICS[claim.metric]
            rows.append((claim.text, claim.source, f"{title} Δ with 95 % CI: {evidence}", verdict))
    if tr.study.table is not None:
        tau, lo, hi, n = kendall(tr, per_query, paper_dataset(tr.dataset))
        if math.isnan(tau):
            why = (
                f"{n} of the paper's rows with per-query results; an ordering needs 3"
                if n < 3
                else "no seed that all of its rows have complete, or no ordering among their scores"
            )
            verdict, evidence = f"{NO_EVIDENCE} ({why})", f"Kendall τ on R-1: none ({n} rows)"
        else:
            verdict = "inconclusive" if lo <= 0 <= hi else "holds" if lo > 0 else "fails"
            evidence = (
                f"Kendall τ on R-1 = {signed(tau, 2)} (95 % CI "
                f"[{signed(lo, 2)}, {signed(hi, 2)}], {n} rows)"
            )
        rows.append(
            (
                f"our ordering of the Table {tr.study.table} rows follows the paper's",
                f"Table {tr.study.table}",
                evidence,
                verdict,
            )
        )
    return pd.DataFrame(rows, columns=["claim", "source", "evidence", "verdict"])


def _cost_claim(claim: Claim, attention: dict | None, read: bool) -> tuple[str, str, str, str]:
    """CFA's cost as the runs measured it (``efficiency.json``'s ``attention_costs``); ``read``
    False: the report was built without reading it (``--no-efficiency``)."""
    if not read:
        return (
            claim.text,
            claim.source,
            "CFA's and PAM-CAM's cost: not read",
            f"{NO_EVIDENCE} (built with --no-efficiency)",
        )
    if attention:
        verdict, evidence = cfa_cost(attention)
        return claim.text, claim.source, evidence, verdict
    return (
        claim.text,
        claim.source,
        "CFA's and PAM-CAM's cost: none measured",
        f"{NO_EVIDENCE} (no run has efficiency.json: `python ablations/per_query.py` adds it)",
    )


def _focus_claim(tr: TableRuns, claim: Claim) -> tuple[str, str, str, str]:
    """The row ``claim.row``'s normalised foreground focus of A′ over seeds: holds when its
    95 % interval is above 0 (0 = a uniform map, 100 = the ideal one)."""
    key = claim.row
    what = f"normalised focus of A′ for ({key})"
    if key not in set(tr.order):
        why = f"{key}'s runs all left out" if key in tr.dropped else f"{key} not run"
        return claim.text, claim.source, f"{what}: none", f"{NO_EVIDENCE} ({why})"
    focus = (
        tr.runs.loc[tr.runs["variant"] == key, "metrics.val/fg_focus_norm_attn"]
        if "metrics.val/fg_focus_norm_attn" in tr.runs
        else pd.Series(dtype=float)
    )
    lo, hi = stats.seed_interval(focus.to_numpy(float))
    if focus.isna().all():
        verdict, interval = f"{NO_EVIDENCE} (no focus logged for {key})", "not logged"
    elif math.isnan(lo):
        verdict, interval = "inconclusive", "one seed: no interval"
    else:
        interval = f"95 % CI [{lo:.1f}, {hi:.1f}] over seeds".replace("-", "−")
        verdict = "holds" if lo > 0 else ("fails" if hi < 0 else "inconclusive")
    evidence = f"{what}: {focus.mean():.1f} ({interval}; 0 = uniform, 100 = ideal)"
    return claim.text, claim.source, evidence, verdict
