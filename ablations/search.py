"""Search a gallery of images for the people in query images, with a trained model.

Query and gallery are embedded as ablations/embed.py does (the run's preprocessing, L2-normalised
embeddings); the gallery is ranked by cosine distance (1 − cosine similarity), or with --rerank
by k-reciprocal re-ranking (Zhong et al. 2017: k1 = 20, k2 = 6, λ = 0.3; ftn_core/rerank.py) over
queries and gallery together. Prints each query's top k and draws them as a rank list (query,
then its top k with rank and distance; where the file names are Market-1501-style
<pid>_c<camera>…, framed green for the same identity, red for another, grey for the same
identity seen by the same camera, as the runs' rank lists are).

Examples:
  python ablations/search.py 3f2a… --query me.jpg --gallery cameras/ --top 10
  python ablations/search.py 3f2a… --query q1.jpg q2.jpg --gallery list.csv --rerank --out ranks.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import numpy as np  # noqa: E402

from ablations.embed import add_model_arguments, images_of  # noqa: E402
from ablations.models import load_embedder  # noqa: E402
from ablations.ranklists import COLOURS, kind  # noqa: E402
from ftn_core.embedder import Embeddings, decode  # noqa: E402
from ftn_core.engine import resolve_device  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, check_writable_dir, cli_main, int_at_least  # noqa: E402

IDENTITY = re.compile(r"^(-?\d+)_c(\d+)")
"""A Market-1501-style file name: pid, then the camera."""


def rank(
    query: Embeddings, gallery: Embeddings, top: int, rerank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) gallery indices of each query's ``top`` nearest, nearest first (ties: gallery
    order), and their (Q, k) distances: cosine (1 − q·g), or re-ranked."""
    if rerank:
        import torch

        from ftn_core.rerank import rerank as k_reciprocal

        dist = np.asarray(
            k_reciprocal(torch.from_numpy(query.vectors), torch.from_numpy(gallery.vectors)),
            dtype=np.float32,
        )
    else:
        dist = 1.0 - query.vectors @ gallery.vectors.T  # (Q, G)
    order = np.argsort(dist, axis=1, kind="stable")[:, :top]  # (Q, k)
    return order, np.take_along_axis(dist, order, axis=1)


def frame(query_name: str, gallery_name: str) -> str | None:
    """match / other / junk by the names' identity and camera; None when either has none."""
    q, g = IDENTITY.match(Path(query_name).name), IDENTITY.match(Path(gallery_name).name)
    if q is None or g is None:
        return None
    return kind(int(q[1]), int(q[2]), int(g[1]), int(g[2]))  # as the runs' rank lists


def draw(
    query: Embeddings,
    query_paths: list[str],
    gallery: Embeddings,
    gallery_paths: list[str],
    order: np.ndarray,
    dist: np.ndarray,
    out: Path,
    title: str,
) -> Path:
    """The rank list as ``out`` (PNG): one row per query, the query then its top k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = order.shape[1] + 1
    fig, axes = plt.subplots(
        len(order), cols, figsize=(1.1 * cols, 2.0 * len(order)), dpi=90, squeeze=False
    )
    for row, (q_name, q_path) in enumerate(zip(query.names, query_paths)):
        panels = [(q_path, None, f"query\n{Path(q_name).name[:14]}")]
        panels += [
            (gallery_paths[g], frame(q_name, gallery.names[g]), f"{k + 1}\n{d:.3f}")
            for k, (g, d) in enumerate(zip(order[row], dist[row]))
        ]
        for ax, (path, what, text) in zip(axes[row], panels):
            ax.imshow(decode(path, path).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(text, fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor(COLOURS.get(what, "black"))
                spine.set_linewidth(3 if what else 1)
            if what == "junk":
                ax.images[0].set_alpha(0.4)
    for ax in axes[:, 1:].ravel()[order.size :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--query", nargs="+", required=True, metavar="IMAGE", help="the query images"
    )
    parser.add_argument(
        "--gallery",
        required=True,
        nargs="+",
        help="a folder, a CSV with a 'path' column, or image files",
    )
    parser.add_argument(
        "--top", type=int_at_least(1), default=10, help="how many to show (default: %(default)s)"
    )
    parser.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (not the paper's protocol)"
    )
    parser.add_argument(
        "--out", default="ranklist.png", help="the rank list's PNG (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise FTNError(f"--out {out}: the rank list is a PNG; end it in .png")
    check_writable_dir(out.parent, "--out")
    q_paths, q_names = images_of(args.query)
    g_paths, g_names = images_of(args.gallery)
    device = resolve_device(args.device, "--device")
    embedder = load_embedder(args.model, args.tracking_uri, device, args.batch_size, args.flip)
    query, gallery = embedder.embed(q_paths, q_names), embedder.embed(g_paths, g_names)
    top = min(args.top, len(gallery))
    order, dist = rank(query, gallery, top, args.rerank)
    how = "re-ranked distance" if args.rerank else "cosine distance"
    for q, (name, row) in enumerate(zip(query.names, order)):
        print(f"query {name}: top {top} of {len(gallery)} by {how}")
        for k, g in enumerate(row):
            print(f"  {k + 1:>3}. {dist[q, k]:.4f}  {gallery.names[g]}")
    title = f"{embedder.source}: top {top} by {how}{' (flip-averaged)' if args.flip else ''}"
    draw(query, q_paths, gallery, g_paths, order, dist, out, title)
    print(f"rank list → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
