"""``--until-halfwidth``: the next seed goes to the row whose Δ interval is widest.

Every row of the plan first gets its first seeds (0, 1, 2 unless ``--seeds`` says otherwise).
Then, one run at a time, the next seed goes to the row whose paired Δ R-1 interval against the
study's reference row (the reports' interval, ``ablations.intervals.delta_interval``) is widest,
and the reference gets that seed too when it lacks it, so the pair stays paired. A row stops
when its half-width is at most the target or it has ``max_seeds`` seeds. Each row's seeds are
given in increasing order (3, then 4, …).

The rule reads the interval's **width only**, never its sign, its Δ or its p-value: stopping
when a difference looks significant would bias the verdicts towards "better" / "worse"; a
width does not depend on which side of 0 the interval lies (it is the same for D and −D).

The state is what the store holds (FINISHED runs with their per-query results, unfinished
runs) plus the runs other processes are training (their leases), so several workers decide
alike and never train a run twice: a run that is being trained counts as given, and its row's
half-width is then the one its noise parts project with those seeds added
(``NoiseParts.half_width``), so that other workers do not pile seeds onto one row. No MLflow
and no torch here: the runner reads the store (``ablations.scheduling``), the reports read the
rule's tag (``SeedRule.parse``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from ablations.intervals import delta_interval, paired_matrix

METRIC = "rank1"
"""The Δ whose interval the rule reads: R-1, the reports' first Δ."""
FIRST_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class SeedRule:
    target: float
    """The half-width (points of R-1) at which a row stops."""
    max_seeds: int
    """The most seeds a row gets."""
    initial: tuple[int, ...] = FIRST_SEEDS
    """The seeds every row gets first."""

    @property
    def tag(self) -> str:
        """How each run records the rule (its tag ``seed_rule``): ``until-halfwidth 1, max 24``,
        and ``, first 5 6 7`` where the first seeds are not the default 0 1 2."""
        first = "" if self.initial == FIRST_SEEDS else f", first {' '.join(map(str, self.initial))}"
        return f"until-halfwidth {self.target:g}, max {self.max_seeds}{first}"

    @staticmethod
    def parse(tag: str) -> SeedRule | None:
        """The rule a ``seed_rule`` tag records; None for anything else."""
        m = re.fullmatch(
            r"until-halfwidth ([0-9.e+-]+), max (\d+)(?:, first (\d+(?: \d+)*))?", tag.strip()
        )
        if not m:
            return None
        first = tuple(int(x) for x in m.group(3).split()) if m.group(3) else FIRST_SEEDS
        return SeedRule(float(m.group(1)), int(m.group(2)), first)

    def seeds(self) -> list[int]:
        """Every seed a row may get: the first seeds, then one after another above them."""
        top = max(self.initial)
        return [*self.initial, *range(top + 1, top + 1 + self.max_seeds - len(self.initial))]


@dataclass
class Row:
    """One row's runs as the store and the leases show them."""

    key: str
    finished: dict[int, dict[int, float] | None] = field(default_factory=dict)
    """FINISHED runs: seed → ``{query: 100 · [first match at rank 1]}`` (None: no per-query
    results, so the seed counts as given but not in the interval)."""
    open: set[int] = field(default_factory=set)
    """Seeds with an unfinished run in the store (stopped, or being trained): to resume."""
    busy: set[int] = field(default_factory=set)
    """Seeds another process is training now (its lease): left to it."""
    failed: set[int] = field(default_factory=set)
    """Seeds that failed in this process: given, never a result; not tried again here."""
    paired: bool = True
    """False when the row is on other data than the reference: there is no Δ to narrow."""

    @property
    def given(self) -> set[int]:
        return set(self.finished) | self.open | self.busy | self.failed

    def results(self) -> dict[int, dict[int, float]]:
        return {s: pq for s, pq in self.finished.items() if pq is not None}


@dataclass
class Group:
    """The rows of one experiment (study × dataset × preset), in the study's order."""

    name: str
    reference: str
    rows: dict[str, Row]


class Pick(NamedTuple):
    group: str
    row: str
    seed: int
    why: str


def width(row: Row, ref: Row) -> tuple[float, int]:
    """(half-width, paired seeds measured) of the Δ R-1 interval of ``row`` − ``ref``: as their
    FINISHED runs measure it, or, while more of the row's seeds are given than measured, as the
    measured noise parts project it at that many seeds. Infinite while there is no interval."""
    delta = delta_interval(paired_matrix(row.results(), ref.results()))
    half = (delta.hi - delta.lo) / 2
    coming = len((row.given - row.failed) - ref.failed)  # paired once every given run finishes
    parts = delta.parts
    if coming > delta.seeds >= 2 and parts is not None and not math.isnan(parts.seed):
        projected = parts.half_width(coming)
        half = projected if not math.isnan(projected) else half
    return (math.inf if math.isnan(half) else half), delta.seeds


def required(group: Group, rule: SeedRule) -> list[Pick]:
    """The runs that must come before the rule picks: every row's first seeds, any run left
    unfinished in the store, and the reference's run at every seed another row was given. Runs
    being trained elsewhere or failed here are left out. In order of seed, then row."""
    order = {key: i for i, key in enumerate(group.rows)}
    picks: dict[tuple[str, int], str] = {}

    def add(key: str, seed: int, why: str) -> None:
        row = group.rows[key]
        if seed not in set(row.finished) | row.busy | row.failed:
            picks.setdefault((key, seed), why)

    for key, row in group.rows.items():
        for seed in rule.initial:
            add(key, seed, f"one of the first seeds {' '.join(map(str, rule.initial))}")
        for seed in sorted(row.open):
            add(key, seed, "left unfinished in the store: resumed")
    ref = group.rows.get(group.reference)
    if ref is not None:
        for key, row in group.rows.items():
            if key != group.reference and row.paired:
                for seed in sorted(row.given):
                    add(group.reference, seed, f"the reference's run paired with {key}-s{seed}")
    return [
        Pick(group.name, key, seed, why)
        for (key, seed), why in sorted(picks.items(), key=lambda x: (x[0][1], order[x[0][0]]))
    ]


def next_seed(row: Row, rule: SeedRule) -> int | None:
    """The row's next seed: the first of the rule's seeds above every seed it was given."""
    top = max(row.given, default=-1)
    return next((s for s in rule.seeds() if s > top), None)


def widest(groups: list[Group], rule: SeedRule) -> Pick | None:
    """The rule's pick: the next seed of the row (not the reference) whose half-width is widest
    and above the target, among those below ``max_seeds``; ties go to the earlier row. None when
    every row is at its target or its cap."""
    best: tuple[float, int, int] | None = None
    pick = None
    for gi, group in enumerate(groups):
        ref = group.rows.get(group.reference)
        for ri, (key, row) in enumerate(group.rows.items()):
            if key == group.reference or ref is None or not row.paired:
                continue
            if len(row.given) >= rule.max_seeds:
                continue
            half, _ = width(row, ref)
            seed = next_seed(row, rule)
            if half <= rule.target or seed is None:
                continue
            if best is None or (half, -gi, -ri) > best:
                best = (half, -gi, -ri)
                shown = "no interval yet" if math.isinf(half) else f"±{half:.2f}"
                pick = Pick(
                    group.name,
                    key,
                    seed,
                    f"its Δ R-1 half-width is the widest ({shown} > "
                    f"{rule.target:g}, {len(row.given)} seeds)",
                )
    return pick


def next_pick(
    groups: list[Group], rule: SeedRule, first: set[tuple[str, str, int]] = frozenset()
) -> Pick | None:
    """The run a worker should take next: a required one (``first``, e.g. its own shard's, before
    the others), else the rule's; None when nothing is left for it to do."""
    needed = [p for g in groups for p in required(g, rule)]
    if needed:
        return min(needed, key=lambda p: (p[:3] not in first, p.seed, needed.index(p)))
    return widest(groups, rule)


def stop_reason(half: float, seeds: int, rule: SeedRule) -> str:
    """Why a row got no more seeds, from its final half-width and seed count."""
    shown = "no interval" if math.isnan(half) or math.isinf(half) else f"±{half:.2f}"
    if half <= rule.target:
        return f"half-width reached ({shown} ≤ {rule.target:g})"
    if seeds >= rule.max_seeds:
        return f"max seeds ({rule.max_seeds}; {shown})"
    return (
        f"not finished ({shown} > {rule.target:g} with {seeds} of at most {rule.max_seeds} "
        f"seeds): run the command again"
    )


def summary(group: Group, rule: SeedRule) -> list[str]:
    """One line per row: its seeds and why it stopped (the reference: paired with the others)."""
    ref = group.rows.get(group.reference)
    lines = []
    for key, row in group.rows.items():
        seeds = " ".join(map(str, sorted(row.finished)))
        if key == group.reference:
            lines.append(f"{key}: seeds {seeds} (the reference: every seed another row has)")
        elif ref is None or not row.paired:
            lines.append(f"{key}: seeds {seeds} (no Δ against {group.reference}: other data)")
        else:
            busy = f"; {len(row.busy | row.open)} being trained" if row.busy | row.open else ""
            half = width(Row(key, row.finished), Row(ref.key, ref.finished))[0]
            reason = stop_reason(half, len(row.finished), rule)
            lines.append(f"{key}: seeds {seeds}: {reason}{busy}")
    return lines
