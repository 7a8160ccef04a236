"""ablations/evaluate.py: a finished run evaluated again, on its own split or another dataset."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fixtures_layouts import GALLERY, QUERY, TRAIN, write_market_layout
from mlflow.tracking import MlflowClient

from ablations import evaluate
from ablations import run as run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("eval")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    assert (
        run_cli.main(
            [
                "--table",
                "2",
                "--preset",
                "tiny",
                "--variants",
                "g",
                "--tracking-uri",
                uri,
                "--work-dir",
                str(tmp / "ckpt"),
                "--root",
                str(data_root),
            ]
        )
        == 0
    )
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
    assert (
        "g-s0-eval-synthetic (its own test split, paper protocol): rank-1"
        in capsys.readouterr().out
    )
    (ev,) = [r for r in _evaluations(uri, run) if r.data.tags["protocol"] == "paper"]
    for key in ("val/rank1", "val/rank5", "val/mAP", "val/mINP"):
        assert ev.data.metrics[key] == run.data.metrics[key], key
    assert (
        ev.data.tags["mlflow.parentRunId"] == run.info.run_id
        and ev.data.tags["cross_domain"] == "false"
    )
    files = {f.path for f in MlflowClient(uri).list_artifacts(ev.info.run_id)}
    assert files == {"per_query.npz", "ranklist.png"}
    # Reports read training runs only: the evaluation is not a row of the table.
    client = MlflowClient(uri)
    assert len(client.search_runs([run.info.experiment_id], "tags.kind = 'child'")) == 1


@pytest.mark.slow
def test_cross_domain_and_flip_are_separate_runs(finished, capsys):
    uri, run, tmp = finished
    other = write_market_layout(tmp / "other", TRAIN, QUERY, GALLERY)
    assert (
        evaluate.main(
            [
                "--run",
                run.info.run_id,
                "--tracking-uri",
                uri,
                "--dataset",
                "folder",
                "--root",
                str(other),
                "--flip",
            ]
        )
        == 0
    )
    assert "(folder (cross-domain), flip protocol)" in capsys.readouterr().out
    (ev,) = [r for r in _evaluations(uri, run) if r.data.tags["dataset"] == "folder"]
    assert ev.data.tags["cross_domain"] == "true" and ev.data.tags["protocol"] == "flip"
    assert ev.info.run_name == "g-s0-eval-folder-flip" and 0 <= ev.data.metrics["val/mAP"] <= 100


def test_an_unknown_run_is_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert evaluate.main(["--run", "0" * 32, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --run 0000") and "no such run" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "device,message",
    [
        ("cuda", "error: --device=cuda but CUDA is not available; use --device=cpu\n"),
        ("gpu0", "error: --device=gpu0: not a device; use auto, cpu, cuda or cuda:N\n"),
    ],
)
def test_a_bad_device_is_one_line_before_the_store_is_opened(
    tmp_path, capsys, monkeypatch, device, message
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert evaluate.main(["--run", "0" * 32, "--tracking-uri", uri, "--device", device]) == 2
    assert capsys.readouterr().err == message
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_ui_prints_the_runs_view_of_the_newest_table_experiment(finished, capsys):
    from ablations import ui

    uri, run, _ = finished
    assert ui.main(["--print-url", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs" in out


@pytest.mark.slow
def test_the_logged_model_gives_the_checkpoint_embeddings(finished, tmp_path, monkeypatch):
    import mlflow
    import torch

    from ablations.per_query import run_config, run_model, run_weights

    uri, run, tmp = finished
    mlflow.set_tracking_uri(uri)
    # A temporary folder of this test's own, which no other process (a parallel test) writes into.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    scratch = set(Path(tempfile.gettempdir()).iterdir())
    path = list(sys.path)
    logged = evaluate.logged_model(run.info.run_id)
    assert set(Path(tempfile.gettempdir()).iterdir()) == scratch  # the download is not left behind
    assert sys.path == path
    cfg = run_config(run.info.run_id, str(tmp))
    reference = run_model(cfg, run_weights(run.info.run_id, str(tmp)))
    x = torch.rand(3, 3, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        assert torch.equal(logged(x), reference(x))
    (model,) = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert model.source_run_id == run.info.run_id
    assert float(model.params["val/mAP"]) == pytest.approx(run.data.metrics["val/mAP"], abs=1e-4)
    assert model.params["dataset"] == "synthetic_tiny"


def _clone(finished, dst: Path) -> tuple[str, str, Path]:
    """A copy of the finished run's store (database and artifacts) under ``dst``: (uri, run id,
    the copy's artifact folder of the experiment)."""
    import shutil
    import sqlite3

    _, run, tmp = finished
    shutil.copy(tmp / "mlflow.db", dst / "mlflow.db")
    shutil.copytree(tmp / "artifacts", dst / "artifacts")
    old, new = (tmp / "artifacts").as_uri(), (dst / "artifacts").as_uri()
    con = sqlite3.connect(dst / "mlflow.db")
    for table, col in (
        ("experiments", "artifact_location"),
        ("runs", "artifact_uri"),
        ("logged_models", "artifact_location"),
    ):
        con.execute(f"UPDATE {table} SET {col} = replace({col}, ?, ?)", (old, new))
    con.commit()
    con.close()
    return (
        f"sqlite:///{dst / 'mlflow.db'}",
        run.info.run_id,
        dst / "artifacts" / "table2-synthetic-tiny",
    )


def _evaluate(uri: str, run_id: str, cwd: Path, timeout: float = 600):
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "ablations" / "evaluate.py"),
            "--run",
            run_id,
            "--tracking-uri",
            uri,
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.slow
def test_model_files_and_ctrl_c_at_any_moment(finished, tmp_path):
    """Without the LoggedModel's weights, model.pt is used and said in one line; SIGINT during
    start-up, reading, evaluating or logging gives one line and exit 130 (or the normal finish)
    and no half-logged run; with neither model, one line."""
    import signal
    import time

    uri, run_id, artifacts = _clone(finished, tmp_path)
    # The weights of the pyfunc LoggedModel (of the pytorch flavour's before it).
    for pattern in ("models/*/artifacts/artifacts/model.pt", "models/*/artifacts/data/model.pth"):
        for weights in artifacts.glob(pattern):
            weights.unlink()
    t0 = time.perf_counter()
    done = _evaluate(uri, run_id, tmp_path)
    whole = time.perf_counter() - t0
    assert done.returncode == 0 and "rank-1" in done.stdout, done.stderr
    assert done.stderr == "note: the run's LoggedModel could not be loaded; used its model.pt\n"
    cmd = [
        sys.executable,
        str(REPO / "ablations" / "evaluate.py"),
        "--run",
        run_id,
        "--tracking-uri",
        uri,
        "--device",
        "cpu",
    ]
    for share in (0.07, 0.3, 0.6, 0.9):  # about 1, 3, 6 and 9 s into a 10–15 s command
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        time.sleep(share * whole)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        lines = [
            line for line in err.splitlines() if not line.startswith("note: the run's LoggedModel")
        ]
        if proc.returncode == 0:
            assert "rank-1" in out and lines == [], (share, err)
        else:  # one line, after the note if the note came first
            assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], (
                share,
                err,
            )
    runs = MlflowClient(uri).search_runs(
        [finished[1].info.experiment_id], "tags.kind = 'evaluation'"
    )
    assert runs and {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    (artifacts / run_id / "artifacts" / "model.pt").unlink()
    refused = _evaluate(uri, run_id, tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"error: run {run_id}: its model.pt cannot be read")


@pytest.mark.slow
def test_the_logged_model_alone_is_enough(finished, tmp_path, capsys):
    uri, run_id, artifacts = _clone(finished, tmp_path)
    (artifacts / run_id / "artifacts" / "model.pt").unlink()
    assert evaluate.main(["--run", run_id, "--tracking-uri", uri, "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "rank-1" in out


# --------------------------------------------------------------------------- re-ranking


def _line(points: dict[str, float]):
    import torch

    names = list(points)
    return names, torch.tensor([[points[names[0]]]]), torch.tensor([[points[n]] for n in names[1:]])


# q's nearest is a (0.5 away), but a's own neighbours are its cluster (a1, a2, a3), while b
# (0.6 away) and q are each other's neighbours: the k-reciprocal set of q is {q, b}.
POINTS = {"q": 0.0, "b": 0.6, "b2": 0.7, "a": -0.5, "a1": -0.85, "a2": -0.95, "a3": -1.05}


def test_k_reciprocal_set_by_hand():
    import torch

    from ftn_core.rerank import k_reciprocal

    names, q, g = _line(POINTS)
    feats = torch.cat([q, g])
    rank = torch.topk(torch.cdist(feats, feats), 3, dim=1, largest=False).indices.numpy()
    assert [names[i] for i in k_reciprocal(rank, 0, 2)] == ["q", "b"]


def test_rerank_puts_the_mutual_neighbour_first_and_lambda_1_is_the_original_distance():
    import numpy as np
    import torch

    from ftn_core.rerank import rerank

    names, q, g = _line(POINTS)
    plain = torch.cdist(q, g)[0].numpy()
    assert names[1:][int(np.argmin(plain))] == "a"  # the original ranking
    d = rerank(q, g, k1=2, k2=1, lam=0.3)[0]
    assert [names[1:][j] for j in np.argsort(d)][:3] == ["b", "b2", "a"]
    assert d[names.index("a3") - 1] == pytest.approx(
        1.0
    )  # nothing shared, farthest: 0.7 · 1 + 0.3 · 1
    feats = torch.cat([q, g])
    full = torch.cdist(feats, feats).pow(2)
    expected = (
        (full / full.max(dim=0).values).T[0, 1:].numpy()
    )  # column-normalised, as the paper's code
    np.testing.assert_allclose(rerank(q, g, k1=2, k2=1, lam=1.0)[0], expected, rtol=1e-6)


def _rerank_by_definition(q, g, k1, k2, lam):
    """The paper's definitions with dense matrices and loops: the reference for the fast path."""
    import numpy as np
    import torch

    from ftn_core.rerank import k_reciprocal

    feats = torch.cat([q, g]).double()
    dist = torch.cdist(feats, feats).pow(2)
    dist = (dist / dist.max(dim=0).values).T.numpy()
    rank, n, n_q = np.argsort(dist, axis=1, kind="stable"), len(feats), len(q)
    v = np.zeros((n, n))
    for i in range(n):
        members = set(k_reciprocal(rank, i, k1).tolist())
        expanded = set(members)
        for c in members:
            half = set(k_reciprocal(rank, c, round(k1 / 2)).tolist())
            if len(half & members) > 2 / 3 * len(half):
                expanded |= half
        cols = sorted(expanded)
        v[i, cols] = np.exp(-dist[i, cols]) / np.exp(-dist[i, cols]).sum()
    v = v[rank[:, :k2]].mean(axis=1)
    pairs = v[:n_q, None, :], v[None, n_q:, :]
    jaccard = 1 - np.minimum(*pairs).sum(-1) / np.maximum(*pairs).sum(-1)
    return (1 - lam) * jaccard + lam * dist[:n_q, n_q:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.0)])
def test_sparse_rerank_equals_the_dense_definition(k1, k2, lam):
    import numpy as np
    import torch

    from ftn_core.rerank import rerank

    gen = torch.Generator().manual_seed(k1)
    ids = torch.randint(0, 12, (90,), generator=gen)
    feats = torch.randn(12, 8, generator=gen)[ids] + 0.7 * torch.randn(90, 8, generator=gen)
    got = rerank(feats[:20], feats[20:], k1=k1, k2=k2, lam=lam)
    np.testing.assert_allclose(
        got, _rerank_by_definition(feats[:20], feats[20:], k1, k2, lam), atol=2e-5
    )
    assert got.shape == (20, 70) and got.min() >= 0 and not np.allclose(got, got[:, :1])


@pytest.mark.slow
def test_rerank_is_a_separate_protocol_row(finished, capsys):
    uri, run, _ = finished
    assert evaluate.main(["--run", run.info.run_id, "--tracking-uri", uri, "--rerank"]) == 0
    assert "rerank protocol" in capsys.readouterr().out
    (ev,) = [r for r in _evaluations(uri, run) if r.data.tags["protocol"] == "rerank"]
    assert (
        ev.info.run_name == "g-s0-eval-synthetic-rerank" and 0 <= ev.data.metrics["val/mAP"] <= 100
    )


def test_a_finished_run_logs_what_reports_read_of_its_model(finished, tmp_path):
    """efficiency.json and figure_data.npz are measured from the run's final model: the same
    parameter count as its model.pt, and the same maps as the reloaded weights give."""
    import json

    import numpy as np

    from ablations.per_query import run_config, run_model, run_weights
    from ftn_core.cost import count_params
    from ftn_core.data.splits import load_splits
    from ftn_core.figure_data import figure_arrays

    uri, run, _ = finished
    client = MlflowClient(uri)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"efficiency.json", "figure_data.npz"} <= files
    eff = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "efficiency.json", str(tmp_path))
        ).read_text()
    )
    import mlflow

    mlflow.set_tracking_uri(uri)
    cfg = run_config(run.info.run_id, str(tmp_path))
    model = run_model(cfg, run_weights(run.info.run_id, str(tmp_path))).eval()
    assert eff["params_training"] == count_params(model)
    assert eff["params_inference"] == count_params(model) - count_params(model.decoder) - sum(
        count_params(h.classifier) for h in model.heads.values()
    )
    assert eff["input"] == [cfg.data.height, cfg.data.width] and eff["latency_ms"] > 0
    assert eff["attention_costs"]["CFA"]["params"] < eff["attention_costs"]["PAM-CAM"]["params"]
    with np.load(
        client.download_artifacts(run.info.run_id, "figure_data.npz", str(tmp_path))
    ) as npz:
        logged = {k: npz[k] for k in npz.files}
    again = figure_arrays(model, cfg, load_splits(cfg.data))
    assert sorted(logged) == sorted(again)
    assert logged["ped_img"].shape == (3, cfg.data.height, cfg.data.width, 3)
    assert logged["rec_output"].dtype == np.uint8 and len(logged["rec_output"]) == 2  # g has TF-Dec
    for key in again:
        np.testing.assert_allclose(logged[key], again[key], rtol=1e-5, atol=1e-6, err_msg=key)
