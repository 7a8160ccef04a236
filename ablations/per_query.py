"""Give finished runs that predate per-query results their per_query.npz (no retraining).

A per_query.npz from before the top-10 gallery lists (rank lists) is replaced the same way.

Each FINISHED child run of the chosen experiments that has a saved model (model.pt) but no
per_query.npz is evaluated again on its own test split with its own resolved config; the
metrics must agree with the ones the run logged (they are printed side by side), and the
per-query AP / first-match rank / INP are attached to the run as per_query.npz. Runs trained
since per-query results exist already have the file and are skipped.

Examples:
  python ablations/per_query.py --table 2
  python ablations/per_query.py --experiment table1-synthetic-cpu --tracking-uri sqlite:///mlruns/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ablations import tracking  # noqa: E402
from ftn_core.config import Config, from_dict, override  # noqa: E402
from ftn_core.data.loading import build_data, load_splits  # noqa: E402
from ftn_core.engine import evaluate  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main  # noqa: E402


def run_files(run_id: str, dst: str) -> tuple[Config, str]:
    """A finished run's resolved config (on the CPU) and the local path of its weights."""
    import mlflow

    cfg_path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.json", dst_path=dst)
    cfg = override(from_dict(json.loads(Path(cfg_path).read_text())), {"train.device": "cpu"})
    return cfg, mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model.pt", dst_path=dst)


def run_model(cfg: Config, weights: str):
    """The run's model with its saved weights, in eval mode on the CPU (the classifiers sized
    from the weights, so it can embed another dataset's images)."""
    from reports.visual import model_from_state

    return model_from_state(cfg, torch.load(weights, map_location="cpu", weights_only=True))


def backfill_run(client, run, splits_cache: dict) -> tuple[float, float] | None:
    """Evaluate one run's saved model and log its per_query.npz; returns (logged mAP,
    recomputed mAP), or None when there is nothing to do."""
    import mlflow

    run_id = run.info.run_id
    files = {f.path for f in client.list_artifacts(run_id)}
    if not {"model.pt", "config.json"} <= files:
        return None
    if tracking.PER_QUERY in files:  # up to date unless it predates the top-10 lists
        with tempfile.TemporaryDirectory() as tmp:
            with np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=tracking.PER_QUERY,
                                                             dst_path=tmp)) as npz:
                if "top10" in npz.files:
                    return None
    with tempfile.TemporaryDirectory() as tmp:
        cfg, weights = run_files(run_id, tmp)
        key = (cfg.data.dataset, cfg.data.root, cfg.data.synthetic_size, cfg.data.synthetic_seed)
        if key not in splits_cache:
            splits_cache[key] = load_splits(cfg.data)
        data = build_data(cfg.data, seed=cfg.train.seed, splits=splits_cache[key])
        model = run_model(cfg, weights)
        metrics, result = evaluate(model, data, torch.device("cpu"))
        arrays = tracking.per_query_arrays(result.per_query._asdict(), [q.pid for q in data.splits.query],
                                           [q.camid for q in data.splits.query])
        tracking.log_per_query(arrays, run_id)
    return run.data.metrics.get("val/mAP", float("nan")), metrics["val/mAP"]


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, choices=[1, 2, 3], help="only this table's experiments")
    parser.add_argument("--experiment", help="only this experiment, e.g. table2-synthetic-cpu")
    parser.add_argument("--tracking-uri", default=None,
                        help=f"MLflow store or server (default: {tracking.DEFAULT_TRACKING_URI})")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per run instead
    client = tracking.open_store(args.tracking_uri)
    exps = [e for e in client.search_experiments()
            if (args.experiment is None or e.name == args.experiment)
            and (args.table is None or e.name.startswith(f"table{args.table}-"))]
    if not exps:
        raise FTNError("no matching experiment in the store; check --table / --experiment / --tracking-uri")
    cache: dict = {}
    done = worst = 0.0
    for exp in exps:
        runs = client.search_runs([exp.experiment_id], "tags.kind = 'child' and attributes.status = 'FINISHED'",
                                  max_results=50000)
        for run in runs:
            pair = backfill_run(client, run, cache)
            if pair is None:
                continue
            done += 1
            worst = max(worst, abs(pair[0] - pair[1]))
            print(f"{exp.name} {run.info.run_name}: mAP logged {pair[0]:.2f}, recomputed {pair[1]:.2f}", flush=True)
    print(f"{int(done)} run(s) given per_query.npz; largest mAP difference from the logged value: {worst:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
