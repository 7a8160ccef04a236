"""A report's evidence: what ``reports/build.py`` read of the MLflow store to build one report
folder, shipped in it (``<report>/evidence/``) so that the folder can be rebuilt byte for byte
without the store (``python reports/build.py --from-evidence``).

``FromStore`` reads the store for the report and keeps every answer; ``write`` puts them in
``evidence/``; ``FromEvidence`` serves them back to the same code. Both are a
``reports.source.Source``. ``evidence/`` holds:

- ``manifest.json``: the experiment, the store as the page names it, the study, how the report
  was built (visual figures, efficiency table, logged to the parent run), the metric histories
  and per-query results read, the visual figures (drawn from the runs' figure data and the
  dataset's images, which are not shipped: kept as they were built, their files with sha256,
  their notes), and each evidence file's sha256;
- ``runs-child.parquet``, ``runs-parent.parquet``: the ``mlflow.search_runs`` frames the report
  read (every child run of any status, every parent run: ids, status, times, params, tags,
  final metrics);
- ``histories.parquet``: the metric histories it draws (run_id, key, step, value, timestamp);
- ``artifacts.json.gz``: the JSON artifacts it read, by run (``metrics.json``,
  ``efficiency.json``; ``config.json`` where the params do not say);
- ``per_query.parquet``: each run's per-query results as the tables and claims use them
  (``index``, ``first_rank``, ``ap``; the rank lists' ``top10`` is drawn into figures kept as
  built, and ``pid``, ``camid``, ``inp`` are not read).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Experiment, ExperimentTag, Metric

from ablations import store
from ablations.study import Study
from ablations.study import load as load_study
from ablations.tracking import git_commit
from ftn_core.errors import FTNError
from reports import load
from reports.source import Source

FORMAT = 2
FOLDER = "evidence"
MANIFEST = "manifest.json"
PER_QUERY_ARRAYS = ("index", "first_rank", "ap")
"""The per-query arrays a report's numbers are computed from (``ablations.intervals``)."""
_COMPRESSION = {"compression": "zstd", "compression_level": 19}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FromStore(Source):
    """The MLflow store, read for one experiment's report; every answer is kept for ``write``."""

    def __init__(
        self,
        client: MlflowClient,
        exp: Experiment,
        study: Study | None,
        visuals: bool,
        cost: bool,
        log: bool,
    ):
        self.client, self.exp, self.study = client, exp, study
        self.tracking_uri = client.tracking_uri
        self.build = {"visuals": visuals, "efficiency": cost, "log": log}
        self.searches: dict[str, pd.DataFrame] = {}
        self.histories: dict[tuple[str, str], list[Metric]] = {}
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.queries: dict[str, dict | None] = {}
        self.kept: dict[str, dict[str, Any]] = {}

    def search(self, exp: Experiment, filter_string: str) -> pd.DataFrame:
        df = load._search(self.client, exp, filter_string)
        self.searches[filter_string] = df.copy()
        return df

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        history = self.client.get_metric_history(run_id, key)
        self.histories[(run_id, key)] = list(history)
        return history

    def artifact_json(self, run: Any, name: str) -> dict | None:
        d = load.artifact_json(self.client, run, name)
        self.artifacts.setdefault(str(run.run_id), {})[name] = copy.deepcopy(d)
        return d

    def artifact_path(self, run: Any, name: str) -> Path | None:
        return load.artifact_path(self.client, run, name)  # figure data: drawn from, not kept

    def per_query(self, run: Any) -> dict | None:
        arrays = load.per_query(self.client, run)
        self.queries[str(run.run_id)] = arrays
        return arrays

    def as_is(self, rep: Any, part: str, draw: Callable[[], None]) -> None:
        files, notes, figures = set(os.listdir(rep.folder)), len(rep.notes), set(rep.figures)
        draw()
        new = sorted(set(os.listdir(rep.folder)) - files)
        rep.as_is[part] = new
        kept = {
            "files": {name: sha256(rep.folder / name) for name in new},
            "notes": rep.notes[notes:],
            "figures": {k: [p.name for p in v] for k, v in rep.figures.items() if k not in figures},
        }
        self.kept[part] = kept

    def write(self, rep: Any, log_notes: list[str] | tuple[str, ...] = ()) -> Path:
        """``rep.folder/evidence/`` (replaced whole); ``log_notes``: what logging the report to
        the parent run added to its page (it failed)."""
        out = rep.folder / FOLDER
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        searches = {}
        for i, (filter_string, df) in enumerate(self.searches.items()):
            kind = (
                filter_string.split("'")[1] if filter_string.startswith("tags.kind = '") else str(i)
            )
            searches[filter_string] = f"runs-{kind}.parquet"
            df.to_parquet(out / searches[filter_string], index=False, **_COMPRESSION)
        rows = [
            (run_id, key, m.step, m.value, m.timestamp)
            for (run_id, key), history in self.histories.items()
            for m in history
        ]
        pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"]).astype(
            {"step": "int64", "value": "float64", "timestamp": "int64"}
        ).to_parquet(out / "histories.parquet", index=False, **_COMPRESSION)
        read: dict[str, list[str]] = {}
        for run_id, key in self.histories:
            read.setdefault(key, []).append(run_id)
        text = json.dumps(self.artifacts, separators=(",", ":"))
        (out / "artifacts.json.gz").write_bytes(gzip.compress(text.encode(), 9, mtime=0))
        dtypes, frames = {}, []
        for run_id, arrays in self.queries.items():
            kept = {k: np.asarray(arrays[k]) for k in PER_QUERY_ARRAYS if arrays and k in arrays}
            dtypes[run_id] = (
                {k: str(a.dtype) for k, a in kept.items()} if arrays is not None else None
            )
            if kept:
                frames.append(pd.DataFrame({"run_id": run_id, **kept}))
        columns = ["run_id", *PER_QUERY_ARRAYS]
        pq = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        pq.reindex(columns=columns).to_parquet(
            out / "per_query.parquet", index=False, **_COMPRESSION
        )
        exp = self.exp
        manifest = {
            "format": FORMAT,
            "about": "What `python reports/build.py` read of the MLflow store to build this folder; "
            "`python reports/build.py --from-evidence` rebuilds the folder from it "
            "(docs/tracking-and-reports.md).",
            "experiment": {
                "experiment_id": exp.experiment_id,
                "name": exp.name,
                "artifact_location": exp.artifact_location,
                "lifecycle_stage": exp.lifecycle_stage,
                "tags": dict(exp.tags or {}),
                "creation_time": exp.creation_time,
                "last_update_time": exp.last_update_time,
            },
            "tracking_uri": self.tracking_uri,
            "default_store": self.tracking_uri == store.DEFAULT_TRACKING_URI,
            "in_repository": rep.in_repository,
            "study": None
            if self.study is None
            else {"name": self.study.name, "path": self.study.path, "digest": self.study.digest},
            "code": git_commit(),
            "build": {**self.build, "logged": rep.logged, "log_notes": list(log_notes)},
            "searches": searches,
            "histories": read,
            "per_query": dtypes,
            "as_is": self.kept,
        }
        manifest["files"] = {p.name: sha256(p) for p in sorted(out.iterdir())}
        (out / MANIFEST).write_text(
            json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return out


class FromEvidence(Source):
    """A report folder's ``evidence/``, answering the reads its build made of the store."""

    def __init__(self, report: Path):
        self.report = report
        folder = report / FOLDER
        try:
            m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise FTNError(
                f"{folder / MANIFEST}: cannot read it ({err}): rebuild the report from its store"
            ) from None
        if m.get("format") != FORMAT:
            raise FTNError(
                f"{folder / MANIFEST}: evidence format {m.get('format')}, this code "
                f"reads {FORMAT}: rebuild the report from its store"
            )
        for name, digest in m["files"].items():
            if not (folder / name).is_file() or sha256(folder / name) != digest:
                raise FTNError(
                    f"{folder / name} is missing or is not the file the manifest lists "
                    f"(sha256): restore it (git checkout) or rebuild from the store"
                )
        self.manifest = m
        e = m["experiment"]
        self.experiment = Experiment(
            e["experiment_id"],
            e["name"],
            e["artifact_location"],
            e["lifecycle_stage"],
            [ExperimentTag(k, v) for k, v in e["tags"].items()],
            e["creation_time"],
            e["last_update_time"],
        )
        self.tracking_uri = store.DEFAULT_TRACKING_URI if m["default_store"] else m["tracking_uri"]
        self.in_repository = m["in_repository"]
        self.build = m["build"]
        self.searches = {f: pd.read_parquet(folder / name) for f, name in m["searches"].items()}
        self.histories: dict[tuple[str, str], list[Metric]] = {
            (run_id, key): [] for key, runs in m["histories"].items() for run_id in runs
        }
        for r in pd.read_parquet(folder / "histories.parquet").itertuples(index=False):
            self.histories[(r.run_id, r.key)].append(Metric(r.key, r.value, r.timestamp, r.step))
        self.artifacts = json.loads(gzip.decompress((folder / "artifacts.json.gz").read_bytes()))
        pq = pd.read_parquet(folder / "per_query.parquet")
        rows = {run_id: g for run_id, g in pq.groupby("run_id", sort=False)}
        self.queries = {
            run_id: None
            if dtypes is None
            else {k: rows[run_id][k].to_numpy(dtype=t) for k, t in dtypes.items()}
            for run_id, dtypes in m["per_query"].items()
        }

    def _lacks(self, what: str) -> FTNError:
        return FTNError(
            f"{self.report / FOLDER} does not hold {what}, which this code reads: "
            f"the evidence was written by other code; rebuild the report from its store"
        )

    def search(self, exp: Experiment, filter_string: str) -> pd.DataFrame:
        if filter_string not in self.searches:
            raise self._lacks(f"the runs of {filter_string!r}")
        return self.searches[filter_string].copy()

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        if (run_id, key) not in self.histories:
            raise self._lacks(f"the history of {key} of run {run_id}")
        return list(self.histories[(run_id, key)])

    def artifact_json(self, run: Any, name: str) -> dict | None:
        kept = self.artifacts.get(str(run.run_id), {})
        if name not in kept:
            raise self._lacks(f"{name} of run {run.run_id}")
        return copy.deepcopy(kept[name])

    def artifact_path(self, run: Any, name: str) -> Path | None:
        raise self._lacks(f"{name} of run {run.run_id} (only JSON artifacts are shipped)")

    def per_query(self, run: Any) -> dict | None:
        if str(run.run_id) not in self.queries:
            raise self._lacks(f"the per-query results of run {run.run_id}")
        arrays = self.queries[str(run.run_id)]
        return None if arrays is None else {k: a.copy() for k, a in arrays.items()}

    def as_is(self, rep: Any, part: str, draw: Callable[[], None]) -> None:
        kept = self.manifest["as_is"].get(part)
        if kept is None:
            raise self._lacks(f"the {part} part")
        for name, digest in kept["files"].items():
            src = self.report / name
            if not src.is_file() or sha256(src) != digest:
                raise FTNError(
                    f"{src} is missing or is not the file its evidence lists (sha256): "
                    f"it cannot be drawn again without the runs' figure data; restore it "
                    f"(git checkout) or rebuild the report from its store"
                )
            shutil.copyfile(src, rep.folder / name)
        rep.as_is[part] = list(kept["files"])
        rep.notes += kept["notes"]
        rep.figures.update({k: [rep.folder / n for n in v] for k, v in kept["figures"].items()})

    def study(self, given: Study | None) -> Study | None:
        """The study the report was built for: ``given`` (``--study``), else the study file the
        manifest names, read again as it is now (its path written as it was); None for a paper
        table built with ``--table``."""
        was = self.manifest["study"]
        if was is None:
            return given
        if given is not None:
            if given.name != was["name"]:
                raise FTNError(f"{self.report}: built for study {was['name']}, not {given.name}")
            study = given
        else:
            path = Path(was["path"])  # a relative one: the repository's, whatever the folder
            in_repo = store.REPO / path
            found = in_repo if not path.is_absolute() and in_repo.is_file() else path
            study = dataclasses.replace(load_study(found), path=was["path"])
        if study.digest != was["digest"]:
            print(
                f"{self.report}: the study file {was['path']} has changed since the evidence was "
                f"written (digest {was['digest']}, now {study.digest}): the report follows the "
                f"file as it is now",
                file=sys.stderr,
            )
        return study

    def finish(self, rep: Any) -> None:
        """The logging to the parent run as it went, and the evidence itself, into ``rep.folder``
        (its README is to be written again)."""
        rep.logged = self.build["logged"]
        rep.notes += self.build["log_notes"]
        shutil.copytree(self.report / FOLDER, rep.folder / FOLDER)
