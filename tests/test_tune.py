"""Optuna tuning: search space, storage, pruning, MLflow records, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from ablations import optuna_study, tune
from ablations import run as run_cli
from ablations.variants import TABLES
from ftn_core.config import ModelConfig
from ftn_core.errors import FTNError
from ftn_core.presets import preset_config

REPO = Path(__file__).resolve().parents[1]
ALL = [
    "loss.w_grad",
    "loss.w_l1",
    "model.gauss_sy",
    "model.gauss_sx",
    "train.lr",
    "loss.margin",
    "train.warmup_epochs",
]


def _model(key: str, pretrained: bool = True) -> ModelConfig:
    return next(v for v in TABLES[2] if v.key == key).model_config(
        ModelConfig(pretrained=pretrained)
    )


@pytest.mark.parametrize(
    "variant,expected",
    [
        ("g", ALL),
        ("a", ALL),  # Gm target without CFA: every searched field matters
        ("base", ["train.lr", "loss.margin", "train.warmup_epochs"]),  # no decoder
        (
            "b",
            ["loss.w_grad", "loss.w_l1", "train.lr", "loss.margin", "train.warmup_epochs"],
        ),  # no Gm
        (
            "f",
            [
                "loss.w_l1",
                "model.gauss_sy",
                "model.gauss_sx",
                "train.lr",
                "loss.margin",
                "train.warmup_epochs",
            ],
        ),
    ],
)
def test_search_space_follows_the_variant(variant, expected):
    assert [p.key for p in optuna_study.search_space(_model(variant), epochs=12)] == expected


def test_from_scratch_searches_the_lr_warmup_not_a_frozen_backbone():
    keys = [p.key for p in optuna_study.search_space(_model("g", pretrained=False), epochs=12)]
    assert keys == [k if k != "train.warmup_epochs" else "train.lr_warmup_epochs" for k in ALL]


def test_a_backbone_pretrained_by_the_suite_may_be_frozen_like_imagenets():
    import dataclasses

    model = dataclasses.replace(_model("g", pretrained=False), init="/weights/fractal.pt")
    assert "train.warmup_epochs" in [p.key for p in optuna_study.search_space(model, epochs=12)]


def test_search_space_ranges_and_fixed_keys():
    space = {
        p.key: p
        for p in optuna_study.search_space(
            _model("g"), epochs=12, fixed={"loss.margin", "train.lr"}
        )
    }
    assert "loss.margin" not in space and "train.lr" not in space
    assert space["loss.w_grad"].log and (space["loss.w_grad"].low, space["loss.w_grad"].high) == (
        0.1,
        10.0,
    )
    # Warm-up: 0 .. 30 % of the epochs, at most epochs - 1 and at least 1 (paper: 51 of 360).
    warmup = {
        e: next(
            p for p in optuna_study.search_space(_model("g"), e) if p.key == "train.warmup_epochs"
        ).high
        for e in (2, 12, 360)
    }
    assert warmup == {2: 1, 12: 4, 360: 108}
    # Defaults (the paper's, our Gaussian σ, the cpu preset's lr) lie inside the ranges searched.
    full = {p.key: p for p in optuna_study.search_space(_model("g"), epochs=12)}
    for key, default in {
        "loss.w_grad": 1.0,
        "loss.w_l1": 1.0,
        "model.gauss_sy": 0.5,
        "model.gauss_sx": 0.35,
        "train.lr": 3.5e-4,
        "loss.margin": 0.3,
    }.items():
        assert full[key].low < default < full[key].high, key
    cpu_lr = preset_config("cpu").train.lr
    assert full["train.lr"].low < cpu_lr < full["train.lr"].high


def test_suggest_names_values_by_config_key():
    space = optuna_study.search_space(_model("g"), epochs=12)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = optuna_study.suggest(study.ask(), space)
    assert list(values) == ALL and isinstance(values["train.warmup_epochs"], int)
    for p in space:
        assert p.low <= values[p.key] <= p.high
    fixed = optuna_study.suggest(optuna.trial.FixedTrial({**values, "train.lr": 2e-4}), space)
    assert fixed["train.lr"] == 2e-4


def test_storage_urls(tmp_path):
    storage, shown = optuna_study.open_storage(None, tmp_path / "optuna" / "s.journal")
    assert isinstance(storage, optuna.storages.JournalStorage) and shown == str(
        tmp_path / "optuna" / "s.journal"
    )
    optuna.create_study(storage=storage, study_name="s")
    assert (tmp_path / "optuna" / "s.journal").stat().st_size > 0
    rdb, shown = optuna_study.open_storage(f"sqlite:///{tmp_path / 'o.db'}", tmp_path / "unused")
    assert isinstance(rdb, optuna.storages.RDBStorage) and (tmp_path / "o.db").exists()
    with pytest.raises(FTNError, match="unsupported; use a journal file path"):
        optuna_study.open_storage("redis2://host", tmp_path)
    with pytest.raises(FTNError, match="cannot open it") as err:
        optuna_study.open_storage("sqlite:////proc/nope/o.db", tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(FTNError) as err:  # no psycopg2 here, or no server: either way one line
        optuna_study.open_storage("postgresql://user:secret@127.0.0.1:9/optuna", tmp_path)
    assert "secret" not in str(err.value) and "postgresql://user:***@127.0.0.1:9/optuna" in str(
        err.value
    )


class _Trial:
    """Stands in for an Optuna trial whose pruner always says stop."""

    number = 7

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return True


def test_pruner_stops_a_trial_but_never_at_its_last_epoch(capsys):
    trial = _Trial()
    cb = optuna_study.TrialCallbacks("unused-run-id", trial, epochs=3)
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        cb.on_eval(2, {"val/mAP": 41.5, "val/rank1": 50.0})
    cb.on_eval(3, {"val/mAP": 42.0, "val/rank1": 50.0})  # last epoch: reported, not pruned
    assert trial.reports == [(2, 41.5), (3, 42.0)]
    assert "trial 7 epoch 3: rank-1 50.0  mAP 42.0" in capsys.readouterr().out


def test_best_command_round_trips_through_run_py(tmp_path):
    params = {"loss.w_grad": 0.138699, "train.lr": 0.00082259, "train.warmup_epochs": 1}
    cmd = tune.best_command(2, "cpu", "synthetic", tune.DEFAULT_ROOT, {"train.epochs": "8"}, params)
    assert cmd == (
        "python ablations/run.py --table 2 --preset cpu --set train.epochs=8 "
        "--set loss.w_grad=0.138699 --set train.lr=0.00082259 --set train.warmup_epochs=1"
    )
    best = tmp_path / "best.json"
    best.write_text(json.dumps(params))
    with_file = tune.best_command(2, "cpu", "market1501", "/data", {}, params, best)
    assert (
        with_file
        == f"python ablations/run.py --table 2 --preset cpu --dataset market1501 --root /data "
        f"--params-file {best}"
    )
    # Both lines give run.py the same configuration (same config hash).
    hashes = []
    for argv in (
        shlex.split(cmd)[2:],
        [*shlex.split(cmd)[2:6], "--set", "train.epochs=8", "--params-file", str(best)],
    ):
        args = run_cli.parse_args(argv)
        sets = {
            **run_cli.read_params_file(args.params_file),
            **dict(s.split("=", 1) for s in args.sets),
        }
        plan = run_cli.runner.build_plan(2, ["g"], [0], ["synthetic"], "data", "cpu", sets)
        assert plan[0].cfg.loss.w_grad == 0.138699 and plan[0].cfg.train.warmup_epochs == 1
        hashes.append(plan[0].hash)
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize(
    "content,message", [("{oops", "cannot read it as JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_bad_params_file_is_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "p.json"
    bad.write_text(content)
    assert (
        run_cli.main(["--table", "2", "--preset", "tiny", "--params-file", str(bad), "--dry-run"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: --params-file") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--variant", "z"], "--variant z: not in Table 2; choose from base a b c d e f g"),
        (["--variant", "g", "--table", "9"], "--table 9: unknown"),
        (["--variant", "g", "--set", "loss.nope=1"], "--set loss.nope: unknown key 'nope'"),
        (["--variant", "g", "--set", "loss.margin"], "expected key=value"),
        (
            ["--variant", "g", "--storage", "mongodb://h/db"],
            "--storage mongodb://h/db: unsupported",
        ),
        (["--variant", "g", "--study", "a b"], "--study a b: use letters"),
        (["--variant", "g", "--trials", "0"], "argument --trials: 0 is below 1"),
        (["--variant", "g", "--timeout", "-5"], "argument --timeout: -5 is outside (0, inf)"),
        (
            [
                "--variant",
                "base",
                "--set",
                "train.lr=1e-4",
                "--set",
                "loss.margin=0.3",
                "--set",
                "train.lr_warmup_epochs=1",
            ],
            "nothing to tune for variant base",
        ),
    ],
)
def test_bad_arguments_fail_before_any_trial(argv, message, store, capsys, monkeypatch):
    monkeypatch.setattr(optuna_study, "make_objective", lambda *a, **k: pytest.fail("tuned"))
    full = ["--trials", "2", "--preset", "tiny", "--tracking-uri", store["uri"], *argv]
    assert tune.main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


class _PruneOdd(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial at its first report: a deterministic pruner."""

    def prune(self, study, trial):
        return trial.number % 2 == 1


def _options(store, data_root, tmp_path, trials, **kw):
    return optuna_study.TuneOptions(
        "g",
        trials,
        preset="tiny",
        root=str(data_root),
        tracking_uri=store["uri"],
        out=str(tmp_path / "report"),
        **kw,
    )


@pytest.mark.slow
def test_study_end_to_end_records_resumes_and_reports(
    store, data_root, tmp_path, capsys, monkeypatch
):
    seen = []
    build = optuna_study.build_data
    monkeypatch.setattr(
        optuna_study,
        "build_data",
        lambda cfg, seed, splits, **kw: (
            seen.append(splits) or build(cfg, seed=seed, splits=splits, **kw)
        ),
    )
    opts = _options(store, data_root, tmp_path, 3)
    assert tune.finish(opts, optuna_study.run_study(opts, pruner=_PruneOdd())) == 0
    out = capsys.readouterr().out
    # Validation is on held-out training identities, never the benchmark's query/gallery.
    assert len(seen) == 3 and all(s.name.endswith("-holdout") for s in seen)
    assert all("bounding_box_train" in x.path for s in seen for x in s.query + s.gallery)

    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("tune-g-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags["kind"] == "study"]
    trials = {r.info.run_name: r for r in runs if r.data.tags["kind"] == "trial"}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert set(trials) == {"trial-0", "trial-1", "trial-2"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
    assert [trials[f"trial-{i}"].data.tags["trial_state"] for i in range(3)] == [
        "COMPLETE",
        "PRUNED",
        "COMPLETE",
    ]

    journal = (
        Path(store["uri"][len("sqlite:///") :]).parent / "optuna" / "tune-g-synthetic-tiny.journal"
    )
    study = optuna.load_study(
        study_name="tune-g-synthetic-tiny",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    for t in study.trials:
        run = trials[f"trial-{t.number}"]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert float(run.data.params["model.gauss_sy"]) == pytest.approx(t.params["model.gauss_sy"])
        assert run.data.params["train.epochs"] == "2" and run.data.params["train.eval_every"] == "1"
        assert run.data.metrics["trial/number"] == t.number
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/mAP")]
        assert steps == ([1] if t.number == 1 else [1, 2])
        assert "train/loss_ce" in run.data.metrics
        if t.state.name == "COMPLETE":
            assert run.data.metrics["val/mAP"] == pytest.approx(t.value)
    assert "below the pruner's bar at epoch 1" in trials["trial-1"].data.tags["pruned"]

    best_file = journal.with_name("tune-g-synthetic-tiny-best.json")
    best = json.loads(best_file.read_text())
    assert best == {k: pytest.approx(v, rel=1e-5) for k, v in study.best_params.items()}
    report = tmp_path / "report"
    pngs = {
        "optimization_history.png",
        "intermediate_values.png",
        "parallel_coordinate.png",
        "param_importances.png",
    }
    assert pngs <= {p.name for p in report.iterdir()}
    assert {f"plots/{p}" for p in pngs} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")
    }
    assert parent.data.metrics["best/val_mAP"] == pytest.approx(study.best_value)
    assert f"--params-file {best_file}" in out and "--set loss.w_grad=" in out

    # The same command again: the budget is reached, nothing trains. A larger budget continues
    # the same study under the same parent run.
    assert tune.finish(opts, optuna_study.run_study(opts, pruner=_PruneOdd())) == 0
    assert "already has 3 finished trials" in capsys.readouterr().out
    more = _options(store, data_root, tmp_path, 4)
    assert tune.finish(more, optuna_study.run_study(more, pruner=_PruneOdd())) == 0
    runs = client.search_runs([exp.experiment_id])
    assert sum(r.data.tags["kind"] == "study" for r in runs) == 1
    assert sorted(r.info.run_name for r in runs if r.data.tags["kind"] == "trial") == [
        f"trial-{i}" for i in range(4)
    ]

    # Another base configuration must not mix into this study.
    with pytest.raises(FTNError, match="was started with another configuration"):
        optuna_study.run_study(_options(store, data_root, tmp_path, 5, sets={"train.epochs": "3"}))

    # Every trial names the data it was scored on; the study refuses other data before training.
    digest = optuna_study.load_splits(optuna_study.plan_for(opts, {}).cfg.data).digest
    assert len(digest) == 16 and study.user_attrs["data_digest"] == digest
    assert parent.data.tags["data_digest"] == digest
    assert all(r.data.tags["data_digest"] == digest for r in trials.values())
    load = optuna_study.load_splits
    monkeypatch.setattr(
        optuna_study, "load_splits", lambda cfg: dataclasses.replace(load(cfg), digest="0" * 16)
    )
    seen.clear()
    with pytest.raises(FTNError, match=rf"started on other data \(digest {digest}, now 0{{16}}\)"):
        optuna_study.run_study(_options(store, data_root, tmp_path, 5))
    assert not seen


# Worker processes get one thread each: two 2-thread workers on two cores thrash.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(store, data_root, tmp_path, *extra):
    return [
        sys.executable,
        str(REPO / "ablations" / "tune.py"),
        "--variant",
        "g",
        "--preset",
        "tiny",
        "--root",
        str(data_root),
        "--tracking-uri",
        store["uri"],
        "--out",
        str(tmp_path / "report"),
        *extra,
    ]


@pytest.mark.slow
def test_sigterm_fails_the_trial_and_the_rerun_completes_the_budget(
    store, data_root, tmp_path, capsys
):
    from ablations.store import open_store

    open_store(
        store["uri"]
    )  # the schema made here (its creation in a process: test_reliability.py)
    cmd = _cli(store, data_root, tmp_path, "--trials", "1", "--set", "train.epochs=4")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stdout:  # SIGTERM once the first trial has reported an epoch
        if "trial 0 epoch 1:" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to continue the study" in err and "Traceback" not in err
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("tune-g-synthetic-tiny")
    (killed,) = client.search_runs([exp.experiment_id], "tags.kind = 'trial'")
    assert killed.info.status == "KILLED" and killed.data.tags["trial_state"] == "FAIL"

    capsys.readouterr()
    assert tune.main(cmd[2:]) == 0  # the rerun, in this process
    assert "trials: 1 FAIL, " in capsys.readouterr().out
    states = sorted(
        r.data.tags["trial_state"]
        for r in client.search_runs([exp.experiment_id], "tags.kind = 'trial'")
    )
    assert states == ["COMPLETE", "FAIL"]


@pytest.mark.slow
def test_two_workers_share_one_study(store, data_root, tmp_path):
    from ablations.store import open_store

    open_store(store["uri"])  # the MLflow schema is made once, before the workers start
    procs = [
        subprocess.Popen(
            _cli(store, data_root, tmp_path, "--trials", "4", "--seed", str(k)),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    journal = (
        Path(store["uri"][len("sqlite:///") :]).parent / "optuna" / "tune-g-synthetic-tiny.journal"
    )
    study = optuna.load_study(
        study_name="tune-g-synthetic-tiny",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    )
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert 4 <= len(finished) <= 5  # the budget, plus at most the other worker's last trial
    assert len(study.trials) == len(finished)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(
        study.trials
    )  # no repeats
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("tune-g-synthetic-tiny")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["kind"] == "study"]
    trial_runs = [r for r in runs if r.data.tags["kind"] == "trial"]
    assert sorted(r.info.run_name for r in trial_runs) == sorted(
        f"trial-{t.number}" for t in study.trials
    )
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trial_runs)
    assert parent.info.status == "FINISHED"
    # Both workers trained trials (they share one budget rather than each running four).
    workers = [len(re.findall(r"^trial \d+ (?:COMPLETE|PRUNED) ", o[0], re.M)) for o in outs]
    assert all(w >= 1 for w in workers) and sum(workers) == len(finished)


@pytest.mark.slow
def test_a_nan_trial_fails_and_is_reported(store, data_root, tmp_path, capsys, monkeypatch):
    # A NaN L1 term (a NaN weight is refused before any trial starts).
    monkeypatch.setattr(
        "ftn_core.losses.l1_loss",
        lambda recon, target, reduction="paper": (recon - target).abs().sum() * float("nan"),
    )
    opts = _options(store, data_root, tmp_path, 1)
    assert (
        tune.finish(opts, optuna_study.run_study(opts)) == 1
    )  # caught: the study goes on, but none completed
    out = capsys.readouterr().out
    assert "trial 0 FAIL (non-finite loss at epoch 2" in out and "no trial has completed yet" in out
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("tune-g-synthetic-tiny")
    (run,) = client.search_runs([exp.experiment_id], "tags.kind = 'trial'")
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    assert "non-finite loss" in run.data.tags["error"]


def test_default_pruner_spares_the_first_quarter_of_epochs():
    import optuna

    from ablations.optuna_study import default_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=default_pruner(8))
    for _ in range(3):  # n_startup_trials: three finished trials at 50 % mAP
        trial = study.ask()
        for epoch in range(1, 9):
            trial.report(50.0, epoch)
        study.tell(trial, 50.0)
    trial = study.ask()
    prunable = []
    for epoch in range(1, 9):
        trial.report(1.0, epoch)  # far below the median
        prunable.append(trial.should_prune())
    assert prunable == [False, False] + [True] * 6
