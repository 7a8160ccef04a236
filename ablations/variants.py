"""The paper's Tables 1–3 as data: each variant is a ``ModelConfig`` diff from the full FTN.

The paper's own R-1 / mAP of every row live in ``paper_tables.csv`` beside this file (copied
from the paper's tables), so reports can put them beside ours.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftn_core.config import Config, ModelConfig, override
from ftn_core.errors import FTNError

PAPER_TABLES = Path(__file__).with_name("paper_tables.csv")


@dataclass(frozen=True)
class Variant:
    key: str
    """Short id used on the command line and in run names (``base``, ``a`` … ``g``, ``cfa``)."""
    label: str
    """The row label of the paper's table."""
    changes: tuple[tuple[str, Any], ...]
    """``ModelConfig`` fields that differ from the full FTN (``ModelConfig()``); a dotted key
    (``train.matched_updates``) changes another part of the config (the controls)."""
    control: bool = False
    """Not a row of the paper: a control that tells mechanisms apart."""

    def model_config(self, base: ModelConfig) -> ModelConfig:
        return dataclasses.replace(base, **{k: v for k, v in self.changes if "." not in k})

    def apply(self, cfg: Config) -> Config:
        """``cfg`` with this variant's changes: model fields and dotted keys."""
        cfg = dataclasses.replace(cfg, model=self.model_config(cfg.model))
        return override(cfg, {k: v for k, v in self.changes if "." in k})


def _v(key: str, label: str, control: bool = False, **changes: Any) -> Variant:
    return Variant(key, label, tuple(changes.items()), control)


_NO_DEC = {"decoder": False}
BASE = _v("base", "Base.", attention="none", decoder=False)

TABLES: dict[int, tuple[Variant, ...]] = {
    # Table 1: attention modules, no TF-Dec (paper §4.2).
    1: (
        BASE,
        _v("pamcam", "Base. + PAM-CAM", attention="pamcam", **_NO_DEC),
        _v("cfa_no_pa", "Base. + CFA w/o PA", use_pa=False, **_NO_DEC),
        _v("cfa_no_ca", "Base. + CFA w/o CA", use_ca=False, **_NO_DEC),
        _v("cfa_no_cmp", "Base. + CFA w/o CMP", use_cmp=False, **_NO_DEC),
        _v("cfa", "Base. + CFA", **_NO_DEC),
    ),
    # Table 2: reconstruction targets of TF-Dec (paper §4.2).
    2: (
        BASE,
        _v("a", "(a) Gm without CFA", attention="none", mask="gm"),
        _v("b", "(b) input", mask="input"),
        _v("c", "(c) Gm", mask="gm"),
        _v("d", "(d) Gm + PAm", mask="gm_pam"),
        _v("e", "(e) Gm + CAm", mask="gm_cam"),
        _v("f", "(f) Gm + PAm + CAm without gradient loss", gradient_loss=False),
        _v("g", "(g) Gm + PAm + CAm (FTN)"),
        # Controls (not in the paper): the Baseline with exactly the Re-ID updates of a TF-Dec
        # variant, and (g) reconstructing the input times the ground-truth person mask.
        _v("base_matched", "Base. with TF-Dec's Re-ID updates (control)", control=True,
           attention="none", decoder=False, **{"train.matched_updates": True}),
        _v("oracle", "(g) with the true person mask as target (control)", control=True, mask="oracle"),
    ),
    # Table 3: Baseline and FTN on each dataset.
    3: (dataclasses.replace(BASE, label="Baseline"), _v("ftn", "FTN")),
}


def variants(table: int, keys: list[str] | None = None, controls: bool = False) -> list[Variant]:
    """The variants of ``table`` in table order: the paper's rows (plus the controls when
    ``controls``), or those named in ``keys`` (controls included)."""
    if table not in TABLES:
        raise FTNError(f"--table {table}: unknown; one of {', '.join(map(str, TABLES))}")
    rows = TABLES[table]
    if not keys:
        return [v for v in rows if controls or not v.control]
    known = {v.key for v in rows}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise FTNError(f"--variants {' '.join(unknown)}: not in Table {table}; "
                       f"choose from {' '.join(v.key for v in rows)}")
    return [v for v in rows if v.key in keys or controls and v.control]


def paper_results(table: int | None = None) -> list[dict[str, Any]]:
    """Rows of the paper's tables: table, row (variant key), variant_label, dataset, rank1, mAP."""
    with PAPER_TABLES.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        if table is not None and int(row["table"]) != table:
            continue
        out.append({"table": int(row["table"]), "row": row["row"], "variant_label": row["variant_label"],
                    "dataset": row["dataset"], "rank1": float(row["rank1"]), "mAP": float(row["mAP"])})
    return out
