"""The MLflow UI, used as a person would: serve the store, open it in headless Chromium.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (installed by ``.ci/run``);
without Chromium the tests are skipped with that reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fake_store import FakeRun, log_experiment, new_store

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
    "--window-size=1400,900",
]
# Final val/mAP: g-s0 above base-s0, so sorting by it puts g-s0 first.
RUNS = {("base", 0): (50.0, 40.5), ("g", 0): (70.0, 61.25)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_chromium() -> None:
    """Skip without Chromium, or fail under CI=true: CI must not pass without these tests."""
    if CHROMIUM is None:
        reason = "chromium not installed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the MLflow UI tests must run here)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on a free port against a store holding two child runs; killed after."""
    _need_chromium()
    folder = tmp_path_factory.mktemp("ui")
    uri = new_store(folder)
    exp_id = log_experiment(
        uri,
        folder,
        [
            FakeRun(v, s, {"rank1": r1, "mAP": m}, artifacts=False)
            for (v, s), (r1, m) in RUNS.items()
        ],
    )
    port = _free_port()
    log = open(folder / "server.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
        start_new_session=True,
    )  # its own group: the uvicorn child goes too
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", folder / "server.log")
        yield f"http://127.0.0.1:{port}", exp_id, uri, folder
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(
        f"mlflow server did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-2000:]}"
    )


def _chromium(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The rendered DOM of ``url`` (and a screenshot) from headless Chromium."""
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    out = subprocess.run(cmd + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_runs_table_shows_the_runs_sorted_by_a_metric(server, tmp_path):
    base, exp_id, _, _ = server
    shot = tmp_path / "runs.png"
    # The runs table, sorted by val/mAP (best first) as a reader comparing variants would.
    url = f"{base}/#/experiments/{exp_id}/runs?orderByKey=metrics.%60val%2FmAP%60&orderByAsc=false"
    dom = _chromium(url, tmp_path / "profile", shot)
    assert "table2-synthetic-tiny" in dom
    assert "g-s0" in dom and "base-s0" in dom, dom[-3000:]
    assert dom.index("g-s0") < dom.index("base-s0")  # 61.25 mAP before 40.5
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_the_link_make_ui_prints_opens_the_child_runs_with_r1_and_map(server, tmp_path):
    """The link ``make ui`` prints: the "Model training" workflow, the child runs without their
    parent, best val/rank1 first, val/rank1 and val/mAP as columns (a shared view the link
    stores in the experiment)."""
    from mlflow import MlflowClient

    from ablations import ui

    base, exp_id, uri, _ = server
    url = ui.runs_url(MlflowClient(uri), "127.0.0.1", int(base.rsplit(":", 1)[1]))
    assert url == (
        f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={ui.VIEW_KEY}"
    )
    shot = tmp_path / "link.png"
    dom = _chromium(url, tmp_path / "profile", shot)
    assert "viewing a shared view" in dom, dom[-3000:]  # found (an unknown key: an error)
    place = {col: int(i) for i, col in re.findall(r'aria-colindex="(\d+)" col-id="([^"]+)"', dom)}
    for column in ("metrics.`val/rank1`", "metrics.`val/mAP`", "params.`model.mask`"):
        assert column in place, (column, place)
    assert place["metrics.`val/rank1`"] < place["metrics.`val/mAP`"]  # as shown, left to right
    assert 'aria-label="Sort: val/rank1"' in dom
    assert ">g-s0<" in dom and ">base-s0<" in dom
    assert dom.index(">g-s0<") < dom.index(">base-s0<")  # rank-1 70 before 50
    assert ">table2<" not in dom and "<strong>2</strong> matching runs" in dom  # no parent row
    assert "Observability" not in dom  # a section of the GenAI workflow's side bar
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_the_link_without_its_stored_view_still_filters_and_sorts(capsys):
    """A store that refuses the tag (say, locked by a training job): the URL carries the filter
    and the sort itself; the columns are left to the Columns menu."""
    from types import SimpleNamespace

    from ablations import ui

    class Refusing:
        def search_experiments(self):
            return [
                SimpleNamespace(
                    experiment_id="7",
                    name="table2-synthetic-tiny",
                    tags={},
                    last_update_time=2,
                    creation_time=1,
                )
            ]

        def set_experiment_tag(self, *args):
            raise RuntimeError("database is locked")

    url = ui.runs_url(Refusing(), "127.0.0.1", 5000)
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&searchFilter=tags.kind%20%3D%20%27child%27"
        "&orderByKey=metrics.%60val%2Frank1%60&orderByAsc=false"
    )
    assert "database is locked" in capsys.readouterr().err


def test_run_page_shows_its_metrics(server, tmp_path):
    base, exp_id, uri, _ = server
    from mlflow import MlflowClient

    run = MlflowClient(uri).search_runs([exp_id], "attributes.run_name = 'g-s0'")[0]
    shot = tmp_path / "run.png"
    dom = _chromium(
        f"{base}/#/experiments/{exp_id}/runs/{run.info.run_id}", tmp_path / "profile", shot
    )
    assert "g-s0" in dom and "val/mAP" in dom and "61.25" in dom and "val/rank1" in dom
    assert shot.stat().st_size > 10_000


def test_report_reads_a_tracking_server(server, tmp_path):
    """``reports/build.py --tracking-uri http://…`` works against the server too."""
    import pandas as pd
    from mlflow import MlflowClient

    from reports import build

    base, exp_id, uri, _ = server
    assert (
        build.main(
            ["--tracking-uri", base, "--out", str(tmp_path), "--no-visual", "--no-efficiency"]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "table2" / "synthetic-tiny" / "table.csv").set_index("variant")
    assert table.loc["g", "rank1_mean"] == 70 and table.loc["g", "d_mAP"] == 61.25 - 40.5
    parent = MlflowClient(uri).search_runs([exp_id], "tags.kind = 'parent'")[0]
    logged = {a.path for a in MlflowClient(base).list_artifacts(parent.info.run_id, "report")}
    assert "report/README.md" in logged


def test_the_link_opens_the_newest_experiment_of_a_study_too():
    """A study file's experiment (``lambda3-…``) is as much the suite's as a table's; MLflow's
    own "Default" is never the one opened."""
    from types import SimpleNamespace

    from ablations import ui

    class Store:
        tags: list = []

        def search_experiments(self):
            return [
                SimpleNamespace(
                    experiment_id="0", name="Default", tags={}, last_update_time=9, creation_time=0
                ),
                SimpleNamespace(
                    experiment_id="3",
                    name="table2-synthetic-cpu",
                    tags={},
                    last_update_time=5,
                    creation_time=1,
                ),
                SimpleNamespace(
                    experiment_id="4",
                    name="lambda3-synthetic-cpu",
                    tags={},
                    last_update_time=7,
                    creation_time=2,
                ),
            ]

        def set_experiment_tag(self, *args):
            self.tags.append(args)

    store = Store()
    url = ui.runs_url(store, "127.0.0.1", 5000)
    assert url.startswith("http://127.0.0.1:5000/#/experiments/4/runs?") and store.tags[0][0] == "4"
    only_default = SimpleNamespace(search_experiments=lambda: Store().search_experiments()[:1])
    assert ui.runs_url(only_default, "127.0.0.1", 5000) == "http://127.0.0.1:5000/#/experiments"


def test_without_chromium_ci_fails_and_a_local_run_skips(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _need_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        _need_chromium()
