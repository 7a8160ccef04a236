"""What one experiment's report holds: filled by ``reports.build``, written out as its README by
``reports.index``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports.load import TableRuns


@dataclass
class Report:
    """What one experiment's report holds, for its README."""

    tr: TableRuns
    folder: Path
    uri: str
    summary: pd.DataFrame | None = None
    diagnostics: pd.DataFrame | None = None
    """``reports.diagnostics_table.summarize``: only the columns some variant logged."""
    figures: dict[str, list[Path]] = field(default_factory=dict)
    efficiency: pd.DataFrame | None = None
    per_query: dict = field(default_factory=dict)
    """``(variant, seed)`` → per-query arrays (``reports.load.per_query_results``)."""
    claims: pd.DataFrame | None = None
    seed_gaps: list[str] = field(default_factory=list)
    """Runs a Δ misses (``reports.gaps.seed_gaps``): named on the console and in the README."""
    missing: int = 0
    """How many runs the Δs miss (``reports.summary.missing_runs``)."""
    data_gaps: list[str] = field(default_factory=list)
    """Rows the report would compare that were run on different data (``reports.gaps.data_gaps``)."""
    setting_gaps: list[str] = field(default_factory=list)
    """Rows it compares that were trained with different ``--set`` (``gaps.setting_gaps``)."""
    notes: list[str] = field(default_factory=list)
    """What could not be drawn or logged, and why."""
    seconds: float = 0.0
    logged: bool = False
    """Whether the files are to be logged to the parent run (README says so)."""
    in_repository: bool | None = None
    """Whether the report is built into the repository's reports/ (its page says a clone lacks
    the runs); None: judged from ``folder`` (``reports.index.in_repository``)."""
    as_is: dict[str, list[str]] = field(default_factory=dict)
    """Part (``visuals``) → the files it drew from data the evidence does not ship (figure data,
    the dataset's images), which a rebuild from the evidence keeps as they are
    (``reports.evidence``)."""
    efficiency_note: str = ""
    """The line under the efficiency table (``efficiency.latency_note``)."""
    train_seconds: float | None = None
    """The kept runs' logged epoch wall times, summed (``train/epoch_seconds``); None when no
    run logged them."""
    attention_costs: dict | None = None
    """CFA's and PAM-CAM's cost at the paper's setting, as a run measured them
    (``efficiency.json``'s ``attention_costs``); None without an efficiency table."""
