"""The README pages: one per experiment, and ``<out>/table{N}/README.md`` showing them all."""

from __future__ import annotations

import math
import os
import re
import shlex
import statistics
from pathlib import Path

import pandas as pd

from ablations.store import DEFAULT_TRACKING_URI, REPO
from reports import cells, diagnostics_table, gaps, summary, tables, verdicts
from reports.load import run_overrides
from reports.report import Report
from reports.wording import Wording, wording

PAPER_NAMES = {
    "market1501": "Market-1501",
    "cuhk03_labeled": "CUHK03 (labeled)",
    "cuhk03_detected": "CUHK03 (detected)",
    "msmt17": "MSMT17",
    "dukemtmcreid": "DukeMTMC-reID",
}
FIGURES = [
    (
        "delta_ci",
        "Change against {the_ref}",
        "Each variant's Δ R-1 and Δ mAP against {our_ref} "
        "(dot: mean over paired seeds; bar: 95 % paired interval over queries "
        "and seeds){paper_beside}. A bar that crosses 0 is within noise.",
    ),
    (
        "delta",
        "Our Δ vs the paper's Δ",
        "Each point is a variant's change against its own "
        "Baseline, ours with its 95 % interval; ρ = Spearman rank correlation of the two "
        "orderings, beside how many of our intervals exclude 0 (a ρ over changes within noise "
        "says little).",
    ),
    (
        "cmc",
        "CMC curves",
        "(a) Matching rate at rank k (mean over seeds, band = std); (b) each "
        "variant's CMC minus {refs} CMC, paired by seed (band = 95 % t-interval over seeds).",
    ),
    (
        "curves",
        "Training curves",
        "Each loss term per epoch (mean over seeds, band = std), "
        "and val/mAP at the evaluation epochs; a term logged at one epoch only is not a curve "
        "and is left out.",
    ),
    (
        "stage3_vs_cfa",
        "Stage 3 vs CFA (paper Fig. 4)",
        "Activation maps of S-Enc stage 3 and "
        "of the CFA output for three pedestrians; fg = share of the map inside the person mask "
        "(outlined), uniform = the fg of a flat map (the mask's area).",
    ),
    (
        "global_local",
        "Global and local branches (paper Fig. 5)",
        "One identity in different cameras (backgrounds): {the_ref}{beside_full}.",
    ),
    (
        "recon",
        "TF-Dec reconstructions",
        "Per variant with a decoder: input, masked target "
        "(the variant's mask strategy), decoder output.",
    ),
    (
        "ranklist_{reference}",
        "Rank lists: {ref_title}",
        "{Refs} best, median and worst queries by "
        "AP, each with its top 10 (green = true match, red = another identity, grey = junk: same "
        "identity and camera, left out by the protocol).",
    ),
    ("ranklist_{full_key}", "Rank lists: {full}", "The same queries for {full}, with its own AP."),
    (
        "sweep",
        "The sweep",
        "R-1 and mAP against the swept value: mean over seeds, bars = its 95 % "
        "interval (t over seeds), dots = single seeds; a log axis when the values span decades.",
    ),
]


def _ui_line(uri: str, exp_id: str) -> str:
    store = "sqlite:///mlruns/mlflow.db" if uri == DEFAULT_TRACKING_URI else uri
    if store.startswith("http"):
        return f"Runs in the MLflow UI: {store.rstrip('/')}/#/experiments/{exp_id}/runs"
    start = (
        "`make ui`"
        if uri == DEFAULT_TRACKING_URI
        else f"`python -m ablations.ui --tracking-uri {store}`"
    )
    return (
        f"Runs in the MLflow UI: {start}, then <http://127.0.0.1:5000/#/experiments/{exp_id}/runs>."
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _agreement(rho: float, n: int, metric: str) -> str:
    if math.isnan(rho):
        return (
            f"{metric}: rank correlation not defined ({n} variant{'s' if n != 1 else ''} "
            "besides the Baseline; needs ≥ 3 with different values)"
        )
    if rho >= 0.5:
        word = "broadly agrees with"
    elif rho > -0.5:
        word = "shows little agreement with"
    else:
        word = "is reversed against"
    return f"{metric}: Spearman ρ = {cells.signed(rho, 2)} over {n} variants — our ordering {word} the paper's"


def _training_time(rep: Report) -> str:
    """ " Training took 3.4 run-hours …": the sum of every epoch's logged wall time."""
    if rep.train_seconds is None:
        return ""
    return (
        f" Training took {rep.train_seconds / 3600:.1f} run-hours ({rep.train_seconds:.0f} s): the "
        f"sum of the epochs' wall "
        f"times the runs logged (`train/epoch_seconds`; start-up and the final evaluation left out, "
        f"a copied run counted with its source's time, runs side by side each counted whole)."
    )


def _provenance(tr) -> str:
    """Which code, machines and commands made the runs: figures are tied to all three."""

    def counted(column: str, shorten=lambda v: v) -> str:
        values = (
            (
                tr.runs[column].fillna("not recorded")
                if column in tr.runs
                else pd.Series("not recorded", index=tr.runs.index)
            )
            .astype(str)
            .map(shorten)
        )
        return ", ".join(f"{v} ({_n(n, 'run')})" for v, n in values.value_counts().items())

    def commit(value: str) -> str:
        return (
            value
            if value in ("not recorded", "unknown")
            else f"`{value[:7]}{'-dirty' if value.endswith('-dirty') else ''}`"
        )

    text = f"Code: {counted('tags.git_commit', commit)}. Machine: {counted('tags.machine')}."
    shown = "; ".join(f"`{c}`" for c in retrain_commands(tr))
    return (
        text + f" To train them again: {shown} (where the store, data and checkpoints live "
        f"is left out)."
    )


def retrain_commands(tr) -> list[str]:
    """The commands that train exactly the page's runs: one per seed set and ``--set`` items,
    naming the rows (``--variants``) unless they are all the study's rows (with ``--controls``
    when its controls are among them)."""
    tags = (
        (
            tr.runs["tags.overrides"]
            if "tags.overrides" in tr.runs
            else pd.Series("", index=tr.runs.index)
        )
        .fillna("")
        .astype(str)
    )
    seeds: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for variant, seed, tag in zip(tr.runs["variant"], tr.runs["seed"], tags):
        seeds.setdefault((variant, run_overrides(tag, tr.preset)), []).append(int(seed))
    groups: dict[tuple[tuple[int, ...], tuple[str, ...]], list[str]] = {}  # in row order
    for (variant, sets), row_seeds in seeds.items():
        groups.setdefault((tuple(sorted(set(row_seeds))), sets), []).append(variant)
    study = tr.study
    plain = {v.key for v in study.rows if not v.control}
    head = (
        f"python ablations/run.py {study.command}"
        + (f" --dataset {tr.dataset}" if tr.dataset != "synthetic" else "")
        + f" --preset {tr.preset}"
    )
    out = []
    for (row_seeds, sets), rows in groups.items():
        which = (
            ""
            if set(rows) == plain
            else " --controls"
            if set(rows) == {v.key for v in study.rows}
            else f" --variants {' '.join(rows)}"
        )
        out.append(
            f"{head}{which} --seeds {' '.join(map(str, row_seeds))}"
            + "".join(f" --set {shlex.quote(item)}" for item in sets)
        )
    return out


def experiment_readme(rep: Report) -> str:
    tr, s = rep.tr, rep.summary
    paper = summary.paper_dataset(tr.dataset)
    paper_name = PAPER_NAMES.get(paper, paper)
    seeds = sorted(set(tr.runs["seed"]))
    study = tr.study
    title = f"Table {tr.table}" if study.is_paper else f"Study {study.name}"
    out = [f"# {title} — {tr.dataset}, preset `{tr.preset}`", ""]
    if not study.is_paper:
        out += [
            f"{study.description or study.name} (study file `{study.path}`, hash `{study.digest}`). "
            f"Every Δ below is taken against the reference row `{study.reference}` (the tables' "
            + (
                f'"{study.reference_name}" headings mean it).'
                if study.reference_name
                else '"ref." and "× reference" headings mean it).'
            ),
            "",
        ]
    per_row = tr.runs.groupby("variant")["seed"].nunique()
    shape = (
        f"{_n(len(tr.order), 'variant')} × {_n(len(seeds), 'seed')}"
        if per_row.min() == per_row.max()
        else f"{_n(len(tr.order), 'variant')}, {per_row.min()} to {per_row.max()} seeds each, from seeds"
    )
    out += [
        f"Experiment `{tr.experiment}` (id {tr.experiment_id}): {_n(len(tr.runs), 'FINISHED child run')}"
        f", {shape} ({' '.join(map(str, seeds))}). "
        "Reports use FINISHED runs only, the newest one per (variant, seed)."
        + (
            f" Every run was trained with {' '.join(f'`--set {i}`' for i in tr.settings)} on top of "
            f"the `{tr.preset}` preset."
            if tr.settings
            else ""
        ),
        "",
    ]
    out += [_provenance(tr) + _training_time(rep), ""]
    out += gaps.seed_rule_note(tr, s)
    if tr.left_out:
        out += ["Runs left out: " + "; ".join(tr.left_out) + ".", ""]
    else:
        out += ["No runs were left out.", ""]
    digests: dict[str, list[str]] = {}
    for v in tr.order:
        if v in tr.row_digests:
            digests.setdefault(tr.row_digests[v], []).append(v)
    if len(digests) > 1:
        said = [
            f"`{d or 'not recorded'}` ({'row' if len(rows) == 1 else 'rows'} {', '.join(rows)})"
            for d, rows in digests.items()
        ]
        out += [
            "Data digests: " + ", ".join(said) + ": the study's rows are on different data "
            "(`rows_on_different_data = true`), and rows on different data are never paired.",
            "",
        ]
    elif tr.data_digest:
        out += [f"Data digest `{tr.data_digest}` (every run here saw the same data).", ""]
    else:
        out += [
            "These runs predate data digests: that they all saw the same data is not checked.",
            "",
        ]
    if rep.seed_gaps:
        out += [
            "**Seeds left out of a Δ** (every Δ, interval, mark and claim pairs runs by seed and uses "
            "only the seeds both sides have complete):",
            "",
        ]
        out += [f"- {g}" for g in rep.seed_gaps] + [""]
    if rep.data_gaps:
        out += ["**Rows on different data** (never paired):", ""]
        out += [f"- {g}" for g in rep.data_gaps] + [""]
    if rep.setting_gaps:
        out += [
            "**Rows trained with different `--set`** (their Δ is shown, each row's own values in "
            "brackets in its label; no claim is judged on it: train them alike to compare the rows "
            "alone):",
            "",
        ]
        out += [f"- {g}" for g in rep.setting_gaps] + [""]
    if study.table is None:
        out += ["The paper has no numbers for these rows: its columns stay empty (—).", ""]
    elif paper != tr.dataset:
        out += [
            f"The paper has no numbers for `{tr.dataset}`; its {paper_name} numbers are "
            "shown instead, so compare the *direction* of changes (Δ), not the levels.",
            "",
        ]
    else:
        out += [f"Paper numbers: {paper_name}.", ""]
    ui = _ui_line(rep.uri, tr.experiment_id)
    shipped = rep.in_repository if rep.in_repository is not None else in_repository(rep.folder)
    if rep.uri.startswith("sqlite:") and shipped:
        ui += (
            " A clone of the repository does not hold these runs (the store is not tracked)"
            + ": the commands above train them again."
        )
    out += [ui, ""]
    if rep.logged:
        out += [
            f"These files are also artifacts (`report/`) of the parent run `{tr.parent_run_id}`.",
            "",
        ]
    own = wording(study)
    out += [
        "## Results",
        "",
        cells.markdown_cells(tables.answer(s)),
        "",
        own(
            "Our numbers are the last evaluation of each run, in percent; ± = sample std over "
            "seeds; Δ = change against {our_ref} in points with its 95 % interval (paired "
            "by seed, over queries and seeds), {paper_key}verdict = *better* / *worse* when the "
            "whole interval is above / below 0, "
            "else *within noise*. The full table (seeds, R-5, mINP, foreground focus, each "
            "variant's own interval, p-values, the paper's absolute numbers): "
            "[Markdown](table.md), [CSV](table.csv), [LaTeX](table.tex)."
        ),
        "",
        "### What the numbers say",
        "",
    ]
    out += [f"- {line}" for line in verdicts.verdicts(s, own)]
    if study.table is not None:  # a study of one's own has no paper ordering to agree with
        for m, title in (("rank1", "R-1"), ("mAP", "mAP")):
            out.append(f"- {_agreement(*summary.rank_agreement(s, m), title)}.")
    missing = gaps.missing_metrics(tr)
    if missing:
        out += ["", "Missing metrics (shown as —): " + "; ".join(missing) + "."]
    out.append("")
    # The answer first: the table, then the figures, the claims, and only then how sure and why.
    rows = {  # the rows the figures show: the reference and the study's full row
        "reference": study.reference,
        "ref_title": own.name or own.label,
        "Refs": own.refs[0].upper() + own.refs[1:],
        "full_key": study.full or "",
        "full": study.row(study.full).label if study.full else "",
        "beside_full": f" beside {study.row(study.full).label}" if study.full else "",
    }
    for key, title, caption in FIGURES:
        key = key.format(**rows)
        files = rep.figures.get(key) or []
        png = next((f for f in files if f.suffix == ".png"), None)
        if png is None:
            continue
        pdf = next((f for f in files if f.suffix == ".pdf"), None)
        title = own(title, **rows)
        out += [
            f"## {title}",
            "",
            f"![{title}]({png.name})",
            "",
            own(caption, **rows) + (f" ([PDF]({pdf.name}))" if pdf is not None else ""),
            "",
        ]
    out += _claims_section(rep)
    out += _uncertainty_section(rep, own)
    out += _diagnostics_section(rep)
    if rep.efficiency is not None:
        out += [
            "## Efficiency",
            "",
            (rep.folder / "efficiency.md").read_text(encoding="utf-8"),
            rep.efficiency_note + " MACs count convolutions and "
            "linear layers (the paper's convention); TF-Dec is not run at inference. "
            "[CSV](efficiency.csv)",
            "",
        ]
    if rep.notes:
        out += ["## Not shown", ""] + [f"- {n}" for n in rep.notes] + [""]
    out += [
        "---",
        "Generated by `python reports/build.py` from the MLflow store; do not edit. "
        + _evidence_line(rep),
    ]
    return "\n".join(out) + "\n"


def in_repository(folder: Path) -> bool:
    """Whether ``folder`` lies in the repository's ``reports/`` (whose runs a clone lacks)."""
    return folder.resolve().is_relative_to(REPO / "reports")


AS_IS = {"visuals": "the figures drawn from the runs' figure data and the dataset's images"}


def _evidence_line(rep: Report) -> str:
    """The footer's word on ``evidence/``, and on the parts a rebuild from it keeps as built."""
    text = (
        "What it read of the store is in `evidence/`, from which `python reports/build.py "
        "--from-evidence` rebuilds this folder byte for byte without the store"
    )
    kept = [
        f"{AS_IS.get(part, part)} ({', '.join(f'`{f}`' for f in files)})"
        for part, files in rep.as_is.items()
        if files
    ]
    if not kept:
        return text + "."
    return (
        text
        + "; kept as they were built (their sha256 in `evidence/manifest.json`): "
        + "; ".join(kept)
        + "."
    )


def _uncertainty_section(rep, own: Wording) -> list[str]:
    """How sure the table is: what the intervals cover, the power, and the claims."""
    s = rep.summary
    if "d_rank1_lo" not in s:
        return []
    rows = s[s["variant"] != rep.tr.study.reference]
    seeds = int(s["n"].max())
    covers = (
        "query sampling and training seed"
        if seeds > 1
        else "query sampling only: with one seed, run-to-run (training) noise is not covered"
    )
    out = [
        "## Uncertainty",
        "",
        f"95 % CI of a variant = Student-t over its seeds. Δ 95 % CI and p = Student-t of the Δ "
        f"against {own.the_ref} from the stored per-query results, runs paired by seed: its "
        f"variance is the spread of the per-seed Δs / S plus the query sampling every seed "
        f"shares, its degrees of freedom S − 1 when the seed spread is all the noise, more as "
        f"the shared query part grows (`reports/stats.py`; 94–96.5 % coverage at 3–8 seeds in "
        f"simulation). It covers **{covers}**. A Δ is marked *better* / *worse* "
        f"when its whole interval is above / below 0, else *within noise*.",
        "",
    ]
    marks = rows["d_rank1_mark"].value_counts()
    out.append(
        f"R-1 against {own.the_ref}: "
        + ", ".join(f"{marks.get(k, 0)} {k}" for k in ("better", "worse", "within noise"))
        + "."
    )
    det = rows["d_rank1_detectable"].dropna()
    if len(det):
        out.append(
            f"With {_paired(rows, seeds)} seed(s), the smallest R-1 Δ these runs detect at 80 % power is "
            f"{det.median():.1f} points (median over rows; {det.min():.1f}–{det.max():.1f})."
        )
    gaps = _seeds_for_gaps(rep, own)
    if gaps:
        out.append(gaps)
    out.append("")
    return out + _noise_section(rows, seeds, _queries(rep)) + _chaos_section(s)


def _chaos_section(s) -> list[str]:
    """Each row's seed SD of R-1 beside its chaos floor (``stats.ChaosFloor``)."""
    if "rank1_floor" not in s or s["rank1_floor"].isna().all():
        return []
    out = [
        "### Seed spread against the chaos floor",
        "",
        "| variant | seeds | R-1 seed SD | chaos floor | × floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for _, r in s[s["rank1_floor"].notna()].iterrows():
        ratio = r["rank1_seed_sd"] / r["rank1_floor"] if r["rank1_floor"] > 0 else math.nan
        out.append(
            f"| {r['variant_label']} | {int(r['rank1_floor_seeds'])} | "
            f"{r['rank1_seed_sd']:.2f} | {r['rank1_floor']:.2f} | "
            f"{'—' if math.isnan(ratio) else f'{ratio:.1f}'} |"
        )
    return out + [
        "",
        "Chaos floor = the seed SD of R-1 (points) that runs would show if they "
        "differed only in *which* queries they get right, each query right at its own "
        "rate p_q over the row's seeds and independently from run to run: "
        "100 · √(Σ_q p_q (1 − p_q)) / Q, with p_q (1 − p_q) scaled by S / (S − 1) to be "
        "unbiased on S seeds. Near the floor, the runs are equally good and more test "
        "queries would narrow the spread; far above it, runs of different seeds differ "
        "in quality over the whole test set, and better-converged training would help "
        "where more queries cannot.",
        "",
    ]


def _paired(rows, seeds: int) -> str:
    """How many seeds the rows' Δ pair: "8", or "3–8 paired" when rows differ."""
    if "n_paired" not in rows:
        return str(seeds)
    n = rows["n_paired"].dropna().astype(int)
    if not len(n) or n.min() == n.max():
        return str(int(n.max()) if len(n) else seeds)
    return f"{n.min()}–{n.max()} paired"


def _queries(rep) -> int:
    """The number of queries the paired Δs were computed over (the largest over rows)."""
    return max((len(arrays["index"]) for arrays in rep.per_query.values()), default=0)


def _noise_section(rows, seeds: int, queries: int) -> list[str]:
    """Per Δ (R-1): the achieved half-width, the seed / query / interaction shares of its
    variance, and the seeds or queries ±1 and ±0.5 would need."""
    if "d_rank1_half" not in rows or rows["d_rank1_half"].isna().all():
        return []

    def n(v: float) -> str:
        return "—" if math.isnan(v) else f"{int(v):,}"

    out = [
        "### Where the noise comes from",
        "",
        "| variant | Δ R-1 | seeds | ± (95 %) | seed % | query % | seed×query % | seeds for ±1 | for ±0.5 "
        "| queries for ±1 | for ±0.5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in rows.iterrows():
        if math.isnan(r["d_rank1_half"]):
            continue
        shares = [r[f"d_rank1_{p}_share"] for p in ("seed", "query", "interaction")]
        paired = r.get("n_paired", math.nan)
        out.append(
            f"| {r['variant_label']} | {cells.delta(r['d_rank1'])} | "
            f"{'—' if math.isnan(paired) else int(paired)} | {r['d_rank1_half']:.1f} | "
            + " | ".join("—" if math.isnan(v) else f"{v:.0f}" for v in shares)
            + " | "
            + " | ".join(
                n(r[f"d_rank1_{k}"]) for k in ("seeds_1", "seeds_05", "queries_1", "queries_05")
            )
            + " |"
        )
    half = rows["d_rank1_half"].dropna()
    out += [
        "",
        f"The smallest R-1 Δ this study resolves is about ±{half.median():.1f} points (median "
        f"half-width over {len(half)} rows; {half.min():.1f}–{half.max():.1f}). Each Δ's variance "
        f"is split into its seed part (how a training run falls), query part (which people the "
        f"test set holds) and their interaction, from the paired per-query results: "
        f"Var = σ²_seed / S + σ²_query / Q + σ²_seed×query / (S·Q) with S = the row's paired seeds "
        f"and Q = {queries:,} queries. *Seeds for ±1*: on this test set; *queries for ±1*: with these seeds "
        f"(the synthetic test split grows with `--set data.synthetic_test_ids=N`; a real "
        f"dataset's queries are fixed, so there only seeds can help). — = out of reach that "
        f"way, or unknown with one seed.",
        "",
    ]
    return out


def _claims_section(rep) -> list[str]:
    if rep.claims is None or not len(rep.claims):
        return []
    seeds = int(rep.summary["n"].max())
    noise = (
        "query sampling and training seed"
        if seeds > 1
        else "query sampling only (one seed: run-to-run noise is not covered; add seeds with --seeds)"
    )
    title = "Claims of the paper" if rep.tr.study.is_paper else "Claims"
    return [
        f"## {title}",
        "",
        cells.markdown_cells(rep.claims.rename(columns=str.capitalize)),
        "",
        "Verdicts: *holds* (the 95 % interval agrees with the claim), *fails* (it contradicts "
        "it), *inconclusive* (it contains 0), each on every comparison of the claim; "
        "*incomplete* (some of its comparisons cannot be made yet, and why) and *no evidence* "
        f"(none can, and why). The intervals cover {noise}, over the seeds both sides have. "
        "[CSV](claims.csv)",
        "",
    ]


def _seeds_for_gaps(rep, own: Wording) -> str:
    """How many seeds the paper's own gaps would need here: the smallest, median and largest
    of the gaps the paper's R-1 shows between the pairs its table compares (each row against the
    reference, and the two sides of each ordering claim; a gap of 0 left out), at the seed SD
    and query SE of the study's full row (``Study.full``) against its reference; "" without
    paper numbers or that row's runs."""
    from reports import stats

    study, s = rep.tr.study, rep.summary
    full = study.full
    if study.table is None or full is None or full not in set(rep.tr.order):
        return ""
    paper = dict(zip(s["variant"], s["paper_d_rank1"]))  # NaN for controls and rows without
    pairs = [(k, study.reference) for k in paper if k != study.reference]
    pairs += [p for c in study.claims if c.metric == "rank1" for p in c.pairs]
    found = [abs(paper[a] - paper[b]) for a, b in pairs if a in paper and b in paper]
    found = [g for g in found if not math.isnan(g) and round(g, 1) > 0]
    if not found:
        return ""
    d = summary.compare(rep.per_query, full, study.reference, "rank1")
    if math.isnan(d.sd_seed):
        return (
            "With one seed the seed-to-seed spread is unknown, so the seeds needed for the "
            "paper's gaps cannot be estimated; run more seeds (`run.py --seeds 0 1 2`: finished "
            "runs are reused)."
        )
    gaps = sorted({round(float(x), 1) for x in (min(found), statistics.median(found), max(found))})
    parts = []
    for gap in gaps:
        n = stats.seeds_needed(d, gap)
        parts.append(f"{gap} → {n} seeds" if n else f"{gap} → no number of seeds")
    floor = stats.detectable(d, 10**6)
    return (
        f"Seeds needed to resolve the paper's Table {study.table} gaps ({gaps[0]}–{gaps[-1]} "
        f"points: the smallest, median and largest R-1 gap of the pairs it compares, each row "
        f"against its {own.name or 'reference'} and the two sides of each claim) at 80 % "
        f"power, from ({full}) vs {own.the_ref} (seed SD {d.sd_seed:.1f}, query SE "
        f"{d.se_query:.1f}): " + "; ".join(parts) + ". "
        f"Query sampling alone sets a floor of {floor:.1f} points on this test set, which more seeds "
        "cannot lower; a larger test split can (`--set data.synthetic_test_ids=N` on the synthetic "
        "data, training unchanged)."
    )


DIAGNOSTICS_NOTES = [
    "**focus** (stage 3, stage 4, CFA's output A′, global = stage 5): the share of the map's "
    "activation mass inside the ground-truth person mask, rescaled per query image so that a "
    "uniform map scores 0 and the best map the map's resolution allows scores 100; below 0 the "
    "map prefers the background.",
    "**AUC** (Gm = the Gaussian, PAm / CAm = CFA's position / channel attention masks, "
    "Gm·PAm·CAm = their product, the masks TF-Dec's target is built from): the pixel ROC AUC "
    "× 100 of the soft mask against the person mask; 50 = chance, 100 = every person pixel "
    "ranked above every background pixel. PAm and CAm exist only for variants with CFA.",
    "**recon / Re-ID grad**: the gradient norm a reconstruction batch sends into the encoder "
    "(stages 1–4) divided by a Re-ID batch's, averaged over the epochs of a run (after any "
    "frozen warm-up), then over seeds; variants with TF-Dec only. Far below 1, TF-Dec can "
    "hardly change the encoder; far above 1, reconstruction drowns the Re-ID signal (Adam "
    "keeps one step-size estimate per weight for both batch kinds).",
    "Focus and AUC need person masks (synthetic data). — = not logged for that variant "
    "(no CFA, no TF-Dec, or a run from before the diagnostics).",
]


def _diagnostics_section(rep: Report) -> list[str]:
    out = ["## Diagnostics", ""]
    if rep.diagnostics is None or not diagnostics_table.present(rep.diagnostics):
        return out + [
            "No run logged the foreground diagnostics (`val/fg_focus_norm_*`, "
            "`val/mask_auc_*`) or `train/recon_grad_ratio`: the runs predate them.",
            "",
        ]
    out += [diagnostics_table.markdown(rep.diagnostics), ""]
    out += [f"- {line}" for line in DIAGNOSTICS_NOTES]
    out += [
        "",
        "Mean ± std over seeds. Files: [CSV](diagnostics.csv), [LaTeX](diagnostics.tex), "
        "[Markdown](diagnostics.md).",
        "",
    ]
    png = next((f for f in rep.figures.get("diagnostics") or [] if f.suffix == ".png"), None)
    if png is not None:
        out += [
            f"![Diagnostics]({png.name})",
            "",
            "Normalised focus per map (0 = uniform map, 100 = best possible at the map's "
            "resolution), mask AUC (50 = chance) and the recon / Re-ID gradient ratio (log "
            "axis; dots = seeds, diamond = mean), one panel for each the runs logged. "
            f"([PDF]({png.with_suffix('.pdf').name}))",
            "",
        ]
    return out


_LINK = re.compile(r"\]\((?!https?://|#|/|<)([^)]+)\)")


def _summary(page: str) -> tuple[str, str]:
    """An experiment page's line saying which runs it holds, and its opening results table."""
    runs = next((line for line in page.splitlines() if line.startswith("Experiment `")), "")
    results = page.split("\n## Results\n", 1)[-1]
    table = []
    for line in results.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return runs, "\n".join(table)


def table_index(table_dir: Path, table) -> Path:
    """``table_dir/README.md``: an index of the experiment pages below it, each with the line
    saying which runs it holds and its opening table (links re-rooted), not a copy of the pages;
    ``table`` is a paper table's number or a study (``ablations.study.Study``)."""
    parts = sorted(p.parent for p in table_dir.glob("*/README.md"))
    if isinstance(table, int):
        head, how = f"Table {table}: our ablation runs beside the paper", f"--table {table}"
    else:
        head, how = (
            f"Study {table.name}: {table.description or 'our ablation runs'}",
            f"--study {table.path}",
        )
    out = [
        f"# {head}",
        "",
        f"Written by `python reports/build.py {how}` from the runs in an MLflow store (no "
        "training; on a clone, first train them with `python ablations/run.py " + how + "`). "
        "One experiment per dataset and preset; each page has the intervals, the claims with "
        "their verdicts, the diagnostics and the figures.",
        "",
    ]
    for p in parts:
        runs, results = _summary((p / "README.md").read_text(encoding="utf-8"))
        results = _LINK.sub(lambda m, p=p: f"]({p.name}/{m.group(1)})", results)
        out += [f"## [{p.name}]({p.name}/README.md)", ""]
        out += [
            x for line in (runs, results) if line for x in (line, "")
        ]  # a table never runs into a paragraph
        out += [f"The full page: [{p.name}/README.md]({p.name}/README.md).", ""]
    index = table_dir / "README.md"
    tmp = index.with_name(f".{index.name}.{os.getpid()}")  # replaced whole, never half-written
    tmp.write_text("\n".join(out), encoding="utf-8")
    os.replace(tmp, index)
    return index
