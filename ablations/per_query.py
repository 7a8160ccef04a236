"""Give finished runs what reports read from a run's model and they lack (no retraining).

That is per_query.npz (a file from before the top-10 gallery lists is replaced too), and the
cost and figure data a run logs when it finishes since reports stopped building models
(``efficiency.json``, ``figure_data.npz``: ``ablations/measures.py``; the latency is timed on
this machine, which the file names).

Each FINISHED child run of the chosen experiments that has a saved model (model.pt) but no
per_query.npz is evaluated again on its own test split with its own resolved config; the
metrics must agree with the ones the run logged (they are printed side by side), and the
per-query AP / first-match rank / INP are attached to the run as per_query.npz. Runs trained
since per-query results exist already have the file and are skipped. A run that cannot be given
one (no model.pt or config.json, or its data changed since it trained) is named with the reason,
and the command exits 1: the reports leave its seed out of every Δ.

Examples:
  python ablations/per_query.py --table 2
  python ablations/per_query.py --study ablations/studies/lambda3.toml
  python ablations/per_query.py --table 1 --measure-again     # latency timed again, quietly
  python ablations/per_query.py --experiment table1-synthetic-cpu --tracking-uri sqlite:///mlruns/mlflow.db
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ablations import measures, store, tracking  # noqa: E402
from ablations.study import load as load_study  # noqa: E402
from ftn_core.config import Config, from_dict, override  # noqa: E402
from ftn_core.data.loading import build_data, load_splits  # noqa: E402
from ftn_core.engine import evaluate  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main  # noqa: E402


def _artifact(run_id: str, name: str, dst: str) -> str:
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=dst)
    except Exception as err:  # noqa: BLE001 - MLflow's own errors for a missing or unreadable file
        raise FTNError(
            f"run {run_id}: its {name} cannot be read ({str(err).splitlines()[0][:160]})"
        ) from None


def run_config(run_id: str, dst: str) -> Config:
    """A finished run's resolved config (on the CPU), from its config.json."""
    path = _artifact(run_id, store.CONFIG_JSON, dst)
    try:
        return override(from_dict(json.loads(Path(path).read_text())), {"train.device": "cpu"})
    except (OSError, ValueError, TypeError) as err:
        raise FTNError(
            f"run {run_id}: its config.json is not a config of this suite ({err})"
        ) from None


def run_weights(run_id: str, dst: str) -> str:
    """The local path of a finished run's weights (model.pt)."""
    return _artifact(run_id, store.MODEL_PT, dst)


def check_data(run, splits) -> None:
    """Refuse data whose digest differs from the one ``run`` was trained and scored on: its
    logged numbers belong to data that is gone. (A run from before data digests is not
    checked; the caller is told.)"""
    trained_on = run.data.tags.get("data_digest", "")
    if not trained_on:
        print(
            f"note: run {run.info.run_id} predates data digests, so whether its data changed since it "
            f"trained cannot be checked",
            file=sys.stderr,
        )
    elif splits.digest != trained_on:
        raise FTNError(
            f"run {run.info.run_id} ({run.info.run_name}) was trained on {splits.name} with data digest "
            f"{trained_on}, but {splits.root} now reads as {splits.digest} (images added, removed, "
            f"relabelled or edited): its results belong to data that is gone; train it again with "
            f"ablations/run.py"
        )


def run_model(cfg: Config, weights: str):
    """The run's model with its saved weights, in eval mode on the CPU (the classifiers sized
    from the weights, so it can embed another dataset's images)."""
    from ftn_core.model import model_from_state

    return model_from_state(cfg.model, torch.load(weights, map_location="cpu", weights_only=True))


def backfill_run(
    client, run, splits_cache: dict, measure_again: bool = False
) -> tuple[tuple[float, float] | None, tuple[str, ...]]:
    """Give one run what its saved model yields and it lacks: per_query.npz (evaluated again),
    ``efficiency.json`` and ``figure_data.npz`` (``ablations.measures``). Returns (logged mAP,
    recomputed mAP) when per_query.npz was made, else None, and the measures logged.
    ``FTNError`` says why a run cannot be given them (no model.pt or config.json, data changed
    since it trained)."""
    import mlflow

    run_id = run.info.run_id
    files = {f.path for f in client.list_artifacts(run_id)}
    scored = False
    if store.PER_QUERY in files:  # up to date unless it predates the top-10 lists
        with tempfile.TemporaryDirectory() as tmp:
            with np.load(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=store.PER_QUERY, dst_path=tmp
                )
            ) as npz:
                scored = "top10" in npz.files
    lacking_measures = measures.missing(files)
    if measure_again and store.EFFICIENCY not in lacking_measures:  # timed again, here and now
        lacking_measures = (store.EFFICIENCY, *lacking_measures)
    if scored and not lacking_measures:
        return None, ()
    lacking = [f for f in (store.MODEL_PT, store.CONFIG_JSON) if f not in files]
    if lacking and scored:  # its Δs stand; only its cost and figures are not measured
        print(
            f"note: run {run.info.run_name} ({run_id}) has no {' or '.join(lacking)}: its "
            f"{' and '.join(lacking_measures)} cannot be made",
            file=sys.stderr,
        )
        return None, ()
    if lacking:
        raise FTNError(
            f"no {' or '.join(lacking)} among its artifacts, so it cannot be evaluated again"
        )
    pair = None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = run_config(run_id, tmp)
        key = (
            cfg.data.dataset,
            cfg.data.root,
            cfg.data.synthetic_size,
            cfg.data.synthetic_seed,
            cfg.data.synthetic_test_ids,
        )
        if key not in splits_cache:
            splits_cache[key] = load_splits(cfg.data)
        check_data(run, splits_cache[key])
        model = run_model(cfg, run_weights(run_id, tmp))
        if not scored:
            data = build_data(cfg.data, seed=cfg.train.seed, splits=splits_cache[key])
            metrics, result = evaluate(model, data, torch.device("cpu"))
            arrays = tracking.per_query_arrays(
                result.per_query._asdict(),
                [q.pid for q in data.splits.query],
                [q.camid for q in data.splits.query],
            )
            tracking.log_per_query(arrays, run_id)
            pair = run.data.metrics.get("val/mAP", float("nan")), metrics["val/mAP"]
        if lacking_measures:
            measures.log_measures(
                client, run_id, model, cfg, splits_cache[key], tracking.machine(), lacking_measures
            )
    return pair, lacking_measures


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--table", type=int, choices=[1, 2, 3], help="only this table's experiments"
    )
    parser.add_argument("--experiment", help="only this experiment, e.g. table2-synthetic-cpu")
    parser.add_argument("--study", metavar="FILE", help="only the experiments of this study file")
    parser.add_argument(
        "--measure-again",
        action="store_true",
        help="time every run's model again (efficiency.json replaced), e.g. on a "
        "quiet machine: a run times itself with whatever else runs beside it",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one line per run instead
    if args.study and (args.table or args.experiment):
        raise FTNError("--study: give it alone, without --table or --experiment")
    study = (
        load_study(args.study) if args.study else None
    )  # a bad file fails before the store opens
    client = store.open_store(args.tracking_uri)
    if study is not None:
        exps = store.study_experiments(client, study)
    else:
        exps = [
            e
            for e in client.search_experiments()
            if (args.experiment is None or e.name == args.experiment)
            and (args.table is None or e.name.startswith(f"table{args.table}-"))
        ]
    if not exps:
        raise FTNError(
            "no matching experiment in the store; check --table / --experiment / --tracking-uri"
        )
    cache: dict = {}
    done = worst = 0.0
    given = 0
    skipped: list[str] = []
    for exp in exps:
        runs = client.search_runs([exp.experiment_id], store.FINISHED_CHILD_RUNS, max_results=50000)
        for run in runs:
            try:
                pair, measured = backfill_run(client, run, cache, args.measure_again)
            except FTNError as err:
                skipped.append(f"{exp.name} {run.info.run_name}")
                print(
                    f"skipped {exp.name} {run.info.run_name} ({run.info.run_id}): {err}",
                    file=sys.stderr,
                )
                continue
            given += bool(measured)
            if measured:
                print(
                    f"{exp.name} {run.info.run_name}: {' and '.join(measured)} logged", flush=True
                )
            if pair is None:
                continue
            done += 1
            worst = max(worst, abs(pair[0] - pair[1]))
            print(
                f"{exp.name} {run.info.run_name}: mAP logged {pair[0]:.2f}, recomputed {pair[1]:.2f}",
                flush=True,
            )
    print(
        f"{int(done)} run(s) given per_query.npz; largest mAP difference from the logged value: {worst:.3f}"
    )
    print(f"{given} run(s) given {' or '.join(measures.MEASURES)}")
    if skipped:
        print(
            f"error: {len(skipped)} run(s) could not be given per_query.npz ({', '.join(skipped[:6])}"
            f"{', …' if len(skipped) > 6 else ''}; why: above); the reports leave their seeds out of every Δ",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
