"""What a report's comparisons leave out, and why, one line each: a run a Δ misses, rows on
different data, a metric a run never logged; and how ``--until-halfwidth`` chose the seeds."""

from __future__ import annotations

import math

import pandas as pd

from ablations.seed_rule import FIRST_SEEDS, SeedRule, stop_reason
from reports.load import TableRuns
from reports.summary import METRICS, complete_runs, missing_runs, reference_of


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
    on the row's Δ R-1 half-width here); a seed above the rule's first ones whose run is not
    tagged with that rule (given with ``--seeds``, or by another rule) is named as such, and its
    row is not said to have stopped by the rule; [] for seeds given with ``--seeds`` only."""
    if "tags.seed_rule" not in tr.runs:
        return []
    tagged = tr.runs.dropna(subset=["tags.seed_rule"]).sort_values("start_time")
    rule = SeedRule.parse(str(tagged["tags.seed_rule"].iloc[-1])) if len(tagged) else None
    if rule is None:
        return []
    ref = tr.study.reference
    # The rule's first seeds are every row's whoever trained them; a seed above them is the
    # rule's only where its run says so.
    by_rule = (tr.runs["tags.seed_rule"].fillna("").astype(str) == rule.tag) | tr.runs["seed"].isin(
        rule.initial
    )
    other = {
        v: " ".join(str(s) for s in sorted(g["seed"]))
        for v, g in tr.runs[~by_rule].groupby("variant")
    }
    first = "" if rule.initial == FIRST_SEEDS else f" --seeds {' '.join(map(str, rule.initial))}"
    lines = [
        f"Seeds chosen by `--until-halfwidth {rule.target:g} --max-seeds {rule.max_seeds}"
        f"{first}`: "
        f"every row's first seeds, then one seed at a time to the row whose Δ R-1 interval "
        f"against `{ref}` was widest (and `{ref}` at that seed too), until its half-width was "
        f"at most {rule.target:g} points or it had {rule.max_seeds} seeds. The rule reads the "
        f"interval's width only, never its sign or p-value, so where a row stopped favours no "
        f"verdict.",
        "",
    ]
    if other:
        lines[0] += (
            " Some seeds were not chosen by this rule (given with `--seeds`, or by another "
            "rule): each row names them, and a row that has them stopped where those runs left "
            "it, not by the rule."
        )
    for r in summary.itertuples():
        extra = f" ({other[r.variant]} not chosen by the rule)" if r.variant in other else ""
        if r.variant == ref:
            lines.append(f"- {r.variant_label} (the reference): seeds {r.seeds}{extra}")
            continue
        half = getattr(r, "d_rank1_half", math.nan)
        if r.variant in other:
            why = "no interval" if math.isnan(half) else f"half-width ±{half:.2f}"
        else:
            why = stop_reason(half, int(r.n), rule)
        lines.append(f"- {r.variant_label}: seeds {r.seeds}{extra}, {why}")
    return lines + [""]


def _compared(tr: TableRuns) -> list[tuple[str, str]]:
    """The pairs of rows the report compares: each row and its reference, each claim's sides."""
    pairs = [(v, reference_of(tr, v)) for v in tr.order]
    return pairs + [pair for claim in tr.study.claims for pair in claim.pairs]


def setting_gaps(tr: TableRuns) -> list[str]:
    """One line per compared pair of rows (present in the runs) trained with different
    ``--set`` values: their Δ compares those settings too, and no claim is judged on it."""
    lines, seen, present = [], set(), set(tr.order)
    for a, b in _compared(tr):
        if a in present and b in present and a != b and not tr.same_setting(a, b):
            if frozenset((a, b)) not in seen:
                seen.add(frozenset((a, b)))
                lines.append(
                    f"{a} − {b}: {a} trained with {_setting_text(tr, a)}, {b} with "
                    f"{_setting_text(tr, b)}: their Δ compares these settings too"
                )
    return lines


def _setting_text(tr: TableRuns, row: str) -> str:
    setting = tr.row_settings.get(row, "")
    return f"`{setting}`" if setting else "no --set of its own"


def data_gaps(tr: TableRuns) -> list[str]:
    """One line per pair of rows the report would compare (a row and its reference, the two
    sides of a claim) that were run on different data: they are never paired."""
    lines, seen = [], set()
    for a, b in _compared(tr):
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
