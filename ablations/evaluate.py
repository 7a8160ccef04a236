"""Evaluate a finished run's model without training: on its own test split, or on another dataset.

The model is the run's LoggedModel (``runs:/<run>/model``) or, for runs from before it was
logged (or whose LoggedModel cannot be read, said in one line), its model.pt. Its own test split
must still be the data the run saw: a dataset whose digest changed since the run trained is
refused, since the run's numbers belong to data that is gone.

The result is logged as a new run (tag ``kind = evaluation``) in the source run's experiment,
nested under it (``mlflow.parentRunId``) and tagged ``source_run``, with the same metrics line
as run.py, per_query.npz and, in its name and tags, what differs from the paper's protocol:
another dataset (cross-domain), ``--flip`` or ``--rerank``. Reports read only training runs
(``kind = child``), so these rows are never mixed into the paper-protocol tables.

Examples:
  python ablations/evaluate.py --run 3f2a…                   # its own test split: the logged numbers again
  python ablations/evaluate.py --run 3f2a… --flip            # + horizontal-flip test-time augmentation
  python ablations/evaluate.py --run 3f2a… --rerank          # + k-reciprocal re-ranking
  python ablations/evaluate.py --run 3f2a… --dataset dukemtmcreid --root /data/reid   # cross-domain
  python ablations/evaluate.py --run 3f2a… --dataset folder --root /data/my_cameras
  python ablations/evaluate.py --run 3f2a… --device cpu      # stay off the GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import torch  # noqa: E402

from ablations import runner, store, tracking  # noqa: E402
from ablations.per_query import check_data, run_config, run_model, run_weights  # noqa: E402
from ftn_core.config import override  # noqa: E402
from ftn_core.data.loading import build_data  # noqa: E402
from ftn_core.engine import deferred_interrupts, evaluate, resolve_device  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main, interrupted  # noqa: E402


def reranked(model, data, flip: bool, device: torch.device):
    """The metrics (percent) and ``RankResult`` of re-ranked distances (``ftn_core.rerank``)."""
    from ftn_core.engine import METRIC_SCALE, extract_features
    from ftn_core.evaluation import evaluate_rank
    from ftn_core.rerank import rerank

    qf, qp, qc, _ = extract_features(model, data.query_loader, device, flip=flip, diagnostics=False)
    gf, gp, gc, _ = extract_features(
        model, data.gallery_loader, device, flip=flip, diagnostics=False
    )
    result = evaluate_rank(
        rerank(qf.to(device), gf.to(device)),
        qp,
        gp,
        qc,
        gc,
        device=device if device.type != "cpu" else None,
    )
    return {f"val/{k}": METRIC_SCALE * v for k, v in result.metrics().items()}, result


def logged_model(run_id: str):
    """The network of the run's LoggedModel (``runs:/<run>/model``: the pyfunc runs log now, or
    the pytorch flavour of earlier runs), or None for a run from before it was logged or whose
    LoggedModel cannot be read (MLflow's and torch's messages on the way are kept quiet: the
    caller falls back to model.pt and says so in one line). The download goes to a temporary
    folder, and MLflow's code-path entry in ``sys.path`` is taken back out
    (``ablations.models.logged_net``)."""
    from mlflow.tracking import MlflowClient

    from ablations.models import logged_net

    return logged_net(MlflowClient(), run_id)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run", required=True, metavar="RUN_ID", help="the finished training run to evaluate"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        choices=runner.DATASETS,
        help="evaluate on this dataset instead of the run's own (cross-domain)",
    )
    parser.add_argument(
        "--root", default=None, help="where --dataset lives (default: the run's data root)"
    )
    parser.add_argument(
        "--flip",
        action="store_true",
        help="average each embedding with its mirror image's (not the paper's protocol)",
    )
    parser.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking (Zhong et al. 2017; k1=20, k2=6, λ=0.3): not the paper's protocol",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when there is one, whatever the run trained on), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device, "--device")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = store.open_store(args.tracking_uri)
    try:
        source = client.get_run(args.run)
    except Exception:  # noqa: BLE001 - MLflow raises its own for an unknown id
        raise FTNError(
            f"--run {args.run}: no such run in {client.tracking_uri}; copy a run id from "
            f"the MLflow UI or `mlflow runs list`"
        ) from None
    if source.info.status != "FINISHED" or source.data.tags.get("kind") != "child":
        raise FTNError(
            f"--run {args.run}: not a FINISHED training run (status {source.info.status}, "
            f"kind {source.data.tags.get('kind', '?')})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = run_config(args.run, tmp)
        sets = {"data.num_ids": 2, "data.num_instances": 2}  # the training sampler is unused here
        if args.dataset:
            sets["data.dataset"] = args.dataset
        if args.root:
            sets["data.root"] = args.root
        cfg = override(cfg, sets)
        if not args.root:
            check_run_root(cfg.data)
        data = build_data(cfg.data, seed=cfg.train.seed)
        trained_on = source.data.tags.get("data_digest", "")
        # Its own test split: the same reader and folder (which must still hold the data it was
        # trained and scored on), or the same data moved elsewhere; else another dataset.
        own = cfg.data.dataset == source.data.tags.get("dataset") and (
            not (args.dataset or args.root) or data.splits.digest == trained_on
        )
        if own:
            check_data(source, data.splits)
        model = logged_model(args.run)
        if model is None:
            model = run_model(cfg, run_weights(args.run, tmp))
            if _logged_models(client, args.run):  # it had one: say why it was not used
                print(
                    "note: the run's LoggedModel could not be loaded; used its model.pt",
                    file=sys.stderr,
                )
        if args.rerank:
            metrics, result = reranked(model.to(device), data, args.flip, device)
        else:
            metrics, result = evaluate(model.to(device), data, device, flip=args.flip)
    changes = [c for c, on in (("flip", args.flip), ("rerank", args.rerank)) if on]
    protocol = "+".join(changes) or "paper"
    name = f"{source.info.run_name}-eval-{cfg.data.dataset}" + "".join(f"-{c}" for c in changes)
    tags = {
        "kind": "evaluation",
        "source_run": args.run,
        "mlflow.parentRunId": args.run,
        "dataset": cfg.data.dataset,
        "cross_domain": str(not own).lower(),
        "protocol": protocol,
        "variant": source.data.tags.get("variant", ""),
        "seed": source.data.tags.get("seed", ""),
        "data_digest": data.splits.digest,
        "git_commit": tracking.git_commit(),
    }
    arrays = tracking.per_query_arrays(
        result.per_query._asdict(),
        [q.pid for q in data.splits.query],
        [q.camid for q in data.splits.query],
    )
    run_id = log_evaluation(
        client, source.info.experiment_id, name, tags, metrics, arrays, data.splits
    )
    where = "its own test split" if own else f"{cfg.data.dataset} (cross-domain)"
    print(
        f"{name} ({where}, {protocol} protocol): rank-1 {metrics['val/rank1']:.1f}  mAP {metrics['val/mAP']:.1f}"
        f"  → run {run_id}"
    )
    return 0


def check_run_root(data) -> None:
    """Without ``--root`` the data is read where the run read it: refuse, in one line, a folder
    that is gone (never generate the synthetic benchmark afresh in a path that has moved)."""
    from ablations.runner import synthetic_ready

    gone = not os.path.exists(data.root) or (
        data.dataset == "synthetic" and not synthetic_ready(data)
    )
    if gone:
        what = "the synthetic benchmark" if data.dataset == "synthetic" else f"{data.dataset}"
        raise FTNError(
            f"the run read {what} from {data.root}, which no longer holds it (moved or deleted); "
            f"pass --root with the folder that holds it now"
        )


def _logged_models(client, run_id: str) -> list:
    try:
        return list(client.get_run(run_id).outputs.model_outputs or [])
    except Exception:  # noqa: BLE001 - an MLflow without LoggedModels
        return []


def log_evaluation(
    client,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    arrays: dict,
    splits,
) -> str:
    """The evaluation as one run, FINISHED with its metrics, per_query.npz and rank list, or
    KILLED when Ctrl-C or SIGTERM lands while it is written; an interrupt once it is FINISHED
    lets the command finish normally. Returns the run id."""

    def check() -> None:  # a Ctrl-C swallowed on the way (in a finaliser) still stops it
        if interrupted():
            raise KeyboardInterrupt

    check()
    run_id, finished = None, False
    try:
        with deferred_interrupts():  # created with its tags, or not at all
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        tracking.log_per_query(arrays, run_id)
        check()
        runner.log_rank_list(arrays, splits, name, run_id)
        check()
        with deferred_interrupts():
            client.set_terminated(run_id, "FINISHED")
            finished = True
    except KeyboardInterrupt:
        if not finished:
            if run_id is not None:
                with deferred_interrupts():
                    client.set_terminated(run_id, "KILLED")
            raise
    return run_id


if __name__ == "__main__":
    raise SystemExit(main())
