"""Plan and execute the runs of a study (a paper table or a study file): rows × seeds,
resumable, tracked in MLflow; a FINISHED run of the same configuration in another experiment is
copied instead of trained again."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from ablations import measures, store, tracking
from ablations.study import Study, Variant, as_study, planned_config
from ablations.variants import variants
from ftn_core.config import (
    HOW_IT_RUNS,
    Config,
    config_hash,
    flatten,
    legacy_config_hash,
    setting_hash,
    to_dict,
    validate,
)
from ftn_core.data.loading import build_data, load_splits
from ftn_core.data.types import DatasetSplits
from ftn_core.engine import (
    PRECISION_NAMES,
    Callbacks,
    Interrupted,
    NonFiniteLoss,
    PrecisionChanged,
    Trainer,
    deferred_interrupts,
    mixed_precision,
    native_bf16_cpu,
    resolve_device,
)
from ftn_core.errors import FTNError, check_writable_dir
from ftn_core.presets import PRESETS, RUN_SECONDS, preset_config

DATASETS = (
    "synthetic",
    "market1501",
    "dukemtmcreid",
    "cuhk03_labeled",
    "cuhk03_detected",
    "msmt17",
    "folder",
    "csv",
)
"""``folder`` / ``csv``: your own data (``ftn_core/data/custom.py``; ``--root`` is the folder or file)."""
MAX_SEED = 2**32 - 1
"""numpy's and torch's seeds must fit in 32 bits (the seed is also mixed into per-purpose keys)."""


@dataclass
class PlannedRun:
    study: Study
    variant: Variant
    seed: int
    dataset: str
    preset: str
    cfg: Config
    hash: str
    experiment: str
    overrides: str = ""
    """The user's ``--set`` / ``--params-file`` values (``key=value, …``): tagged on the run and
    shown beside its row in reports, so a modified row is never read as the paper's."""
    data_digest: str = ""
    """The digest of the data this run reads (``ftn_core.data.digest``): with ``hash``, the run's
    identity, so edited data is a new run and never an old result."""
    init_digest: str = ""
    """The digest of the weights ``model.init`` starts the backbone from ("" for scratch;
    ``ablations/inits.py``), filled before the store is searched: part of the run's identity
    like ``data_digest``, so a changed weights file is a new run."""
    status: str = "new"
    """new | resume (an unfinished run exists) | done (FINISHED: skipped) | reuse (a FINISHED run
    of the same configuration and data in another experiment: copied, not trained)"""
    run_id: str | None = None
    source: object | None = None
    """The MLflow run a ``reuse`` copies."""
    legacy_hash: str = ""
    """The hash older code tagged this configuration's runs with (``legacy_config_hash``): such
    runs are still found done or resumable, on data in the same folder."""
    seed_rule: str = ""
    """The rule that chose this run's seed (``SeedRule.tag``, e.g. ``until-halfwidth 1, max
    24``), tagged ``seed_rule`` on the run; "" for seeds given with ``--seeds``."""

    @property
    def table(self) -> int | None:
        """The paper table whose numbers the study's rows are set beside (None: none)."""
        return self.study.table

    @property
    def name(self) -> str:
        return f"{self.variant.key}-s{self.seed}"


def choose_preset(preset: str | None, datasets: list[str]) -> tuple[str, str]:
    """The preset to use and why (said to the user before anything runs)."""
    if preset:
        if preset not in PRESETS:
            raise FTNError(f"--preset {preset}: unknown; one of {', '.join(PRESETS)}")
        return preset, "asked for with --preset"
    real = [d for d in datasets if d != "synthetic"]
    if torch.cuda.is_available() and real:
        return "paper", f"CUDA is available and a real dataset ({', '.join(real)}) was given"
    if real:
        return (
            "cpu",
            "no CUDA device: the paper preset would take weeks on a CPU (pass --preset paper to insist)",
        )
    if torch.cuda.is_available():
        return "gpu", "the embedded synthetic data on a GPU (ResNet-50 from scratch, 128x64)"
    return (
        "cpu",
        "the embedded synthetic data on a CPU-sized model (CUDA selects 'gpu', real data 'paper')",
    )


def build_plan(
    table: int | Study,
    keys: list[str] | None,
    seeds: list[int],
    datasets: list[str],
    root: str,
    preset: str,
    sets: dict[str, str],
    controls: bool = False,
    rows_flag: str = "--variants",
) -> list[PlannedRun]:
    """Every (dataset, variant, seed) to run, with its resolved config; ``table`` is a paper
    table's number or a study (``ablations.study``); ``controls`` adds the study's control rows
    (Table 2's ``base_matched``, ``oracle``). A shard's part of it: ``scheduling.shard_runs``."""
    study = as_study(table)
    for d in datasets:
        if d not in DATASETS:
            raise FTNError(f"--dataset {d}: unknown; one of {', '.join(DATASETS)}")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise FTNError(
            f"--seeds {' '.join(map(str, bad))}: seeds must be integers from 0 to {MAX_SEED}"
        )
    if "train.seed" in sets:
        raise FTNError(
            f"--set train.seed={sets['train.seed']}: a run's seed comes only from --seeds "
            f"(e.g. --seeds {sets['train.seed']})"
        )
    seeds = list(dict.fromkeys(seeds))  # --seeds 0 0 trains once
    datasets = list(dict.fromkeys(datasets))
    chosen = variants(study, keys, controls)
    check_sets_against_table(study, sets, rows_flag)
    overrides = ", ".join(f"{k}={v}" for k, v in sets.items() if k not in HOW_IT_RUNS)
    plan = []
    for dataset in datasets:
        rows = []
        for variant in chosen:
            if dict(variant.changes).get("model.mask") == "oracle" and dataset != "synthetic":
                if keys and variant.key in keys:  # asked for by name
                    raise FTNError(
                        f"--variants {variant.key}: needs ground-truth person masks, which "
                        f"{dataset} does not have (synthetic data only)"
                    )
                continue
            rows.append(variant)
        # Seed-major: a study stopped part-way has whole seeds (every row of seed 0 before any of
        # seed 1), and the reports pair only seeds that every row has.
        for seed in seeds:
            for variant in rows:
                cfg = planned_config(
                    variant, preset, dataset, root, sets, seed
                )  # what reports expect
                validate(cfg)
                plan.append(
                    PlannedRun(
                        study,
                        variant,
                        seed,
                        dataset,
                        preset,
                        cfg,
                        config_hash(cfg),
                        study.experiment(dataset, preset),
                        overrides,
                        legacy_hash=legacy_config_hash(cfg),
                    )
                )
    return plan


def table_axis(table: int | Study) -> dict[str, list[str]]:
    """The config keys a study's rows differ by, each with the rows that set it."""
    axis: dict[str, list[str]] = {}
    for v in variants(table, None, controls=True):
        for key, value in v.changes:
            axis.setdefault(key if "." in key else f"model.{key}", []).append(
                f"{v.key} sets {value}"
            )
    return axis


def check_sets_against_table(
    table: int | Study, sets: dict[str, Any], rows_flag: str = "--variants"
) -> None:
    """Refuse a ``--set`` of a key that the study's rows vary: it would be silently replaced
    by some rows and turn others into a row that is not the paper's (mislabelled)."""
    study = as_study(table)
    axis = table_axis(study)
    where = f"Table {study.table}" if study.is_paper else f"study {study.name}"
    for key, value in sets.items():
        if key in study.shared:
            raise FTNError(
                f"--set {key}={value}: {where} sets {key} for every row in its file (its `set`); "
                f"edit the study file, or copy it, to change it"
            )
        if key in axis:
            raise FTNError(
                f"--set {key}={value}: {where}'s rows set {key} themselves "
                f"({'; '.join(axis[key][:3])}{'; …' if len(axis[key]) > 3 else ''}); choose rows with "
                f"{rows_flag} instead"
            )


def read_data(plan: list[PlannedRun], generate: bool = True) -> dict[str, DatasetSplits]:
    """Read every dataset of the plan once and give each planned run its data digest.

    A real dataset is read (and its images checked) even when every run is done: its digest
    decides that. The synthetic data's digest follows from its settings, so it is generated only
    when ``generate`` and a run still needs it (never for ``--dry-run``)."""
    from ftn_core.data.synthetic import settings_digest

    out: dict[str, DatasetSplits] = {}
    for p in plan:
        d = p.cfg.data
        if d.dataset == "synthetic":
            p.data_digest = settings_digest(
                d.synthetic_size, d.synthetic_seed, test_ids=d.synthetic_test_ids
            )
            continue
        if p.dataset not in out:
            out[p.dataset] = _load(p)
        p.data_digest = out[p.dataset].digest
    return out


def load_todo(plan: list[PlannedRun], splits: dict[str, DatasetSplits]) -> dict[str, DatasetSplits]:
    """``splits`` with the (generated) synthetic data added when a run not yet done needs it."""
    out = dict(splits)
    for p in plan:
        if p.status not in ("done", "reuse") and p.dataset not in out:
            out[p.dataset] = _load(p)
    return out


def check_todo(todo: list[PlannedRun], splits: dict[str, DatasetSplits]) -> None:
    """Every run still to do can start on its data (the PK sampler finds its identities, the
    oracle its masks): checked for all of them before anything is created, so a bad ``--set``
    leaves no store, parent or FAILED run behind."""
    seen = set()
    for p in todo:
        key = (p.dataset, p.cfg.data, p.cfg.model.mask == "oracle")
        if p.status in ("done", "reuse") or key in seen:
            continue
        seen.add(key)
        build_data(p.cfg.data, seed=p.seed, splits=splits[p.dataset], train_masks=key[2])


def _load(p: PlannedRun) -> DatasetSplits:
    from ftn_core.data.readers import check_matches

    t0 = time.perf_counter()
    splits = load_splits(p.cfg.data)
    check_matches(splits)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{splits.summary()}\n  (ready in {time.perf_counter() - t0:.1f} s; data digest {splits.digest})",
            flush=True,
        )
    return splits


def mark_existing(plan: list[PlannedRun], client) -> None:
    """Fill each planned run's status from the store: done, resume, reuse or new (a run of the
    same configuration on other data is none of these: it is another run).

    A run is ``done`` or ``resume`` in its own experiment by (row key, seed, config hash, data
    digest); failing that it is ``reuse`` when any experiment holds a FINISHED child run of the
    same config hash, data and init digests (the seed is part of the hash), whatever its row is
    called, trained in the precision this machine would train it in (a report never pairs
    runs of two precisions, so a copy of another one would be a row it leaves out) or by older
    code that did not tag it (a report keeps those too)."""
    cache: dict[str, tuple[str | None, dict]] = {}
    finished: dict[tuple[str, str, str], dict[str, Any]] | None = None
    precision: dict[tuple[str, bool], str | None] = {}
    for p in plan:
        if p.experiment not in cache:
            cache[p.experiment] = _experiment_runs(client, p.experiment)
        exp_id, runs = cache[p.experiment]
        if _own_run(p, runs):
            continue
        if not p.data_digest:  # runs from before data digests are never taken for this data
            continue
        if finished is None:
            finished = {}
            for (*identity, prec), run in store.finished_by_config(client).items():
                finished.setdefault(tuple(identity), {})[prec] = run
        found = finished.get((p.hash, p.data_digest, p.init_digest)) or finished.get(
            (p.legacy_hash, p.data_digest, p.init_digest)
        )
        if not found:
            continue
        device = (p.cfg.train.device, p.cfg.train.amp)
        if device not in precision:  # resolved only where a copy is possible (CUDA starts here)
            try:
                precision[device] = PRECISION_NAMES[
                    mixed_precision(resolve_device(device[0]), device[1])
                ]
            except FTNError:  # no such device here (a plan looked at on another machine)
                precision[device] = None
        # A run of this machine's precision, or of older code that did not say ("").
        here = precision[device]
        source = (found.get(here) if here else None) or found.get("")
        if source is not None and source.info.experiment_id != exp_id:
            p.status, p.source = "reuse", source


def _experiment_runs(client, name: str) -> tuple[str | None, dict]:
    """(id, child runs by identity) of experiment ``name``; a deleted one is refused."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return None, {}
    if exp.lifecycle_stage == "deleted":
        raise FTNError(store.deleted_experiment(client, exp))
    return exp.experiment_id, store.child_runs(client, exp.experiment_id)


def _own_run(p: PlannedRun, runs: dict) -> bool:
    """Set ``p``'s status from its own experiment's run of the same identity; whether one exists."""
    run = runs.get((p.variant.key, p.seed, p.hash, p.data_digest, p.init_digest))
    if run is None and p.legacy_hash:  # tagged by older code (the data's folder in its hash)
        run = runs.get((p.variant.key, p.seed, p.legacy_hash, p.data_digest, p.init_digest))
    if run is None:
        return False
    p.run_id = run.info.run_id
    p.status = "done" if store.completed(run) else "resume"
    return True


def lease_key(p: PlannedRun) -> str:
    """A run's identity, as its lease names it (``store.run_lease``)."""
    return f"{p.experiment}/{p.name}/{p.hash}/{p.data_digest}/{p.init_digest}"


def refresh(p: PlannedRun, client) -> None:
    """Re-read ``p``'s run from the store under its lease: since the plan was made another
    process may have finished it (then ``done``) or started it and stopped (then ``resume``)."""
    if p.status != "reuse":
        _own_run(p, _experiment_runs(client, p.experiment)[1])


def _sync(value: Any, world_size: int) -> Any:
    """``value`` as rank 0 has it, on every rank (DDP); as it is on one process."""
    if world_size <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reuse_runs(
    plan: list[PlannedRun], client, parent_ids: dict[str, str], leases: Path | None = None
) -> None:
    """Copy each ``reuse`` run's FINISHED source (params, metric history, artifacts) into the
    plan's experiment as a child of this invocation's parent run, tagged ``reused_from``; it is
    then ``done``. Under its lease (``leases``), so two commands never copy it twice."""
    todo = [p for p in plan if p.status == "reuse"]
    for i, p in enumerate(todo, 1):
        with contextlib.ExitStack() as stack:
            if leases is not None:
                holder = stack.enter_context(store.run_lease(leases, lease_key(p)))
                if holder is not None or _own_run(p, _experiment_runs(client, p.experiment)[1]):
                    print(
                        f"[reuse {i}/{len(todo)}] {p.experiment} {p.name}: "
                        f"{'copied meanwhile by another process' if holder is None else f'being copied by {holder}'}",
                        flush=True,
                    )
                    p.status = "done" if holder is None else "busy"
                    continue
            _copy_one(p, client, parent_ids, f"[reuse {i}/{len(todo)}]")


def _copy_one(p: PlannedRun, client, parent_ids: dict[str, str], counter: str) -> None:
    """Copy ``p``'s FINISHED source run into ``p``'s experiment (``reuse_runs``)."""
    print(
        f"{counter} {p.experiment} {p.name}: the same configuration and data are FINISHED "
        f"as {p.source.info.run_name} ({p.source.info.run_id[:8]}); copying it, no training",
        flush=True,
    )
    exp_id = store.get_or_create_experiment(client, p.experiment, experiment_parts(p))
    source = p.source.data.tags
    tags = _child_tags(p) | {
        "skipped_images": source.get("skipped_images", "0"),
        "mlflow.parentRunId": parent_ids[p.experiment],
    }
    for key in (
        "git_commit",
        "machine",
        "precision",
    ):  # what trained it: the source's code, machine and precision, not ours
        tags.pop(key, None)
        if key in source:
            tags[key] = source[key]
    with deferred_interrupts():
        p.run_id = store.copy_run(client, p.source, exp_id, p.name, tags)
    p.status = "done"


def checkpoint_path(work_dir: Path, p: PlannedRun) -> Path | None:
    """The resumable checkpoint of ``p``'s MLflow run (None before the run exists): named by the
    run's id, so it belongs to that run of that store, and a plan on another store (or a run
    trained again after its old one was deleted) never starts from it."""
    return work_dir / p.experiment / f"{p.name}-{p.run_id}.pt" if p.run_id else None


def format_plan(plan: list[PlannedRun], work_dir: Path) -> str:
    lines = [
        f"{'experiment':<28} {'run':<14} {'config':<12} {'data':<8} {'status':<8} {'checkpoint':>10}  "
        f"what differs from FTN"
    ]
    disk = 0
    for p in plan:
        diff = (
            ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in p.variant.changes)
            or "(full FTN)"
        )
        status = p.status
        ckpt = checkpoint_path(work_dir, p)
        size = ckpt.stat().st_size if ckpt is not None and ckpt.exists() else 0
        disk += size
        if status == "resume" and not size:
            status = "restart"
        if status == "reuse":
            diff += f"  (copied from {p.source.info.run_name} {p.source.info.run_id[:8]})"
        lines.append(
            f"{p.experiment:<28} {p.name:<14} {p.hash:<12} {p.data_digest[:8]:<8} {status:<8} "
            f"{f'{size / 2**20:.0f} MiB' if size else '-':>10}  {diff}"
        )
    todo = sum(p.status not in ("done", "reuse") for p in plan)
    reuse = sum(p.status == "reuse" for p in plan)
    copied = f", {reuse} to copy from other experiments" if reuse else ""
    lines.append(
        f"{len(plan)} runs, {len(plan) - todo - reuse} already done{copied}, {todo} to run; their checkpoints "
        f"take {disk / 2**20:.0f} MiB in {work_dir} now (one per unfinished run; a FINISHED "
        f"run's is deleted unless --keep-checkpoints)"
    )
    return "\n".join(lines)


def measured_pace(plan: list[PlannedRun], client) -> tuple[float, int] | None:
    """(median seconds per epoch, runs) of the FINISHED child runs in the plan's experiments
    that were trained, not copied, with the plan's preset on the plan's data: this machine's
    pace at this test size, which the preset's nominal figure is not. A run whose wall time per
    epoch is over twice its last epoch's training time stood still part of it (interrupted and
    resumed, or paused) and does not count. A new study with fewer than 3 such runs takes the
    store's other experiments' runs; None below 3 even then."""
    keys = {(p.preset, p.data_digest) for p in plan if p.data_digest}
    per_epoch: list[float] = []
    own = sorted({p.experiment for p in plan})
    for exp in [client.get_experiment_by_name(name) for name in own]:
        per_epoch += _seconds_per_epoch(client, exp, keys)
    if len(per_epoch) < 3:
        for exp in client.search_experiments(max_results=1000):
            if exp.name not in own:
                per_epoch += _seconds_per_epoch(client, exp, keys)
    return (statistics.median(per_epoch), len(per_epoch)) if len(per_epoch) >= 3 else None


def _seconds_per_epoch(client, exp, keys: set[tuple[str, str]]) -> list[float]:
    return [span for _, span in epoch_spans(client, exp, keys)]


def epoch_spans(client, exp, keys: set[tuple[str, str]]) -> list[tuple[str, float]]:
    """(row key, wall seconds per epoch) of each FINISHED child run of ``exp`` that was trained
    (not copied) with a (preset, data digest) of ``keys`` and never stood still part-way."""
    per_epoch = []
    for run in store.child_runs(client, exp.experiment_id).values() if exp else ():
        tags, info = run.data.tags, run.info
        if (
            info.status != "FINISHED"
            or "reused_from" in tags
            or not info.end_time
            or (tags.get("preset"), tags.get("data_digest")) not in keys
        ):
            continue
        try:
            epochs = int(run.data.params.get("train.epochs", "0"))
        except ValueError:
            continue
        if epochs <= 0:
            continue
        span = (info.end_time - info.start_time) / 1000 / epochs
        last = run.data.metrics.get(EPOCH_KEY)  # the last epoch's own training time
        if (
            last and span > 2 * last
        ):  # stopped part-way and resumed, or paused: its span counts the wait
            continue
        per_epoch.append((tags.get("variant", ""), span))
    return per_epoch


def describe_start(plan: list[PlannedRun], pace: tuple[float, int] | None = None) -> str:
    """One line saying what happens first and how long the whole plan should take: at ``pace``
    (``measured_pace``) when the store has one, else at the preset's nominal figure."""
    todo = [p for p in plan if p.status not in ("done", "reuse")]
    reuse = sum(p.status == "reuse" for p in plan)
    first = (
        [f"copy {reuse} FINISHED run(s) of the same configuration from other experiments"]
        if reuse
        else []
    )
    for p in todo:
        if p.dataset == "synthetic" and not synthetic_ready(p.cfg.data):
            first.append(f"generate the synthetic data in {p.cfg.data.root} (seconds)")
            break
    if pace is not None:  # this store's own runs: this machine, this test size
        seconds = sum(pace[0] * p.cfg.train.epochs for p in todo)
        estimate = (
            f"{_about(seconds)} at the pace of this store's {pace[1]} FINISHED runs of this preset on "
            f"this data (median {pace[0]:.0f} s per epoch, evaluation included)"
        )
    else:  # the preset's measured run time, scaled by the epochs a --set asks for
        seconds = sum(
            RUN_SECONDS.get(p.preset, float("nan"))
            * p.cfg.train.epochs
            / preset_config(p.preset).train.epochs
            for p in todo
        )
        slower = (
            "" if native_bf16_cpu() else " (this CPU lacks AVX-512 BF16: expect about twice that)"
        )
        estimate = (
            "no time estimate for this preset (it depends on the GPU)"
            if seconds != seconds
            else f"{_about(seconds)} on a quiet 2-core CPU with AVX-512 BF16{slower}"
        )
    return (
        f"next: {'; then '.join(first + [f'train {len(todo)} run(s)'])}; "
        f"{estimate} ({len(plan) - len(todo) - reuse} of {len(plan)} already done)"
    )


def _about(seconds: float) -> str:
    return f"about {round(seconds / 60)} min" if seconds >= 90 else "under 2 min"


def synthetic_ready(cfg) -> bool:
    """Whether the synthetic benchmark for ``cfg`` is already generated (no generation needed)."""
    from ftn_core.data.synthetic import dataset_name

    return (
        Path(cfg.root)
        / dataset_name(cfg.synthetic_size, cfg.synthetic_seed, None, cfg.synthetic_test_ids)
        / "query"
    ).is_dir()


def check_work_dir(work_dir: Path) -> None:
    """The checkpoint folder must be writable (probed; nothing is created)."""
    check_writable_dir(work_dir, "--work-dir", "cannot write checkpoints there")


EPOCH_KEY = "train/epoch_seconds"
"""A metric the engine logs every epoch: its steps are the epochs logged."""


class _Logger(tracking.RunLogger):
    """Also prints one line per evaluation, and, without a terminal (no progress bar), one
    line per epoch, so a log file shows progress."""

    def __init__(
        self,
        run_id: str,
        name: str,
        epochs: int,
        extra: Callbacks | None = None,
        resuming: bool = False,
    ) -> None:
        super().__init__(run_id)
        self.name, self.epochs, self.extra = name, epochs, extra
        self.tty = sys.stderr.isatty()
        # Epochs an earlier start logged (a hard kill can land after the metrics and before the
        # checkpoint): the resumed run re-trains them but does not log them twice.
        self.logged = (
            {m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run_id, EPOCH_KEY)}
            if resuming
            else set()
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step in self.logged:
            return
        super().log_metrics(metrics, step)
        if not self.tty and "val/mAP" not in metrics:
            losses = "  ".join(
                f"{k[len('train/loss_') :]} {v:.3f}"
                for k, v in metrics.items()
                if k.startswith("train/loss_")
            )
            print(
                f"    {self.name} epoch {step}/{self.epochs}: {losses}  "
                f"({metrics.get('train/epoch_seconds', 0):.0f} s)",
                flush=True,
            )

    def on_eval(self, epoch: int, metrics: dict[str, float]) -> None:
        print(
            f"    {self.name} epoch {epoch}: rank-1 {metrics['val/rank1']:.1f}  mAP {metrics['val/mAP']:.1f}",
            flush=True,
        )
        if self.extra is not None:
            self.extra.on_eval(epoch, metrics)


def execute(
    plan: list[PlannedRun],
    client,
    work_dir: Path,
    parent_ids: dict[str, str],
    splits_cache: dict[str, DatasetSplits],
    rank: int = 0,
    world_size: int = 1,
    keep_checkpoints: bool = False,
    leases: Path | None = None,
    label: str | None = None,
) -> list[str]:
    """Train every planned run not yet done; returns the names of runs that FAILED.

    Each run is trained under its lease (``leases``: ``store.lease_dir``), taken before the
    store is read again for it: a run that another live process is training is left to it
    (status ``busy``), one that another process finished meanwhile is not trained again. A
    FINISHED run's resumable checkpoint is deleted (its model is a run artifact) unless
    ``keep_checkpoints``. Raises ``Interrupted`` (after marking the run KILLED) on Ctrl-C or
    SIGTERM, wherever it lands.
    """
    tracking.end_unfinished_runs_killed()
    failed: list[str] = []
    todo = [p for p in plan if p.status not in ("done", "reuse", "busy")]
    for i, p in enumerate(todo, 1):
        counter = label or f"[{i}/{len(todo)}]"  # ``label``: how the lines name the run's place
        with contextlib.ExitStack() as stack:
            holder = None
            if rank == 0 and leases is not None:
                holder = stack.enter_context(store.run_lease(leases, lease_key(p)))
                if holder is None:
                    refresh(p, client)
            holder, p.status, p.run_id = _sync((holder, p.status, p.run_id), world_size)
            if holder is not None or p.status == "done":
                if rank == 0:
                    why = (
                        f"being trained by {holder}"
                        if holder
                        else "finished meanwhile by another process"
                    )
                    print(f"{counter} {p.experiment} {p.name}: {why}; skipped", flush=True)
                if holder is not None:
                    p.status = "busy"
                continue
            if _train_one(
                p,
                client,
                work_dir,
                parent_ids,
                splits_cache,
                rank,
                world_size,
                keep_checkpoints,
                counter,
            ):
                failed.append(p.name)
    busy = [p.name for p in todo if p.status == "busy"]
    if busy and rank == 0 and label is None:
        print(
            f"{len(busy)} run(s) left to the process(es) training them: {', '.join(busy)}; run the same "
            f"command again later to pick up any they leave unfinished",
            flush=True,
        )
    return failed


def _train_one(
    p: PlannedRun,
    client,
    work_dir: Path,
    parent_ids: dict[str, str],
    splits_cache: dict[str, DatasetSplits],
    rank: int,
    world_size: int,
    keep_checkpoints: bool,
    counter: str,
) -> bool:
    """Train (or resume) one run to the end; returns whether it FAILED on a non-finite loss."""
    if rank == 0:
        verb = "resuming" if p.status == "resume" else "training"
        print(
            f"{counter} {p.experiment} {p.name} ({verb}, config {p.hash}, data {p.data_digest})",
            flush=True,
        )
    t0 = time.perf_counter()
    data = build_data(
        p.cfg.data,
        seed=p.seed,
        rank=rank,
        world_size=world_size,
        splits=splits_cache[p.dataset],
        train_masks=p.cfg.model.mask == "oracle",
    )
    with deferred_interrupts():  # a run is created with its tags and params, or not at all
        run_id = (
            _start_child(p, client, parent_ids[p.experiment], data.splits) if rank == 0 else None
        )
    p.run_id = _sync(p.run_id, world_size)  # every rank resumes from the same checkpoint
    finished = False
    try:
        trainer = Trainer(
            p.cfg,
            data,
            checkpoint_path(work_dir, p),
            _Logger(run_id, p.name, p.cfg.train.epochs, resuming=p.status == "resume")
            if rank == 0
            else None,
            rank,
            world_size,
        )
        if trainer.model.init_digest != p.init_digest:  # the weights file changed since the plan
            raise FTNError(
                f"model.init={p.cfg.model.init}: the weights file changed while this "
                f"command ran (digest {p.init_digest}, now {trainer.model.init_digest}); "
                f"run the command again"
            )
        if rank == 0:
            mlflow.set_tag("precision", trainer.precision)  # bf16 / fp16 / fp32, as detected
        result = trainer.fit()
        if rank == 0:
            mlflow.set_tag("precision", trainer.precision)  # a checkpoint's, where it was done
            with deferred_interrupts():
                per_query = (
                    tracking.per_query_arrays(
                        result.per_query,
                        [q.pid for q in data.splits.query],
                        [q.camid for q in data.splits.query],
                    )
                    if result.per_query is not None
                    else None
                )
                tracking.log_run_artifacts(
                    to_dict(p.cfg),
                    result.metrics,
                    result.cmc,
                    trainer.model.state_dict(),
                    f"{p.name} ({p.dataset})",
                    per_query,
                )
                if per_query is not None and tracking.log_extras():
                    log_rank_list(per_query, data.splits, f"{p.name} ({p.dataset})")
                if tracking.log_extras():
                    tracking.log_embedding_model(trainer.model, result.metrics, data.splits)
                    measures.log_measures(
                        client, run_id, trainer.model, p.cfg, data.splits, tracking.machine()
                    )
                tracking.end_run("FINISHED")
                finished = True
            if not keep_checkpoints:
                checkpoint_path(work_dir, p).unlink(missing_ok=True)
            m = result.metrics
            print(
                f"    done in {time.perf_counter() - t0:.0f} s: rank-1 {m.get('val/rank1', float('nan')):.1f}"
                f"  mAP {m.get('val/mAP', float('nan')):.1f}",
                flush=True,
            )
        p.status = "done"
        return False
    except (Interrupted, KeyboardInterrupt) as err:
        if rank == 0 and not finished:
            try:
                mlflow.set_tag("error", str(err) or "interrupted")
            finally:
                tracking.end_run("KILLED")
        raise (
            err if isinstance(err, Interrupted) else Interrupted(f"{p.name} interrupted")
        ) from None
    except PrecisionChanged as err:
        if rank == 0:  # left KILLED, with its checkpoint and its precision, to be resumed
            why = (
                f"{err}; or delete the run (mlflow runs delete --run-id {p.run_id}) and "
                f"{checkpoint_path(work_dir, p)} to train it again here"
            )
            print(f"error: {p.name}: {why} (going on with the other runs)", file=sys.stderr)
            try:
                mlflow.set_tags({"precision": err.was, "error": str(err)})
            finally:
                tracking.end_run("KILLED")
        return True
    except NonFiniteLoss as err:
        if rank == 0:
            print(
                f"error: {p.name}: {err} (run FAILED; going on with the other runs)",
                file=sys.stderr,
            )
            try:
                mlflow.set_tag("error", str(err))
            finally:
                tracking.end_run("FAILED")
        return True
    except BaseException:
        if rank == 0 and not finished:
            tracking.end_run("FAILED")
        raise


def log_rank_list(
    per_query: dict, splits: DatasetSplits, title: str, run_id: str | None = None
) -> None:
    """``ranklist.png`` (best, median and worst queries with their top 10) as an artifact of
    ``run_id`` (default: the active run)."""
    import tempfile

    from ablations import ranklists

    with tempfile.TemporaryDirectory() as tmp:
        path = ranklists.draw(per_query, splits, Path(tmp) / "ranklist.png", title)
        mlflow.tracking.MlflowClient().log_artifact(
            run_id or mlflow.active_run().info.run_id, str(path)
        )


def _child_tags(p: PlannedRun) -> dict[str, str]:
    return {
        "kind": "child",
        "table": str(p.table or ""),
        "study": p.study.name,
        "variant": p.variant.key,
        "variant_label": p.variant.label,
        "seed": str(p.seed),
        "preset": p.preset,
        "dataset": p.dataset,
        "git_commit": tracking.git_commit(),
        "machine": tracking.machine(),
        "config_hash": p.hash,
        "setting_hash": setting_hash(p.cfg),
        "data_digest": p.data_digest,
        "init_digest": p.init_digest,
        "overrides": p.overrides,
    } | _rule_tag(p)


def _rule_tag(p: PlannedRun) -> dict[str, str]:
    return {"seed_rule": p.seed_rule} if p.seed_rule else {}


def _start_child(p: PlannedRun, client, parent_id: str, splits: DatasetSplits) -> str:
    tags = _child_tags(p) | {"skipped_images": str(splits.skipped)}
    if p.run_id is not None:  # resume in the same MLflow run
        run = mlflow.start_run(run_id=p.run_id, log_system_metrics=tracking.log_extras())
        mlflow.set_tags(
            {
                "git_commit": tags["git_commit"],
                "machine": tags["machine"],  # the last to touch it
                "setting_hash": tags["setting_hash"],
                **_rule_tag(p),
            }
        )
        return run.info.run_id
    exp_id = store.get_or_create_experiment(client, p.experiment, experiment_parts(p))
    run = mlflow.start_run(
        experiment_id=exp_id,
        run_name=p.name,
        parent_run_id=parent_id,
        tags=tags,
        log_system_metrics=tracking.log_extras(),
    )
    mlflow.log_params({k: str(v) for k, v in flatten(p.cfg).items()})
    try:
        tracking.log_dataset(splits)
    except (
        mlflow.exceptions.MlflowException
    ):  # another shard logged the same new dataset at the same moment
        tracking.log_dataset(splits)  # (UNIQUE constraint on datasets): the row exists now, link it
    if splits.skipped_paths:  # --skip-bad-images: which images this run did not see
        mlflow.log_text("\n".join(splits.skipped_paths) + "\n", "skipped_images.txt")
    p.run_id = run.info.run_id
    return run.info.run_id


def experiment_parts(p: PlannedRun) -> store.ExperimentName:
    """What ``p``'s experiment is for, kept as its tags (``store.EXPERIMENT_TAGS``)."""
    paper = p.study.is_paper
    return store.ExperimentName(
        p.study.table if paper else None, None if paper else p.study.name, p.dataset, p.preset
    )


def start_parents(plan: list[PlannedRun], client, argv: list[str]) -> dict[str, str]:
    """One parent run per experiment touched by this invocation, with the study file as its
    artifact (``study.toml``) and the file's hash as the tag ``study_hash``."""
    parents = {}
    for p in plan:
        if p.experiment in parents:
            continue
        exp_id = store.get_or_create_experiment(client, p.experiment, experiment_parts(p))
        run = client.create_run(
            exp_id,
            run_name=f"{p.study.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                "kind": "parent",
                "table": str(p.table or ""),
                "study": p.study.name,
                "study_hash": p.study.digest,
                "dataset": p.dataset,
                "preset": p.preset,
                "command": " ".join(argv)[:5000],
                "git_commit": tracking.git_commit(),
                **_rule_tag(p),
            },
        )
        client.log_text(run.info.run_id, p.study.text, "study.toml")
        parents[p.experiment] = run.info.run_id
    return parents


def end_parents(client, parents: dict[str, str], status: str) -> None:
    for run_id in parents.values():
        client.set_terminated(run_id, status)
