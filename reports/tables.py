"""The ablation table: our mean ± std over seeds beside the paper's numbers and Δ against the
study's reference row, as the report's opening table (``answer``), every column (``display``)
and the files ``table.csv``, ``table.md`` and ``table.tex`` (``write_tables``). The numbers come
from ``reports.summary``, the cells from ``reports.cells``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from reports.cells import delta, interval, latex_escape, markdown_cells, num, p_value, pm, seed_list
from reports.summary import DELTA_METRICS, METRICS, is_reference_row
from reports.wording import PAPER_WORDS, Wording


def display(
    summary: pd.DataFrame, latex: bool = False, words: Wording = PAPER_WORDS
) -> pd.DataFrame:
    """The table as text cells (mean ± std; Δ signed); the columns of the paper's tables; the
    marks' column names the reference as ``words`` do."""
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
        row["paper R-1"] = num(r.paper_rank1, latex)
        row["paper mAP"] = num(r.paper_mAP, latex)
        is_base = is_reference_row(r)
        for m in DELTA_METRICS:
            ours, theirs = (
                (math.nan, math.nan)
                if is_base
                else (getattr(r, f"d_{m}"), getattr(r, f"paper_d_{m}"))
            )
            d = "$\\Delta$ " if latex else "Δ"
            if with_ci:
                row[f"{METRICS[m]} 95% CI"] = interval(
                    getattr(r, f"{m}_ci_lo"), getattr(r, f"{m}_ci_hi"), latex, signed=False
                )
            row[f"{d}{METRICS[m]}"] = delta(ours, latex)
            if with_ci:
                row[f"{d}{METRICS[m]} 95% CI"] = interval(
                    getattr(r, f"d_{m}_lo"), getattr(r, f"d_{m}_hi"), latex
                )
                row[f"p ({METRICS[m]})"] = p_value(getattr(r, f"d_{m}_p"), latex)
                vs = words.column
                row[f"{d}{METRICS[m]} vs {vs}"] = getattr(r, f"d_{m}_mark") or (
                    "--" if latex else "—"
                )
            row[f"paper {d}{METRICS[m]}"] = delta(theirs, latex)
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
        summary.loc[[is_reference_row(r) for r in summary.itertuples()], "paired_seeds"].tolist()
        if paired
        else []
    )
    uneven = (
        paired and any(s != ref_seeds[0] for s in summary["paired_seeds"]) if ref_seeds else False
    )
    rows = []
    for r in summary.itertuples():
        is_base = is_reference_row(r)
        row = {"Variant": r.variant_label}
        if paired:
            row["seeds"] = seed_list(r.paired_seeds)
        for m in DELTA_METRICS:
            if paired:
                row[METRICS[m]] = pm(getattr(r, f"{m}_pmean"), getattr(r, f"{m}_pstd"))
            else:
                row[METRICS[m]] = pm(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"))
        if uneven:
            row[f"ref. {METRICS['rank1']} on these seeds"] = num(r.ref_rank1_pmean)
        for m in DELTA_METRICS:
            cell = "—" if is_base else delta(getattr(r, f"d_{m}"))
            if with_ci and not is_base and not math.isnan(getattr(r, f"d_{m}_lo")):
                cell += " " + interval(getattr(r, f"d_{m}_lo"), getattr(r, f"d_{m}_hi"))
            row[f"Δ {METRICS[m]} [95 % CI]"] = cell
        for m in DELTA_METRICS:
            row[f"paper Δ {METRICS[m]}"] = "—" if is_base else delta(getattr(r, f"paper_d_{m}"))
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


def markdown(summary: pd.DataFrame, words: Wording = PAPER_WORDS) -> str:
    """The display table in Markdown."""
    return markdown_cells(display(summary, words=words))


def write_tables(
    summary: pd.DataFrame, out_dir: Path, caption: str, words: Wording = PAPER_WORDS
) -> list[Path]:
    """``table.csv`` (numbers), ``table.md`` (the report's opening table, then every column) and
    ``table.tex`` in ``out_dir``."""
    csv_path, md_path, tex_path = out_dir / "table.csv", out_dir / "table.md", out_dir / "table.tex"
    summary.to_csv(csv_path, index=False, float_format="%.4f")
    md_path.write_text(
        markdown_cells(answer(summary)) + "\n\nEvery column (seeds, R-5, mINP, foreground "
        "focus, each row's own interval, p-values, the paper's absolute numbers):\n\n"
        + markdown(summary, words)
        + "\n",
        encoding="utf-8",
    )
    tex = display(summary, latex=True, words=words)
    tex["Variant"] = tex["Variant"].map(latex_escape)
    body = tex.style.hide(axis="index").to_latex(
        hrules=True,
        column_format="l" + "r" * (tex.shape[1] - 1),
        caption=latex_escape(caption),
        position="t",
    )
    tex_path.write_text(body, encoding="utf-8")
    return [csv_path, md_path, tex_path]
