"""One tiny run trained for a test module (the tiny preset on the session's synthetic data)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from ablations import run as run_cli


def train_tiny(
    tmp: Path, data_root: Path, variant: str = "g", *extra: str, dataset: str = "synthetic"
):
    """Train ``variant`` once into a store under ``tmp``: (tracking URI, the child run)."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert (
        run_cli.main(
            [
                "--table",
                "2",
                "--preset",
                "tiny",
                "--variants",
                variant,
                "--tracking-uri",
                uri,
                "--work-dir",
                str(tmp / "ckpt"),
                "--root",
                str(data_root),
                "--dataset",
                dataset,
                *extra,
            ]
        )
        == 0
    )
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"table2-{dataset}-tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    return uri, run
