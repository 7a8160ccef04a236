"""Numbers as a report's text cells: a mean ± std, a signed change, an interval, a p-value, a
seed list; Markdown and LaTeX cells. Every "−" is a true minus, and a value that rounds to
zero is "+0.0", never "-0.0"."""

from __future__ import annotations

import math

import pandas as pd


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


def delta(value: float, latex: bool = False) -> str:
    if math.isnan(value):
        return "—" if not latex else "--"
    return f"${unsigned_zero(value):+.1f}$" if latex else signed(value)


def num(value: float, latex: bool = False, fmt: str = ".1f") -> str:
    return ("--" if latex else "—") if math.isnan(value) else f"{value:{fmt}}"


def p_value(p: float, latex: bool = False) -> str:
    if math.isnan(p):
        return "--" if latex else "—"
    return ("$<0.001$" if latex else "<0.001") if p < 0.001 else f"{p:.3f}"


def interval(lo: float, hi: float, latex: bool = False, signed: bool = True) -> str:
    """``[lo, hi]``; ``signed`` (a Δ's interval) writes the sign of each end, a score's has none."""
    if math.isnan(lo) or math.isnan(hi):
        return "--" if latex else "—"
    lo, hi = unsigned_zero(lo), unsigned_zero(hi)
    text = f"[{lo:+.1f}, {hi:+.1f}]" if signed else f"[{lo:.1f}, {hi:.1f}]"
    return f"${text}$" if latex else text.replace("-", "−")


def seed_list(seeds: str) -> str:
    """``"0 1 2 3 5"`` → ``"0–3, 5"``: runs of consecutive seeds as ranges."""
    runs: list[list[int]] = []
    for n in (int(x) for x in seeds.split()):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


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
