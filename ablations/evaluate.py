"""Evaluate a finished run's model without training: on its own test split, or on another dataset.

The model is the run's LoggedModel (``runs:/<run>/model``) or, for runs from before it was
logged, its model.pt. The result is logged as a new run (tag ``kind = evaluation``) in the source run's experiment,
nested under it (``mlflow.parentRunId``) and tagged ``source_run``, with the same metrics
line as run.py, per_query.npz and, in its name and tags, what differs from the paper's
protocol: another dataset (cross-domain), ``--flip`` or ``--rerank``. Reports read only training runs
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ablations import runner, tracking  # noqa: E402
from ablations.per_query import run_files, run_model  # noqa: E402
from ftn_core.config import override  # noqa: E402
from ftn_core.data.loading import build_data  # noqa: E402
from ftn_core.engine import evaluate, resolve_device  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main  # noqa: E402


def reranked(model, data, flip: bool, device: torch.device):
    """The metrics (percent) and ``RankResult`` of re-ranked distances (``ftn_core.rerank``)."""
    from ftn_core.engine import METRIC_SCALE, extract_features
    from ftn_core.evaluation import evaluate_rank
    from ftn_core.rerank import rerank

    qf, qp, qc, _ = extract_features(model, data.query_loader, device, flip=flip)
    gf, gp, gc, _ = extract_features(model, data.gallery_loader, device, flip=flip)
    result = evaluate_rank(rerank(qf.to(device), gf.to(device)), qp, gp, qc, gc,
                           device=device if device.type != "cpu" else None)
    return {f"val/{k}": METRIC_SCALE * v for k, v in result.metrics().items()}, result


def logged_model(run_id: str):
    """The run's LoggedModel (``runs:/<run>/model``), or None for a run from before it was logged.
    MLflow downloads the model into a folder it never removes (62 MB per call at the cpu preset)
    when not given one, so it gets a temporary folder here, and its code-path entry in ``sys.path``
    is taken back out once the model is in memory."""
    import mlflow.pytorch

    path = list(sys.path)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return mlflow.pytorch.load_model(f"runs:/{run_id}/model", dst_path=tmp,
                                             map_location="cpu").eval()
    except Exception:  # noqa: BLE001 - unreadable or of another code version: fall back to model.pt
        return None
    finally:
        sys.path[:] = path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="RUN_ID", help="the finished training run to evaluate")
    parser.add_argument("--dataset", default=None, choices=runner.DATASETS,
                        help="evaluate on this dataset instead of the run's own (cross-domain)")
    parser.add_argument("--root", default=None, help="where --dataset lives (default: the run's data root)")
    parser.add_argument("--flip", action="store_true",
                        help="average each embedding with its mirror image's (not the paper's protocol)")
    parser.add_argument("--rerank", action="store_true",
                        help="k-reciprocal re-ranking (Zhong et al. 2017; k1=20, k2=6, λ=0.3): not the paper's protocol")
    parser.add_argument("--device", default="auto",
                        help="auto (the GPU when there is one, whatever the run trained on), cpu, cuda or cuda:N")
    parser.add_argument("--tracking-uri", default=None,
                        help=f"MLflow store or server (default: {tracking.DEFAULT_TRACKING_URI})")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device, "--device")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = tracking.open_store(args.tracking_uri)
    try:
        source = client.get_run(args.run)
    except Exception:  # noqa: BLE001 - MLflow raises its own for an unknown id
        raise FTNError(f"--run {args.run}: no such run in {client.tracking_uri}; copy a run id from "
                       f"the MLflow UI or `mlflow runs list`") from None
    if source.info.status != "FINISHED" or source.data.tags.get("kind") != "child":
        raise FTNError(f"--run {args.run}: not a FINISHED training run (status {source.info.status}, "
                       f"kind {source.data.tags.get('kind', '?')})")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg, weights = run_files(args.run, tmp)
        except Exception as err:  # noqa: BLE001 - artifacts missing or unreadable
            raise FTNError(f"--run {args.run}: its config.json / model.pt cannot be read ({err})") from None
        sets = {"data.num_ids": 2, "data.num_instances": 2}  # the training sampler is unused here
        if args.dataset:
            sets["data.dataset"] = args.dataset
        if args.root:
            sets["data.root"] = args.root
        cfg = override(cfg, sets)
        data = build_data(cfg.data, seed=cfg.train.seed)
        model = logged_model(args.run) or run_model(cfg, weights)
        if args.rerank:
            metrics, result = reranked(model.to(device), data, args.flip, device)
        else:
            metrics, result = evaluate(model.to(device), data, device, flip=args.flip)
    own = cfg.data.dataset == source.data.tags.get("dataset")
    changes = [c for c, on in (("flip", args.flip), ("rerank", args.rerank)) if on]
    protocol = "+".join(changes) or "paper"
    name = f"{source.info.run_name}-eval-{cfg.data.dataset}" + "".join(f"-{c}" for c in changes)
    tags = {"kind": "evaluation", "source_run": args.run, "mlflow.parentRunId": args.run,
            "dataset": cfg.data.dataset, "cross_domain": str(not own).lower(), "protocol": protocol,
            "variant": source.data.tags.get("variant", ""), "seed": source.data.tags.get("seed", ""),
            "git_commit": tracking.git_commit()}
    run = client.create_run(source.info.experiment_id, run_name=name, tags=tags)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    arrays = tracking.per_query_arrays(result.per_query._asdict(), [q.pid for q in data.splits.query],
                                       [q.camid for q in data.splits.query])
    tracking.log_per_query(arrays, run.info.run_id)
    runner.log_rank_list(arrays, data.splits, name, run.info.run_id)
    client.set_terminated(run.info.run_id, "FINISHED")
    where = "its own test split" if own else f"{cfg.data.dataset} (cross-domain)"
    print(f"{name} ({where}, {protocol} protocol): rank-1 {metrics['val/rank1']:.1f}  mAP {metrics['val/mAP']:.1f}"
          f"  → run {run.info.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
