"""Commands refusing bad input as a person meets it: one ``error: …`` line, a non-zero exit,
before any work (and nothing started or written)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from fake_store import new_store

from ablations import ui
from ftn_core import cost
from ftn_core.data import synthetic as S

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(err: str, *parts: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


# --------------------------------------------------------------------------- ablations.ui


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    """An empty store, only read: once for the module (migrating it takes seconds)."""
    return new_store(tmp_path_factory.mktemp("mlruns"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_server(*args, **kwargs):
    pytest.fail("the MLflow UI was started")


def test_ui_port_out_of_range(capsys, monkeypatch):
    monkeypatch.setattr(ui.subprocess, "Popen", _no_server)
    for port in ("70000", "0", "-1"):
        assert ui.main(["--port", port]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        _one_error_line(err, f"argument --port: {port} is not a port; give one in 1..65535")


def test_ui_port_in_use_refused_before_anything_starts(store_uri, capsys, monkeypatch):
    monkeypatch.setattr(ui.subprocess, "Popen", _no_server)
    with socket.socket() as held:  # another program serving on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert ui.main(["--tracking-uri", store_uri, "--port", str(port)]) == 2
        out, err = capsys.readouterr()
    assert out == ""  # no URL pointing at whatever owns the port
    _one_error_line(err, f"--port {port}: 127.0.0.1:{port} is already in use", "pass --port ")
    suggested = int(err.split("pass --port ")[1].split(",")[0])
    assert port < suggested <= port + 20 and ui.port_problem(suggested) is None


def test_ui_print_url_does_not_need_the_port_free(store_uri, capsys):
    """A UI already serving there is what --print-url is for."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert ui.main(["--tracking-uri", store_uri, "--port", str(port), "--print-url"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"http://127.0.0.1:{port}/#/experiments")


def test_ui_that_stops_with_an_error_is_an_error(store_uri, capfd, monkeypatch):
    monkeypatch.setattr(
        ui, "mlflow_command", lambda uri, port: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    port = _free_port()
    assert ui.main(["--tracking-uri", store_uri, "--port", str(port)]) == 2
    out, err = capfd.readouterr()
    assert f"http://127.0.0.1:{port}/" in out
    _one_error_line(err, "the MLflow UI stopped with exit code 3")


def test_ui_ctrl_c_stops_it_with_one_line_and_exit_0(store_uri, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole process group. The stand-in server ignores it
    (as a server finishing its requests may); the command stops it and says so."""
    started = tmp_path / "server.pid"
    server = (
        "import os, pathlib, signal, sys, time; "
        "signal.signal(signal.SIGINT, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(60)"
    )
    script = textwrap.dedent(f"""
        import sys
        from ablations import ui
        ui.mlflow_command = lambda uri, port: [sys.executable, "-c", {server!r}, {str(started)!r}]
        raise SystemExit(ui.main(["--tracking-uri", {store_uri!r}, "--port", "{_free_port()}"]))
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (started.is_file() and started.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.is_file(), "the stand-in server did not start"
        server_pid = int(started.read_text())
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "runs of the newest experiment" in out
    assert proc.returncode == 0, err
    assert err == "stopped the MLflow UI\n"
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left serving
        os.kill(server_pid, 0)


# --------------------------------------------------------------------------- synthetic --grid


def test_synthetic_grid_into_new_folders(data_root, tmp_path, capsys):
    grid = tmp_path / "sub" / "dir" / "sample.png"
    assert S.main(["--root", str(data_root), "--size", "tiny", "--grid", str(grid)]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"
    assert f"grid: {grid}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "grid,message",
    [
        ("blocker/sub/sample.png", "cannot write the sample picture there"),  # under a file
        ("sample.jpg", "the sample picture is a PNG; give a name ending in .png"),
        ("folder.png", "is a folder; give a file name such as"),
    ],
)
def test_synthetic_bad_grid_refused_before_generating(tmp_path, capsys, monkeypatch, grid, message):
    (tmp_path / "blocker").write_text("")
    (tmp_path / "folder.png").mkdir()

    def no_generation(*args, **kwargs):
        pytest.fail("generated the data before checking --grid")

    monkeypatch.setattr(S, "generate", no_generation)
    root = tmp_path / "data"
    assert S.main(["--root", str(root), "--size", "tiny", "--grid", str(tmp_path / grid)]) == 2
    _one_error_line(capsys.readouterr().err, "error: --grid ", message)
    assert not root.exists()


# --------------------------------------------------------------------------- cost --device


def test_cost_without_cuda_refused_before_measuring(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_measuring(*args, **kwargs):
        pytest.fail("measured the costs before checking --device")

    monkeypatch.setattr(cost, "cost_table", no_measuring)
    monkeypatch.setattr(cost, "latency_ratio", no_measuring)
    assert cost.main(["--device", "cuda"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    _one_error_line(err, "--device=cuda but CUDA is not available; use --device=cpu")
