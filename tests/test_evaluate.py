"""ablations/evaluate.py: a finished run evaluated again, on its own split or another dataset."""

from __future__ import annotations

import pytest
from fixtures_layouts import GALLERY, QUERY, TRAIN, write_market_layout
from mlflow.tracking import MlflowClient

from ablations import evaluate
from ablations import run as run_cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("eval")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert run_cli.main(["--table", "2", "--preset", "tiny", "--variants", "g", "--tracking-uri", uri,
                         "--work-dir", str(tmp / "ckpt"), "--root", str(data_root)]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table2-synthetic-tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.kind = 'child'")
    return uri, run, tmp


def _evaluations(uri, run):
    client = MlflowClient(uri)
    return client.search_runs([run.info.experiment_id], f"tags.source_run = '{run.info.run_id}'")


@pytest.mark.slow
def test_own_split_reproduces_the_logged_metrics_exactly(finished, capsys):
    uri, run, _ = finished
    assert evaluate.main(["--run", run.info.run_id, "--tracking-uri", uri]) == 0
    assert "g-s0-eval-synthetic (its own test split, paper protocol): rank-1" in capsys.readouterr().out
    (ev,) = [r for r in _evaluations(uri, run) if r.data.tags["protocol"] == "paper"]
    for key in ("val/rank1", "val/rank5", "val/mAP", "val/mINP"):
        assert ev.data.metrics[key] == run.data.metrics[key], key
    assert ev.data.tags["mlflow.parentRunId"] == run.info.run_id and ev.data.tags["cross_domain"] == "false"
    files = {f.path for f in MlflowClient(uri).list_artifacts(ev.info.run_id)}
    assert files == {"per_query.npz", "ranklist.png"}
    # Reports read training runs only: the evaluation is not a row of the table.
    client = MlflowClient(uri)
    assert len(client.search_runs([run.info.experiment_id], "tags.kind = 'child'")) == 1


@pytest.mark.slow
def test_cross_domain_and_flip_are_separate_runs(finished, capsys):
    uri, run, tmp = finished
    other = write_market_layout(tmp / "other", TRAIN, QUERY, GALLERY)
    assert evaluate.main(["--run", run.info.run_id, "--tracking-uri", uri, "--dataset", "folder",
                          "--root", str(other), "--flip"]) == 0
    assert "(folder (cross-domain), flip protocol)" in capsys.readouterr().out
    (ev,) = [r for r in _evaluations(uri, run) if r.data.tags["dataset"] == "folder"]
    assert ev.data.tags["cross_domain"] == "true" and ev.data.tags["protocol"] == "flip"
    assert ev.info.run_name == "g-s0-eval-folder-flip" and 0 <= ev.data.metrics["val/mAP"] <= 100


def test_an_unknown_run_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert evaluate.main(["--run", "0" * 32, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --run 0000") and "no such run" in err and err.count("\n") == 1


@pytest.mark.slow
def test_ui_prints_the_runs_view_of_the_newest_table_experiment(finished, capsys):
    from ablations import ui

    uri, run, _ = finished
    assert ui.main(["--print-url", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs" in out


@pytest.mark.slow
def test_the_logged_model_gives_the_checkpoint_embeddings(finished):
    import mlflow
    import torch

    from ablations.per_query import run_files, run_model

    uri, run, tmp = finished
    mlflow.set_tracking_uri(uri)
    logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model").eval()
    cfg, weights = run_files(run.info.run_id, str(tmp))
    reference = run_model(cfg, weights)
    x = torch.rand(3, 3, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        assert torch.equal(logged(x), reference(x))
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert model.source_run_id == run.info.run_id
    assert {m.key for m in model.metrics} >= {"val/rank1", "val/mAP"}
