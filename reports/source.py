"""Where a report's input comes from: one interface for every read a report makes of the
tracking store, backed by the store itself or by the evidence a report folder ships
(``reports.evidence``: ``FromStore`` keeps what it reads, ``FromEvidence`` serves it back).

``reports.load``'s readers (``_search``, ``artifact_json``, ``artifact_path``,
``per_query_results``) and ``metric_history`` hand a ``Source`` its own reads; given a bare
``MlflowClient`` they read the store as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Experiment, Metric


class Source:
    """The reads of one experiment's report (the MLflow client's names where it has them)."""

    tracking_uri: str
    """The store the runs were read from (what the report's UI line names)."""
    in_repository: bool | None = None
    """Whether the report was built into the repository's ``reports/`` (its page then says that a
    clone lacks the runs); None: judged from where it is written."""

    def search(self, exp: Experiment, filter_string: str) -> pd.DataFrame:
        """``mlflow.search_runs`` of ``exp`` with ``filter_string``."""
        raise NotImplementedError

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        raise NotImplementedError

    def artifact_json(self, run: Any, name: str) -> dict | None:
        """The run's JSON artifact ``name``, None if absent or unreadable."""
        raise NotImplementedError

    def artifact_path(self, run: Any, name: str) -> Path | None:
        """A local path to the run's artifact ``name`` (its figure data), None if absent."""
        raise NotImplementedError

    def per_query(self, run: Any) -> dict | None:
        """The run's ``per_query.npz`` arrays, None if it has none."""
        raise NotImplementedError

    def as_is(self, rep: Any, part: str, draw: Callable[[], None]) -> None:
        """A part of the report drawn from what only the store holds (figure data, images):
        ``draw()`` it from the store, or put back what it drew, as it was."""
        raise NotImplementedError
