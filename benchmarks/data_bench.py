"""Data-pipeline speed: decode + train augmentation at 256×128 on one core, the training
DataLoader with N workers, and image checks.

Writes a few hundred random-texture JPEGs of Market-1501 size (64×128) to a temporary
folder, then prints images/s for decoding alone, for decode + train pipeline through
``ReIDDataset``, for the training DataLoader (batch 32, ``loading.loader_options``: the
settings training uses) with each ``--workers`` count, and the cost of the readers' image
verification per 1000 images. A GPU run needs the loader above the model's img/s (target:
≥ 2,000 img/s at 256×128 with the preset's 4 workers).

  python benchmarks/data_bench.py [--workers 0 2 4] [--images 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ftn_core.data.dataset import ReIDDataset, read_image
from ftn_core.data.loading import loader_options
from ftn_core.data.readers import check_image, read_market_layout
from ftn_core.data.transforms import build_transforms
from ftn_core.data.types import Sample


def write_jpegs(dataset_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` smooth random 64×128 JPEGs (quality 90) in a Market-1501 layout (n/3 per split)."""
    rng = np.random.default_rng(seed)
    paths = []
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (dataset_dir / sub).mkdir(parents=True)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(16, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((64, 128), Image.BILINEAR)
        noise = rng.integers(-12, 13, size=(128, 64, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
        sub = ("bounding_box_train", "query", "bounding_box_test")[i % 3]
        path = dataset_dir / sub / f"{i % 100:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def rate(fn, items, repeats: int) -> float:
    """Items per second of ``fn`` over ``items``, best of ``repeats`` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 2],
        help="DataLoader worker counts to measure (default: 0 2)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision.io notice
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp) / "market", args.images)
        strs = [str(p) for p in paths]
        kib = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        print(f"{len(paths)} JPEGs 64x128, {kib:.1f} KiB each; torch threads = 1")

        decode_tv = rate(read_image, strs, args.repeats)
        decode_pil = rate(lambda p: np.asarray(Image.open(p).convert("RGB")), strs, args.repeats)
        print(f"{'decode only, torchvision.io.decode_image':<44}{decode_tv:8.0f} img/s")
        print(f"{'decode only, PIL':<44}{decode_pil:8.0f} img/s")

        samples = [Sample(p, 0, 0) for p in strs]
        for name, train in (("train", True), ("test", False)):
            ds = ReIDDataset(samples, build_transforms(256, 128, train=train))
            speed = rate(ds.__getitem__, range(len(ds)), args.repeats)
            label = f"decode + {name} pipeline at 256x128"
            print(f"{label:<44}{speed:8.0f} img/s per core")

        train_set = ReIDDataset(samples, build_transforms(256, 128, train=True))
        for workers in args.workers:
            loader = DataLoader(
                train_set, batch_size=32, shuffle=True, drop_last=True, **loader_options(workers)
            )
            for _ in loader:  # start the workers and warm the file cache
                pass
            start, seen = time.perf_counter(), 0
            for _ in range(args.repeats):
                for batch in loader:
                    seen += len(batch["img"])
            speed = seen / (time.perf_counter() - start)
            label = f"training DataLoader, {workers} worker(s), batch 32"
            print(f"{label:<44}{speed:8.0f} img/s", flush=True)
            del loader

        verify = rate(check_image, strs, args.repeats)
        print(f"{'image check (readers.check_image)':<44}{1e6 / verify:8.1f} ms per 1000 images")
        times = {}
        for flag in (True, False):
            start = time.perf_counter()
            for _ in range(args.repeats):
                read_market_layout(str(Path(tmp) / "market"), "bench", verify_images=flag)
            times[flag] = (time.perf_counter() - start) / args.repeats
        per_1000 = (times[True] - times[False]) / len(paths) * 1e6
        print(
            f"{'verification inside read_market_layout':<44}{per_1000:8.1f} ms per 1000 images "
            f"(listing + parsing: {times[False] / len(paths) * 1e6:.1f} ms; warm file cache)"
        )


if __name__ == "__main__":
    main()
