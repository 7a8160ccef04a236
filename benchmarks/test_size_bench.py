"""What a larger synthetic test split costs: one run's evaluation time per test size.

  python benchmarks/test_size_bench.py [--test-ids 100 430 1000] [--variants base g] [--repeats 2]

For each number of test identities (``data.synthetic_test_ids``; 100 is the default benchmark's
own, about 3.5 queries per identity) the cpu preset's model (random weights: the time does not
depend on them) is evaluated as a training run's final evaluation does it — query and gallery
features, distances, ranking, the foreground diagnostics — and the best of ``--repeats`` wall
times is printed with the query and gallery counts (the first evaluation of a run also decodes
the images; later ones read them from memory, ``data.loading.CACHE_BYTES``). A run evaluates at every ``eval_every``
epochs and at the end. The benchmark is generated first where it is missing (minutes for 1,000
test identities; the training split is the same files whatever the size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ablations.variants import variants
from ftn_core.data.loading import build_data, load_splits
from ftn_core.engine import evaluate
from ftn_core.errors import OneLineParser, cli_main
from ftn_core.model import build_model
from ftn_core.presets import preset_config


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--test-ids", type=int, nargs="+", default=[100, 430, 1000])
    parser.add_argument("--variants", nargs="+", default=["base", "g"], help="Table 2 rows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "data"))
    args = parser.parse_args(argv)
    rows = {v.key: v for v in variants(2, args.variants)}
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"{'test ids':>8} {'queries':>8} {'gallery':>8}  "
        + "  ".join(f"{k + ' s':>8}" for k in rows)
    )
    for n in args.test_ids:
        cfg = preset_config("cpu", {"data.root": args.root, "data.synthetic_test_ids": n})
        splits = load_splits(cfg.data)
        data = build_data(cfg.data, splits=splits)
        times = []
        for variant in rows.values():
            model = build_model(variant.apply(cfg).model, splits.num_train_pids, init_seed=0).eval()
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                evaluate(model, data, torch.device("cpu"))
                best = min(best, time.perf_counter() - t0)
            times.append(best)
        print(
            f"{n:>8} {len(splits.query):>8} {len(splits.gallery):>8}  "
            + "  ".join(f"{t:8.1f}" for t in times),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
