"""Read the ablation runs back from the MLflow store (the report's only input; STYLE §6).

Store layout (written by ``ablations/``; ``ablations.store`` names it and opens it read-only here):
one experiment per study × dataset × preset named ``table{N}-{dataset}-{preset}`` (the paper's
tables) or ``study-{name}-{dataset}-{preset}`` (a study file, ``ablations.study``), read back by
``ablations.store.experiment_parts``; one parent run per runner invocation (``tags.kind=parent``);
one child run per variant × seed (``tags.kind=child``, ``tags.variant``, ``tags.seed``) with
``val/*`` metrics in percent and the artifacts ``config.json``, ``metrics.json``, ``model.pt``.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

from ablations.store import (
    CHILD_RUNS,
    CONFIG_JSON,
    FINAL_METRIC,
    PARENT_RUNS,
    PER_QUERY,
    ExperimentName,
    experiment_parts,
)
from ablations.study import (
    PAPER_TABLE_NUMBERS,
    Study,
    as_study,
    data_choice,
    planned_config,
    row_setting,
)
from ablations.variants import variants
from ftn_core.config import (
    ADDED_FIELDS,
    Config,
    config_hash,
    flatten,
    from_dict,
    legacy_config_hash,
    override,
    setting_hash,
)
from ftn_core.errors import FTNError
from ftn_core.presets import preset_config
from reports.source import Source

VAL_METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")
FOCUS_MAPS = ("stage3", "stage4", "attn", "global", "local")
"""The maps of ``FTN.activation_maps`` (``ftn_core.diagnostics.foreground_scores``)."""
SOFT_MASKS = ("gm", "pam", "cam", "gm_pam_cam")
"""TF-Dec's soft target masks scored against the person mask (pam / cam need CFA)."""
FG_KEYS = ("fg_focus", *(f"fg_focus_{m}" for m in FOCUS_MAPS))
"""Raw foreground share (percent) of the global branch and of each map; synthetic data only."""
FG_NORM_KEYS = tuple(f"fg_focus_norm_{m}" for m in FOCUS_MAPS)
"""Normalised focus: 0 = uniform map, 100 = best map at the map's resolution."""
MASK_AUC_KEYS = tuple(f"mask_auc_{m}" for m in SOFT_MASKS)
"""Pixel ROC AUC × 100 of each soft mask against the person mask; 50 = chance."""
EPOCH_SECONDS = "train/epoch_seconds"
"""Each epoch's wall time, logged by the engine: a report sums them into run-hours."""
LOSS_KEYS = (
    "train/loss_ce",
    "train/loss_triplet",
    "train/loss_grad",
    "train/loss_l1",
    "train/loss_total",
)
GRAD_KEYS = ("train/recon_grad_ratio", "train/grad_norm_reid", "train/grad_norm_recon")
"""Per epoch, TF-Dec variants only (after any frozen warm-up): encoder gradient norms."""


@dataclass
class TableRuns:
    """The usable child runs of one experiment, and what was left out and why."""

    experiment: str
    experiment_id: str
    table: int | Study
    """The paper table's number, or the study (a study file's runs)."""
    dataset: str
    preset: str
    runs: pd.DataFrame
    """One row per (variant, seed): run_id, variant, variant_label, seed, status, start_time,
    artifact_uri and the ``metrics.*`` / ``params.*`` columns of ``mlflow.search_runs``."""
    left_out: list[str] = field(default_factory=list)
    """One line per reason, e.g. ``2 FAILED runs (b-s0, b-s1)``."""
    parent_run_id: str | None = None
    """Newest parent run (where the report is logged), None if there is none."""
    data_digest: str = ""
    """The data the kept runs saw (``ftn_core.data.digest``): the newest FINISHED run's; runs on
    other data are left out. "" = runs from before data digests."""
    settings: tuple[str, ...] = ()
    """``--set key=value`` items every kept run was trained with on top of the preset (stated once
    in the report instead of in every row's label)."""
    commands: tuple[str, ...] = ()
    """The commands (parent runs' ``command`` tags) that trained the kept runs, oldest first."""
    row_digests: dict[str, str] = field(default_factory=dict)
    """Each row's data digest: one for every row, unless the study's rows are on different data
    (``Study.rows_on_different_data``); rows on different data are never paired."""
    stale: tuple[str, ...] = ()
    """Rows with runs left out because the row's configuration is another one now."""
    dropped: tuple[str, ...] = ()
    """Other rows whose FINISHED runs were all left out (other data, precision, weights …)."""
    row_settings: dict[str, str] = field(default_factory=dict)
    """Each row's own ``--set`` values beyond those every run shares (``key=value, …``; ""
    for none): the part of its label in brackets."""

    def same_data(self, a: str, b: str) -> bool:
        """Whether rows ``a`` and ``b`` were run on the same data (their runs can be paired)."""
        digests = self.row_digests
        return a not in digests or b not in digests or digests[a] == digests[b]

    def same_setting(self, a: str, b: str) -> bool:
        """Whether rows ``a`` and ``b`` were trained with the same ``--set`` values (as values:
        ``3.5e-4`` and ``0.00035`` are one)."""
        return _setting_values(self.row_settings.get(a, ""), self.preset) == _setting_values(
            self.row_settings.get(b, ""), self.preset
        )

    @property
    def study(self) -> Study:
        """The rows, reference and claims these runs are reported with."""
        return as_study(self.table)

    @property
    def order(self) -> list[str]:
        """Variant keys present, in the study's row order."""
        present = set(self.runs["variant"])
        return [v.key for v in variants(self.table, controls=True) if v.key in present]


def find_experiments(
    client: MlflowClient, table: int | None = None, name: str | None = None
) -> list[Experiment]:
    """Experiments named ``table{N}-…`` (all tables, or one), or the one named ``name``."""
    exps = client.search_experiments(max_results=1000)
    if name is not None:
        match = [e for e in exps if e.name == name]
        if not match:
            known = ", ".join(sorted(e.name for e in exps if _table_of(e) is not None)) or "none"
            raise FTNError(
                f"--experiment {name}: not found in the store (ablation experiments: {known})"
            )
        parts = experiment_parts(match[0])
        if parts is not None and parts.study is not None:
            raise FTNError(
                f"--experiment {name} is an experiment of study {parts.study}: build "
                f"its report with `python reports/build.py --study FILE`, FILE being "
                f"that study's file"
            )
        if parts is None:
            raise FTNError(
                f"--experiment {name}: not an ablation experiment (those are named "
                f"table<N>-<dataset>-<preset>, or study-<name>-<dataset>-<preset>: use "
                f"--study FILE)"
            )
        if table is not None and _table_of(match[0]) != table:
            raise FTNError(f"--experiment {name} is not a Table {table} experiment")
        return match
    found = [e for e in exps if _table_of(e) is not None]
    if not found:
        raise FTNError(
            "the store holds no ablation runs (experiments named like "
            "table2-synthetic-cpu): run `python ablations/run.py --table 2` first"
        )
    if table is not None:
        found = [e for e in found if _table_of(e) == table]
        if not found:
            raise FTNError(
                f"no Table {table} experiment in the store: run "
                f"`python ablations/run.py --table {table}` first"
            )
    return sorted(found, key=lambda e: e.name)


def _table_of(exp: Experiment) -> int | None:
    parts = experiment_parts(exp)
    return parts.table if parts else None


def load_runs(client: MlflowClient, exp: Experiment, study: Study | None = None) -> TableRuns:
    """FINISHED child runs, newest per (variant, seed); the rest counted in ``left_out``.
    ``study``: the study the experiment belongs to (default: the paper table its name says)."""
    parts = experiment_parts(exp) or ExperimentName(None, None, "?", "?")
    table, dataset, preset = (
        (parts.table, parts.dataset, parts.preset) if parts.table is not None else (0, "?", "?")
    )
    if study is not None:
        table, dataset, preset = (
            (study.table if study.is_paper else study),
            parts.dataset,
            parts.preset,
        )
    df = _search(client, exp, CHILD_RUNS)
    parents = _search(client, exp, PARENT_RUNS)
    parent_id = None
    if len(parents):
        parent_id = str(parents.sort_values("start_time", ascending=False)["run_id"].iloc[0])
    if not len(df):
        return TableRuns(exp.name, exp.experiment_id, table, dataset, preset, df, [], parent_id)
    df = df.copy()
    for col in (
        "tags.variant",
        "tags.seed",
        "tags.variant_label",
        "tags.mlflow.runName",
        "tags.data_digest",
    ):
        if col not in df:
            df[col] = None
    # The tags are the truth; the experiment name is the fallback.
    dataset = _first(df, "tags.dataset", dataset)
    preset = _first(df, "tags.preset", preset)
    df["variant"] = df["tags.variant"]
    df["seed"] = pd.to_numeric(df["tags.seed"], errors="coerce")
    df["name"] = df["tags.mlflow.runName"].fillna(df["run_id"].str[:8])
    known = (
        {v.key: v.label for v in variants(table, controls=True)}
        if isinstance(table, Study) or table in PAPER_TABLE_NUMBERS
        else {}
    )
    df["variant_label"] = df["tags.variant_label"].fillna(df["variant"].map(known))
    left_out: list[str] = []

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal df
        if mask.any():
            names = ", ".join(df.loc[mask, "name"].astype(str).tolist()[:6])
            more = "" if mask.sum() <= 6 else ", …"
            left_out.append(f"{int(mask.sum())} {reason} ({names}{more})")
            df = df.loc[~mask]

    for status in ("FAILED", "KILLED", "RUNNING", "SCHEDULED"):
        # A run whose process died (a machine or session that went away) stays RUNNING in the store.
        still = (
            ": training now, or stopped unmarked, which `run.py` resumes"
            if status == "RUNNING"
            else ""
        )
        drop(df["status"] == status, f"{status} run(s){still}")
    drop(df["status"] != "FINISHED", "run(s) with another status")
    final = f"metrics.{FINAL_METRIC}"
    drop(
        df[final].isna() if final in df else pd.Series(True, index=df.index),
        "FINISHED run(s) without their final evaluation (interrupted as they ended): the same "
        "`run.py` command resumes them",
    )
    drop(df["variant"].isna() | df["seed"].isna(), "run(s) without variant/seed tags")
    drop(
        ~df["variant"].isin(list(known)),
        f"run(s) of variants not in {'study' if isinstance(table, Study) else 'Table'} {table}",
    )
    df = df.sort_values("start_time", ascending=False)
    finished_rows = list(dict.fromkeys(df["variant"]))  # before the filters below
    # Only runs of each row's configuration as the study file gives it now.
    paper = table in PAPER_TABLE_NUMBERS
    study_now = as_study(table) if isinstance(table, Study) or paper else None
    stale: list[str] = []
    if study_now is not None and len(df):
        why = pd.Series(
            [_not_current(client, study_now, run, preset, dataset) for _, run in df.iterrows()],
            index=df.index,
            dtype=object,
        )
        for reason in dict.fromkeys(w for w in why if w):
            mask = why.loc[df.index] == reason  # (one reason per row: its keys and values)
            stale += list(dict.fromkeys(df.loc[mask, "variant"]))
            drop(mask, reason)
    df["data_digest"] = df["tags.data_digest"].fillna("").astype(str)
    digest = str(df["data_digest"].iloc[0]) if len(df) else ""
    # Never pair runs that saw different data: per choice of data (one, unless the study's rows
    # choose different data), the newest run's data wins.
    choice = (
        {v.key: data_choice(v) for v in study_now.rows}
        if study_now is not None and study_now.rows_on_different_data
        else {}
    )
    group = df["variant"].map(lambda v: choice.get(v, ()))
    row_digests: dict[str, str] = {}
    for g in dict.fromkeys(group):
        rows = group == g
        newest = str(df.loc[rows, "data_digest"].iloc[0])
        row_digests |= {v: newest for v in df.loc[rows, "variant"]}
        other = rows & (df["data_digest"] != newest)
        if other.any():
            seen = ", ".join(sorted({d or "not recorded" for d in df.loc[other, "data_digest"]}))
            drop(
                other,
                f"run(s) on other data than the newest run's (data digest {seen}, newest "
                f"{newest or 'not recorded'}: the dataset changed between them; train them "
                f"again to include them)",
            )
            group = group[df.index]
    # Never pair runs computed in another precision (bf16 where the CPU or GPU has it, else fp32:
    # `train.amp` decides by machine) or started from other weights (`model.init`): the newest
    # run's wins, among the rows that set `train.amp` (`model.init`) alike; rows of a study
    # that set them differently are meant to differ there. A run without the tag (older code)
    # is kept.
    for tag, key, what in (
        ("precision", "train.amp", "computed in another precision"),
        ("init_digest", "model.init", "started from other backbone weights"),
    ):
        configured = {v.key: repr(row_setting(v, key)) for v in study_now.rows} if study_now else {}
        for setting in dict.fromkeys(df["variant"].map(configured).fillna("")):
            col = (
                df[f"tags.{tag}"].fillna("").astype(str)
                if f"tags.{tag}" in df
                else pd.Series("", index=df.index)
            )
            rows = df["variant"].map(configured).fillna("") == setting
            known_values = col[rows & (col != "")] if tag == "precision" else col[rows]
            if not len(known_values):
                continue
            newest_value = str(known_values.iloc[0])
            other = rows & (col != newest_value) & ((col != "") | (tag != "precision"))
            if other.any():
                seen = ", ".join(sorted({v or "scratch" for v in col[other]}))
                drop(
                    other,
                    f"run(s) {what} than the newest run ({tag} {seen}, newest "
                    f"{newest_value or 'scratch'}): train them again alike to include them",
                )
    # A row's seeds are pooled only if they were trained alike: runs from before its study file
    # or its --set changed are another setting, whatever their variant tag says.
    df["setting"] = [_setting(client, run) or None for _, run in df.iterrows()]  # None: unknown
    newest = df.groupby("variant")["setting"].transform("first")  # the newest known one
    other = df["setting"].notna() & newest.notna() & (df["setting"] != newest)
    older_code = other & df["setting"].map(
        lambda x: isinstance(x, str) and x.startswith(OLDER_CODE)
    )
    drop(
        older_code,
        "run(s) trained by older code that computes something else for the same "
        "configuration (train them again to include them)",
    )
    drop(
        other & ~older_code,
        "run(s) trained with another setting of their row than its newest run (the "
        "study file or --set changed since: train them again to include them)",
    )
    drop(
        df.duplicated(["variant", "seed"], keep="first"),
        "older duplicate(s) of a newer FINISHED run",
    )
    df = df.assign(seed=df["seed"].astype(int))
    # Stores written before a metric existed lack its column: NaN ("—"), never a KeyError.
    for key in (*VAL_METRICS, *FG_KEYS, *FG_NORM_KEYS, *MASK_AUC_KEYS):
        if f"metrics.val/{key}" not in df:
            df[f"metrics.val/{key}"] = float("nan")
    rank = {k: i for i, k in enumerate(known)}
    df = df.sort_values(
        ["variant", "seed"], key=lambda s: s.map(rank) if s.name == "variant" else s
    )
    # A row run with --set is labelled as modified, never as the paper's; what every run shares
    # is said once, beside the table, rather than in every label.
    tag = df["tags.overrides"] if "tags.overrides" in df else pd.Series("", index=df.index)
    items = [run_overrides(t, preset) for t in tag.fillna("").astype(str)]
    common = tuple(i for i in items[0] if all(i in other for other in items)) if items else ()
    rest = [", ".join(i for i in own if i not in common) for own in items]
    df["variant_label"] = [
        label + (f" [{r}]" if r else "") for label, r in zip(df["variant_label"], rest)
    ]
    row_settings = dict(zip(df["variant"], rest))  # one per row: its seeds share one setting
    commands: tuple[str, ...] = ()
    if len(parents) and "tags.command" in parents and "tags.mlflow.parentRunId" in df:
        used = parents[parents["run_id"].isin(set(df["tags.mlflow.parentRunId"].dropna()))]
        used = used.sort_values("start_time")["tags.command"].dropna().astype(str)
        commands = tuple(dict.fromkeys(_command(c) for c in used))
    return TableRuns(
        exp.name,
        exp.experiment_id,
        table,
        dataset,
        preset,
        df.reset_index(drop=True),
        left_out,
        parent_id,
        digest,
        common,
        commands,
        {v: d for v, d in row_digests.items() if v in set(df["variant"])},
        tuple(v for v in stale if v not in set(df["variant"])),
        tuple(v for v in finished_rows if v not in set(df["variant"]) and v not in stale),
        row_settings,
    )


def _not_current(client: MlflowClient, study: Study, run: Any, preset: str, dataset: str) -> str:
    """Why ``run`` is not its row as ``study`` gives it now ("" when it is, or when its logged
    configuration cannot be read): the keys whose values differ from those the runner would
    train the row with (``study.planned_config`` with the run's own preset, data and ``--set``)."""
    cfg = _logged_config(client, run)
    if cfg is None:
        return ""
    variant = study.row(str(run["variant"]))
    preset = str(run.get("tags.preset") or preset)
    dataset = str(run.get("tags.dataset") or dataset)
    tag = run.get("tags.overrides")
    sets = _sets(tag) if isinstance(tag, str) else None  # None: runs from before the tag
    root, seed = cfg.data.root, cfg.train.seed
    try:
        now = planned_config(variant, preset, dataset, root, sets or {}, seed)
    except (FTNError, ValueError, TypeError):
        if sets is None:
            return ""
        sets = None  # a --set this code cannot read: the study's own keys are still compared
        try:
            now = planned_config(variant, preset, dataset, root, {}, seed)
        except (FTNError, ValueError, TypeError):
            return ""
    was, want = flatten(cfg), flatten(now)
    own = study.config_keys
    if sets is None:
        keys = [k for k in want if k in own and want[k] != was[k]]
    elif setting_hash(now) == setting_hash(cfg):
        keys = []
    else:
        keys = [
            k
            for k in want
            if want[k] != was[k] and setting_hash(override(cfg, {k: want[k]})) != setting_hash(cfg)
        ] or [k for k in want if want[k] != was[k]]
    if not keys:
        return ""
    diffs = "; ".join(f"{k} {_shown(was[k])}, now {_shown(want[k])}" for k in keys[:3]) + (
        "; …" if len(keys) > 3 else ""
    )
    rerun = f"rerun `python ablations/run.py {study.command}` with the options it was run with"
    if all(k in own for k in keys):
        return (
            f"run(s) of row {variant.key} trained with other settings than the study file gives "
            f"it now ({diffs}): {rerun}, to train the row as the file has it"
        )
    return (
        f"run(s) of row {variant.key} trained with another configuration than the row has now "
        f"({diffs}; the study file, the `{preset}` preset or the code's defaults changed since): "
        f"{rerun}, to train it as it is now"
    )


def _shown(value: Any) -> str:
    return f"{value!r}" if isinstance(value, str) else str(value)


_FIELDS = flatten(Config())


def _logged_config(client: MlflowClient, run: Any) -> Config | None:
    """The configuration ``run`` was trained with: from its params when they are complete (a field
    added since keeps the value that did what the code did before it), else from its
    ``config.json``; None when neither can be read."""
    params = {k: run.get(f"params.{k}") for k in _FIELDS}
    if all(isinstance(v, str) or k in ADDED_FIELDS for k, v in params.items()):
        try:
            return override(Config(), {k: v for k, v in params.items() if isinstance(v, str)})
        except (FTNError, ValueError, TypeError):
            pass
    logged = artifact_json(client, run, CONFIG_JSON)
    try:
        return from_dict(logged) if isinstance(logged, dict) else None
    except (FTNError, TypeError, ValueError):
        return None


def _sets(tag: str) -> dict[str, Any]:
    """A run's ``overrides`` tag as the ``--set`` dict the runner had (JSON values decoded, so
    that a ``--params-file`` list reads back)."""
    out: dict[str, Any] = {}
    for item in (i for i in _ITEM.split(tag.strip()) if i):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = json.loads(value.strip())
        except ValueError:
            out[key.strip()] = value.strip()
    return out


OLDER_CODE = "older code: "


def _setting(client: MlflowClient, run: Any) -> str:
    """The run's ``setting_hash`` tag; for a run from before the tag, the hash of its logged
    ``config.json``, or of the run itself when that config no longer hashes to the run's
    ``config_hash`` (older code computed it); "" when neither can be read (the run is kept)."""
    tag = run.get("tags.setting_hash")
    if isinstance(tag, str) and tag:
        return tag
    logged = artifact_json(client, run, CONFIG_JSON)
    if logged is None:
        return ""
    try:
        cfg = from_dict(logged)
    except (FTNError, TypeError, ValueError):
        return ""
    tagged = run.get("tags.config_hash")
    if (
        isinstance(tagged, str)
        and tagged
        and tagged not in (config_hash(cfg), legacy_config_hash(cfg))
    ):
        return f"{OLDER_CODE}{setting_hash(cfg)}"  # the same for each seed, never a current run's
    return setting_hash(cfg)


def _command(text: str) -> str:
    """A parent run's command as a reader can reuse it: the shards of one command are one
    command ("--shard 0/2", "--shard 1/2" → "--shard K/2"), and the options that only say where
    things live (store, data folder, checkpoints) are left out: the data digest names the data."""
    text = re.sub(r"--shard \d+/(\d+)", r"--shard K/\1", text)
    return re.sub(r" --(tracking-uri|root|work-dir)(=| )\S+", "", text)


_ITEM = re.compile(r", (?=[A-Za-z_][\w.]*=)")  # "a.b=1, c.d=x" → items; a value may hold ", "


@functools.cache
def _setting_values(text: str, preset: str) -> frozenset[tuple[str, str]]:
    """``key=value, …`` as (key, the value the configuration takes) pairs; an item that does
    not parse is kept as written."""
    try:
        base = preset_config(preset)
    except FTNError:
        base = None
    out = set()
    for item in (i for i in _ITEM.split(text.strip()) if i):
        key, _, value = (x.strip() for x in item.partition("="))
        try:
            out.add((key, repr(flatten(override(base, {key: value}))[key])))
        except (FTNError, ValueError, TypeError, KeyError, AttributeError):
            out.add((key, value))
    return frozenset(out)


def run_overrides(tag: str, preset: str) -> tuple[str, ...]:
    """A run's ``overrides`` tag as ``key=value`` items, less those the preset now sets to that
    value itself (a setting the preset adopted after the run is no longer a departure)."""
    items = tuple(i for i in _ITEM.split(tag.strip()) if i)
    try:
        base = preset_config(preset)
    except FTNError:  # a preset this code does not know: keep every item
        return items

    def is_default(item: str) -> bool:
        key, _, value = item.partition("=")
        try:
            return override(base, {key.strip(): value.strip()}) == base
        except (FTNError, ValueError, TypeError):
            return False

    return tuple(i for i in items if not is_default(i))


def _search(client: MlflowClient, exp: Experiment, filter_string: str) -> pd.DataFrame:
    """``mlflow.search_runs`` against ``client``'s store (it reads the global tracking URI), its
    ``metrics.*``, ``params.*`` and ``tags.*`` columns sorted by name: MLflow orders them as a
    set iterates, which differs from one process to the next, and the evidence a report ships
    is written in this order."""
    if isinstance(client, Source):
        return client.search(exp, filter_string)
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        df = mlflow.search_runs(
            experiment_ids=[exp.experiment_id],
            filter_string=filter_string,
            output_format="pandas",
            max_results=50000,
        )
        prefixed = df.columns.str.startswith(("metrics.", "params.", "tags."))
        return df[[*df.columns[~prefixed], *sorted(df.columns[prefixed])]]
    except MlflowException as err:
        raise FTNError(f"cannot search runs of {exp.name}: {str(err).splitlines()[0]}") from None
    finally:
        mlflow.set_tracking_uri(previous)


def _first(df: pd.DataFrame, col: str, default: str) -> str:
    if col in df and df[col].notna().any():
        return str(df[col].dropna().iloc[0])
    return default


def metric_history(client: MlflowClient, runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """Long frame (variant, seed, key, step, value) of every logged value of ``keys``."""
    rows = []
    for run in runs.itertuples():
        for key in keys:
            for m in client.get_metric_history(run.run_id, key):
                rows.append((run.variant, run.seed, key, m.step, m.value))
    return pd.DataFrame(rows, columns=["variant", "seed", "key", "step", "value"])


_SCRATCH: list[tempfile.TemporaryDirectory] = []


def _scratch() -> str:
    """One temporary folder per process for artifacts of a remote store, removed at exit
    (MLflow would give each download a folder of its own and never remove it)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="ftn-report-"))
    return _SCRATCH[0].name


def artifact_path(client: MlflowClient, run: Any, name: str) -> Path | None:
    """A local path to the run's artifact ``name`` (no copy for a local store), None if absent."""
    if isinstance(client, Source):
        return client.artifact_path(run, name)
    repo = get_artifact_repository(run.artifact_uri, tracking_uri=client.tracking_uri)
    local = isinstance(repo, LocalArtifactRepository)
    try:
        dst = None if local else tempfile.mkdtemp(dir=_scratch())
        path = Path(repo.download_artifacts(name, dst_path=dst))
    except (MlflowException, OSError):
        return None
    return path if path.exists() else None


def artifact_json(client: MlflowClient, run: Any, name: str) -> dict | None:
    if isinstance(client, Source):
        return client.artifact_json(run, name)
    path = artifact_path(client, run, name)
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def per_query_results(client: MlflowClient, runs: pd.DataFrame) -> dict[tuple[str, int], dict]:
    """``{(variant, seed): per_query arrays}`` of the runs whose ``per_query.npz`` exists
    (runs from before it existed have none: ``python ablations/per_query.py`` adds it)."""
    out = {}
    for run in runs.itertuples():
        arrays = client.per_query(run) if isinstance(client, Source) else per_query(client, run)
        if arrays is not None:
            out[(run.variant, int(run.seed))] = arrays
    return out


def per_query(client: MlflowClient, run: Any) -> dict | None:
    """The arrays of the run's ``per_query.npz``, None if it has none."""
    import numpy as np

    path = artifact_path(client, run, PER_QUERY)
    if path is None:
        return None
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}
