"""The verdict sentences of a report: one per row, from the paired 95 % interval's marks (the
one verdict system: a sign or a seed spread is never a verdict); a control against the row it
is for."""

from __future__ import annotations

import math

import pandas as pd

from reports.cells import delta, interval
from reports.summary import DELTA_METRICS, METRICS, is_control, reference_key
from reports.wording import PAPER_WORDS, Wording


def verdicts(summary: pd.DataFrame, words: Wording = PAPER_WORDS) -> list[str]:
    """One plain sentence per row but the reference: does it beat our reference row (named by
    ``words``), and the paper's? Controls come last, each against the row it controls for (its
    ``reference`` in the study)."""
    base = reference_key(summary)
    ours_name = words.in_sentences
    if base not in set(summary["variant"]):
        if words.name:
            return [
                f"There are no {words.name} runs, so no variant can be compared with the "
                f"{words.name}."
            ]
        return [
            f"There are no runs of the reference row ({base}), so no row can be compared with it: run "
            f"it (`run.py` with `--controls` when it is a control row)."
        ]
    control = is_control(summary)
    lines = []
    for r in summary[(summary["variant"] != base) & ~control].itertuples():
        d1, dm = r.d_rank1, r.d_mAP
        known = not (math.isnan(r.paper_d_rank1) and math.isnan(r.paper_d_mAP))
        paper = f"; paper {delta(r.paper_d_rank1)} / {delta(r.paper_d_mAP)}" if known else ""
        if math.isnan(d1) and math.isnan(dm):
            lines.append(f"**{r.variant_label}**: no R-1 / mAP logged, so it cannot be compared.")
            continue
        nums = f"Δ R-1 {delta(d1)}, Δ mAP {delta(dm)}{paper}"
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
    lines += [_control_verdict(summary, r, words) for r in summary[control].itertuples()]
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
            f"Δ {METRICS[m]} {delta(d)}" + ("" if math.isnan(lo) else f" {interval(lo, hi)}")
        )
    return ", ".join(out)


def _deltas(d: dict[str, float]) -> str:
    return ", ".join(f"Δ {METRICS[m]} {delta(d[m])}" for m in DELTA_METRICS)


def _control_verdict(summary: pd.DataFrame, r, words: Wording) -> str:
    """A control against its reference: against the study's reference row (and the share of
    the Δ of the row it ``explains`` that it accounts for: Table 2's ``base_matched``), or
    against a row of its own (``oracle`` vs (g))."""
    head = f"**{r.variant_label}**"
    ours = {m: getattr(r, f"d_{m}") for m in DELTA_METRICS}
    if all(math.isnan(d) for d in ours.values()):
        return f"{head}: no R-1 / mAP logged, so it cannot be compared."
    base = reference_key(summary)
    ref = getattr(r, "reference", base) or base
    if ref == base:
        noise = _within_noise(summary, r, base)
        text = f"{head} scores {_deltas(ours)} against {words.in_sentences}{noise}."
        explains = getattr(r, "explains", None)
        explained = _explained(summary, ours, explains, words) if isinstance(explains, str) else ""
        return f"{text} {explained[0].upper()}{explained[1:]}." if explained else text
    found = summary[summary["variant"] == ref]
    d = {m: getattr(r, f"d_{m}_vs_ref", math.nan) for m in DELTA_METRICS}
    if not len(found) or all(math.isnan(v) for v in d.values()):
        return (
            f"{head} scores {_deltas(ours)} against {words.in_sentences}; there are no ({ref}) "
            f"runs at its seeds to compare it with."
        )
    noise = _within_noise(summary, r, ref, d)
    said = (
        f"{head} scores {_deltas(d)} against ({ref}) ({_deltas(ours)} against {words.in_sentences})"
    )
    marks = [getattr(r, f"d_{m}_vs_ref_mark", "") or "" for m in DELTA_METRICS]
    if not any(marks):
        return f"{said}{noise}."
    meaning = (
        f"the headroom a better foreground target could give ({ref})"
        if "better" in marks
        else f"a better foreground target would not help ({ref})"
    )
    return f"{said}: {meaning}{noise}."


def _explained(summary: pd.DataFrame, control: dict[str, float], full: str, words: Wording) -> str:
    """How much of the row ``full``'s loss against the reference a control accounts for, from
    the control's own Δ against the reference (Table 2: the Re-ID updates TF-Dec takes, by
    ``base_matched``, of (g)'s loss)."""
    found = summary[summary["variant"] == full]
    if not len(found):
        return ""
    parts = []
    for m in DELTA_METRICS:
        dg, dc, name = found.iloc[0][f"d_{m}"], control[m], METRICS[m]
        if math.isnan(dg) or math.isnan(dc):
            continue
        if dg >= 0:
            parts.append(
                f"({full}) does not lose {name} against {words.the_ref} ({delta(dg)}), "
                f"so there is no {name} loss to explain"
            )
        elif dc >= 0:
            parts.append(
                f"it costs no {name} ({delta(dc)}), so it explains "
                f"none of ({full})'s {name} loss ({delta(dg)})"
            )
        else:
            parts.append(
                f"it explains {100 * dc / dg:.0f} % of ({full})'s {name} "
                f"loss ({delta(dc)} of {delta(dg)})"
            )
    return "; ".join(parts)


def _within_noise(
    summary: pd.DataFrame, r, ref: str, deltas: dict[str, float] | None = None
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
            f"{METRICS[m]} {interval(lo, hi)} {mark}" if suffix else f"{METRICS[m]} {mark}"
        )
    return f"; paired 95 % CI{scope}: " + ", ".join(shown)
