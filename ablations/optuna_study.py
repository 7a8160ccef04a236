"""Optuna study over what the paper leaves open (λ3/λ4, mask widths, lr, margin, warm-up).

Each trial trains one configuration of a variant and is scored by its validation mAP on
held-out *training* identities (``ftn_core.data.holdout``), never on the query/gallery split;
a median pruner stops trials whose per-epoch validation mAP falls behind. Each trial is an
MLflow child run of the study's parent run, logged here (Optuna's MLflowCallback is
deprecated). The study lives in Optuna's journal file (several processes on one machine)
or an RDB such as PostgreSQL (several machines); rerunning a command continues its study.
"""

from __future__ import annotations

import dataclasses
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ablations import inits, runner, store, tracking
from ftn_core.config import HOW_IT_RUNS, config_hash, flatten
from ftn_core.data.holdout import holdout_split
from ftn_core.data.loading import build_data, load_splits
from ftn_core.engine import Interrupted, NonFiniteLoss, Trainer
from ftn_core.errors import FTNError

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Param:
    """One searched config field: its range and whether it is searched on a log scale."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


SPACE = (
    Param("loss.w_grad", 0.1, 10.0, log=True),  # λ3 (paper Eq. 6: 1)
    Param("loss.w_l1", 0.1, 10.0, log=True),  # λ4 (paper Eq. 6: 1)
    Param("model.gauss_sy", 0.2, 1.0),  # σ_y / H of Gm (the paper gives no σ)
    Param("model.gauss_sx", 0.15, 0.8),  # σ_x / W of Gm
    Param(
        "train.lr", 1e-4, 4e-3, log=True
    ),  # paper §4.1: 3.5e-4; the cpu preset from scratch: 2e-3
    Param("loss.margin", 0.1, 0.6),  # paper §4.1: 0.3
    # 0 .. 30 % of the epochs (paper: 51/360). Frozen-backbone epochs with ImageNet weights;
    # from scratch, the linear lr warm-up (train.lr_warmup_epochs) takes this slot instead.
    Param("train.warmup_epochs", 0, 0, integer=True),
)
GAUSS = {"model.gauss_sy", "model.gauss_sx"}
# SQLAlchemy 2.1 maps postgresql:// to psycopg (3); postgresql+psycopg2:// needs psycopg2.
DRIVERS = {
    "postgresql": 'pip install "psycopg[binary]" (or psycopg2-binary for postgresql+psycopg2://)',
    "mysql": "pip install pymysql and use mysql+pymysql://",
}


def search_space(
    model_cfg: Any, epochs: int, fixed: set[str] | frozenset[str] = frozenset()
) -> list[Param]:
    """The searched fields that change this variant's training, minus those fixed with ``--set``.

    No decoder → no λ3/λ4/mask widths; a target without Gm → no widths; row (f) → no λ3.
    The warm-up searched is the frozen backbone's with ImageNet weights, the lr's from scratch.
    """
    drop = set(fixed)
    if not model_cfg.decoder:
        drop |= {"loss.w_grad", "loss.w_l1", *GAUSS}
    if "gm" not in model_cfg.mask:
        drop |= GAUSS
    if not model_cfg.gradient_loss:
        drop.add("loss.w_grad")
    out = []
    for p in SPACE:
        if p.key == "train.warmup_epochs":
            p = dataclasses.replace(p, high=max(1, min(epochs - 1, round(0.3 * epochs))))
            if not (
                model_cfg.pretrained or model_cfg.init != "scratch"
            ):  # never freeze a random backbone
                p = dataclasses.replace(p, key="train.lr_warmup_epochs")
        if p.key not in drop:
            out.append(p)
    return out


def suggest(trial: optuna.Trial, space: list[Param]) -> dict[str, Any]:
    """The trial's values, keyed by config field (so they feed ``override`` / ``--set`` as is)."""
    return {
        p.key: trial.suggest_int(p.key, int(p.low), int(p.high))
        if p.integer
        else trial.suggest_float(p.key, p.low, p.high, log=p.log)
        for p in space
    }


@dataclass
class TuneOptions:
    variant: str
    trials: int
    table: int = 2
    dataset: str = "synthetic"
    root: str = str(store.REPO / "data")
    preset: str = "cpu"
    sets: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The user's ``--set`` (held fixed: not searched)."""
    tracking_uri: str | None = None
    storage: str | None = None
    study: str | None = None
    out: str | None = None
    timeout: float | None = None
    seed: int = 0
    """TPE sampler seed (several workers on one study: give each its own)."""
    holdout: float = 0.2
    argv: tuple[str, ...] = ()

    @property
    def study_name(self) -> str:
        return self.study or f"tune-{self.variant}-{self.dataset}-{self.preset}"


def plan_for(opts: TuneOptions, params: dict[str, Any]) -> runner.PlannedRun:
    """The resolved config of one trial, built exactly as ``run.py`` builds a run."""
    sets = {
        "train.eval_every": 1,
        **opts.sets,
        **params,
    }  # evaluate every epoch: the pruner's input
    seed = int(
        sets.pop("train.seed", 0)
    )  # the trials' training seed (--set train.seed=N), as --seeds gives it
    return runner.build_plan(
        opts.table,
        [opts.variant],
        [seed],
        [opts.dataset],
        opts.root,
        opts.preset,
        sets,
        rows_flag="--variant",
    )[0]


def open_storage(url: str | None, default: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """A journal file (a path, default ``default``) or an RDB URL; returns it and a printable name."""
    if url is None or "://" not in url:
        path = Path(url) if url else default
        if path.is_dir():
            raise FTNError(
                f"--storage {path}: is a folder; give a journal file path, e.g. "
                f"{path / 'study.journal'}, or a database URL"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as err:
            raise FTNError(f"--storage {path}: cannot create the journal file ({err})") from None
        return optuna.storages.JournalStorage(backend), str(path)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError

    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise FTNError(
            f"--storage {url}: unsupported; use a journal file path, sqlite:///file.db, "
            f"postgresql://user:password@host:5432/db or mysql://..."
        )
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        raise FTNError(
            f"--storage {url}: not a valid database URL (e.g. postgresql://user:pw@host/db)"
        ) from None
    for attempt in range(3):
        try:  # heartbeats let a dead worker's RUNNING trial be marked FAIL by the others
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=60, grace_period=180
                ), shown
        except ImportError:
            raise FTNError(
                f"--storage {shown}: no database driver for {url.split('://')[0]}; "
                f"{DRIVERS.get(scheme, 'install its SQLAlchemy driver')}"
            ) from None
        except Exception as err:  # unreachable server, bad credentials, unwritable file
            # Workers starting together on a new database race to create Optuna's tables
            # (duplicate key / table exists); the loser finds them made on a second try.
            if attempt < 2 and isinstance(err, (IntegrityError, ProgrammingError)):
                time.sleep(1.0 + attempt)
                continue
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise FTNError(f"--storage {shown}: cannot open it ({first})") from None
    raise AssertionError("unreachable")


def load_study(
    opts: TuneOptions,
    storage,
    shown: str,
    base_hash: str,
    pruner: optuna.pruners.BasePruner | None,
    data_digest: str,
) -> optuna.Study:
    """Create the study or continue it; refuses to mix trials of a different base configuration
    or of other data (a study started before data digests were recorded takes the current one)."""
    name = opts.study_name
    study = optuna.create_study(
        storage=storage, study_name=name, direction="maximize", load_if_exists=True
    )
    attrs = {
        "base_config_hash": base_hash,
        "variant": opts.variant,
        "table": opts.table,
        "dataset": opts.dataset,
        "preset": opts.preset,
        "holdout": opts.holdout,
        "data_digest": data_digest,
    }
    old = study.user_attrs  # another worker may be writing these one by one right now
    diff = ", ".join(f"{k}={old[k]}" for k in attrs if k in old and old[k] != attrs[k])
    if old.get("data_digest", data_digest) != data_digest:
        raise FTNError(
            f"study {name} in {shown} was started on other data (digest "
            f"{old['data_digest']}, now {data_digest}): its trials are not comparable; "
            f"point --root at that data, or pass --study NEW_NAME for a new study"
        )
    if diff:
        raise FTNError(
            f"study {name} in {shown} was started with another configuration ({diff}); "
            f"pass the same options, or --study NEW_NAME for a new study"
        )
    for key, value in attrs.items():
        if key not in old:
            study.set_user_attr(key, value)
    # A continued study must not replay its first random trials: mix the trial count into the seed
    # (a hash, so that worker seeds 0 and 1 do not meet as 0 + 1 and 1 + 0).
    n_trials = len(study.get_trials(deepcopy=False))
    seed = int(np.random.SeedSequence([opts.seed, n_trials]).generate_state(1)[0])
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner or default_pruner(plan_for(opts, {}).cfg.train.epochs),
    )


def default_pruner(epochs: int) -> optuna.pruners.BasePruner:
    """Median of earlier trials at the same epoch, after 3 trials and the first quarter of epochs.

    Steps are 1-based epochs and Optuna prunes only at ``step >= n_warmup_steps``: with 8
    epochs, epochs 1–2 (the warm-up, where every trial looks alike) are never pruned.
    """
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=epochs // 4 + 1)


def study_parent(client, experiment_id: str, name: str, tags: dict[str, str]) -> str:
    """The study's one parent run, shared by every worker: the earliest one tagged with it."""

    def find() -> list:
        runs = client.search_runs(
            [experiment_id], f"tags.kind = 'study' and tags.study = '{name}'", max_results=100
        )
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    runs = find()
    if not runs:  # two workers may both get here: both keep the earliest, the other is deleted
        mine = client.create_run(
            experiment_id, run_name=name, tags={"kind": "study", "study": name, **tags}
        )
        runs = find()
        if runs[0].info.run_id != mine.info.run_id:
            client.delete_run(mine.info.run_id)
    parent = runs[0].info.run_id
    if runs[0].info.status != "RUNNING":
        client.update_run(parent, status="RUNNING")
    return parent


class TrialCallbacks(tracking.RunLogger):
    """The engine's callbacks for one trial: MLflow metrics, and a report to the pruner."""

    def __init__(self, run_id: str, trial: optuna.Trial, epochs: int) -> None:
        super().__init__(run_id)
        self.trial, self.epochs = trial, epochs

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        """Report the epoch's validation mAP; stop the trial if the pruner says so (never at the
        last epoch, when stopping saves nothing and the trial may as well count as complete)."""
        value = metrics["val/mAP"]
        self.trial.report(value, epoch)
        print(
            f"    trial {self.trial.number} epoch {epoch}: rank-1 {metrics['val/rank1']:.1f}  "
            f"mAP {value:.1f}",
            flush=True,
        )
        if epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"val/mAP {value:.1f} below the pruner's bar at epoch {epoch}")


def make_objective(
    opts: TuneOptions,
    space: list[Param],
    splits,
    experiment_id: str,
    parent_id: str,
    data_digest: str,
):
    """One trial: train on the held-out split's train ids, return the final validation mAP."""
    commit = tracking.git_commit()

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        p = plan_for(opts, params)
        print(
            f"trial {trial.number}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in params.items()),
            flush=True,
        )
        tags = {
            "kind": "trial",
            "study": opts.study_name,
            "variant": p.variant.key,
            "preset": p.preset,
            "dataset": p.dataset,
            "trial_number": str(trial.number),
            "config_hash": p.hash,
            "git_commit": commit,
            "tuned": ",".join(params),
            "data_digest": data_digest,
        }
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"trial-{trial.number}",
            parent_run_id=parent_id,
            tags=tags,
        )
        trial.set_user_attr("mlflow_run_id", run.info.run_id)

        def end(state: str, status: str, why: str | None = None) -> None:
            mlflow.set_tag("trial_state", state)
            if why:
                mlflow.set_tag("pruned" if state == "PRUNED" else "error", why[:5000])
                trial.set_user_attr("pruned" if state == "PRUNED" else "error", why[:500])
            mlflow.end_run(status)

        try:
            mlflow.log_params({k: str(v) for k, v in flatten(p.cfg).items()})
            mlflow.log_metric("trial/number", trial.number, step=0)
            data = build_data(
                p.cfg.data, seed=p.seed, splits=splits, train_masks=p.cfg.model.mask == "oracle"
            )
            result = Trainer(
                p.cfg, data, None, TrialCallbacks(run.info.run_id, trial, p.cfg.train.epochs)
            ).fit()
        except optuna.TrialPruned as err:
            end("PRUNED", "FINISHED", str(err))
            raise
        except NonFiniteLoss as err:
            end("FAIL", "FAILED", str(err))
            raise
        except (Interrupted, KeyboardInterrupt) as err:
            end("FAIL", "KILLED", str(err) or "interrupted")
            raise Interrupted(f"trial {trial.number} interrupted") from None
        except BaseException as err:
            end("FAIL", "FAILED", f"{type(err).__name__}: {err}")
            raise
        value = result.metrics["val/mAP"]
        mlflow.log_metric("trial/value", value, step=result.epochs)
        end("COMPLETE", "FINISHED")
        return value

    return objective


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _progress(total: int):
    def callback(study: optuna.Study, t: FrozenTrial) -> None:
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        seconds = t.duration.total_seconds() if t.duration else float("nan")
        what = {
            TrialState.COMPLETE: f"val/mAP {t.value:.1f}" if t.value is not None else "",
            TrialState.PRUNED: f"at epoch {t.last_step}",
            TrialState.FAIL: f"({t.user_attrs.get('error', 'see the log above')})",
        }
        best = ""
        if any(x.state == TrialState.COMPLETE for x in study.get_trials(deepcopy=False)):
            best = f"; best {study.best_value:.1f} (trial {study.best_trial.number})"
        print(
            f"trial {t.number} {t.state.name} {what.get(t.state, '')} in {seconds:.0f} s "
            f"[{done}/{total} finished{best}]",
            flush=True,
        )

    return callback


@dataclass
class StudyRun:
    """What ``run_study`` leaves for the report: the study and where its records are."""

    study: optuna.Study
    client: Any
    parent_run_id: str
    mlruns: Path
    storage: str


def run_study(opts: TuneOptions, pruner: optuna.pruners.BasePruner | None = None) -> StudyRun:
    """Run (or continue) the study until it has ``opts.trials`` finished trials.

    Raises ``Interrupted`` on Ctrl-C / SIGTERM (the trial is recorded as failed).
    """
    if not STUDY_NAME.match(opts.study_name):
        raise FTNError(f"--study {opts.study_name}: use letters, digits, '.', '_' and '-' only")
    if opts.trials < 1:
        raise FTNError(f"--trials {opts.trials}: must be at least 1")
    if not 0.0 < opts.holdout < 1.0:
        raise FTNError(f"--holdout {opts.holdout}: must be between 0 and 1 (e.g. 0.2)")
    base = plan_for(opts, {})  # checks the variant, dataset and every --set key
    space = search_space(base.cfg.model, base.cfg.train.epochs, set(opts.sets))
    if not space:
        raise FTNError(
            f"nothing to tune for variant {opts.variant}: every searched field is fixed by --set"
        )
    uri = opts.tracking_uri or store.DEFAULT_TRACKING_URI
    inits.fill_init_digests(
        [base], uri
    )  # a bad model.init is one line here; a run id's weights are fetched
    mlruns = Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else store.MLRUNS
    storage, shown = open_storage(opts.storage, mlruns / "optuna" / f"{opts.study_name}.journal")
    client = store.open_store(uri)
    optuna.logging.set_verbosity(
        optuna.logging.ERROR
    )  # trials are reported by _progress, in one line
    base_hash = config_hash(base.cfg, exclude=(*HOW_IT_RUNS, "data.root"))
    # The data is read first, even when the budget is reached: its digest decides whether the
    # stored trials were scored on this data.
    t0 = time.perf_counter()
    source = load_splits(base.cfg.data)
    splits = holdout_split(source, opts.holdout, seed=0)
    runner.check_todo(
        [base], {base.dataset: splits}
    )  # the held-out split can feed a batch: before any run exists
    ready = time.perf_counter() - t0
    study = load_study(opts, storage, shown, base_hash, pruner, source.digest)
    experiment = f"tune-{opts.variant}-{opts.dataset}-{opts.preset}"
    exp_id = store.get_or_create_experiment(client, experiment)
    parent = study_parent(
        client,
        exp_id,
        opts.study_name,
        {
            "variant": opts.variant,
            "table": str(opts.table),
            "dataset": opts.dataset,
            "preset": opts.preset,
            "storage": shown,
            "base_config_hash": base_hash,
            "data_digest": source.digest,
        },
    )
    client.set_tag(parent, "command", " ".join(opts.argv)[:5000])
    print(
        f"study {opts.study_name} in {shown}\n  MLflow experiment {experiment}; searching "
        f"{', '.join(p.key for p in space)}",
        flush=True,
    )
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done >= opts.trials:
        print(
            f"the study already has {done} finished trials (--trials {opts.trials}); "
            f"raise --trials to run more",
            flush=True,
        )
        return StudyRun(study, client, parent, mlruns, shown)
    print(
        f"{splits.summary()}\n  (held-out split of the training ids, ready in {ready:.1f} s; "
        f"data digest {source.digest})",
        flush=True,
    )
    try:
        objective = make_objective(opts, space, splits, exp_id, parent, source.digest)
        study.optimize(
            objective,
            n_trials=opts.trials - done,
            timeout=opts.timeout,
            catch=(NonFiniteLoss,),
            callbacks=[
                optuna.study.MaxTrialsCallback(opts.trials, states=FINISHED),
                _progress(opts.trials),
            ],
        )
    except (Interrupted, KeyboardInterrupt):
        close_parent(client, parent, study, "KILLED")
        raise Interrupted("tuning interrupted") from None
    except BaseException:  # never a parent left RUNNING by an error
        close_parent(client, parent, study, "FAILED")
        raise
    return StudyRun(study, client, parent, mlruns, shown)


def close_parent(client, parent: str, study: optuna.Study, status: str) -> None:
    """End the parent run, unless another worker still has a trial running."""
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        client.set_terminated(parent, status)
