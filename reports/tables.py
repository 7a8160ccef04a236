"""The ablation table: our mean ± std over seeds beside the paper's numbers and Δ-vs-Baseline.

Δ is taken against the study's reference row (``Study.reference``: the Baseline in the paper's
tables, any row in a study file); "Baseline" below means that row.

Our metrics are the last logged ``val/*`` values of each run, in percent like the paper's.
``±`` is the sample standard deviation (ddof = 1) over seeds; one seed gives no ±.
Controls (``Variant.control``: not rows of the paper) get no paper numbers, stay out of the
rank agreement and are compared with their own reference in ``verdicts``.

Every Δ pairs runs by seed and uses only the seeds both sides have complete: a FINISHED run
and, once any run of the experiment has per-query results, its ``per_query.npz``. A seed one
side lacks is named (``seed_gaps``) and left out of that Δ, its interval, mark and claims; the
row's own mean ± std still uses all its runs, and its seed count says how many were paired.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ablations.seed_rule import SeedRule, stop_reason
from ablations.variants import paper_results
from reports import stats
from reports.load import TableRuns

METRICS = {"rank1": "R-1", "rank5": "R-5", "mAP": "mAP", "mINP": "mINP"}
"""Our columns, in order (name in ``val/<name>`` → column title)."""
DELTA_METRICS = ("rank1", "mAP")
"""The paper reports R-1 and mAP only, so Δ is compared on those."""
BASELINE = "base"
"""The reference row of the paper's tables."""
FULL = "g"
"""Table 2's full model: the TF-Dec variant whose gap the ``base_matched`` control explains."""


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


def _reference(summary: pd.DataFrame) -> str:
    """The key of the row every Δ of ``summary`` is against."""
    if "is_reference" in summary and summary["is_reference"].any():
        return str(summary.loc[summary["is_reference"].astype(bool), "variant"].iloc[0])
    return BASELINE


def reference_label(summary: pd.DataFrame) -> str | None:
    """The label of a study's own reference row; None when the Δ are against the Baseline."""
    ref = _reference(summary)
    if ref == BASELINE:
        return None
    found = summary[summary["variant"] == ref]
    return str(found["variant_label"].iloc[0]) if len(found) else ref


def _is_ref(r) -> bool:
    """Whether the summary row ``r`` (a named tuple) is the reference row."""
    return bool(getattr(r, "is_reference", r.variant == BASELINE))


def reference_name(summary: pd.DataFrame) -> str:
    """How the text names the reference row: "our Baseline", or "the reference (<label>)"."""
    label = reference_label(summary)
    return "our Baseline" if label is None else f"the reference ({label})"


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


def seed_gaps(tr: TableRuns, per_query: dict[tuple[str, int], dict] | None = None) -> list[str]:
    """One line per run a Δ misses (a seed the other side has): which run, why, and which Δ
    leave that seed out."""
    kept = complete_runs(tr)
    rank = {v.key: i for i, v in enumerate(tr.study.rows)}
    grouped: dict[tuple[str, str, str], list[int]] = {}  # a row short of several seeds: one line
    for (side, sd), deltas in sorted(
        missing_runs(tr, per_query).items(), key=lambda x: (rank.get(x[0][0], len(rank)), x[0][1])
    ):
        why = "has no per_query.npz" if (side, sd) in kept else "has no FINISHED run"
        grouped.setdefault((side, why, ", ".join(deltas)), []).append(sd)
    lines = []
    for (side, why, deltas), sds in grouped.items():
        if len(sds) == 1:
            lines.append(f"{side}-s{sds[0]} {why}: seed {sds[0]} is left out of {deltas}")
        else:
            lines.append(
                f"{side} {why} at seeds {' '.join(map(str, sds))}: they are left out of {deltas}"
            )
    return lines


def seed_rule_note(tr: TableRuns, summary: pd.DataFrame) -> list[str]:
    """Where ``run.py --until-halfwidth`` chose the seeds (the runs' ``seed_rule`` tag, the
    newest run's): the rule, then each row's seeds and why it stopped (``seed_rule.stop_reason``
    on the row's Δ R-1 half-width here); [] for seeds given with ``--seeds``."""
    if "tags.seed_rule" not in tr.runs:
        return []
    tagged = tr.runs.dropna(subset=["tags.seed_rule"]).sort_values("start_time")
    rule = SeedRule.parse(str(tagged["tags.seed_rule"].iloc[-1])) if len(tagged) else None
    if rule is None:
        return []
    ref = tr.study.reference
    lines = [
        f"Seeds chosen by `--until-halfwidth {rule.target:g} --max-seeds {rule.max_seeds}`: "
        f"every row's first seeds, then one seed at a time to the row whose Δ R-1 interval "
        f"against `{ref}` was widest (and `{ref}` at that seed too), until its half-width was "
        f"at most {rule.target:g} points or it had {rule.max_seeds} seeds. The rule reads the "
        f"interval's width only, never its sign or p-value, so where a row stopped favours no "
        f"verdict.",
        "",
    ]
    for r in summary.itertuples():
        if r.variant == ref:
            lines.append(f"- {r.variant_label} (the reference): seeds {r.seeds}")
            continue
        half = getattr(r, "d_rank1_half", math.nan)
        lines.append(f"- {r.variant_label}: seeds {r.seeds}, {stop_reason(half, int(r.n), rule)}")
    return lines + [""]


def data_gaps(tr: TableRuns) -> list[str]:
    """One line per pair of rows the report would compare (a row and its reference, the two
    sides of a claim) that were run on different data: they are never paired."""
    pairs = [(v, reference_of(tr, v)) for v in tr.order]
    pairs += [pair for claim in tr.study.claims for pair in claim.pairs]
    lines, seen = [], set()
    for a, b in pairs:
        if (
            a in tr.row_digests
            and b in tr.row_digests
            and not tr.same_data(a, b)
            and frozenset((a, b)) not in seen
        ):
            seen.add(frozenset((a, b)))
            lines.append(
                f"{a} and {b} are on different data (data digests {tr.row_digests[a]}, "
                f"{tr.row_digests[b]}): never paired, so there is no Δ between them"
            )
    return lines


def summarize(tr: TableRuns, per_query: dict[tuple[str, int], dict] | None = None) -> pd.DataFrame:
    """One row per variant (table order): ``control``, ``is_reference`` (the study's reference
    row), ``n``, ``<m>_mean`` / ``<m>_std`` for METRICS and ``fg_focus``, ``paper_<m>`` (NaN for
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
    rows = []
    for key in tr.order:
        sub = runs[runs["variant"] == key]
        row: dict = {
            "variant": key,
            "variant_label": sub["variant_label"].iloc[0],
            "control": key in controls,
            "is_reference": key == base,
            "reference": reference_of(tr, key),
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


def seed_list(seeds: str) -> str:
    """``"0 1 2 3 5"`` → ``"0–3, 5"``: runs of consecutive seeds as ranges."""
    runs: list[list[int]] = []
    for n in (int(x) for x in seeds.split()):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


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


def missing_metrics(tr: TableRuns) -> list[str]:
    """``val/mINP: missing in base-s0, g-s1`` for every METRICS value a kept run lacks."""
    out = []
    for m in METRICS:
        col = f"metrics.val/{m}"
        lacking = (
            tr.runs["name"] if col not in tr.runs else tr.runs.loc[tr.runs[col].isna(), "name"]
        )
        if len(lacking):
            out.append(f"val/{m}: missing in {', '.join(map(str, lacking))}")
    return out


def rank_agreement(summary: pd.DataFrame, metric: str) -> tuple[float, int]:
    """Spearman ρ between our Δ and the paper's Δ over the non-Baseline paper rows (controls
    left out) that have both; NaN when fewer than 3 or when either ordering is constant.
    Returns (ρ, n)."""
    keep = (summary["variant"] != _reference(summary)) & ~_is_control(summary)
    df = summary[keep][[f"d_{metric}", f"paper_d_{metric}"]].dropna()
    x, y = df.iloc[:, 0].to_numpy(), df.iloc[:, 1].to_numpy()
    if len(df) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, len(df)
    return float(spearmanr(x, y).statistic), len(df)


def _is_control(summary: pd.DataFrame) -> pd.Series:
    if "control" in summary:
        return summary["control"].fillna(False).astype(bool)
    return pd.Series(False, index=summary.index)


def pm(mean: float, std: float, latex: bool = False) -> str:
    if math.isnan(mean):
        return "—" if not latex else "--"
    mean = unsigned_zero(mean)  # never "-0.0"
    if math.isnan(std):
        return f"{mean:.1f}" if latex else f"{mean:.1f}".replace("-", "−")
    return f"${mean:.1f} \\pm {std:.1f}$" if latex else f"{mean:.1f} ± {std:.1f}".replace("-", "−")


def unsigned_zero(value: float, digits: int = 1) -> float:
    """``value``, or 0.0 when it rounds to zero at ``digits``: "+0.0", never "-0.0"."""
    return value + 0.0 if round(value, digits) else 0.0


def signed(value: float, digits: int = 1) -> str:
    """A change as the text prints it: its sign always, a true minus, "+0.0" for one that rounds
    to zero."""
    return f"{unsigned_zero(value, digits):+.{digits}f}".replace("-", "−")


def _delta(value: float, latex: bool = False) -> str:
    if math.isnan(value):
        return "—" if not latex else "--"
    return f"${unsigned_zero(value):+.1f}$" if latex else signed(value)


def _num(value: float, latex: bool = False, fmt: str = ".1f") -> str:
    return ("--" if latex else "—") if math.isnan(value) else f"{value:{fmt}}"


def _p(p: float, latex: bool = False) -> str:
    if math.isnan(p):
        return "--" if latex else "—"
    return ("$<0.001$" if latex else "<0.001") if p < 0.001 else f"{p:.3f}"


def _interval(lo: float, hi: float, latex: bool = False, signed: bool = True) -> str:
    """``[lo, hi]``; ``signed`` (a Δ's interval) writes the sign of each end, a score's has none."""
    if math.isnan(lo) or math.isnan(hi):
        return "--" if latex else "—"
    lo, hi = unsigned_zero(lo), unsigned_zero(hi)
    text = f"[{lo:+.1f}, {hi:+.1f}]" if signed else f"[{lo:.1f}, {hi:.1f}]"
    return f"${text}$" if latex else text.replace("-", "−")


def display(summary: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The table as text cells (mean ± std; Δ signed); the columns of the paper's tables."""
    has_fg = summary["fg_focus_mean"].notna().any()
    with_ci = "d_rank1_lo" in summary
    rows = []
    for r in summary.itertuples():
        paired = getattr(r, "n_paired", r.n)
        row = {
            "Variant": r.variant_label,
            "seeds": f"{r.n} ({paired} paired)" if paired < r.n else str(r.n),
        }
        for m, title in METRICS.items():
            row[title] = pm(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"), latex)
        if has_fg:
            row["fg focus"] = pm(r.fg_focus_mean, r.fg_focus_std, latex)
        row["paper R-1"] = _num(r.paper_rank1, latex)
        row["paper mAP"] = _num(r.paper_mAP, latex)
        is_base = _is_ref(r)
        for m in DELTA_METRICS:
            ours, theirs = (
                (math.nan, math.nan)
                if is_base
                else (getattr(r, f"d_{m}"), getattr(r, f"paper_d_{m}"))
            )
            d = "$\\Delta$ " if latex else "Δ"
            if with_ci:
                row[f"{METRICS[m]} 95% CI"] = _interval(
                    getattr(r, f"{m}_ci_lo"), getattr(r, f"{m}_ci_hi"), latex, signed=False
                )
            row[f"{d}{METRICS[m]}"] = _delta(ours, latex)
            if with_ci:
                row[f"{d}{METRICS[m]} 95% CI"] = _interval(
                    getattr(r, f"d_{m}_lo"), getattr(r, f"d_{m}_hi"), latex
                )
                row[f"p ({METRICS[m]})"] = _p(getattr(r, f"d_{m}_p"), latex)
                vs = "Base." if _reference(summary) == BASELINE else "ref."
                row[f"{d}{METRICS[m]} vs {vs}"] = getattr(r, f"d_{m}_mark") or (
                    "--" if latex else "—"
                )
            row[f"paper {d}{METRICS[m]}"] = _delta(theirs, latex)
        rows.append(row)
    return pd.DataFrame(rows)


def answer(summary: pd.DataFrame) -> pd.DataFrame:
    """The table a report opens with: variant | seeds | R-1 | mAP | Δ R-1 [95 % CI] |
    Δ mAP [95 % CI] | paper Δ R-1 | paper Δ mAP | verdict (the Δ's mark against our Baseline,
    one word when R-1 and mAP agree); without the paper columns when no row has a paper
    number. A row's seeds are those its Δ pairs with the reference's (the reference's own:
    all of its seeds), and its R-1 and mAP are over those seeds; where rows have other seeds
    than the reference, a column gives the reference's R-1 over each row's, so that every
    row's R-1 minus that column is its Δ. Everything else stays in ``display``."""
    with_ci = "d_rank1_lo" in summary
    paired = "paired_seeds" in summary
    ref_seeds = (
        summary.loc[[_is_ref(r) for r in summary.itertuples()], "paired_seeds"].tolist()
        if paired
        else []
    )
    uneven = (
        paired and any(s != ref_seeds[0] for s in summary["paired_seeds"]) if ref_seeds else False
    )
    rows = []
    for r in summary.itertuples():
        is_base = _is_ref(r)
        row = {"Variant": r.variant_label}
        if paired:
            row["seeds"] = seed_list(r.paired_seeds)
        for m in DELTA_METRICS:
            if paired:
                row[METRICS[m]] = pm(getattr(r, f"{m}_pmean"), getattr(r, f"{m}_pstd"))
            else:
                row[METRICS[m]] = pm(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"))
        if uneven:
            row[f"ref. {METRICS['rank1']} on these seeds"] = _num(r.ref_rank1_pmean)
        for m in DELTA_METRICS:
            cell = "—" if is_base else _delta(getattr(r, f"d_{m}"))
            if with_ci and not is_base and not math.isnan(getattr(r, f"d_{m}_lo")):
                cell += " " + _interval(getattr(r, f"d_{m}_lo"), getattr(r, f"d_{m}_hi"))
            row[f"Δ {METRICS[m]} [95 % CI]"] = cell
        for m in DELTA_METRICS:
            row[f"paper Δ {METRICS[m]}"] = "—" if is_base else _delta(getattr(r, f"paper_d_{m}"))
        marks = (
            [getattr(r, f"d_{m}_mark", "") or "" for m in DELTA_METRICS] if with_ci else ["", ""]
        )
        if is_base:
            row["verdict"] = "reference"
        elif not any(marks):
            row["verdict"] = "—"
        else:
            row["verdict"] = (
                marks[0]
                if marks[0] == marks[1]
                else f"R-1 {marks[0] or '—'}, mAP {marks[1] or '—'}"
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if not has_paper_numbers(summary):  # a study of one's own: no paper columns
        table = table.drop(columns=[f"paper Δ {METRICS[m]}" for m in DELTA_METRICS])
    return table


def has_paper_numbers(summary: pd.DataFrame) -> bool:
    """Whether any row of ``summary`` has a paper Δ (a study of one's own has none)."""
    paper = [f"paper_d_{m}" for m in DELTA_METRICS if f"paper_d_{m}" in summary]
    return bool(paper) and bool(summary[paper].notna().any().any())


def markdown(summary: pd.DataFrame) -> str:
    """The display table in Markdown."""
    return markdown_cells(display(summary))


def markdown_cells(shown: pd.DataFrame) -> str:
    """A table of text cells in Markdown, kept as written (no re-parsing of "+1.0"); the first
    column left-aligned, the others right."""
    align = ["left"] + ["right"] * (shown.shape[1] - 1)
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        text = text.replace(a, b)
    return text


def write_tables(summary: pd.DataFrame, out_dir: Path, caption: str) -> list[Path]:
    """``table.csv`` (numbers), ``table.md`` (the report's opening table, then every column) and
    ``table.tex`` in ``out_dir``."""
    csv_path, md_path, tex_path = out_dir / "table.csv", out_dir / "table.md", out_dir / "table.tex"
    summary.to_csv(csv_path, index=False, float_format="%.4f")
    md_path.write_text(
        markdown_cells(answer(summary)) + "\n\nEvery column (seeds, R-5, mINP, foreground "
        "focus, each row's own interval, p-values, the paper's absolute numbers):\n\n"
        + markdown(summary)
        + "\n",
        encoding="utf-8",
    )
    tex = display(summary, latex=True)
    tex["Variant"] = tex["Variant"].map(latex_escape)
    body = tex.style.hide(axis="index").to_latex(
        hrules=True,
        column_format="l" + "r" * (tex.shape[1] - 1),
        caption=latex_escape(caption),
        position="t",
    )
    tex_path.write_text(body, encoding="utf-8")
    return [csv_path, md_path, tex_path]


def verdicts(summary: pd.DataFrame) -> list[str]:
    """One plain sentence per non-Baseline variant: does it beat our Baseline, and the paper's?
    Controls come last, each against the row it controls for (its ``reference`` in the study)."""
    base = _reference(summary)
    ours_name = reference_name(summary)
    if base not in set(summary["variant"]):
        if base == BASELINE:
            return ["There are no Baseline runs, so no variant can be compared with the Baseline."]
        return [
            f"There are no runs of the reference row ({base}), so no row can be compared with it: run "
            f"it (`run.py` with `--controls` when it is a control row)."
        ]
    control = _is_control(summary)
    lines = []
    for r in summary[(summary["variant"] != base) & ~control].itertuples():
        d1, dm = r.d_rank1, r.d_mAP
        known = not (math.isnan(r.paper_d_rank1) and math.isnan(r.paper_d_mAP))
        paper = f"; paper {_delta(r.paper_d_rank1)} / {_delta(r.paper_d_mAP)}" if known else ""
        if math.isnan(d1) and math.isnan(dm):
            lines.append(f"**{r.variant_label}**: no R-1 / mAP logged, so it cannot be compared.")
            continue
        nums = f"Δ R-1 {_delta(d1)}, Δ mAP {_delta(dm)}{paper}"
        marks = {METRICS[m]: getattr(r, f"d_{m}_mark", "") or "" for m in DELTA_METRICS}
        if any(marks.values()):  # the paired intervals decide the words, not the signs
            covers = getattr(r, "covers", "") or ""
            lines.append(
                f"**{r.variant_label}** {_by_marks(marks, ours_name)} ({_with_ci(r)}{paper}; "
                "paired 95 % CI"
                f"{', ' + covers if covers.startswith('query sampling only') else ''})."
            )
            continue
        lines.append(f"**{r.variant_label}**: {nums}{NO_INTERVAL}.")
    lines += [_control_verdict(summary, r) for r in summary[control].itertuples()]
    return lines


NO_INTERVAL = (
    "; no per-query results, so no interval and no verdict (`python ablations/per_query.py` "
    "adds them)"
)
"""What a comparison without paired per-query results says: the one verdict system is the paired
interval (``stats.delta_interval``); a sign or a seed spread is never a verdict."""


def _by_marks(marks: dict[str, str], ours: str) -> str:
    """ "beats our Baseline on mAP and is within noise of it on R-1": each metric by its mark."""
    said = {
        "better": f"beats {ours} on",
        "worse": f"falls below {ours} on",
        "within noise": f"is within noise of {ours} on",
    }
    groups = {mark: [m for m, x in marks.items() if x == mark] for mark in said}
    parts = [f"{said[mark]} {' and '.join(ms)}" for mark, ms in groups.items() if ms]
    for i in range(1, len(parts)):  # name the reference once
        parts[i] = parts[i].replace(f" {ours} on", " it on")
    unmarked = [m for m, x in marks.items() if not x]
    return " and ".join(parts) + (f" (no interval on {' and '.join(unmarked)})" if unmarked else "")


def _with_ci(r) -> str:
    """ "Δ R-1 +1.5 [−0.3, +3.4], Δ mAP +1.3 [+0.2, +2.7]" (the interval where there is one)."""
    out = []
    for m in DELTA_METRICS:
        d, lo, hi = (getattr(r, f"d_{m}{x}", math.nan) for x in ("", "_lo", "_hi"))
        out.append(
            f"Δ {METRICS[m]} {_delta(d)}" + ("" if math.isnan(lo) else f" {_interval(lo, hi)}")
        )
    return ", ".join(out)


def _deltas(d: dict[str, float]) -> str:
    return ", ".join(f"Δ {METRICS[m]} {_delta(d[m])}" for m in DELTA_METRICS)


def _control_verdict(summary: pd.DataFrame, r) -> str:
    """A control against its reference: ``base_matched`` vs the Baseline (and the share of
    (g)'s loss that fewer Re-ID updates account for), ``oracle`` vs (g)."""
    head = f"**{r.variant_label}**"
    ours = {m: getattr(r, f"d_{m}") for m in DELTA_METRICS}
    if all(math.isnan(d) for d in ours.values()):
        return f"{head}: no R-1 / mAP logged, so it cannot be compared."
    base = _reference(summary)
    ref = getattr(r, "reference", base) or base
    if ref == base:
        text = f"{head} scores {_deltas(ours)} against {reference_name(summary)}{_within_noise(summary, r, base)}."
        explained = _explained(summary, ours) if r.variant == "base_matched" else ""
        return f"{text} {explained[0].upper()}{explained[1:]}." if explained else text
    found = summary[summary["variant"] == ref]
    d = {m: getattr(r, f"d_{m}_vs_ref", math.nan) for m in DELTA_METRICS}
    if not len(found) or all(math.isnan(v) for v in d.values()):
        return (
            f"{head} scores {_deltas(ours)} against {reference_name(summary)}; there are no ({ref}) "
            f"runs at its seeds to compare it with."
        )
    noise = _within_noise(summary, r, ref, d)
    said = f"{head} scores {_deltas(d)} against ({ref}) ({_deltas(ours)} against {reference_name(summary)})"
    marks = [getattr(r, f"d_{m}_vs_ref_mark", "") or "" for m in DELTA_METRICS]
    if not any(marks):
        return f"{said}{noise}."
    meaning = (
        f"the headroom a better foreground target could give ({ref})"
        if "better" in marks
        else f"a better foreground target would not help ({ref})"
    )
    return f"{said}: {meaning}{noise}."


def _explained(summary: pd.DataFrame, control: dict[str, float]) -> str:
    """How much of (g)'s loss against the Baseline the Re-ID updates TF-Dec takes account for,
    from the ``base_matched`` control's own Δ vs the Baseline."""
    found = summary[summary["variant"] == FULL]
    if not len(found):
        return ""
    parts = []
    for m in DELTA_METRICS:
        dg, dc, name = found.iloc[0][f"d_{m}"], control[m], METRICS[m]
        if math.isnan(dg) or math.isnan(dc):
            continue
        if dg >= 0:
            parts.append(
                f"({FULL}) does not lose {name} against the Baseline ({_delta(dg)}), "
                f"so there is no {name} loss to explain"
            )
        elif dc >= 0:
            parts.append(
                f"fewer Re-ID updates cost no {name} ({_delta(dc)}), so they explain "
                f"none of ({FULL})'s {name} loss ({_delta(dg)})"
            )
        else:
            parts.append(
                f"fewer Re-ID updates explain {100 * dc / dg:.0f} % of ({FULL})'s {name} "
                f"loss ({_delta(dc)} of {_delta(dg)})"
            )
    return "; ".join(parts)


def _within_noise(
    summary: pd.DataFrame, r, ref: str = BASELINE, deltas: dict[str, float] | None = None
) -> str:
    """The paired 95 % interval's marks of a comparison: against the study's reference row
    (``d_<m>_mark``) or, given ``deltas`` (the changes against the row ``ref`` a control is for),
    against that row (``d_<m>_vs_ref_mark``); without per-query results, no verdict."""
    base = summary[summary["variant"] == ref].iloc[0]
    suffix = "_vs_ref" if deltas is not None else ""
    marks = [getattr(r, f"d_{m}{suffix}_mark", "") or "" for m in DELTA_METRICS]
    if not any(marks):
        return NO_INTERVAL
    scope = "" if r.n > 1 and base["n"] > 1 else ", query sampling only (one seed)"
    shown = []
    for m, mark in zip(DELTA_METRICS, marks):
        if not mark:
            continue
        lo, hi = (getattr(r, f"d_{m}{suffix}_{x}", math.nan) for x in ("lo", "hi"))
        shown.append(
            f"{METRICS[m]} {_interval(lo, hi)} {mark}" if suffix else f"{METRICS[m]} {mark}"
        )
    return f"; paired 95 % CI{scope}: " + ", ".join(shown)
