"""Rank lists: a query and its top-10 gallery images, framed green (true match), red (another
identity) or grey (junk: the same identity seen by the same camera, left out by the protocol).

Queries are chosen by AP from one run's per-query results: the best, the median and the worst,
so a reader sees failures and not only successes. Two models are compared on the same queries:
the reference's picks (``pick``) are drawn for both (``draw(..., picks=...)``), each row giving
that model's own AP. Drawn from ``per_query.npz`` (which stores each query's top-10 gallery
indices) and the dataset's images: no features are computed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ftn_core.data.types import DatasetSplits  # noqa: E402

TOP = 10
COLOURS = {"match": "#2ca02c", "other": "#d62728", "junk": "#9e9e9e"}


def choose_queries(ap: np.ndarray, per_group: int = 2) -> list[tuple[str, int]]:
    """(label, row) of the ``per_group`` best, median and worst queries by AP (ties: first row)."""
    order = np.argsort(-ap, kind="stable")  # best first
    mid = len(order) // 2 - per_group // 2
    picks = [("best", r) for r in order[:per_group]]
    picks += [("median", r) for r in order[max(mid, 0) : max(mid, 0) + per_group]]
    picks += [("worst", r) for r in order[::-1][:per_group]]
    seen, out = set(), []
    for label, r in picks:
        if int(r) not in seen:
            seen.add(int(r))
            out.append((label, int(r)))
    return out


def kind(q_pid: int, q_cam: int, g_pid: int, g_cam: int) -> str:
    if g_pid == q_pid:
        return "junk" if g_cam == q_cam else "match"
    return "other"


def pick(per_query: dict[str, np.ndarray], per_group: int = 2) -> list[tuple[str, int]]:
    """(label, query index in the dataset) of ``choose_queries`` on this run's AP: the picks to
    draw for every model compared with it."""
    index = np.asarray(per_query["index"])
    return [
        (label, int(index[r]))
        for label, r in choose_queries(np.asarray(per_query["ap"]), per_group)
    ]


def draw(
    per_query: dict[str, np.ndarray],
    splits: DatasetSplits,
    out: Path,
    title: str,
    per_group: int = 2,
    picks: list[tuple[str, int]] | None = None,
) -> Path:
    """The rank-list figure of one run as ``out`` (PNG); one row per query: ``picks`` (label,
    query index in the dataset; ``pick`` of a reference run), else this run's own best, median
    and worst. A picked query this run did not evaluate is left out."""
    index = np.asarray(per_query["index"])
    row_of = {int(q): r for r, q in enumerate(index)}
    picks = picks if picks is not None else pick(per_query, per_group)
    rows = [(label, row_of[q]) for label, q in picks if q in row_of]
    top = np.asarray(per_query["top10"])[:, :TOP]
    cols = top.shape[1] + 1
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.1 * cols, 2.0 * len(rows)), dpi=90, squeeze=False
    )
    for row, (label, r) in enumerate(rows):
        q = splits.query[int(index[r])]
        panels = [(q.path, None, f"{label}\nAP {100 * per_query['ap'][r]:.0f}")]
        for k, g_idx in enumerate(top[r]):
            g = splits.gallery[int(g_idx)]
            panels.append((g.path, kind(q.pid, q.camid, g.pid, g.camid), str(k + 1)))
        for ax, (path, what, text) in zip(axes[row], panels):
            ax.imshow(_image(path))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(text, fontsize=7)
            colour = COLOURS.get(what, "black")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3 if what else 1)
            if what == "junk":
                ax.images[0].set_alpha(0.4)
    fig.suptitle(
        f"{title}\nquery, then its top {cols - 1} (green match, red other identity, grey junk)",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 of an image file (PIL: drawing a rank list needs no torch)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
