"""The runner end to end on the tiny preset: MLflow records, resume, reliability, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from ablations import run as run_cli
from ablations.runner import choose_preset
from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]


def _args(store, data_root, *extra):
    return [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(data_root),
        *extra,
    ]


def _children(uri: str, experiment: str = "table2-synthetic-tiny"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'child'")
    return client, exp, {r.info.run_name: r for r in runs}


@pytest.mark.slow
@pytest.mark.full_logging  # system metrics, cmc.png, ranklist.png and the LoggedModel
def test_runner_records_everything_and_never_trains_twice(store, data_root, capsys):
    assert run_cli.main(_args(store, data_root, "--variants", "base", "g")) == 0
    hint = f"python reports/build.py --table 2 --tracking-uri {store['uri']}"  # runs as printed
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(hint)
    client, exp, runs = _children(store["uri"])
    assert set(runs) == {"base-s0", "g-s0"}
    g = runs["g-s0"]
    assert g.info.status == "FINISHED"
    tags = g.data.tags
    assert (
        tags["variant"] == "g"
        and tags["seed"] == "0"
        and tags["table"] == "2"
        and tags["preset"] == "tiny"
    )
    assert tags["dataset"] == "synthetic" and len(tags["config_hash"]) == 12 and tags["git_commit"]
    from ftn_core.config import from_dict, setting_hash

    cfg = from_dict(
        json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=g.info.run_id, artifact_path="config.json", tracking_uri=store["uri"]
                )
            ).read_text()
        )
    )
    assert tags["setting_hash"] == setting_hash(cfg) != runs["base-s0"].data.tags["setting_hash"]
    assert f"({os.cpu_count()} cores, " in tags["machine"] and "torch thread" in tags["machine"]
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.data.tags["kind"] == "parent" and parent.info.status == "FINISHED"
    params = g.data.params
    assert params["model.mask"] == "gm_pam_cam" and params["train.epochs"] == "2"
    assert runs["base-s0"].data.params["model.attention"] == "none"
    history = client.get_metric_history(g.info.run_id, "val/mAP")
    assert [m.step for m in history] == [1, 2]
    for name in (
        "train/loss_ce",
        "train/loss_grad",
        "train/lr",
        "train/img_per_s",
        "val/rank1",
        "val/fg_focus",
    ):
        assert name in g.data.metrics, name
    assert "train/loss_grad" not in runs["base-s0"].data.metrics
    assert any(k.startswith("system/") for k in g.data.metrics)  # system metrics on
    assert g.inputs.dataset_inputs and g.inputs.dataset_inputs[0].dataset.name == "synthetic_tiny"
    from ftn_core.data.synthetic import settings_digest

    assert (
        tags["data_digest"]
        == g.inputs.dataset_inputs[0].dataset.digest
        == settings_digest("tiny", 0)
    )
    files = {f.path for f in client.list_artifacts(g.info.run_id)}
    assert {
        "config.json",
        "metrics.json",
        "cmc.png",
        "model.pt",
        "per_query.npz",
        "ranklist.png",
    } <= files
    local = Path(
        mlflow.artifacts.download_artifacts(run_id=g.info.run_id, tracking_uri=store["uri"])
    )
    saved = json.loads((local / "metrics.json").read_text())
    assert saved["metrics"]["val/mAP"] == pytest.approx(g.data.metrics["val/mAP"])
    assert len(saved["cmc"]) == 50
    import numpy as np

    with np.load(local / "per_query.npz") as pq:  # per query: the logged mAP and R-1 again
        assert 100 * pq["ap"].mean() == pytest.approx(g.data.metrics["val/mAP"])
        assert 100 * (pq["first_rank"] == 1).mean() == pytest.approx(g.data.metrics["val/rank1"])
        assert set(pq.files) == {
            "index",
            "pid",
            "camid",
            "ap",
            "first_rank",
            "inp",
            "top10",
        } and len(pq["pid"]) == len(pq["ap"])
    state = torch.load(local / "model.pt", weights_only=True)
    assert "decoder.head.weight" in state and "attention.gamma" in state
    assert (
        exp.artifact_location.startswith("file://")
        and "/artifacts/table2-synthetic-tiny" in exp.artifact_location
    )
    assert not list(
        Path(store["work"]).rglob("*.pt")
    )  # FINISHED: checkpoints deleted, model.pt kept above

    capsys.readouterr()
    assert run_cli.main(_args(store, data_root, "--variants", "base", "g")) == 0
    assert "already FINISHED" in capsys.readouterr().out
    assert len(_children(store["uri"])[2]) == 2
    assert run_cli.main(_args(store, data_root, "--variants", "base", "g", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "2 runs, 2 already done, 0 to run" in out


def test_dry_run_time_estimate_follows_the_epochs_asked_for(store, tmp_path, capsys, monkeypatch):
    from ftn_core.presets import RUN_SECONDS

    monkeypatch.setitem(RUN_SECONDS, "cpu", 100.0)  # a cpu run (9 epochs) takes 100 s
    base = [
        "--table",
        "2",
        "--preset",
        "cpu",
        "--variants",
        "base",
        "g",
        "--seeds",
        "0",
        "1",
        "2",
        "--tracking-uri",
        store["uri"],
        "--work-dir",
        store["work"],
        "--root",
        str(tmp_path),
        "--dry-run",
    ]
    # 6 runs × 100 s = 10 min; at 27 epochs instead of the preset's 9, 3 × that = 30 min.
    for sets, minutes in (([], 10), (["--set", "train.epochs=27"], 30)):
        assert run_cli.main(base + sets) == 0
        assert f"train 6 run(s); about {minutes} min" in capsys.readouterr().out


def test_time_estimate_at_the_pace_of_the_stores_own_runs(tmp_path, monkeypatch):
    """With 3 or more FINISHED runs of the preset on the same data in the plan's experiments,
    the estimate is their median seconds per epoch (copied runs, other data, other presets,
    unfinished runs and runs that stood still part-way do not count); with fewer, those of the
    store's other experiments join them; with fewer still, the preset's nominal figure."""
    from types import SimpleNamespace

    from ablations import runner

    plan = runner.build_plan(1, ["base", "cfa"], [0, 1], ["synthetic"], str(tmp_path), "cpu", {})
    for p in plan:
        p.data_digest = "d1"

    def run(
        seconds, epochs=9, status="FINISHED", digest="d1", preset="cpu", last_epoch=None, **extra
    ):
        tags = {
            "kind": "child",
            "variant": "base",
            "seed": str(len(runs)),
            "config_hash": "h",
            "data_digest": digest,
            "preset": preset,
            **extra,
        }
        return SimpleNamespace(
            info=SimpleNamespace(
                status=status, start_time=0, end_time=int(seconds * 1000), run_id=str(len(runs))
            ),
            data=SimpleNamespace(
                tags=tags,
                params={"train.epochs": str(epochs)},
                metrics={} if last_epoch is None else {"train/epoch_seconds": last_epoch},
            ),
        )

    runs = []
    # 900 s over 9 epochs of 90 s each counts (evaluation adds its part); 9 epochs of 40 s that
    # took 9000 s (resumed the next day) do not.
    for args, kw in (
        ((900,), {"last_epoch": 90.0}),
        ((450,), {"epochs": 3}),
        ((1800,), {}),
        ((9000,), {"last_epoch": 40.0}),
        ((10,), {"status": "RUNNING"}),
        ((1,), {"reused_from": "x"}),
        ((2,), {"digest": "d0"}),
        ((3,), {"preset": "tiny"}),
    ):
        runs.append(run(*args, **kw))
    other = [run(2700)]  # 300 s per epoch, in another experiment of the store
    plan_exp, other_exp = (
        SimpleNamespace(experiment_id=i, name=n)
        for i, n in (("1", plan[0].experiment), ("2", "study-x-synthetic-cpu"))
    )
    client = SimpleNamespace(
        get_experiment_by_name=lambda name: plan_exp,
        search_experiments=lambda **k: [plan_exp, other_exp],
        search_runs=lambda ids, **k: list(runs if ids == ["1"] else other),
    )
    pace = runner.measured_pace(plan, client)
    assert pace == (150.0, 3)  # per epoch: 100, 150, 200; the other experiment is not needed
    line = runner.describe_start(plan, pace)
    assert (
        f"train 4 run(s); about {round(4 * 9 * 150 / 60)} min at the pace of this store's 3 FINISHED runs"
        in line
    )
    del runs[1]
    assert runner.measured_pace(plan, client) == (200.0, 3)  # 100, 200 and the other's 300
    other.clear()
    assert runner.measured_pace(plan, client) is None  # two runs are too few to call a pace
    assert "on a quiet 2-core CPU with AVX-512 BF16" in runner.describe_start(plan, None)
    monkeypatch.setattr(runner, "native_bf16_cpu", lambda: False)
    assert "(this CPU lacks AVX-512 BF16: expect about twice that)" in runner.describe_start(
        plan, None
    )
    monkeypatch.setattr(runner, "native_bf16_cpu", lambda: True)
    assert "expect about twice" not in runner.describe_start(plan, None)


@pytest.mark.slow
def test_nan_run_fails_and_the_others_go_on(store, data_root, capsys, monkeypatch):
    # A NaN L1 term (a NaN weight is refused before any run exists): only variants with a
    # reconstruction batch fail.
    monkeypatch.setattr(
        "ftn_core.losses.l1_loss",
        lambda recon, target, reduction="paper": (recon - target).abs().sum() * float("nan"),
    )
    code = run_cli.main(_args(store, data_root, "--variants", "base", "g"))
    assert code == 1
    err = capsys.readouterr().err
    assert (
        "g-s0: non-finite loss at epoch 2" in err
        and "1 run(s) did not finish (their errors above): g-s0" in err
    )
    _, _, runs = _children(store["uri"])
    assert runs["base-s0"].info.status == "FINISHED" and runs["g-s0"].info.status == "FAILED"
    assert "non-finite loss" in runs["g-s0"].data.tags["error"]


def _wait_for(path: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


SIGNAL_SETS = ["--set", "train.epochs=4", "--set", "train.max_batches=6", "--variants", "c"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root) -> dict[str, float]:
    """The val metrics of the run that the interrupted ones train, trained without a stop."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    reference = {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "work": str(tmp / "ckpt")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTN_LOG_EXTRAS", "0")
        assert run_cli.main(_args(reference, data_root, *SIGNAL_SETS)) == 0
    _, _, ref_runs = _children(reference["uri"])
    return {k: v for k, v in ref_runs["c-s0"].data.metrics.items() if k.startswith("val/")}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_kills_then_resumes_to_the_same_result(
    store, data_root, sig, uninterrupted
):
    sets = SIGNAL_SETS
    from ablations.store import open_store

    open_store(
        store["uri"]
    )  # the schema made here (its creation in a process: test_reliability.py)
    cmd = [sys.executable, str(REPO / "ablations" / "run.py"), *_args(store, data_root, *sets)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ckpts = Path(store["work"]) / "table2-synthetic-tiny"
    _wait_for(ckpts)
    ckpt = next(iter(ckpts.glob("c-s0-*.pt")), None)
    while ckpt is None:
        time.sleep(0.05)
        ckpt = next(iter(ckpts.glob("c-s0-*.pt")), None)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert ckpt.exists()
    _, _, runs = _children(store["uri"])
    assert runs["c-s0"].info.status == "KILLED"
    assert run_cli.main(_args(store, data_root, *sets)) == 0
    _, _, runs = _children(store["uri"])
    assert len(runs) == 1 and runs["c-s0"].info.status == "FINISHED"
    final = {k: v for k, v in runs["c-s0"].data.metrics.items() if k.startswith("val/")}
    assert final == uninterrupted


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--table", "7"], "--table 7: unknown"),
        (["--table", "2", "--variants", "z"], "--variants z: not in Table 2"),
        (["--table", "2", "--set", "model.nope=1"], "--set model.nope: unknown key 'nope'"),
        (["--table", "2", "--set", "train.epochs"], "expected key=value"),
        (["--table", "2", "--dataset", "imagenet"], "--dataset imagenet: unknown"),
        (["--table", "2", "--shard", "3/2"], "--shard 3/2: need 0 <= K < N"),
        (
            ["--table", "2", "--tracking-uri", "sqlite:////proc/nope/mlflow.db"],
            "cannot write the tracking store",
        ),
        (
            ["--table", "2", "--tracking-uri", "./mlruns"],
            "a path is not a store (MLflow 3 no longer keeps runs",
        ),
        (["--table", "2", "--tracking-uri", "x.db"], "use sqlite:///"),
        (
            ["--table", "2", "--tracking-uri", "sqlit:///x.db"],
            "unknown scheme 'sqlit'; did you mean sqlite:///x.db?",
        ),
        (
            ["--table", "2", "--tracking-uri", "htp://localhost:5000"],
            "did you mean http://localhost:5000?",
        ),
    ],
)
def test_bad_arguments_fail_before_training(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("ablations.runner.execute", lambda *a, **k: pytest.fail("trained"))
    if "--tracking-uri" not in argv:  # never the repository's own store
        argv = [*argv, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert run_cli.main([*argv, "--preset", "tiny", "--work-dir", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "make_root,message", [(False, "does not exist"), (True, "Market-1501-v15.09.15")]
)
def test_missing_dataset_is_one_line(store, tmp_path, capsys, make_root, message):
    root = tmp_path / "datasets"
    if make_root:
        root.mkdir()
    code = run_cli.main(
        [
            "--table",
            "3",
            "--preset",
            "tiny",
            "--dataset",
            "market1501",
            "--root",
            str(root),
            "--tracking-uri",
            store["uri"],
            "--work-dir",
            store["work"],
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_preset_choice_is_explained(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_preset(None, ["synthetic"])[0] == "cpu"
    preset, why = choose_preset(None, ["market1501"])
    assert preset == "cpu" and "no CUDA" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_preset(None, ["market1501"]) == (
        "paper",
        "CUDA is available and a real dataset (market1501) was given",
    )
    assert choose_preset(None, ["synthetic"])[0] == "gpu"  # a GPU run is never called "-cpu"
    assert choose_preset("tiny", ["market1501"]) == ("tiny", "asked for with --preset")


# `python ablations/run.py --help` from another folder: test_install.py's
# test_the_commands_are_installed_and_run_from_any_folder (one process for both checks).


def test_skip_bad_images_flag_sets_the_config(store, data_root, monkeypatch):
    seen = {}

    def fake_execute(plan, *args, **kwargs):
        seen["flags"] = {p.cfg.data.skip_bad_images for p in plan}
        return []

    monkeypatch.setattr("ablations.runner.execute", fake_execute)
    assert run_cli.main(_args(store, data_root, "--variants", "base", "--skip-bad-images")) == 0
    assert seen["flags"] == {True}
    assert run_cli.main(_args(store, data_root, "--variants", "base")) == 0
    assert seen["flags"] == {False}


def test_controls_join_the_plan_only_when_asked(store, data_root):
    from ablations.runner import build_plan

    sets = {"data.root": str(data_root)}
    keys = [
        p.variant.key for p in build_plan(2, None, [0], ["synthetic"], str(data_root), "tiny", sets)
    ]
    assert keys == ["base", "a", "b", "c", "d", "e", "f", "g"]
    plan = build_plan(2, None, [0, 1], ["synthetic"], str(data_root), "tiny", sets, controls=True)
    names = [p.name for p in plan]
    assert names[8:10] == ["base_matched-s0", "oracle-s0"] and names[-2:] == [
        "base_matched-s1",
        "oracle-s1",
    ]
    # Seed-major: every row of seed 0 comes before any of seed 1, so a study stopped part-way
    # leaves whole seeds for the reports to pair.
    assert [p.seed for p in plan] == [0] * 10 + [1] * 10
    matched = next(p for p in plan if p.variant.key == "base_matched")
    assert matched.cfg.train.matched_updates and not matched.cfg.model.decoder
    assert next(p for p in plan if p.variant.key == "oracle").cfg.model.mask == "oracle"
    # On real data the oracle (which needs true person masks) is left out, or refused by name.
    real = build_plan(2, None, [0], ["market1501"], str(data_root), "tiny", {}, controls=True)
    assert [p.variant.key for p in real][-1] == "base_matched"
    with pytest.raises(FTNError, match="--variants oracle: needs ground-truth person masks"):
        build_plan(2, ["oracle"], [0], ["market1501"], str(data_root), "tiny", {})
