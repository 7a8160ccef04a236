"""The MLflow store: where it is, its checks and creation (a half-created one made again, one of
another schema refused), experiment names (written and read back), finding and copying runs, run
ownership (leases), the checkpoint folder and the names of a run's artifacts.
``ablations.tracking`` logs a run's metrics and artifacts into it; ``reports`` open it read-only
(``connect``) and never create one.

Store layout: ``sqlite:///<repo>/mlruns/mlflow.db`` (MLflow's plain-folder file store raises an
error since 3.13) with artifacts under ``<repo>/mlruns/artifacts/<experiment>``. One experiment
per study × dataset × preset (``table2-synthetic-cpu``, ``study-<name>-synthetic-cpu``), one parent
run per invocation, one child run per variant × seed named ``<variant>-s<seed>``.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import functools
import hashlib
import logging
import os
import re
import socket
import sqlite3
import sys
import tempfile
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
from mlflow.entities import Experiment, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ftn_core.errors import FTNError, check_writable_dir

REPO = Path(__file__).resolve().parents[1]
MLRUNS = REPO / "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{MLRUNS / 'mlflow.db'}"

# What the runner writes and the reports read: artifact files of a child run, and run kinds.
CONFIG_JSON = "config.json"
"""Artifact: the run's resolved configuration (``ftn_core.config.to_dict``)."""
METRICS_JSON = "metrics.json"
"""Artifact: ``{"metrics": final metrics, "cmc": the CMC curve}``."""
MODEL_PT = "model.pt"
"""Artifact: the final model's state dict."""
PER_QUERY = "per_query.npz"
"""Artifact: each valid query's index, pid, camid, AP, first-match rank, INP and top-10 gallery
indices (``ablations.tracking.per_query_arrays``)."""
CMC_PNG = "cmc.png"
EFFICIENCY = "efficiency.json"
"""Artifact: the final model's parameters, MACs, FLOPs and CPU latency, with the machine that
timed them, and CFA's and PAM-CAM's cost (``ablations.measures``)."""
FIGURE_DATA = "figure_data.npz"
"""Artifact: the arrays a report's visual figures are drawn from (``ftn_core.figure_data``)."""
CHILD_RUNS = "tags.kind = 'child'"
"""Filter: one run per variant × seed (``tags.kind``; a command's parent run has ``parent``)."""
PARENT_RUNS = "tags.kind = 'parent'"
FINISHED_CHILD_RUNS = f"{CHILD_RUNS} and attributes.status = 'FINISHED'"


def experiment_prefix(study: int | str) -> str:
    """The start of a study's experiment names: ``table{N}`` for the paper's Table N (an int),
    ``study-{name}`` for a study file's (its name)."""
    return f"table{study}" if isinstance(study, int) else f"study-{study}"


def experiment_name(study: int | str, dataset: str, preset: str) -> str:
    """The experiment of a study on one dataset and preset: ``table{N}-{dataset}-{preset}`` or
    ``study-{name}-{dataset}-{preset}`` (``parse_experiment`` reads it back)."""
    return f"{experiment_prefix(study)}-{dataset}-{preset}"


class ExperimentName(NamedTuple):
    """An experiment name read back (``parse_experiment``): a paper table's or a study's."""

    table: int | None
    """The paper table's number; None for a study file's experiment."""
    study: str | None
    """The study file's name; None for a paper table's experiment."""
    dataset: str
    preset: str


_TABLE_NAME = re.compile(r"^table(\d+)-(.+)-([^-]+)$")  # a dataset may hold '-', a preset not
_STUDY_NAME = re.compile(r"^study-(.+)-([^-]+)-([^-]+)$")  # a study's name may hold '-'


RUN_TAGS = {
    "kind": "child (one training run) or parent (one invocation of run.py)",
    "table": "the paper table's number ('' for a study file's run)",
    "study": "the study's name",
    "study_hash": "parent: the study file's hash (its text is the artifact study.toml)",
    "variant": "the row's key",
    "variant_label": "the row's label",
    "seed": "the run's seed",
    "preset": "the preset it was trained with",
    "dataset": "the dataset it was trained and tested on",
    "command": "parent: the command line",
    "git_commit": "the code's commit (the last to touch the run)",
    "machine": "the machine (the last to touch the run)",
    "config_hash": "the hash of what the run computes (ftn_core.config.config_hash)",
    "setting_hash": "config_hash with the settings that change no number left out",
    "data_digest": "the digest of the files it read (ftn_core.data.digest)",
    "init_digest": "the digest of the weights file S-Enc started from ('' for a random start)",
    "overrides": "the --set it was trained with, on top of its row",
    "seed_rule": "the --until-halfwidth rule that chose its seed",
    "skipped_images": "how many unreadable images --skip-bad-images left out",
    "precision": "the precision it trained in (fp32, bf16 autocast …)",
    "reused_from": "the run it was copied from instead of trained again",
    "error": "why it failed or was interrupted",
    "pretrain_hash": "a pre-training run's configuration hash",
    "backbone_digest": "the digest of the backbone weights a pre-training run wrote",
}
"""Every run tag the runner and pre-training write and the reports read, with its meaning: the
store's names, in one place (a test checks that every ``tags.<name>`` the code reads is here)."""


EXPERIMENT_TAGS = ("ftn.table", "ftn.study", "ftn.dataset", "ftn.preset")
"""The tags each study experiment carries since it was created (``ExperimentName``'s fields), so
that its parts read back whole where the name alone cannot say where they end: a study named
``mask`` on the dataset ``my-data`` and one named ``mask-my`` on ``data`` write the same name."""


def experiment_tags(parts: ExperimentName) -> dict[str, str]:
    """``EXPERIMENT_TAGS`` of ``parts`` ("" for a part that is None)."""
    return {k: "" if v is None else str(v) for k, v in zip(EXPERIMENT_TAGS, parts)}


def experiment_parts(exp: Any) -> ExperimentName | None:
    """The parts of an MLflow experiment: from its ``EXPERIMENT_TAGS`` where it has them and they
    write its name again, else read from its name (``parse_experiment``; experiments created
    before the tags)."""
    tags = getattr(exp, "tags", None) or {}
    if all(k in tags for k in EXPERIMENT_TAGS):
        table, study, dataset, preset = (tags[k] for k in EXPERIMENT_TAGS)
        if table.isdigit() or not table:
            parts = ExperimentName(int(table) if table else None, study or None, dataset, preset)
            named = parts.table if parts.table is not None else parts.study
            if named is not None and experiment_name(named, dataset, preset) == exp.name:
                return parts
    return parse_experiment(exp.name)


def _parts_text(parts: ExperimentName) -> str:
    what = f"Table {parts.table}" if parts.table is not None else f"study {parts.study}"
    return f"{what} on {parts.dataset} ({parts.preset} preset)"


def parse_experiment(name: str) -> ExperimentName | None:
    """The parts of an experiment name ``experiment_name`` wrote; None for any other name. A
    study's name takes every '-' but the last two, so a dataset read back from a study's
    experiment name never holds one (``experiment_parts`` reads the tags first)."""
    if m := _TABLE_NAME.match(name):
        return ExperimentName(int(m.group(1)), None, m.group(2), m.group(3))
    if m := _STUDY_NAME.match(name):
        return ExperimentName(None, m.group(1), m.group(2), m.group(3))
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held through ``path``, a file that exists only while someone holds or
    waits for it: the holder removes it before releasing, and a waiter that wakes up on a
    removed file starts again on the current one (so no ``.lock`` is left behind)."""
    while True:
        fh = open(path, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            fh.close()
            raise
        if current:
            break
        fh.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        fh.close()  # releases the lock


SQLITE_HEADER = b"SQLite format 3\x00"
PROBE_TIMEOUT_S = 10.0
"""How long a tracking server (or database host) may take to accept a connection."""


def _short(err: BaseException) -> str:
    """The first line of an exception, shortened at a word boundary."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return textwrap.shorten(text, 160, placeholder=" …")


@functools.lru_cache(maxsize=1)
def _schema_head() -> str | None:
    """The schema revision this MLflow expects (its newest Alembic migration), if readable."""
    try:
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        return ScriptDirectory.from_config(_get_alembic_config("sqlite://")).get_current_head()
    except Exception:  # an MLflow whose internals moved: let MLflow itself judge the schema
        return None


def sqlite_state(db: Path) -> tuple[str, int]:
    """What the file at ``db`` is: ``missing`` | ``not-sqlite`` | ``current`` | ``stale``
    (tables of another schema revision, or half-created by an interrupted start) and how many
    runs it holds."""
    if not db.exists() or db.stat().st_size == 0:
        return "missing", 0
    with open(db, "rb") as fh:
        if fh.read(16) != SQLITE_HEADER:
            return "not-sqlite", 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        version = (
            con.execute("SELECT version_num FROM alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
    except sqlite3.DatabaseError:
        return "not-sqlite", 0
    finally:
        con.close()
    head = _schema_head()
    if version is not None and (head is None or version[0] == head):
        return "current", runs
    return "stale", runs


def _create_sqlite_store(db: Path) -> None:
    """Create the schema in a temporary file beside ``db`` and rename it into place, so an
    interrupted creation never leaves a half-made store at ``db``."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    fd, tmp = tempfile.mkstemp(prefix=f".{db.name}.creating-", dir=db.parent)
    os.close(fd)
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, db)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lock_path(db: Path) -> Path:
    return db.with_suffix(".lock")


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


def _check_sqlite_folder(uri: str) -> None:
    """The store's folder (or the nearest folder above it that exists) and the store itself
    must be writable; probed, nothing is created."""
    db = _sqlite_path(uri)
    check_writable_dir(
        db.parent, "--tracking-uri", f"cannot write the tracking store {db.name} there"
    )
    problem = (
        "it is a folder"
        if db.is_dir()
        else "the file is read-only"
        if db.exists() and not os.access(db, os.W_OK)
        else None
    )
    if problem:
        raise FTNError(
            f"cannot write the tracking store {uri} ({problem}); fix the permissions "
            f"or pass another --tracking-uri"
        )


def _refuse(uri: str, state: str, runs: int) -> None:
    """One line for a file at the store's path that cannot be used as the store."""
    db = _sqlite_path(uri)
    if state == "not-sqlite":
        raise FTNError(
            f"--tracking-uri {uri}: {db} is not an MLflow store (not a SQLite database); "
            f"move it away or pass another --tracking-uri"
        )
    if state == "stale" and runs:
        raise FTNError(
            f"--tracking-uri {uri}: the store's schema is not the one this MLflow "
            f"({mlflow.__version__}) uses; back it up, then run: mlflow db upgrade {uri}"
        )


def _prepare_sqlite(uri: str) -> None:
    """Check the folder is writable, then (under the lock) create a missing store, recreate
    one left half-created by an interrupted first start, and refuse a file that is no store
    (``check_uri`` has checked the rest before anything is created)."""
    db = _sqlite_path(uri)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FTNError(
            f"cannot write the tracking store {uri} ({_short(err)}); fix the permissions "
            f"or pass another --tracking-uri"
        ) from None
    with _file_lock(_lock_path(db)):
        for leftover in db.parent.glob(f".{db.name}.creating-*"):  # from an interrupted creation
            leftover.unlink(missing_ok=True)
        state, runs = sqlite_state(db)
        _refuse(uri, state, runs)
        if state == "stale":  # no runs: a store whose creation was interrupted
            backup = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(db, backup)
            print(
                f"note: {db} was left half-created by an interrupted start and holds no runs; "
                f"recreated it (the old file is {backup.name})",
                file=sys.stderr,
            )
        if state != "current":
            _create_sqlite_store(db)


def _probe_host(uri: str) -> None:
    """Fail fast with one line when a server or database host does not accept connections."""
    parsed = urllib.parse.urlsplit(uri)
    if not parsed.hostname:
        return
    default = {"http": 80, "https": 443, "mysql": 3306}.get(parsed.scheme.split("+")[0], 5432)
    try:
        port = parsed.port or default
        with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError) as err:
        raise FTNError(
            f"cannot reach the tracking store {uri} ({_short(err)}); start the server "
            f"(e.g. mlflow server --port {parsed.port or 5000}) or pass another "
            f"--tracking-uri"
        ) from None


DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "pyodbc": "pyodbc",
}


def _check_driver(uri: str) -> None:
    """A database URL whose SQLAlchemy driver is not installed: one line naming the package."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(uri).get_dialect().import_dbapi()
    except ArgumentError:
        raise FTNError(
            f"--tracking-uri {uri}: not a valid database URL "
            f"(e.g. postgresql://user:password@host:5432/mlflow)"
        ) from None
    except ImportError as err:
        module = getattr(err, "name", None) or "its driver"
        package = DRIVER_PACKAGES.get(module, module)
        raise FTNError(
            f"--tracking-uri {uri}: its database driver is not installed ({_short(err)}); "
            f"pip install '{package}', or name another driver, e.g. postgresql+psycopg2://"
        ) from None


SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def _unsupported(uri: str) -> FTNError:
    """One line for a URI of no scheme the suite can store runs in, with the likely fix."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme:
        close = difflib.get_close_matches(scheme.split("+")[0].lower(), SCHEMES, n=1, cutoff=0.6)
        hint = (
            f"did you mean {close[0]}://{uri.split('://', 1)[1]}?"
            if close
            else "use sqlite:///path/to/mlflow.db or http://host:port"
        )
        return FTNError(f"--tracking-uri {uri}: unknown scheme '{scheme}'; {hint}")
    example = (
        f"sqlite:///{Path(uri).resolve()}" if uri.endswith(".db") else "sqlite:///path/to/mlflow.db"
    )
    return FTNError(
        f"--tracking-uri {uri}: a path is not a store (MLflow 3 no longer keeps runs in a "
        f"folder); use {example} or http://host:port"
    )


def check_uri(uri: str | None = None) -> str:
    """Everything about the store ``uri`` that can be checked without creating anything (its
    scheme, a SQLite store's folder and file, a database driver, a server that answers), so a
    command refuses a bad store before it reads data or trains. Returns the URI."""
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        _check_sqlite_folder(uri)
        _refuse(uri, *sqlite_state(_sqlite_path(uri)))
    elif uri.startswith(("http://", "https://")):
        _probe_host(uri)
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_driver(uri)
        _probe_host(uri)
    elif not uri.startswith("databricks"):
        raise _unsupported(uri)
    return uri


def open_store(uri: str | None = None, create: bool = True) -> MlflowClient | None:
    """Point MLflow at ``uri`` (default: the repo's SQLite file) and check it answers.

    A new SQLite store is created once, under a file lock beside the database, in a temporary
    file renamed into place: processes starting together all succeed, and Ctrl-C during
    creation leaves nothing half-made. Every failure is one line (``FTNError``). With
    ``create=False`` (``--dry-run``) nothing is created: a SQLite store that does not exist yet
    gives None.
    """
    uri = check_uri(uri)
    logging.getLogger("mlflow").setLevel(
        logging.WARNING
    )  # no INFO lines (store creation, metrics threads)
    if uri.startswith("sqlite:///"):
        if not create and sqlite_state(_sqlite_path(uri))[0] != "current":
            return None  # missing, or half-created with no runs: a real start creates it
        if create:
            _prepare_sqlite(uri)
    mlflow.set_tracking_uri(uri)
    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
    saved = {k: os.environ.get(k) for k in retries}
    os.environ.update(retries)  # the first request fails fast; later ones keep MLflow's retries
    lock = (
        _file_lock(_lock_path(_sqlite_path(uri)))
        if uri.startswith("sqlite:///") and create
        else contextlib.nullcontext()
    )
    try:
        with lock:  # MLflow writes the default experiment on first open: one process at a time
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
    except ModuleNotFoundError as err:
        raise FTNError(
            f"cannot open the tracking store {uri}: its driver is not installed "
            f"({_short(err)}); pip install it (e.g. psycopg2-binary, pymysql)"
        ) from None
    except Exception as err:  # a server that is not MLflow, a read-only database, …
        raise FTNError(
            f"cannot open the tracking store {uri} ({_short(err)}); check the path or "
            f"server, or pass another --tracking-uri"
        ) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return client


def get_or_create_experiment(
    client: MlflowClient, name: str, parts: ExperimentName | None = None
) -> str:
    """The id of experiment ``name``, created if missing; ``parts``: the study, dataset and preset
    it is for, kept as its ``EXPERIMENT_TAGS`` (added to an older experiment that lacks them). A
    deleted one stays deleted (its runs would come back into every report): refused, with how to
    restore or purge it."""
    tags = experiment_tags(parts) if parts is not None else {}
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise FTNError(deleted_experiment(client, exp))
        was = (
            experiment_parts(exp)
            if all(k in exp.tags for k in EXPERIMENT_TAGS)
            else _parts_of_runs(client, exp, parts)
        )
        if parts is not None and was is not None and was != parts:
            raise FTNError(
                f"experiment {name} holds the runs of {_parts_text(was)}, not of "
                f"{_parts_text(parts)}: the two write the same name; rename the study file's "
                f"`name`"
            )
        for key, value in tags.items():
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:///"):
        db = Path(client.tracking_uri[len("sqlite:///") :])
        artifact_location = (db.parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=tags)
    except MlflowException:  # another worker created it first
        if client.get_experiment_by_name(name) is None:
            raise
        return get_or_create_experiment(client, name, parts)


def _parts_of_runs(
    client: MlflowClient, exp: Any, parts: ExperimentName | None
) -> ExperimentName | None:
    """What an experiment made before ``EXPERIMENT_TAGS`` holds, from one of its child runs'
    tags (``study``, ``dataset``, ``preset``); None without such a run or ``parts`` to compare."""
    if parts is None:
        return None
    found = client.search_runs(
        [exp.experiment_id],
        "tags.kind = 'child'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if not found:
        return None
    tags = found[0].data.tags
    study = tags.get("study", "")
    if not study or "dataset" not in tags or "preset" not in tags:
        return None
    paper = re.fullmatch(r"table(\d+)", study) and tags.get("table", "") == study[5:]
    return ExperimentName(
        int(study[5:]) if paper else None,
        None if paper else study,
        tags["dataset"],
        tags["preset"],
    )


def deleted_experiment(client: MlflowClient, exp: Any) -> str:
    """One line for a deleted experiment that a command would write into."""
    uri = client.tracking_uri
    return (
        f"experiment {exp.name} was deleted (its runs too); restore it with `mlflow experiments restore "
        f"--experiment-id {exp.experiment_id}` (MLFLOW_TRACKING_URI={uri}), or purge it for good with "
        f"`mlflow gc --backend-store-uri {uri} --experiment-ids {exp.experiment_id}`, then run again"
    )


def study_experiments(client: MlflowClient, study: Any) -> list[Experiment]:
    """The experiments of ``study`` (an ``ablations.study.Study``, which names its experiments
    through this module), sorted by name: those whose parts (``experiment_parts``: tags, else
    the name) name this study and write their name again."""

    def of_study(exp: Experiment) -> bool:
        parts = experiment_parts(exp)
        return (
            parts is not None
            and (parts.table, parts.study)
            == ((study.table, None) if study.is_paper else (None, study.name))
            and study.experiment(parts.dataset, parts.preset) == exp.name
        )

    found = [e for e in client.search_experiments(max_results=1000) if of_study(e)]
    if not found:
        raise FTNError(
            f"no experiment of study {study.name} in the store: run "
            f"`python ablations/run.py --study {study.path}` first"
        )
    return sorted(found, key=lambda e: e.name)


def checkpoint_dir(uri: str) -> Path:
    """The default checkpoint folder of a store: ``checkpoints`` beside a SQLite store (so each
    store has its own), the repository's ``mlruns/checkpoints`` for a server. Checkpoints are
    named by run id, so even a shared folder never gives one store's run another's weights."""
    return (
        _sqlite_path(uri).parent / "checkpoints"
        if uri.startswith("sqlite:///")
        else MLRUNS / "checkpoints"
    )


def lease_dir(uri: str, work_dir: Path) -> Path:
    """Where the leases of a store's runs live: beside a SQLite store; for a server, in the
    checkpoint folder under the store's address (on a shared file system for several machines)."""
    if uri.startswith("sqlite:///"):
        db = _sqlite_path(uri)
        return db.parent / f"{db.name}.leases"
    return Path(work_dir) / "leases" / hashlib.sha256(uri.encode()).hexdigest()[:12]


@contextlib.contextmanager
def run_lease(folder: Path, key: str) -> Iterator[str | None]:
    """Hold the lease of one run, named by its identity ``key``, while the block trains it.

    Yields None when this process holds it, else who does ("pid 123 on host, since 10:42"):
    a run being trained by a live process is never resumed or started again by another. The
    lease is an exclusive ``flock`` on a file, so it ends with its process, however that ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".lease")
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            yield holder
            return
        try:
            current = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        fh.close()  # the file was replaced while we waited for it: take the current one
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%H:%M:%S')} ({key})\n"
        )
        fh.flush()
        yield None
    finally:
        fh.close()  # releases the lock; the file stays (removing it would race a waiting process)


FINAL_METRIC = "val/rank1"
"""Logged by every run's final evaluation: a FINISHED run without it never got there."""


def completed(run: Run) -> bool:
    """Whether a run is done: FINISHED with its final evaluation. A run interrupted while its
    end was being written could be left FINISHED without it (MLflow's exit hook ends a run still
    active as FINISHED; ``tracking.end_unfinished_runs_killed`` now prevents it): such a run is
    resumed, never reported or copied."""
    return run.info.status == "FINISHED" and FINAL_METRIC in run.data.metrics


def child_runs(
    client: MlflowClient, experiment_id: str
) -> dict[tuple[str, int, str, str, str], Run]:
    """Child runs keyed by (variant, seed, config hash, data digest, init digest): a FINISHED one
    wins, else the newest. A run from before data digests has "" and matches no planned run; a
    run from before init digests has "", as a scratch run has."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=CHILD_RUNS,
        order_by=["attributes.start_time DESC"],
        max_results=50000,
    )
    out: dict[tuple[str, int, str, str, str], Run] = {}
    for run in runs:
        tags = run.data.tags
        key = (
            tags.get("variant", ""),
            int(tags.get("seed", -1)),
            tags.get("config_hash", ""),
            tags.get("data_digest", ""),
            tags.get("init_digest", ""),
        )
        if key not in out or (completed(run) and not completed(out[key])):
            out[key] = run
    return out


def finished_by_config(client: MlflowClient) -> dict[tuple[str, str, str, str], Run]:
    """The FINISHED child runs of every experiment keyed by (config hash, data digest, init
    digest, precision), the newest of each (runs copied from another run are skipped: their
    source is found; a run without the precision tag, from older code, has "")."""
    exps = [e.experiment_id for e in client.search_experiments(max_results=50000)]
    out: dict[tuple[str, str, str, str], Run] = {}
    for i in range(0, len(exps), 100):  # search_runs takes at most 100 experiments at a time
        runs = client.search_runs(
            exps[i : i + 100],
            filter_string=FINISHED_CHILD_RUNS,
            order_by=["attributes.start_time DESC"],
            max_results=50000,
        )
        for run in runs:
            tags = run.data.tags
            key = (
                tags.get("config_hash", ""),
                tags.get("data_digest", ""),
                tags.get("init_digest", ""),
                tags.get("precision", ""),
            )
            if all(key[:2]) and "reused_from" not in tags and key not in out and completed(run):
                out[key] = run
    return out


def copy_run(
    client: MlflowClient, source: Run, experiment_id: str, name: str, tags: dict[str, str]
) -> str:
    """A FINISHED copy of the run ``source`` in ``experiment_id``: its params, the history of
    every metric and its artifacts, with ``tags`` and ``reused_from`` = the source's id. Returns
    the new run's id (a copy interrupted half-way is marked FAILED, so it is never reported)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={
            **tags,
            "reused_from": source.info.run_id,
            "reused_from_experiment": source.info.experiment_id,
        },
    )
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in source.data.params.items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        metrics = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for key in source.data.metrics
            for m in client.get_metric_history(source.info.run_id, key)
        ]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=source.info.run_id, dst_path=tmp, tracking_uri=client.tracking_uri
            )
            client.log_artifacts(run_id, local)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _readable_uri(uri: str | None) -> str:
    """The store to read; a SQLite file that does not exist is an error (never create one)."""
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        path = _sqlite_path(uri)
        if not path.is_file():
            raise FTNError(
                f"no tracking store at {path}: run `python ablations/run.py --table 2` "
                f"first, or pass --tracking-uri"
            )
    elif "://" not in uri:
        raise FTNError(
            f"--tracking-uri {uri}: expected sqlite:///path/to/mlflow.db or http://host:port"
        )
    return uri


def connect(uri: str | None) -> tuple[MlflowClient, str]:
    """The store ``uri`` (default: the repo's) opened for reading, as the reports do: nothing
    is created or migrated; a store that is missing or does not answer is one line."""
    uri = _readable_uri(uri)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except MlflowException as err:
        raise FTNError(
            f"cannot read the tracking store {uri}: {str(err).splitlines()[0][:200]}"
        ) from None
    return client, uri
