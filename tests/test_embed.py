"""Embeddings from a trained run: ftn_core.embedder (pure), ablations.models (run / LoggedModel /
checkpoint), ablations/embed.py (to a file) and ablations/search.py (a rank list)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_layouts import GALLERY, QUERY, TRAIN, corrupt_file, write_image, write_market_layout
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from PIL import Image
from tiny_run import train_tiny

from ablations import embed as embed_cli
from ablations import search as search_cli
from ablations.models import load_embedder, run_model_id
from ftn_core.config import from_dict, override
from ftn_core.data.loading import build_data
from ftn_core.embedder import MIN_SIDE, Embedder, image_files
from ftn_core.engine import extract_features
from ftn_core.errors import FTNError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """One tiny run of the full model (g), its checkpoint kept: (uri, run, tmp folder)."""
    tmp = tmp_path_factory.mktemp("embed")
    uri, run = train_tiny(tmp, data_root, "g", "--keep-checkpoints")
    return uri, run, tmp


@pytest.fixture(scope="module")
def embedder(trained):
    uri, run, _ = trained
    return load_embedder(run.info.run_id, uri, device="cpu")


def _config(trained):
    uri, run, tmp = trained
    path = MlflowClient(uri).download_artifacts(run.info.run_id, "config.json", str(tmp))
    return from_dict(json.loads(Path(path).read_text()))


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_embeddings_are_the_evaluations_features_normalised(trained, embedder):
    """The test split embedded here is what the run's evaluation computed, to the bit, then
    L2-normalised; with flip, what ``evaluate.py --flip`` computes."""
    cfg = _config(trained)
    data = build_data(cfg.data, seed=0)
    paths = [s.path for s in data.splits.query]
    for flip in (False, True):
        feats, *_ = extract_features(
            embedder.model, data.query_loader, torch.device("cpu"), flip=flip
        )
        got = embedder.embed(paths, flip=flip)
        assert np.array_equal(got.vectors, F.normalize(feats, dim=1).numpy())
        assert got.names == paths
    assert (embedder.height, embedder.width) == (cfg.data.height, cfg.data.width) == (32, 16)
    assert np.allclose(np.linalg.norm(got.vectors, axis=1), 1.0, atol=1e-6)
    assert got.vectors.shape == (len(paths), 48)  # three branches × embed_dim 16


def test_every_reference_gives_the_same_model(trained, embedder, data_root, tmp_path):
    """Run id, runs:/ URI, LoggedModel id, models:/ URI, model.pt with its config.json (file or
    folder) and the runner's checkpoint <name>-<run id>.pt give the same embeddings."""
    uri, run, tmp = trained
    rid = run.info.run_id
    client = MlflowClient(uri)
    model_id = run_model_id(client, run)
    assert model_id and model_id.startswith("m-")
    folder = tmp_path / "artifacts"
    for name in ("model.pt", "config.json"):
        client.download_artifacts(rid, name, str(folder))
    (ckpt,) = (tmp / "ckpt").rglob(f"*-{rid}.pt")
    images = sorted((data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))[:5]
    reference = embedder.embed(images).vectors
    for ref in (f"runs:/{rid}", model_id, f"models:/{model_id}", folder / "model.pt", folder, ckpt):
        other = load_embedder(ref, uri, device="cpu")
        assert np.array_equal(other.embed(images).vectors, reference), ref
    assert "run " + rid in embedder.source and embedder.config.model.attention == "cfa"


def test_a_run_still_training_loads_its_checkpoint_with_the_config_of_its_params(
    trained, embedder, data_root
):
    """No model.pt, config.json or LoggedModel yet: the resumable checkpoint in the store's
    checkpoint folder, with the config read back from the run's params."""
    from ablations import store as mlstore

    uri, run, tmp = trained
    client = MlflowClient(uri)
    running = client.create_run(run.info.experiment_id, run_name="g-s0", tags={"kind": "child"})
    params = list(run.data.params.items())
    for i in range(0, len(params), 100):
        client.log_batch(running.info.run_id, params=[Param(k, v) for k, v in params[i : i + 100]])
    (ckpt,) = (tmp / "ckpt").rglob(f"*-{run.info.run_id}.pt")
    exp = client.get_experiment(run.info.experiment_id).name
    folder = mlstore.checkpoint_dir(uri) / exp
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, folder / f"g-s0-{running.info.run_id}.pt")
    loaded = load_embedder(running.info.run_id, uri, device="cpu")
    images = sorted((data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))[:4]
    assert loaded.config == embedder.config
    assert np.array_equal(loaded.embed(images).vectors, embedder.embed(images).vectors)
    (folder / f"g-s0-{running.info.run_id}.pt").unlink()
    with pytest.raises(
        FTNError,
        match=r"has no saved model: no model.pt, no LoggedModel and no "
        r"checkpoint",
    ):
        load_embedder(running.info.run_id, uri)


def test_the_pytorch_flavour_of_earlier_runs_still_loads(trained, embedder, data_root):
    """A run as logged before the pyfunc (no model.pt kept; a pytorch-flavour LoggedModel
    named model, torch's pickle, ftn_core as its code): loaded by run id and by model id."""
    import mlflow.pytorch

    from ablations import evaluate

    uri, run, tmp = trained
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    old = client.create_run(run.info.experiment_id, run_name="g-s0-old", tags={"kind": "legacy"})
    config = client.download_artifacts(run.info.run_id, "config.json", str(tmp))
    client.log_artifact(old.info.run_id, config)
    code = str(Path(evaluate.__file__).parents[1] / "ftn_core")
    with mlflow.start_run(run_id=old.info.run_id):
        info = mlflow.pytorch.log_model(
            embedder.model,
            name="model",
            code_paths=[code],
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    images = sorted((data_root / "synthetic_tiny_s0" / "query").glob("*.jpg"))[:4]
    for ref in (old.info.run_id, info.model_id):
        loaded = load_embedder(ref, uri, device="cpu")
        assert np.array_equal(loaded.embed(images).vectors, embedder.embed(images).vectors), ref
    assert type(evaluate.logged_model(old.info.run_id)).__name__ == "FTN"


def test_images_in_every_form(embedder, data_root, tmp_path):
    query = data_root / "synthetic_tiny_s0" / "query"
    paths = sorted(query.glob("*.jpg"))[:3]
    by_path = embedder.embed(paths)
    assert by_path.names == [str(p) for p in paths]
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]
    forms = {
        "bytes": [p.read_bytes() for p in paths],
        "array": arrays,
        "tensor": [torch.from_numpy(a).permute(2, 0, 1) for a in arrays],
        "pil": [Image.open(p) for p in paths],
    }
    for form, images in forms.items():
        got = embedder.embed(images, names=["a", "b", "c"])
        # PIL decodes a JPEG a little differently from torchvision's decoder: a few ulps.
        assert np.allclose(got.vectors, by_path.vectors, atol=1e-5), form
        assert got.names == ["a", "b", "c"]
    folder = embedder.embed(query)
    assert folder.names == sorted(p.name for p in query.glob("*.jpg"))
    # Another batch (20 images, not 3): the last bits may differ (oneDNN picks kernels by shape).
    assert np.allclose(folder.vectors[:3], by_path.vectors, atol=1e-6)
    csv = tmp_path / "own.csv"
    csv.write_text("path,note\n" + "".join(f"{p},x\n" for p in paths[::-1]))
    listed = embedder.embed(csv)
    assert listed.names == [str(p) for p in paths[::-1]]
    assert np.allclose(listed.vectors, by_path.vectors[::-1], atol=1e-6)
    small = Embedder(embedder.model, embedder.height, embedder.width, batch_size=2)
    # Batches of 2 keep the order.
    assert np.allclose(small.embed(paths).vectors, by_path.vectors, atol=1e-6)


def test_fixture_trees_and_own_folders_embed(embedder, tmp_path):
    """Images of a real dataset's layout (the fixture trees' 8×16 images) and a folder of
    one's own images of any size, in subfolders."""
    root = write_market_layout(tmp_path / "Market-1501-v15.09.15", TRAIN, QUERY, GALLERY)
    got = embedder.embed(root / "bounding_box_test")
    assert len(got) == len(GALLERY) and got.names[0].endswith(".jpg")
    write_image(tmp_path / "own" / "cam1" / "a.png", size=(40, 90), seed=1)
    write_image(tmp_path / "own" / "cam2" / "b.jpg", size=(300, 700), seed=2)
    own = embedder.embed(tmp_path / "own")
    assert own.names == ["cam1/a.png", "cam2/b.jpg"]
    assert np.allclose(np.linalg.norm(own.vectors, axis=1), 1.0, atol=1e-6)


def test_bad_images_are_one_line_naming_the_image(embedder, tmp_path):
    good = tmp_path / "good.png"
    write_image(good, size=(16, 32))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    broken = tmp_path / "broken.jpg"
    write_image(broken, size=(16, 32))
    corrupt_file(broken, "truncated")
    tiny = tmp_path / "tiny.png"
    write_image(tiny, size=(MIN_SIDE - 1, 40))
    cases = [
        ([good, text], "image " + str(text) + ": not a JPEG, PNG"),
        ([good, broken], f"image {broken}: a truncated JPEG"),
        ([tiny], f"is {MIN_SIDE - 1}×40 pixels; it needs at least {MIN_SIDE}"),
        ([tmp_path / "gone.jpg"], "gone.jpg: no such file"),
        ([np.zeros((40, 20), np.uint8)], "must be uint8 (H, W, 3)"),
        ([np.zeros((40, 20, 3), np.float32)], "float32"),
        ([42], "a int is not an image"),
        ([], "no images given"),
    ]
    for images, message in cases:
        with pytest.raises(FTNError) as err:
            embedder.embed(images)
        assert message in str(err.value) and "\n" not in str(err.value), (message, err.value)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FTNError, match="no images in this folder"):
        embedder.embed(tmp_path / "nothing")


def test_a_model_of_another_kind_is_one_line(trained, tmp_path, data_root):
    uri, run, tmp = trained
    client = MlflowClient(uri)
    folder = tmp_path / "a"
    weights = Path(client.download_artifacts(run.info.run_id, "model.pt", str(folder)))
    cfg = _config(trained)
    base = override(cfg, {"model.attention": "none", "model.decoder": False})
    with pytest.raises(
        FTNError,
        match=r"the weights do not fit the config's model "
        r".*attention=none.*unexpected \(e\.g\. attention\.",
    ):
        Embedder.from_checkpoint(weights, base)
    with pytest.raises(FTNError, match="no config.json beside it"):
        alone = tmp_path / "alone" / "model.pt"
        alone.parent.mkdir()
        shutil.copy(weights, alone)
        Embedder.from_checkpoint(alone)
    backbone = tmp_path / "backbone.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, backbone)
    text = tmp_path / "config.json"
    text.write_text("{}")
    for path, message in (
        (backbone, "not the weights of an FTN model"),
        (text, "not a torch checkpoint"),
    ):
        with pytest.raises(FTNError, match=message):
            Embedder.from_checkpoint(path, cfg)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model": {"colour": 1}}')
    shutil.copy(weights, tmp_path / "bad" / "model.pt")
    with pytest.raises(FTNError, match="not a config of this suite"):
        Embedder.from_checkpoint(tmp_path / "bad" / "model.pt")
    for ref, message in (
        ("0" * 32, "no such run"),
        ("m-" + "0" * 32, "no such model"),
        ("not-a-run", "no such file, and not an MLflow run id"),
    ):
        with pytest.raises(FTNError, match=message):
            load_embedder(ref, uri)
    parent = client.search_runs([run.info.experiment_id], "tags.kind = 'parent'")[0]
    with pytest.raises(FTNError, match="neither a config.json nor the params of a training run"):
        load_embedder(parent.info.run_id, uri)


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".npy"])
def test_the_command_writes_what_embed_returns(
    trained, embedder, data_root, tmp_path, capsys, suffix
):
    uri, run, _ = trained
    query = data_root / "synthetic_tiny_s0" / "query"
    out = tmp_path / "sub" / f"emb{suffix}"
    assert (
        embed_cli.main(
            [
                run.info.run_id,
                str(query),
                "--out",
                str(out),
                "--tracking-uri",
                uri,
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "20 images embedded (48-d, L2-normalised; 32×16 input)" in capsys.readouterr().out
    written = embed_cli.read(out)
    expected = embedder.embed(query)
    assert written.names == expected.names and np.array_equal(written.vectors, expected.vectors)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name] + ([out.name + ".names.txt"] if suffix == ".npy" else [])
    )


def test_the_command_refuses_bad_input_in_one_line_writing_nothing(
    trained, data_root, tmp_path, capsys
):
    uri, run, _ = trained
    folder = tmp_path / "imgs"
    shutil.copytree(data_root / "synthetic_tiny_s0" / "query", folder)
    corrupt_file(sorted(folder.glob("*.jpg"))[4], "garbage")
    out = tmp_path / "emb.parquet"
    cases = [
        ([run.info.run_id, str(folder)], "not a JPEG, PNG"),
        (["f" * 32, str(folder)], "no such run"),
        ([run.info.run_id, str(tmp_path / "none")], "no such file or folder"),
        ([run.info.run_id, str(folder), str(folder)], "give one folder or CSV alone"),
    ]
    for argv, message in cases:
        argv += ["--out", str(out), "--tracking-uri", uri, "--device", "cpu"]
        assert embed_cli.main(argv) == 2
        assert message in _one_line(capsys.readouterr().err)
        assert not out.exists() and not list(tmp_path.glob(".emb*"))
    assert (
        embed_cli.main(
            [
                run.info.run_id,
                str(folder),
                "--out",
                str(tmp_path / "emb.csv"),
                "--tracking-uri",
                uri,
            ]
        )
        == 2
    )
    assert "unknown format" in _one_line(capsys.readouterr().err)


def test_search_ranks_by_cosine_and_draws_the_rank_list(
    trained, embedder, data_root, tmp_path, capsys
):
    uri, run, _ = trained
    root = data_root / "synthetic_tiny_s0"
    queries = sorted((root / "query").glob("*.jpg"))[:2]
    q, g = embedder.embed(queries), embedder.embed(root / "bounding_box_test")
    order, shown = search_cli.rank(q, g, 5)
    dist = 1 - q.vectors @ g.vectors.T  # cosine distance, by hand
    assert np.array_equal(order, np.argsort(dist, axis=1, kind="stable")[:, :5])
    assert np.allclose(shown, np.sort(dist, axis=1)[:, :5], atol=1e-6)
    out = tmp_path / "ranks.png"
    argv = [
        run.info.run_id,
        "--query",
        *map(str, queries),
        "--gallery",
        str(root / "bounding_box_test"),
        "--top",
        "5",
        "--out",
        str(out),
        "--tracking-uri",
        uri,
        "--device",
        "cpu",
    ]
    assert search_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"    1. {shown[0, 0]:.4f}  {g.names[order[0, 0]]}" in printed
    assert printed.count("\n    5. ") == 2 and "top 5 of 51 by cosine distance" in printed
    assert out.is_file() and Image.open(out).size[0] > 300
    out.unlink()
    assert search_cli.main([*argv, "--rerank"]) == 0
    assert "by re-ranked distance" in capsys.readouterr().out and out.is_file()
    assert search_cli.frame("0005_c1s4_0.jpg", "0005_c1s4_9.jpg") == "junk"
    assert search_cli.frame("0005_c1s4_0.jpg", "0005_c3s4_9.jpg") == "match"
    assert search_cli.frame("0005_c1s4_0.jpg", "0007_c1s4_9.jpg") == "other"
    assert search_cli.frame("me.jpg", "0007_c1s4_9.jpg") is None


@pytest.mark.slow
def test_a_run_trained_on_a_real_layout(data_root, tmp_path):
    """A run trained on Market-1501's layout (a copy of the synthetic data read as it) embeds
    its own query images, at its own input size."""
    root = tmp_path / "data"
    shutil.copytree(data_root / "synthetic_tiny_s0", root / "Market-1501-v15.09.15")
    uri, run = train_tiny(
        tmp_path,
        root,
        "base",
        "--set",
        "train.epochs=1",
        "--set",
        "data.height=48",
        dataset="market1501",
    )
    emb = load_embedder(run.info.run_id, uri, device="cpu")
    assert emb.config.data.dataset == "market1501" and (emb.height, emb.width) == (48, 16)
    got = emb.embed(root / "Market-1501-v15.09.15" / "query")
    assert got.vectors.shape == (20, 32)  # two branches (no attention) × 16
    paths, names = image_files(root / "Market-1501-v15.09.15" / "query")
    assert names == got.names and len(paths) == 20
