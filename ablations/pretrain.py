"""Pre-train the backbone (S-Enc) without natural images, tracked in MLflow; rerunning resumes.

Examples:
  python ablations/pretrain.py --source fractal         # 300 IFS shapes x 50 images, classified
  python ablations/pretrain.py --source people          # 600 other persons, the Baseline's losses
  python ablations/pretrain.py --source fractal --categories 50 --instances 20 --epochs 2 --out f.pt
  python ablations/pretrain.py --source fractal         # again: says where the weights are
  python ablations/run.py --table 1 --set model.init=runs:/<RUN_ID>    # fine-tune from them

fractal: formula-driven images (ftn_core/data/fractal.py: a category is an iterated function
system, an instance a perturbed rendering) classified by S-Enc + a linear layer. people: a second
population of the synthetic benchmark, disjoint from it in identities, scenes and random streams
(ftn_core/data/people.py), trained as the Baseline is (cross-entropy and triplet losses). Either
way the backbone is logged as the artifact backbone.pt (fp16) with its digest as the tag
backbone_digest, in the experiment pretrain-<source>; use it with --set model.init=runs:/<id>
or, written with --out, --set model.init=<file>.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

from ablations import store, tracking  # noqa: E402
from ablations.inits import ARTIFACT  # noqa: E402
from ftn_core.errors import (  # noqa: E402
    FTNError,
    OneLineParser,
    check_writable_dir,
    cli_main,
    float_in,
    int_at_least,
)
from ftn_core.presets import PRESETS, from_scratch, preset_config  # noqa: E402

VERSION = 1
"""Raised when the training code changes what a run computes: such runs are new runs."""
EPOCHS = {"fractal": 35, "people": 30}
"""Default epochs per source: each about 40–50 min on one thread of this project's 2-core CPU
(docs/usage.md, "Pre-training and model.init")."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--source",
        required=True,
        choices=["fractal", "people"],
        help="fractal: formula-driven shapes; people: another synthetic population",
    )
    add(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="whose backbone and input size to pre-train (default: cpu, ResNet-10 at 64x32)",
    )
    add(
        "--categories", type=int_at_least(2), default=300, help="fractal: categories (default: 300)"
    )
    add(
        "--instances",
        type=int_at_least(2),
        default=50,
        help="fractal: images per category, a tenth held out (default: 50)",
    )
    add(
        "--ids",
        type=int_at_least(8),
        default=600,
        help="people: training identities (default: 600; the benchmark has 150)",
    )
    add(
        "--test-ids",
        type=int_at_least(2),
        default=50,
        help="people: held-out identities that monitor the pre-training (default: 50)",
    )
    add(
        "--height",
        type=int_at_least(16),
        default=None,
        help="fractal: image height (default: the preset's)",
    )
    add(
        "--width",
        type=int_at_least(8),
        default=None,
        help="fractal: image width (default: the preset's)",
    )
    add(
        "--epochs",
        type=int_at_least(1),
        default=None,
        help=f"default: {EPOCHS['fractal']} (fractal), {EPOCHS['people']} (people)",
    )
    add(
        "--batch-size",
        type=int_at_least(2),
        default=None,
        help="fractal: images per batch (default: 128); people: identities x the preset's "
        "images per identity (default: the preset's 8 x 4)",
    )
    add("--lr", type=float_in(0), default=2e-3, help="Adam's lr (default: 0.002, the cpu preset's)")
    add(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="the images' and the training's seed (default: 0)",
    )
    add("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    add(
        "--root",
        default=str(store.REPO / "data"),
        help="people: where the population is generated (default: %(default)s)",
    )
    add("--out", default=None, metavar="FILE", help="also write the weights to this file")
    add(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    add(
        "--work-dir",
        default=str(store.MLRUNS / "checkpoints"),
        help="where checkpoints for resuming are kept (default: %(default)s)",
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    """Everything that decides the weights: the run's parameters and its identity."""
    cfg = preset_config(args.preset)
    m = cfg.model
    out = {
        "source": args.source,
        "preset": args.preset,
        "backbone": m.backbone,
        "stage4_stride": m.stage4_stride,
        "last_stride": m.last_stride,
        "epochs": args.epochs or EPOCHS[args.source],
        "lr": args.lr,
        "seed": args.seed,
        "pretrain_version": VERSION,
    }
    if args.source == "fractal":
        from ftn_core.data import fractal

        spec = fractal.FractalSpec(
            args.categories,
            args.instances,
            args.height or cfg.data.height,
            args.width or cfg.data.width,
            seed=args.seed,
        )
        out.update(
            categories=spec.categories,
            instances=spec.instances,
            height=spec.height,
            width=spec.width,
            batch_size=args.batch_size or 128,
            data_digest=fractal.settings_digest(spec),
        )
    else:
        from ftn_core.data import people

        if args.height or args.width:
            raise FTNError(
                "--height/--width: the people population is read at the preset's "
                "input size; choose another --preset"
            )
        k = cfg.data.num_instances
        batch = args.batch_size or cfg.data.num_ids * k
        if batch % k or batch // k < 2:
            raise FTNError(
                f"--batch-size {batch}: for people, a multiple of {k} (identities x {k} "
                f"images) of at least {2 * k}"
            )
        spec = people.PeopleSpec(args.ids, args.test_ids, seed=args.seed)
        out.update(
            ids=spec.ids,
            test_ids=spec.test_ids,
            height=cfg.data.height,
            width=cfg.data.width,
            batch_size=batch,
            data_digest=people.settings_digest(spec),
        )
    out["pretrain_hash"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:12]
    return out


def find_run(client, experiment: str, digest: str):
    """The run of these settings: a FINISHED one, else the newest, else None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.pretrain_hash = '{digest}'",
        order_by=["attributes.start_time DESC"],
    )
    return next((r for r in runs if r.info.status == "FINISHED"), runs[0] if runs else None)


def save_weights(state: dict, path: Path) -> None:
    """The backbone in fp16 (a tensor that fp16 cannot hold stays fp32), written atomically."""
    import torch

    from ftn_core.checkpoint import save_atomic

    half = {
        k: v.half() if v.is_floating_point() and torch.isfinite(v.half()).all() else v
        for k, v in state.items()
    }
    save_atomic(half, path)


def _copy_out(src: Path, out: str | None) -> None:
    if out:
        import shutil

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=f".{Path(out).name}.", dir=Path(out).parent)
        os.close(fd)
        shutil.copyfile(src, part)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(part, 0o666 & ~umask)  # as a file the user wrote (mkstemp makes it private)
        os.replace(part, out)


def report_done(run, uri: str, out: str | None) -> None:
    """Where a FINISHED run's weights are and how to use them (and --out written from them)."""
    import mlflow

    rid = run.info.run_id
    if out:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=rid, artifact_path=ARTIFACT, dst_path=tmp, tracking_uri=uri
            )
            _copy_out(Path(local), out)
    where = f"{run.info.artifact_uri}/{ARTIFACT}".removeprefix("file://")
    copied = f", copied to {out}" if out else ""
    print(
        f"pre-training {run.info.run_name} ({rid}) is FINISHED: weights {where} "
        f"(digest {run.data.tags.get('backbone_digest', '?')}){copied}"
    )
    print(
        f"use them with: python ablations/run.py ... --set model.init=runs:/{rid}"
        + (f" (or model.init={out})" if out else "")
    )


SHOWN = (
    "train/loss",
    "train/loss_ce",
    "train/loss_triplet",
    "train/acc",
    "val/acc",
    "val/rank1",
    "val/mAP",
)
"""The metrics of the line printed per epoch."""


class _Logger(tracking.RunLogger):
    """Metrics by epoch, a line per epoch, and epochs an earlier start logged not twice."""

    def __init__(self, run_id: str, epochs: int, logged: set[int]) -> None:
        super().__init__(run_id)
        self.epochs, self.logged = epochs, logged

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step in self.logged:
            return
        super().log_metrics(metrics, step)
        shown = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in SHOWN)
        seconds = metrics.get("train/epoch_seconds", 0)
        print(f"  epoch {step}/{self.epochs}: {shown}  ({seconds:.0f} s)", flush=True)


def train_fractal(s: dict, ckpt: Path, logger, device: str) -> dict:
    from ftn_core.data import fractal
    from ftn_core.pretrain import ClassifierTrainer

    spec = fractal.FractalSpec(
        s["categories"], s["instances"], s["height"], s["width"], seed=s["seed"]
    )
    t0 = time.perf_counter()
    images, labels = fractal.generate(spec)
    print(
        f"fractal images: {spec.categories} categories x {spec.instances} instances at "
        f"{spec.height}x{spec.width} in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    trainer = ClassifierTrainer(
        images,
        labels,
        spec.instances,
        arch=s["backbone"],
        last_stride=s["last_stride"],
        stage4_stride=s["stage4_stride"],
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        seed=s["seed"],
        device=device,
        ckpt_path=ckpt,
        callbacks=logger,
        progress=sys.stderr.isatty(),
    )
    trainer.fit()
    return trainer.backbone()


def people_config(s: dict, root: str, device: str):
    """The Baseline of the preset, trained on the people population for the run's epochs."""
    k = preset_config(s["preset"]).data.num_instances
    return preset_config(
        s["preset"],
        {
            "model.attention": "none",
            "model.decoder": False,
            "data.dataset": "people",
            "data.root": root,
            "data.num_ids": s["batch_size"] // k,
            **from_scratch(s["epochs"], lr=s["lr"], decay="cosine"),
            "loss.label_smooth": 0.1,
            "train.seed": s["seed"],
            "train.eval_every": 1,
            "train.device": device,
        },
    )


def train_people(s: dict, ckpt: Path, logger, root: str, device: str) -> dict:
    from ftn_core.data import people
    from ftn_core.data.loading import build_data
    from ftn_core.engine import Trainer
    from ftn_core.init import backbone_state

    t0 = time.perf_counter()
    splits = people.load_people(root, people.PeopleSpec(s["ids"], s["test_ids"], seed=s["seed"]))
    print(f"{splits.summary()}\n  (ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    cfg = people_config(s, root, device)
    trainer = Trainer(
        cfg,
        build_data(cfg.data, seed=s["seed"], splits=splits),
        ckpt,
        logger,
        progress=sys.stderr.isatty(),
    )
    trainer.fit()
    return backbone_state(trainer.model.senc, local_block=True)  # the local branch trained too


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = sys.argv if argv is None else ["ablations/pretrain.py", *argv]
    s = settings(args)
    from ftn_core.engine import resolve_device

    device = str(resolve_device(args.device, "--device"))
    if args.out:
        if Path(args.out).is_dir():
            raise FTNError(
                f"--out {args.out}: is a folder; give a file name such as "
                f"{Path(args.out) / 'backbone.pt'}"
            )
        check_writable_dir(Path(args.out).parent, "--out", "cannot write the weights there")
    check_writable_dir(Path(args.work_dir), "--work-dir", "cannot write checkpoints there")
    uri = store.check_uri(args.tracking_uri)
    client = store.open_store(uri)
    experiment = f"pretrain-{args.source}"
    run = find_run(client, experiment, s["pretrain_hash"])
    if run is not None and run.info.status == "FINISHED":
        report_done(run, uri, args.out)
        return 0

    import mlflow

    from ftn_core.engine import Interrupted
    from ftn_core.init import file_digest

    exp_id = store.get_or_create_experiment(client, experiment)
    tags = {
        "kind": "pretrain",
        "source": args.source,
        "preset": args.preset,
        "pretrain_hash": s["pretrain_hash"],
        "data_digest": s["data_digest"],
        "git_commit": tracking.git_commit(),
        "machine": tracking.machine(),
        "command": " ".join(shlex.quote(a) for a in argv)[:5000],
    }
    if run is None:
        name = f"{args.source}-{args.preset}-s{args.seed}-{s['pretrain_hash'][:8]}"
        run = client.create_run(exp_id, run_name=name, tags=tags)
        params = {k: str(v) for k, v in s.items() if k not in ("pretrain_hash", "data_digest")}
        client.log_batch(
            run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()]
        )
        logged: set[int] = set()
        print(f"pre-training {name} ({run.info.run_id}) in experiment {experiment}", flush=True)
    else:
        for k in ("git_commit", "machine"):
            client.set_tag(run.info.run_id, k, tags[k])
        logged = {m.step for m in client.get_metric_history(run.info.run_id, "train/epoch_seconds")}
        print(
            f"resuming {run.info.run_name} ({run.info.run_id}) after epoch "
            f"{max(logged, default=0)}",
            flush=True,
        )
    rid = run.info.run_id
    ckpt = Path(args.work_dir) / experiment / f"{rid}.pt"
    logger = _Logger(rid, s["epochs"], logged)
    try:
        if args.source == "fractal":
            state = train_fractal(s, ckpt, logger, device)
        else:
            state = train_people(s, ckpt, logger, args.root, device)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ARTIFACT
            save_weights(state, path)
            digest = file_digest(path)
            client.log_artifact(rid, str(path))
            client.set_tag(rid, "backbone_digest", digest)
            _copy_out(path, args.out)
            size = path.stat().st_size
        client.set_terminated(rid, "FINISHED")
    except (Interrupted, KeyboardInterrupt) as err:
        client.set_tag(rid, "error", str(err) or "interrupted")
        client.set_terminated(rid, "KILLED")
        print(f"{err or 'interrupted'}; run the same command again to resume", file=sys.stderr)
        return 130
    except BaseException as err:
        client.set_tag(rid, "error", str(err)[:5000])
        client.set_terminated(rid, "FAILED")
        raise
    ckpt.unlink(missing_ok=True)
    print(
        f"done: {ARTIFACT} ({size / 2**20:.1f} MiB, digest {digest}) logged to run {rid}"
        f"{f' and written to {args.out}' if args.out else ''}"
    )
    print(
        f"use it with: python ablations/run.py ... --set model.init=runs:/{rid}"
        + (f" (or model.init={args.out})" if args.out else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
