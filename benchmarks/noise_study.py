"""Where a Δ's noise comes from, per synthetic test size: the same trained runs, evaluated again.

  python benchmarks/noise_study.py --tracking-uri sqlite:///study.db --experiment table1-synthetic-cpu \\
      --variant cfa --reference base --test-ids 100 430 1000

The embedded benchmark's test split grows (``data.synthetic_test_ids``) while its training split
stays the same files, so a run trained on it can be scored on any larger test split without
training again. For every FINISHED run of ``--variant`` and ``--reference`` in the experiment,
the saved model is evaluated on each test size (per-query results cached under ``--cache``, so
a second call only prints), and for the Δ (variant − reference, R-1) at each size it prints:
queries, evaluation seconds per run, the per-query correlation of the two variants at one seed
(rank-1 hits), the SD over seeds of the per-seed Δ, the query standard error of one seed's Δ,
the seed / query / interaction shares of the Δ's variance (``reports.stats.noise_parts``), the
report's 95 % half-width (``stats.delta_interval``), and the seeds that ±1.5 and ±1
would need at that size.

A second line per size ("cross") pairs each seed of ``--variant`` with the next seed of
``--reference`` instead of its own: the same statistics for runs that share no random draw, which
is what pairing by construction is measured against (an upper bound on an unpaired design, as two
cross-paired runs also differ in their PK sampling).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
)  # one line per test size, no bars

from ablations import per_query, store  # noqa: E402
from ftn_core.config import override  # noqa: E402
from ftn_core.data.loading import build_data, load_splits  # noqa: E402
from ftn_core.engine import evaluate  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main  # noqa: E402
from reports import stats  # noqa: E402


def runs_of(client, experiment: str, variants: list[str]) -> dict[tuple[str, int], object]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise FTNError(f"--experiment {experiment}: not in the store")
    out = {}
    for run in client.search_runs([exp.experiment_id], store.FINISHED_CHILD_RUNS):
        key = (run.data.tags.get("variant", ""), int(run.data.tags.get("seed", -1)))
        if key[0] in variants and (
            key not in out or run.info.start_time > out[key].info.start_time
        ):
            out[key] = run
    return out


def scored(run, test_ids: int, cache: Path, splits_cache: dict) -> tuple[dict, float]:
    """The run's per-query results on the test split of ``test_ids`` identities, and the seconds
    its evaluation took (NaN when read from the cache)."""
    path = cache / f"{run.info.run_id}-t{test_ids}.npz"
    if path.exists():
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}, float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = per_query.run_config(run.info.run_id, tmp)
        if cfg.data.dataset != "synthetic":
            raise FTNError(
                f"run {run.info.run_name}: trained on {cfg.data.dataset}; the test split grows only "
                f"for the synthetic benchmark"
            )
        cfg = override(cfg, {"data.synthetic_test_ids": test_ids})
        key = (cfg.data.root, test_ids)
        if key not in splits_cache:
            splits_cache[key] = load_splits(cfg.data)
        model = per_query.run_model(cfg, per_query.run_weights(run.info.run_id, tmp))
    data = build_data(cfg.data, splits=splits_cache[key])
    t0 = time.perf_counter()
    _, result = evaluate(model, data, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    arrays = {k: np.asarray(v) for k, v in result.per_query._asdict().items()}
    np.savez(path, **arrays)
    return arrays, seconds


def row_of(
    values: dict, variant: str, reference: str, seeds: list[int], partners: list[int]
) -> list:
    """The statistics of the Δ when seed ``seeds[i]`` of ``variant`` is paired with seed
    ``partners[i]`` of ``reference``: queries, per-query correlation, seed SD of Δ, query SE of one
    pair's Δ, the seed / query / interaction shares, Δ, the 95 % half-width and the pairs ±1.5
    and ±1 would need."""
    a = {i: values[variant, s] for i, s in enumerate(seeds)}
    b = {i: values[reference, r] for i, r in enumerate(partners)}
    d = stats.paired_matrix(a, b)
    corr = np.mean([np.corrcoef(list(a[i].values()), list(b[i].values()))[0, 1] for i in a])
    delta = stats.delta_interval(d)
    parts = stats.noise_parts(d)
    query_se = float(np.mean([row.std(ddof=1) / np.sqrt(len(row)) for row in d]))
    return [
        d.shape[1],
        corr,
        delta.sd_seed,
        query_se,
        *parts.shares(),
        delta.delta,
        (delta.hi - delta.lo) / 2,
        parts.seeds_for(1.5),
        parts.seeds_for(1.0),
    ]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tracking-uri", default=store.DEFAULT_TRACKING_URI)
    parser.add_argument("--experiment", default="table1-synthetic-cpu")
    parser.add_argument("--variant", default="cfa")
    parser.add_argument("--reference", default="base")
    parser.add_argument("--test-ids", type=int, nargs="+", default=[100, 430, 1000])
    parser.add_argument("--cache", type=Path, default=Path("out/noise_study"))
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    client = store.open_store(args.tracking_uri, create=False)
    runs = runs_of(client, args.experiment, [args.variant, args.reference])
    seeds = sorted(
        {s for (v, s) in runs if v == args.variant} & {s for (v, s) in runs if v == args.reference}
    )
    if not seeds:
        raise FTNError(
            f"no seed has FINISHED runs of both {args.variant} and {args.reference} in {args.experiment}"
        )
    print(f"{args.variant} − {args.reference}, R-1, seeds {' '.join(map(str, seeds))}", flush=True)
    head = (
        "test ids",
        "pairing",
        "queries",
        "eval s",
        "corr",
        "seed SD Δ",
        "query SE",
        "seed %",
        "query %",
        "inter %",
        "Δ",
        "± 95 %",
        "seeds ±1.5",
        "seeds ±1",
    )
    print("  ".join(f"{h:>10}" for h in head), flush=True)
    splits_cache: dict = {}
    for n in args.test_ids:
        per, secs = {}, []
        for (v, s), run in runs.items():
            if s in seeds:
                per[v, s], sec = scored(run, n, args.cache, splits_cache)
                secs.append(sec)
        values = {key: stats.query_metric(arrays, "rank1") for key, arrays in per.items()}
        eval_s = np.nanmean(secs) if not np.isnan(secs).all() else float("nan")
        pairings = {"same seed": seeds}
        if len(seeds) > 1:
            pairings["cross"] = seeds[1:] + seeds[:1]
        for name, partners in pairings.items():
            cells = row_of(values, args.variant, args.reference, seeds, partners)
            print(
                "  ".join(
                    f"{c:>10}" if isinstance(c, (int, str)) or c is None else f"{c:>10.2f}"
                    for c in [n, name, *cells[:1], eval_s, *cells[1:]]
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
