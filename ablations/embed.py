"""Embed images with a trained model and write the embeddings to a file.

The model is a run id, a LoggedModel id (m-…) or a checkpoint (a model.pt with the run's
config.json beside it, or the runner's <name>-<run id>.pt); the images are a folder (every
.jpg/.jpeg/.png below it), a CSV with a 'path' column, or image files. Each embedding is the
run's test embedding of the image, preprocessed as its evaluation does, L2-normalised.

Output by extension: .npy (the (N, D) float32 matrix; the names, one a line, in <out>.names.txt
beside it), .npz (arrays 'names' and 'vectors') or .parquet (columns 'name' and 'embedding').

Examples:
  python ablations/embed.py 3f2a… photos/ --out emb.parquet
  python ablations/embed.py m-8c1d… list.csv --out emb.npz --flip
  python ablations/embed.py ckpt/table2-synthetic-cpu/g-s0-3f2a….pt a.jpg b.jpg --out emb.npy
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import numpy as np  # noqa: E402

from ablations import store  # noqa: E402
from ablations.models import load_embedder  # noqa: E402
from ftn_core.data.loading import EVAL_BATCH  # noqa: E402
from ftn_core.embedder import Embeddings, image_files  # noqa: E402
from ftn_core.engine import resolve_device  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, check_writable_dir, cli_main, int_at_least  # noqa: E402

FORMATS = (".npy", ".npz", ".parquet")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads a model shares."""
    parser.add_argument("model", help="a run id, a LoggedModel id (m-…) or a checkpoint file")
    parser.add_argument(
        "--flip",
        action="store_true",
        help="average each embedding with its mirror image's (as evaluate.py --flip)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=EVAL_BATCH,
        help="images per forward pass (default: %(default)s, as the evaluation)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )


def images_of(sources: list[str]) -> tuple[list[str], list[str]]:
    """(paths, names) of the command line's images: one folder or CSV, or image files."""
    if len(sources) == 1 and (Path(sources[0]).is_dir() or sources[0].lower().endswith(".csv")):
        return image_files(sources[0])
    for source in sources:
        if Path(source).is_dir() or source.lower().endswith(".csv"):
            raise FTNError(f"{source}: give one folder or CSV alone, or image files")
        if not Path(source).is_file():
            raise FTNError(f"{source}: no such file or folder")
    return list(sources), list(sources)


def write(out: Path, embeddings: Embeddings) -> list[Path]:
    """Write ``embeddings`` in ``out``'s format; every file appears whole or not at all."""
    names = np.asarray(embeddings.names, dtype=str)
    if out.suffix == ".npy":
        files = {out: embeddings.vectors, out.with_name(out.name + ".names.txt"): names}
    else:
        files = {out: embeddings}
    written: list[tuple[Path, Path]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for path, content in files.items():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # the umask's permissions
            written.append((tmp, path))
            if path.suffix == ".txt":
                tmp.write_text("".join(f"{n}\n" for n in content), encoding="utf-8")
            elif path.suffix == ".npy":
                with open(tmp, "wb") as fh:
                    np.save(fh, content)
            elif path.suffix == ".npz":
                with open(tmp, "wb") as fh:
                    np.savez(fh, names=names, vectors=embeddings.vectors)
            else:
                import pandas as pd

                pd.DataFrame(
                    {"name": embeddings.names, "embedding": list(embeddings.vectors)}
                ).to_parquet(tmp, index=False)
        for tmp, path in written:
            os.replace(tmp, path)
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    return list(files)


def read(path: str | Path) -> Embeddings:
    """The embeddings ``write`` wrote (any of its formats)."""
    path = Path(path)
    if path.suffix == ".npy":
        names = path.with_name(path.name + ".names.txt").read_text(encoding="utf-8").splitlines()
        return Embeddings(names, np.load(path))
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return Embeddings([str(n) for n in npz["names"]], npz["vectors"])
    import pandas as pd

    df = pd.read_parquet(path)
    return Embeddings(list(df["name"]), np.stack(df["embedding"].to_numpy()).astype(np.float32))


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "images", nargs="+", help="a folder, a CSV with a 'path' column, or image files"
    )
    parser.add_argument("--out", required=True, help=f"the file to write: {', '.join(FORMATS)}")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix not in FORMATS:
        raise FTNError(f"--out {out}: unknown format; end it in {', '.join(FORMATS)}")
    check_writable_dir(out.parent, "--out")
    paths, names = images_of(args.images)
    device = resolve_device(args.device, "--device")
    embedder = load_embedder(args.model, args.tracking_uri, device, args.batch_size, args.flip)
    embeddings = embedder.embed(paths, names)
    files = write(out, embeddings)
    print(
        f"{len(embeddings)} images embedded ({embeddings.vectors.shape[1]}-d, L2-normalised"
        f"{', flip-averaged' if args.flip else ''}; {embedder.height}×{embedder.width} input) "
        f"→ {', '.join(map(str, files))}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
