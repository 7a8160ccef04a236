"""ablations/export.py: the inference embedding model as ONNX (dynamic batch), checked with
onnxruntime against PyTorch on the embedded benchmark's test split."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_run import train_tiny

from ablations import export as export_cli
from ablations.models import load_embedder
from ftn_core import onnx_export


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One tiny run of the full model (g): (uri, run id)."""
    uri, run = train_tiny(tmp_path_factory.mktemp("export"), data_root)
    return uri, run.info.run_id


def test_export_is_checked_and_carries_its_preprocessing(trained, data_root, tmp_path, capsys):
    uri, rid = trained
    out = tmp_path / "onnx" / "ftn.onnx"
    assert export_cli.main([rid, "--onnx", str(out), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "ONNX against PyTorch on 71 images" in printed  # 20 queries + 51 gallery images
    assert (
        "top-10 of the gallery identical for 20/20 queries: passed (synthetic_tiny test split)"
        in printed
    )
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    keys = ("height", "width", "dim", "flip_averaged")
    assert [meta[k] for k in keys] == ["32", "16", "48", "false"]
    assert "resize to 32x16" in meta["preprocessing_outside"]
    assert "ImageNet mean" in meta["preprocessing_inside"]
    (inp,), (outp,) = model.graph.input, model.graph.output

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(inp) == ["batch", 3, 32, 16] and dims(outp) == ["batch", 48]
    assert sorted(p.name for p in out.parent.iterdir()) == ["ftn.onnx"]  # nothing staged is left

    # Any batch size, and the embeddings of PyTorch within the tolerance, recomputed here.
    embedder = load_embedder(rid, uri, device="cpu")
    sess = onnx_export.session(out)
    paths = sorted(str(p) for p in (data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))
    reference = embedder.embed(paths).vectors
    for n in (1, 3, 20):
        batch = np.stack([embedder.preprocess(p).numpy() for p in paths[:n]])  # (n, 3, H, W)
        batch = batch.astype(np.float32) / 255
        (got,) = sess.run(None, {"images": batch})
        assert got.shape == (n, 48)
        assert np.abs(got - reference[:n]).max() <= onnx_export.TOLERANCE
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_flip_averaging_goes_into_the_graph(trained, data_root, tmp_path, capsys):
    uri, rid = trained
    out = tmp_path / "flip.onnx"
    assert export_cli.main([rid, "--onnx", str(out), "--flip", "--tracking-uri", uri]) == 0
    assert ": passed" in capsys.readouterr().out
    embedder = load_embedder(rid, uri, device="cpu")
    paths = sorted(str(p) for p in (data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))[:4]
    got = onnx_export.onnx_embed(onnx_export.session(out), embedder, paths)
    assert np.abs(got - embedder.embed(paths, flip=True).vectors).max() <= onnx_export.TOLERANCE
    assert np.abs(got - embedder.embed(paths).vectors).max() > 1e-3  # flip changes them
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["flip_averaged"] == "true"


def test_a_failed_check_writes_nothing(trained, tmp_path, capsys, monkeypatch):
    uri, rid = trained
    monkeypatch.setattr(onnx_export, "TOLERANCE", 0.0)  # ONNX and PyTorch differ by ~1e-7
    out = tmp_path / "ftn.onnx"
    assert export_cli.main([rid, "--onnx", str(out), "--tracking-uri", uri]) == 2
    out_, err = capsys.readouterr()
    assert ": FAILED (synthetic_tiny test split)" in out_
    assert err.startswith("error: the ONNX model does not reproduce PyTorch's embeddings")
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{rid}", "--onnx", "model.txt"], "end the file name in .onnx"),
        (["0" * 32, "--onnx", "m.onnx"], "no such run"),
        (["{tmp}/none.pt", "--onnx", "m.onnx"], "no such file, and not an MLflow run id"),
    ],
)
def test_bad_input_is_one_line(trained, tmp_path, capsys, argv, message):
    uri, rid = trained
    argv = [a.format(rid=rid, tmp=tmp_path) for a in argv]
    argv[2] = str(tmp_path / argv[2])
    assert export_cli.main([*argv, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
