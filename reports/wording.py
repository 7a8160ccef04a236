"""How a report names the row every Δ is taken against, and the paper: the words its templates
and sentences take, from the study (``Study.reference_name``, the reference row's label, whether
it has paper numbers) and never from a row key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Wording:
    """The words for the reference row and the paper; the defaults are the paper's tables'
    (a reference named "Baseline", labelled "Base.")."""

    name: str = "Baseline"
    """What the study calls its reference row (``Study.reference_name``); "": it has no name."""
    label: str = "Base."
    """The reference row's label."""
    paper_key: str = "paper Δ = the paper's change against its Baseline; "
    paper_beside: str = " beside the paper's Δ against its Baseline (open diamond)"

    @property
    def our_ref(self) -> str:
        return f"our {self.name}" if self.name else "the reference row"

    @property
    def the_ref(self) -> str:
        return f"the {self.name}" if self.name else "the reference row"

    @property
    def refs(self) -> str:
        return f"the {self.name}'s" if self.name else "the reference's"

    @property
    def in_sentences(self) -> str:
        """The reference in a verdict sentence: "our Baseline", "the reference (<label>)"."""
        return f"our {self.name}" if self.name else f"the reference ({self.label})"

    @property
    def column(self) -> str:
        """The reference in a column heading ("Δ R-1 vs Base.")."""
        return self.label if self.name else "ref."

    @property
    def unnamed_label(self) -> str | None:
        """The reference row's label where the study gives it no name (figures show it)."""
        return None if self.name else self.label

    def __call__(self, template: str, **more: str) -> str:
        """``template`` with ``{our_ref}``, ``{the_ref}``, ``{refs}``, ``{paper_key}``,
        ``{paper_beside}`` and the fields of ``more`` filled in."""
        words = dataclasses.asdict(self)
        words.update(our_ref=self.our_ref, the_ref=self.the_ref, refs=self.refs, **more)
        return template.format(**words)


def wording(study) -> Wording:
    """The words of ``study``: its reference's name and label; nothing of the paper's explained
    where it has no paper numbers."""
    words: dict = {"name": study.reference_name, "label": study.row(study.reference).label}
    if study.table is None:
        words.update(paper_key="", paper_beside="")
    return Wording(**words)


PAPER_WORDS = Wording()
"""The paper's tables' words: a reference named "Baseline", labelled "Base."."""
