"""Pre-training: the fractal images (known answers, non-degenerate, deterministic), the people
population's disjointness from the benchmark, and ablations/pretrain.py end to end on the tiny
preset (MLflow records, resume, FINISHED reruns, one-line errors, model.init=runs:/<id>)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from ablations import pretrain
from ftn_core.data import fractal as F
from ftn_core.data import people as P
from ftn_core.data import synthetic as syn
from ftn_core.data import synthetic_draw as sd
from ftn_core.init import file_digest

SMALL = F.FractalSpec(categories=6, instances=8, height=32, width=16, seed=0)


# --------------------------------------------------------------------------- fractal images


def _system(theta, phi, s1, s2, d, b) -> dict:
    arr = lambda v: np.asarray(v, float)[None]  # noqa: E731 - one system
    return {
        "theta": arr(theta),
        "phi": arr(phi),
        "s1": arr(s1),
        "s2": arr(s2),
        "d": arr(d),
        "b": np.asarray(b, float)[None],
    }


def test_maps_are_rotation_scale_rotation_and_the_sierpinski_triangle_comes_out():
    one = _system([np.pi / 2], [0.0], [0.5], [0.25], [-1.0], [[0.1, 0.2]])
    A, b, p = F._maps(*one.values())
    # R(90°) · diag(0.5, 0.25) · R(0) · diag(-1, 1) = [[0, -0.25], [-0.5, 0]]
    assert np.allclose(A[0, 0], [[0, -0.25], [-0.5, 0]]) and np.allclose(b[0, 0], [0.1, 0.2])
    assert p[0, 0] == pytest.approx(1.0)
    # Sierpinski: x ↦ x/2 + b for three corners; its σ-factor 3 × (0.5 + 2·0.5) = 4.5 is in [4, 4.5]
    tri = _system([0] * 3, [0] * 3, [0.5] * 3, [0.5] * 3, [1] * 3, [[0, 0], [0.5, 0], [0.25, 0.5]])
    pts, which = F.chaos_game(np.random.default_rng(0), tri)
    x, y = pts[0]
    assert set(np.unique(which)) == {0, 1, 2}
    assert (y >= -1e-9).all() and (y <= 2 * x + 1e-9).all() and (y <= 2 * (1 - x) + 1e-9).all()
    assert x.min() < 0.01 and x.max() > 0.99 and y.max() > 0.98  # it reaches the three corners
    # box counting: halving the cell triples the cells it hits (dimension log 3 / log 2)
    counts = [F.shape_stats(pts, size)[0][0] * size**2 for size in (8, 16, 32)]
    assert counts[1] / counts[0] == pytest.approx(3, abs=0.1)
    assert counts[2] / counts[1] == pytest.approx(3, abs=0.1)
    assert F.shape_stats(pts)[1][0] == pytest.approx(1.0, abs=0.02)  # as wide as high
    # four quarter-size copies of the unit square fill it
    corners = [[0, 0], [0.5, 0], [0, 0.5], [0.5, 0.5]]
    square = _system([0] * 4, [0] * 4, [0.5] * 4, [0.5] * 4, [1] * 4, corners)
    assert F.shape_stats(F.chaos_game(np.random.default_rng(0), square)[0])[0][0] > 0.95


def test_shape_stats_on_hand_made_clouds():
    g = (np.arange(32) + 0.5) / 32
    square = np.stack(np.meshgrid(g, g), 0).reshape(2, -1)  # every cell of a 32×32 raster
    diagonal = np.stack([g, g])  # 32 cells of 1024
    segment = np.stack([g, np.zeros(32)])  # a flat line
    pad = dict(pad_width=((0, 0), (0, 992)), mode="edge")  # to the square's 1,024 points
    clouds = np.stack([square, np.pad(diagonal, **pad), np.pad(segment, **pad)])
    fill, spread = F.shape_stats(clouds)
    assert fill[0] == pytest.approx(1.0) and spread[0] == pytest.approx(1.0)
    assert fill[1] == pytest.approx(32 / 1024, abs=0.002) and spread[1] == pytest.approx(1.0)
    assert spread[2] < 1e-6 and not F._ok(fill[1:], spread[1:]).any()
    assert F._ok(np.array([0.5]), np.array([0.5])).all()


def test_fractal_categories_are_non_degenerate_distinct_and_deterministic():
    spec = dataclasses.replace(SMALL, categories=40)
    systems = F.category_systems(spec)
    assert len(systems["n"]) == 40 and set(systems["n"]) <= {2, 3, 4}
    k = systems["n"]
    alpha = (systems["s1"] + 2 * systems["s2"]).sum(1)
    assert ((alpha >= (5 + k) / 2) & (alpha <= (6 + k) / 2)).all()  # σ-factor of every system
    assert (systems["s1"] < 1).all() and (systems["s2"] <= systems["s1"]).all()
    pts, _ = F.chaos_game(np.random.default_rng(1), systems)  # a fresh rendering of each
    fill, spread = F.shape_stats(pts)
    assert (fill > 0.08).all() and (fill < 0.9).all() and (spread > 0.15).all()
    assert len({tuple(np.round(systems["b"][i].ravel(), 6)) for i in range(40)}) == 40
    again = F.category_systems(spec)
    assert all(np.array_equal(systems[key], again[key]) for key in systems)
    other = F.category_systems(dataclasses.replace(spec, seed=1))
    assert not np.array_equal(systems["b"], other["b"])


def test_fractal_images_are_deterministic_show_a_shape_and_the_category_tells_it():
    images, labels = F.generate(SMALL)
    assert images.shape == (48, 32, 16, 3) and images.dtype == np.uint8
    assert labels.tolist() == [c for c in range(6) for _ in range(8)]
    again, _ = F.generate(SMALL)
    assert np.array_equal(images, again)  # byte for byte for a seed
    assert not np.array_equal(images, F.generate(dataclasses.replace(SMALL, seed=1))[0])
    assert F.settings_digest(SMALL) != F.settings_digest(dataclasses.replace(SMALL, seed=1))
    # every image has a shape on its background: far more colour variation than the noise alone
    assert (images.reshape(48, -1, 3).std(1).max(1) > 12).all()


def test_the_default_set_renders_in_seconds():
    import time

    spec = F.FractalSpec(categories=5, instances=100)  # 500 of the default 15,000 images
    t0 = time.process_time()
    images, _ = F.generate(spec)
    assert images.shape == (500, 64, 32, 3)
    assert time.process_time() - t0 < 5  # CPU time: 100 × 100 takes about 12 s


# --------------------------------------------------------------------------- people population


def _benchmark_identities() -> np.ndarray:
    out = []
    for size, test_ids in (("default", 1000), ("tiny", 0), ("large", 0)):
        spec = syn.get_spec(size)
        _, idents = syn.plan_more_test(spec, 0, *syn.plan(spec, 0), test_ids)
        out += [i.codes() for i in idents]
    return np.array(out)


def test_people_identities_differ_from_every_benchmark_identity_and_each_other():
    spec = P.PeopleSpec(ids=120, test_ids=20, seed=0)
    ours = np.array([i.codes() for i in P.identities(spec)])
    bench = _benchmark_identities()
    assert len(ours) == 140 and len(bench) > 2500  # train, test (grown to 1,000), distractors
    diff = (ours[:, None, :] != bench[None, :, :]).sum(-1)  # (ours, bench) differing codes
    assert diff.min() >= P.MIN_DIFF
    own = (ours[:, None, :] != ours[None, :, :]).sum(-1) + 99 * np.eye(len(ours), dtype=int)
    assert own.min() >= P.MIN_DIFF
    other = P.identities(dataclasses.replace(spec, seed=1))
    assert not np.array_equal(ours, np.array([i.codes() for i in other]))


def test_people_scenes_objects_and_random_streams_are_not_the_benchmarks(tmp_path, monkeypatch):
    spec = P.PeopleSpec(ids=8, test_ids=2, seed=0)
    bench = syn.get_spec("default")
    ours = P.scenes(spec)
    for seed in (0, 1, 2):
        for cam in range(bench.num_cams):  # the benchmark's cameras at any seed are scenes 0–5
            theirs = sd.camera_scene(cam, seed, bench.height, bench.width)
            assert not any(np.array_equal(o, theirs) for o in ours)
    # the benchmark's keys are three words; numpy pads a key with zeros (so [s, p, k] is
    # [s, p, k, 0]); ours are four words ending in one ≥ 1, so no stream is shared
    assert np.random.default_rng([5, 1, 2]).random() == np.random.default_rng([5, 1, 2, 0]).random()
    keys = [P.key(spec, purpose, k) for purpose in (1, 2, 3, 4) for k in (0, 1, 2, 10**6)]
    assert all(len(k) == 4 and k[0] == P.TAG and k[-1] >= 1 for k in keys)
    # no background object is ever drawn
    monkeypatch.setattr(sd, "draw_object", lambda *a, **k: pytest.fail("an object was drawn"))
    splits = P.load_people(str(tmp_path), spec, progress=False)
    assert splits.num_train_pids == 8 and {s.pid for s in splits.query} == {9, 10}
    assert all(s.mask_path for s in splits.query)
    assert {s.camid for s in splits.train} <= set(range(6))
    assert P.load_people(str(tmp_path), spec).root == splits.root  # generated once


# --------------------------------------------------------------------------- the command


def _args(store, *extra):
    return ["--preset", "tiny", "--tracking-uri", store["uri"], "--work-dir", store["work"], *extra]


FRACTAL = (
    "--source",
    "fractal",
    "--categories",
    "6",
    "--instances",
    "10",
    "--epochs",
    "2",
    "--batch-size",
    "16",
)


def _runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow
def test_fractal_pretraining_end_to_end_and_a_run_fine_tuned_from_it(
    store, data_root, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "w" / "fractal.pt"
    assert pretrain.main(_args(store, *FRACTAL, "--out", str(out))) == 0
    client, runs = _runs(store["uri"], "pretrain-fractal")
    (run,) = runs
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["kind"] == "pretrain" and tags["source"] == "fractal"
    assert tags["backbone_digest"] == file_digest(out)
    assert (params["categories"], params["backbone"], params["height"]) == ("6", "resnet18", "32")
    for key in ("train/loss", "train/acc", "val/acc", "train/lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    import mlflow

    art = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="backbone.pt",
        dst_path=str(tmp_path),
        tracking_uri=store["uri"],
    )
    assert open(art, "rb").read() == out.read_bytes()
    state = torch.load(out, weights_only=True)
    assert state["conv1.weight"].dtype == torch.float16
    assert not any(k.startswith(("fc.", "local_block.")) for k in state)
    assert out.stat().st_size < 25 * 2**20
    capsys.readouterr()
    # the same command again: nothing trained; where the weights are, and --out written from them
    assert pretrain.main(_args(store, *FRACTAL, "--out", str(tmp_path / "again.pt"))) == 0
    said = capsys.readouterr().out
    assert "is FINISHED" in said and f"model.init=runs:/{run.info.run_id}" in said
    assert (tmp_path / "again.pt").read_bytes() == out.read_bytes()
    assert len(_runs(store["uri"], "pretrain-fractal")[1]) == 1

    # a Baseline fine-tuned from the run's id: the backbone as in the file, the digest as a tag
    from ablations import run as run_cli
    from ablations import runner
    from ftn_core.init import backbone_state

    built = []

    class Recording(runner.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(backbone_state(self.model.senc, local_block=False))

    monkeypatch.setattr(runner, "Trainer", Recording)
    assert (
        run_cli.main(
            [
                "--table",
                "1",
                "--variants",
                "base",
                "--preset",
                "tiny",
                "--tracking-uri",
                store["uri"],
                "--work-dir",
                store["work"],
                "--root",
                str(data_root),
                "--set",
                f"model.init=runs:/{run.info.run_id}",
            ]
        )
        == 0
    )
    for key, value in state.items():  # fp16 in the file, upcast exactly
        want = value.float() if value.is_floating_point() else value
        assert torch.equal(built[0][key], want), key
    _, children = _runs(store["uri"], "table1-synthetic-tiny")
    child = next(r for r in children if r.data.tags.get("kind") == "child")
    assert child.data.tags["init_digest"] == tags["backbone_digest"]


@pytest.mark.slow
def test_an_interrupted_pretraining_resumes_in_its_run_and_ends_as_an_uninterrupted_one(
    store, tmp_path, capsys, monkeypatch
):
    from ftn_core.pretrain import ClassifierTrainer

    other = {"uri": f"sqlite:///{tmp_path / 'other.db'}", "work": str(tmp_path / "other")}
    assert pretrain.main(_args(other, *FRACTAL, "--out", str(tmp_path / "whole.pt"))) == 0
    original = ClassifierTrainer.train_epoch

    def stop_at_second(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("signal 15")
        return original(self, epoch)

    monkeypatch.setattr(ClassifierTrainer, "train_epoch", stop_at_second)
    assert pretrain.main(_args(store, *FRACTAL)) == 130
    client, (run,) = _runs(store["uri"], "pretrain-fractal")
    assert run.info.status == "KILLED"
    monkeypatch.setattr(ClassifierTrainer, "train_epoch", original)
    capsys.readouterr()
    assert pretrain.main(_args(store, *FRACTAL, "--out", str(tmp_path / "resumed.pt"))) == 0
    assert f"resuming {run.info.run_name}" in capsys.readouterr().out
    client, (again,) = _runs(store["uri"], "pretrain-fractal")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert (tmp_path / "resumed.pt").read_bytes() == (tmp_path / "whole.pt").read_bytes()


@pytest.mark.slow
def test_people_pretraining_end_to_end(store, tmp_path):
    out = tmp_path / "people.pt"
    assert (
        pretrain.main(
            _args(
                store,
                "--source",
                "people",
                "--ids",
                "12",
                "--test-ids",
                "3",
                "--epochs",
                "2",
                "--root",
                str(tmp_path / "data"),
                "--out",
                str(out),
            )
        )
        == 0
    )
    client, (run,) = _runs(store["uri"], "pretrain-people")
    assert run.info.status == "FINISHED" and run.data.tags["backbone_digest"] == file_digest(out)
    assert run.data.tags["data_digest"] == P.settings_digest(P.PeopleSpec(12, 3, seed=0))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/rank1")] == [1, 2]
    assert "train/loss_triplet" in run.data.metrics
    state = torch.load(out, weights_only=True)
    assert any(k.startswith("local_block.") for k in state)  # the local branch trained too


@pytest.mark.parametrize(
    "extra, match",
    [
        (("--source", "people", "--height", "32"), "--height/--width"),
        (("--source", "people", "--batch-size", "5"), "a multiple of 2"),
        (("--source", "fractal", "--epochs", "0"), "0 is below 1"),
        (("--source", "leaves"), "invalid choice"),
        (("--source", "fractal", "--device", "abacus"), "not a device"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(extra, match, store, tmp_path, capsys):
    code = pretrain.main(_args(store, *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert match in err
    assert not (tmp_path / "mlruns").exists()


def test_out_and_store_are_checked_first(store, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert pretrain.main(_args(store, *FRACTAL, "--out", str(tmp_path / "folder"))) == 2
    assert "is a folder" in capsys.readouterr().err
    assert pretrain.main(_args({"uri": "mlruns", "work": store["work"]}, *FRACTAL)) == 2
    assert "a path is not a store" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


def test_help_shows_examples(capsys):
    assert pretrain.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--source fractal" in text and "model.init=runs:/" in text
