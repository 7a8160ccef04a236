"""Cost of the tuning machinery, and what pruning saves.

1. A study of K trials without pruning (MLflow child run per trial, Optuna journal), then the
   same K configurations trained by a bare ``Trainer.fit`` loop: the difference per trial is
   the bookkeeping overhead.
2. The same study with the default median pruner: trials pruned and wall time.

Everything runs in a temporary folder on the ``tiny`` preset (or ``--preset cpu`` with
``--set`` overrides to keep it short).

    .venv/bin/python benchmarks/tune_bench.py [--trials 6] [--threads 1] [--preset tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import optuna  # noqa: E402
import torch  # noqa: E402

from ablations import optuna_study  # noqa: E402
from ftn_core.config import parse_sets  # noqa: E402
from ftn_core.data.holdout import holdout_split  # noqa: E402
from ftn_core.data.loading import build_data, load_splits  # noqa: E402
from ftn_core.engine import Trainer  # noqa: E402


def _study(
    tmp: Path, name: str, trials: int, preset: str, sets: dict, pruner
) -> tuple[optuna.Study, float]:
    opts = optuna_study.TuneOptions(
        "g",
        trials,
        preset=preset,
        root=str(tmp / "data"),
        sets=sets,
        study=name,
        tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        out=str(tmp / name),
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = optuna_study.run_study(opts, pruner=pruner)
    return result.study, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = parse_sets(args.sets)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Warm-up: generate the data and pay the first-call costs outside the timings.
        _study(tmp, "warmup", 1, args.preset, sets, optuna.pruners.NopPruner())
        study, tuned = _study(
            tmp, "nopruning", args.trials, args.preset, sets, optuna.pruners.NopPruner()
        )

        opts = optuna_study.TuneOptions(
            "g", 1, preset=args.preset, root=str(tmp / "data"), sets=sets
        )
        base = optuna_study.plan_for(opts, {})
        splits = holdout_split(load_splits(base.cfg.data), 0.2, seed=0)
        t0 = time.perf_counter()
        for t in study.trials:
            p = optuna_study.plan_for(opts, t.params)
            Trainer(
                p.cfg,
                build_data(
                    p.cfg.data, seed=p.seed, splits=splits, train_masks=p.cfg.model.mask == "oracle"
                ),
                None,
                None,
                progress=False,
            ).fit()
        bare = time.perf_counter() - t0

        pruned_study, pruned_time = _study(tmp, "pruning", args.trials, args.preset, sets, None)
        states = [t.state.name for t in pruned_study.trials]
    n = args.trials
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), preset {args.preset}, {n} trials of variant g"
    )
    print(f"  study without pruning: {tuned:6.1f} s  ({tuned / n:.2f} s per trial)")
    print(f"  bare Trainer.fit loop: {bare:6.1f} s  ({bare / n:.2f} s per trial)")
    print(
        f"  bookkeeping overhead : {(tuned - bare) / n * 1000:6.0f} ms per trial "
        f"({100 * (tuned - bare) / bare:.0f} % of training)"
    )
    print(
        f"  study with the median pruner: {pruned_time:.1f} s, {states.count('PRUNED')} of {n} pruned "
        f"({100 * (1 - pruned_time / tuned):.0f} % less time than without pruning)"
    )


if __name__ == "__main__":
    main()
