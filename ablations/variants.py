"""The rows of a study: the paper's Tables 1–3 (``studies/table{N}.toml``) or a user's study file.

Each variant is a diff of the config from the full FTN (``ablations.study.Variant``). The
paper's own R-1 / mAP of every row live in ``paper_tables.csv`` beside this file (copied from
the paper's tables); a study file's ``paper_table`` points to them, so reports can put them
beside ours.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ablations.study import PAPER_TABLE_NUMBERS, Study, Variant, as_study, paper_study
from ftn_core.errors import FTNError

__all__ = ["PAPER_TABLES", "TABLES", "Variant", "paper_results", "variants"]

PAPER_TABLES = Path(__file__).with_name("paper_tables.csv")

TABLES: dict[int, tuple[Variant, ...]] = {n: paper_study(n).rows for n in PAPER_TABLE_NUMBERS}
"""The rows of the paper's tables, controls included, in table order."""


def variants(
    table: int | Study, keys: list[str] | None = None, controls: bool = False
) -> list[Variant]:
    """The variants of ``table`` (a paper table's number or a study) in table order: its rows
    (plus the controls when ``controls``), or those named in ``keys`` (controls included)."""
    study = as_study(table)
    rows = study.rows
    if not keys:
        if not controls and all(v.control for v in rows):
            raise FTNError(
                f"{study.path or study.name}: every row is a control (control = true), and controls "
                f"run only with --controls: add --controls"
            )
        return [v for v in rows if controls or not v.control]
    known = {v.key for v in rows}
    unknown = [k for k in keys if k not in known]
    if unknown:
        where = f"Table {study.table}" if study.is_paper else f"study {study.name}"
        raise FTNError(
            f"--variants {' '.join(unknown)}: not in {where}; "
            f"choose from {' '.join(v.key for v in rows)}"
        )
    return [v for v in rows if v.key in keys or controls and v.control]


def paper_results(table: int | Study | None = None) -> list[dict[str, Any]]:
    """Rows of the paper's tables: table, row (variant key), variant_label, dataset, rank1, mAP;
    of one table (a number, or the study whose ``paper_table`` it is), or of all. A study
    without paper numbers has none."""
    if isinstance(table, Study):
        if table.table is None:
            return []
        table = table.table
    with PAPER_TABLES.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        if table is not None and int(row["table"]) != table:
            continue
        out.append(
            {
                "table": int(row["table"]),
                "row": row["row"],
                "variant_label": row["variant_label"],
                "dataset": row["dataset"],
                "rank1": float(row["rank1"]),
                "mAP": float(row["mAP"]),
            }
        )
    return out
