"""Export a trained model's inference embedding model to ONNX, and check it against PyTorch.

The graph takes float32 (N, 3, H, W) RGB images in [0, 1], already resized to the run's H × W
(bilinear, antialiased), normalises them by the ImageNet mean and std itself, and returns
(N, D) L2-normalised embeddings; N is dynamic. Decoding and resizing stay outside the graph: the
model's metadata says how (ftn_core/onnx_export.py). After the export, the model is checked with
onnxruntime against PyTorch on the embedded benchmark's test split (the run's own when it was
trained on it, else the tiny one, generated on first use): the largest absolute difference of
the normalised embeddings must be at most 1e-4 and every query's top 10 of the gallery
identical, or nothing is written.

Examples:
  python ablations/export.py 3f2a… --onnx ftn.onnx
  python ablations/export.py m-8c1d… --onnx ftn-flip.onnx --flip      # flip averaging in the graph
"""

from __future__ import annotations

import argparse
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

from ablations import store  # noqa: E402
from ablations.models import load_embedder  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, check_writable_dir, cli_main  # noqa: E402

CHECK_ROOT = store.REPO / "data"
"""Where the embedded benchmark is generated for runs trained on other data."""


def check_splits(cfg):
    """The test split the check runs on: the run's synthetic benchmark, else the tiny one."""
    from ftn_core.data.synthetic import load_synthetic

    data = cfg.data if cfg is not None else None
    if data is not None and data.dataset == "synthetic":
        return load_synthetic(
            data.root, data.synthetic_size, data.synthetic_seed, test_ids=data.synthetic_test_ids
        )
    return load_synthetic(str(CHECK_ROOT), "tiny", 0)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="a run id, a LoggedModel id (m-…) or a checkpoint file")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    parser.add_argument(
        "--flip",
        action="store_true",
        help="average each embedding with its mirror image's, inside the graph",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the check against PyTorch")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise FTNError(
            f"ONNX export needs onnx and onnxruntime ({err}); pip install -e '.[onnx]'"
        ) from None
    from ftn_core import onnx_export

    out = Path(args.onnx)
    if out.suffix != ".onnx":
        raise FTNError(f"--onnx {out}: end the file name in .onnx")
    check_writable_dir(out.parent, "--onnx")
    embedder = load_embedder(args.model, args.tracking_uri, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.stem}.staged.onnx")  # renamed into place once checked
    try:
        onnx_export.export(embedder, staged, args.flip, embedder.source)
        if not args.no_check:
            splits = check_splits(embedder.config)
            result = onnx_export.check(
                staged,
                embedder,
                [s.path for s in splits.query],
                [s.path for s in splits.gallery],
                args.flip,
            )
            print(f"{result.line()} ({splits.name} test split)")
            if not result.passed:
                raise FTNError(
                    f"the ONNX model does not reproduce PyTorch's embeddings; nothing "
                    f"written to {out}"
                )
        staged.replace(out)
    finally:
        staged.unlink(missing_ok=True)
    print(
        f"exported {embedder.source} → {out} (input float32 (N, 3, {embedder.height}, "
        f"{embedder.width}) in [0, 1], resized outside the graph; output (N, {embedder.dim}) "
        f"L2-normalised{', flip-averaged' if args.flip else ''})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
