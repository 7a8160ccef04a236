"""A run's LoggedModel as a pyfunc: its signature and input example, predictions in-process,
and ``mlflow models serve`` answering a real HTTP request on localhost."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_run import train_tiny

from ablations.models import load_embedder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One tiny run of the full model (g): (uri, run id, four query images)."""
    uri, run = train_tiny(tmp_path_factory.mktemp("serve"), data_root)
    images = sorted((data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))[:4]
    return uri, run.info.run_id, images


def test_the_logged_model_is_a_pyfunc_with_signature_and_example(trained):
    uri, rid, images = trained
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    meta = model.metadata
    assert meta.get_input_schema().input_names() == ["image", "pixels"]
    assert [s.shape for s in meta.get_output_schema().inputs] == [(-1, 48)]
    assert meta.get_params_schema().params[0].name == "flip"
    assert meta.metadata["ftn_embedding"]["height"] == 32 and meta.saved_input_example_info
    assert "python_function" in meta.flavors and "pytorch" not in meta.flavors

    reference = load_embedder(rid, uri, device="cpu")
    expected = reference.embed(images).vectors
    encoded = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
    arrays = [np.array(Image.open(p).convert("RGB")) for p in images]
    # Pixels at the original size: PIL's JPEG decoding differs from torchvision's by a few ulps.
    pixels = model.predict(pd.DataFrame({"pixels": arrays}))
    assert np.array_equal(encoded, expected) and np.allclose(pixels, expected, atol=1e-5)
    first = pd.DataFrame({"image": [images[0].read_bytes()]})
    flipped = model.predict(first, params={"flip": True})
    assert np.array_equal(flipped, reference.embed(images[:1], flip=True).vectors)
    with pytest.raises(mlflow.exceptions.MlflowException, match="row 1: give exactly one of"):
        model.predict(
            pd.DataFrame({"image": [images[0].read_bytes(), None], "pixels": [None, None]})
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_embeddings(trained, tmp_path):
    uri, rid, images = trained
    bin_dir = Path(sys.executable).parent  # mlflow and uvicorn of this environment
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        str(bin_dir / "mlflow"),
        "models",
        "serve",
        "-m",
        f"runs:/{rid}/model",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "the server did not start in 180 s"
                time.sleep(0.5)
        expected = load_embedder(rid, uri, device="cpu").embed(images).vectors
        b64 = [base64.b64encode(p.read_bytes()).decode() for p in images]
        encoded = {"columns": ["image"], "data": [[b] for b in b64]}
        status, answer = _post(port, {"dataframe_split": encoded})
        assert status == 200
        assert np.allclose(np.asarray(answer["predictions"], dtype=np.float32), expected, atol=1e-6)
        pixels = np.array(Image.open(images[0]).convert("RGB"))  # (H, W, 3) at its original size
        status, answer = _post(port, {"dataframe_records": [{"pixels": pixels.tolist()}]})
        assert status == 200 and np.allclose(answer["predictions"], expected[:1], atol=1e-5)
        not_image = base64.b64encode(b"<html>not an image</html>").decode()
        bad = {"columns": ["image"], "data": [[not_image]]}
        status, answer = _post(port, {"dataframe_split": bad})
        assert status == 400 and "row 0: not a JPEG, PNG" in answer["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()
