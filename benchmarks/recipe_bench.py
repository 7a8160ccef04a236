"""Training recipes compared on held-out training identities (never the test split).

  python benchmarks/recipe_bench.py --seeds 0 1 \\
      --recipe now: \\
      --recipe cosine: train.lr_decay=cosine \\
      --recipe cosine-3e-3: train.lr_decay=cosine train.lr=3e-3

Each ``--recipe NAME: KEY=VALUE ...`` is a set of config overrides on top of the preset (an
empty one is the preset itself). For every recipe and seed the variant (default: the Baseline)
trains on 80 % of the embedded benchmark's training identities and is evaluated once, at the
end, on the other 20 % (the held-out identities ``tune.py`` scores its trials on, with one
query per camera instead of two: three times the queries, a less noisy comparison). Prints one line
per run (validation rank-1 and mAP, the last epoch's cross-entropy, wall seconds), appends it
to ``--csv`` as it ends, so a long comparison can be read while it runs, then the mean of each
recipe and its paired difference to the first recipe over the seeds they share.
Runs from ``--csv`` that are already there (same recipe, seed and overrides) are not trained
again: run the command twice in parallel with different ``--seeds`` and one file to use two
cores.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from ablations import runner
from ftn_core.config import parse_sets
from ftn_core.data.holdout import holdout_split
from ftn_core.data.loading import build_data, load_splits
from ftn_core.engine import Trainer
from ftn_core.errors import FTNError, OneLineParser, cli_main

FIELDS = ("recipe", "overrides", "seed", "epochs", "val_rank1", "val_mAP", "train_ce", "seconds")


def parse_recipes(groups: list[list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for group in groups:
        if not group or not group[0].endswith(":"):
            raise FTNError(
                f"--recipe {' '.join(group)}: start with a name and a colon, e.g. "
                f"--recipe cosine: train.lr_decay=cosine"
            )
        name = group[0][:-1]
        if name in out:
            raise FTNError(f"--recipe {name}: given twice")
        parse_sets(group[1:])  # a typo fails now, not after an hour of training
        out[name] = group[1:]
    return out


def train_one(args, name: str, sets: list[str], seed: int, splits) -> dict[str, object]:
    overrides = {**parse_sets(sets), "train.eval_every": 0}
    plan = runner.build_plan(
        args.table, [args.variant], [seed], ["synthetic"], args.root, args.preset, overrides
    )[0]
    cfg = plan.cfg
    data = build_data(cfg.data, seed=seed, splits=splits)
    t0 = time.perf_counter()
    result = Trainer(cfg, data, None, progress=False).fit()
    return {
        "recipe": name,
        "overrides": " ".join(sets),
        "seed": seed,
        "epochs": cfg.train.epochs,
        "val_rank1": round(result.metrics["val/rank1"], 2),
        "val_mAP": round(result.metrics["val/mAP"], 2),
        "train_ce": round(result.history[-1].get("train/loss_ce", float("nan")), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summary(rows: list[dict[str, str]], names: list[str]) -> None:
    by = {(r["recipe"], int(r["seed"])): r for r in rows}
    ref = names[0]
    print(
        f"\n{'recipe':<24} {'n':>2} {'R-1':>6} {'mAP':>6}   Δ R-1 / Δ mAP vs {ref} (paired seeds)"
    )
    for name in names:
        seeds = sorted(s for (n, s) in by if n == name)
        if not seeds:
            continue
        r1 = [float(by[name, s]["val_rank1"]) for s in seeds]
        mp = [float(by[name, s]["val_mAP"]) for s in seeds]
        line = f"{name:<24} {len(seeds):>2} {statistics.mean(r1):6.1f} {statistics.mean(mp):6.1f}"
        shared = [s for s in seeds if (ref, s) in by]
        if name != ref and shared:
            d1 = [float(by[name, s]["val_rank1"]) - float(by[ref, s]["val_rank1"]) for s in shared]
            d2 = [float(by[name, s]["val_mAP"]) - float(by[ref, s]["val_mAP"]) for s in shared]
            line += (
                f"   {statistics.mean(d1):+.1f} / {statistics.mean(d2):+.1f} over seeds {shared}"
            )
        print(line)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe",
        nargs="+",
        action="append",
        required=True,
        metavar="ARG",
        help="NAME: KEY=VALUE ... (repeatable)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variant", default="base")
    parser.add_argument("--table", type=int, default=2)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "data"))
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument(
        "--query-cams",
        type=int,
        default=99,
        help="validation queries per held-out identity, one per camera (default: every "
        "camera; tune.py takes 2, Market-1501's protocol)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--csv", type=Path, default=None, help="append each run here; skip runs it holds"
    )
    args = parser.parse_args(argv)
    recipes = parse_recipes(args.recipe)
    if args.threads:
        torch.set_num_threads(args.threads)
    done: list[dict[str, str]] = []
    if args.csv is not None and args.csv.exists():
        with args.csv.open() as f:
            done = list(csv.DictReader(f))
    base = runner.build_plan(
        args.table, [args.variant], [args.seeds[0]], ["synthetic"], args.root, args.preset, {}
    )[0]
    splits = holdout_split(
        load_splits(base.cfg.data), args.holdout, seed=0, query_cams=args.query_cams
    )
    print(splits.summary(), flush=True)
    for seed in args.seeds:
        for name, sets in recipes.items():
            if any(
                r["recipe"] == name and r["overrides"] == " ".join(sets) and int(r["seed"]) == seed
                for r in done
            ):
                continue
            row = train_one(args, name, sets, seed, splits)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if args.csv is not None:
                new = not args.csv.exists()
                with args.csv.open("a", newline="") as f:
                    writer = csv.DictWriter(f, FIELDS)
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
            done.append({k: str(v) for k, v in row.items()})
    summary(done, list(recipes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
