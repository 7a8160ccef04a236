"""No silent wrong result: a run is tied to the data it saw, and a Δ pairs only complete seeds."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_store import FakeRun, log_experiment, new_store
from fixtures_layouts import GALLERY, QUERY, TRAIN, write_market_layout
from mlflow import MlflowClient

from ftn_core.data import digest, readers
from ftn_core.data.loading import load_dataset


def _settle(folder: Path) -> None:
    """Date every file an hour back, as data that sits on disk (fresh files are never cached)."""
    old = time.time() - 3600
    for path in folder.rglob("*"):
        os.utime(path, (old, old))


def test_the_digest_follows_what_was_read_not_where(tmp_path):
    d = write_market_layout(tmp_path / "a" / "mine", TRAIN, QUERY, GALLERY)
    first = load_dataset("folder", str(d)).digest
    assert len(first) == digest.DIGEST_CHARS and load_dataset("folder", str(d)).digest == first
    moved = tmp_path / "b" / "mine"
    shutil.copytree(d, moved)
    assert load_dataset("folder", str(moved)).digest == first  # same images elsewhere
    gallery = sorted(
        p for p in (moved / "bounding_box_test").iterdir() if not p.name.startswith("-1")
    )
    gallery[0].unlink()  # an image removed
    removed = load_dataset("folder", str(moved)).digest
    assert removed != first
    name = gallery[1].name  # relabelled: the same bytes under another identity
    gallery[1].rename(gallery[1].with_name(f"0099{name[4:]}"))
    assert load_dataset("folder", str(moved)).digest not in (first, removed)
    query = sorted((d / "query").iterdir())[0]  # edited in place, same size
    data = bytearray(query.read_bytes())
    data[len(data) // 2] ^= 0xFF
    query.write_bytes(bytes(data))
    assert load_dataset("folder", str(d), verify_images=False).digest != first


def test_a_second_read_hashes_and_decodes_only_what_changed(tmp_path, monkeypatch):
    d = write_market_layout(tmp_path / "mine", TRAIN, QUERY, GALLERY)
    _settle(d)
    first = load_dataset("folder", str(d))
    hashed, decoded = [], []
    real_hash, real_check = digest._hash_file, readers.check_image
    monkeypatch.setattr(digest, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(readers, "check_image", lambda p: decoded.append(p) or real_check(p))
    again = load_dataset("folder", str(d))
    assert again.digest == first.digest and hashed == [] and decoded == []
    edited = sorted((d / "query").iterdir())[0]
    edited.write_bytes(edited.read_bytes() + b"\0")  # still decodes: a changed file, read afresh
    later = time.time() - 60
    os.utime(edited, (later, later))
    changed = load_dataset("folder", str(d))
    assert changed.digest != first.digest and hashed == [str(edited)] and decoded == [str(edited)]


def test_the_cache_is_only_read_inside_read_only_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTN_CACHE_DIR", str(tmp_path / "cache"))
    d = write_market_layout(tmp_path / "mine", TRAIN, QUERY, GALLERY)
    _settle(d)
    with digest.read_only_cache():
        load_dataset("folder", str(d))
    assert not (tmp_path / "cache").exists()
    load_dataset("folder", str(d))
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1


def test_the_synthetic_digest_is_known_before_the_data_exists(data_root, tmp_path):
    from ftn_core.data.synthetic import load_synthetic, settings_digest

    assert not (tmp_path / "synthetic_tiny_s0").exists()
    assert settings_digest("tiny", 0) == load_synthetic(str(data_root), "tiny", 0).digest
    assert settings_digest("tiny", 1) != settings_digest("tiny", 0) != settings_digest("default", 0)


# --------------------------------------------------------------------------- edited data, end to end


def _own_dataset(kind: str, data_root: Path, tmp_path: Path) -> tuple[str, callable]:
    """The tiny synthetic images as a ``folder`` or ``csv`` dataset, and an edit of it like the
    probe's (a quarter of the gallery cut)."""
    src = data_root / "synthetic_tiny_s0"
    mine = tmp_path / "mine"
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.copytree(src / sub, mine / sub)
    if kind == "folder":

        def edit():
            for path in sorted((mine / "bounding_box_test").iterdir())[::4]:
                path.unlink()

        return str(mine), edit
    rows = []
    for split, sub in (
        ("train", "bounding_box_train"),
        ("query", "query"),
        ("gallery", "bounding_box_test"),
    ):
        for path in sorted((mine / sub).iterdir()):
            pid, cam = path.name.split("_")[:2]
            rows.append(f"{sub}/{path.name},{int(pid)},{int(cam[1]) - 1},{split}")
    index = mine / "index.csv"
    index.write_text("path,pid,camid,split\n" + "\n".join(rows) + "\n")

    def edit():
        lines = index.read_text().splitlines()
        gallery = [i for i, line in enumerate(lines) if line.endswith(",gallery")]
        index.write_text(
            "\n".join(line for i, line in enumerate(lines) if i not in gallery[::4]) + "\n"
        )

    return str(index), edit


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "folder"])
def test_edited_data_is_a_new_run_and_the_old_one_is_refused_or_left_out(
    kind, data_root, tmp_path, capsys
):
    from ablations import evaluate
    from ablations import run as run_cli
    from reports import build

    root, edit = _own_dataset(kind, data_root, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = [
        "--table",
        "3",
        "--dataset",
        kind,
        "--root",
        root,
        "--variants",
        "base",
        "--preset",
        "tiny",
        "--tracking-uri",
        uri,
        "--work-dir",
        str(tmp_path / "ckpt"),
    ]

    def run(*extra: str) -> str:
        capsys.readouterr()
        assert run_cli.main([*train, *extra]) == 0
        return capsys.readouterr().out

    run()
    if kind == "folder":  # the same data: done; a quarter of the gallery less: a run to do
        assert "1 runs, 1 already done, 0 to run" in run("--dry-run")
        edit()
        assert "1 runs, 0 already done, 1 to run" in run("--dry-run")
        return
    assert "already FINISHED" in run()
    edit()
    assert "[1/1] table3-csv-tiny base-s0 (training" in run()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table3-csv-tiny")
    old, new = sorted(
        client.search_runs([exp.experiment_id], "tags.kind = 'child'"),
        key=lambda r: r.info.start_time,
    )
    assert old.info.status == new.info.status == "FINISHED"
    assert old.data.tags["config_hash"] == new.data.tags["config_hash"]
    assert old.data.tags["data_digest"] != new.data.tags["data_digest"]
    (dataset_input,) = new.inputs.dataset_inputs
    assert dataset_input.dataset.digest == new.data.tags["data_digest"]
    # The old run's results belong to data that is gone: refused, and left out of the report.
    assert evaluate.main(["--run", old.info.run_id, "--tracking-uri", uri, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "data that is gone" in err and old.data.tags["data_digest"] in err
    )
    out = tmp_path / "out"
    assert (
        build.main(
            ["--tracking-uri", uri, "--out", str(out), "--no-visual", "--no-efficiency", "--no-log"]
        )
        == 0
    )
    assert "left out: 1 run(s) on other data" in capsys.readouterr().out
    table = pd.read_csv(out / "table3" / "csv-tiny" / "table.csv")
    assert list(table["n"]) == [1]
    readme = (out / "table3" / "csv-tiny" / "README.md").read_text()
    assert f"Data digest `{new.data.tags['data_digest']}`" in readme and "on other data" in readme


def test_a_new_store_is_untouched_by_a_dry_run_and_a_refused_root(tmp_path, capsys):
    from ablations import run as run_cli

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    common = [
        "--table",
        "2",
        "--preset",
        "tiny",
        "--tracking-uri",
        uri,
        "--work-dir",
        str(tmp_path / "ckpt"),
    ]
    assert run_cli.main([*common, "--root", str(tmp_path / "data"), "--dry-run"]) == 0
    assert run_cli.main([*common, "--dataset", "folder", "--root", str(tmp_path / "absent")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "store").exists() and not (tmp_path / "data").exists()
    assert not (tmp_path / "ckpt").exists()


# --------------------------------------------------------------------------- complete seeds only


def _pq(hits: list[int], ap: list[float]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-query arrays of 10 queries (first match at rank 1 where ``hits``) and the run's
    rank-1 / mAP, which are exactly their means."""
    first = np.array([1 if h else 3 for h in hits])
    arrays = {
        "index": np.arange(10),
        "pid": np.arange(10),
        "camid": np.zeros(10, int),
        "ap": np.array(ap),
        "first_rank": first,
        "inp": np.array(ap),
        "top10": np.zeros((10, 10), int),
    }
    return arrays, {"rank1": 100.0 * float(np.mean(first == 1)), "mAP": 100.0 * float(np.mean(ap))}


def _probe_runs(with_incomplete: bool) -> list[FakeRun]:
    """Base and (g) at seeds 0 and 1; base-s1, when kept, has no per_query.npz and no model."""
    base0, m_base0 = _pq([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [0.4] * 10)
    g0, m_g0 = _pq([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [0.5] * 5 + [0.4] * 5)
    g1, m_g1 = _pq([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [0.45] * 10)
    runs = [
        FakeRun("base", 0, m_base0, per_query=base0),
        FakeRun("g", 0, m_g0, per_query=g0),
        FakeRun("g", 1, m_g1, per_query=g1),
    ]
    if with_incomplete:  # R-1 60, mAP 70 with both seeds the table's Δ used to mix in
        runs.append(FakeRun("base", 1, {"rank1": 60.0, "mAP": 70.0}, per_query=None, model=False))
    return runs


def _report(
    tmp_path: Path, runs: list[FakeRun], capsys
) -> tuple[pd.DataFrame, pd.DataFrame, str, str]:
    from reports import build

    uri = new_store(tmp_path / "store")
    log_experiment(uri, tmp_path / "store", runs)
    capsys.readouterr()
    assert (
        build.main(
            [
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "out"),
                "--no-visual",
                "--no-efficiency",
                "--no-log",
            ]
        )
        == 0
    )
    folder = tmp_path / "out" / "table2" / "synthetic-tiny"
    table = pd.read_csv(folder / "table.csv").set_index("variant")
    return (
        table,
        pd.read_csv(folder / "claims.csv"),
        (folder / "README.md").read_text(),
        capsys.readouterr().out,
    )


def test_a_seed_missing_on_one_side_is_named_and_left_out_of_every_delta(tmp_path, capsys):
    table, claims, readme, console = _report(tmp_path / "probe", _probe_runs(True), capsys)
    complete, complete_claims, _, _ = _report(tmp_path / "complete", _probe_runs(False), capsys)
    gap = "base-s1 has no per_query.npz: seed 1 is left out of g − base"
    assert gap in console and gap in readme
    assert table.loc["g", "n"] == 2 and table.loc["g", "n_paired"] == 1
    full = (tmp_path / "probe" / "out" / "table2" / "synthetic-tiny" / "table.md").read_text()
    assert "2 (1 paired)" in full  # the full table's seeds column; the README links it
    assert table.loc["base", "rank1_mean"] == pytest.approx(
        45.0
    )  # the row itself keeps both of its runs
    # Seed 0 alone: g−base R-1 = 50 − 30 = +20, mAP = 45 − 40 = +5, whatever base-s1 scored.
    assert table.loc["g", "d_rank1"] == pytest.approx(20.0) and table.loc[
        "g", "d_mAP"
    ] == pytest.approx(5.0)
    for col in (
        "d_rank1",
        "d_rank1_lo",
        "d_rank1_hi",
        "d_rank1_mark",
        "d_mAP",
        "d_mAP_lo",
        "d_mAP_hi",
        "d_mAP_mark",
    ):
        assert table.loc["g", col] == complete.loc["g", col], col
    assert table.loc["g", "d_rank1_lo"] <= table.loc["g", "d_rank1"] <= table.loc["g", "d_rank1_hi"]
    pd.testing.assert_frame_equal(claims, complete_claims)
    cited = claims.loc[claims["claim"].str.startswith("every reconstruction"), "evidence"].item()
    assert "g−base +20.0" in cited
    # The sentence follows the marks, not the signs: both Δ are positive, only mAP's interval clears 0
    # (R-1 rests on 2 of 10 queries, mAP on 5).
    assert (complete.loc["g", "d_rank1_mark"], complete.loc["g", "d_mAP_mark"]) == (
        "within noise",
        "better",
    )
    lo, hi = complete.loc["g", "d_rank1_lo"], complete.loc["g", "d_rank1_hi"]
    interval = f"[{lo:+.1f}, {hi:+.1f}]".replace("-", "−")
    assert (
        f"beats our Baseline on mAP and is within noise of it on R-1 (Δ R-1 +20.0 {interval}"
        in readme
    )
    assert "paired 95 % CI, query sampling only (one seed))." in readme


def test_a_claim_without_a_complete_pair_is_no_evidence(tmp_path, capsys):
    g1, m_g1 = _pq([1] * 5 + [0] * 5, [0.5] * 10)
    only_g_has_results = [
        FakeRun("base", 0, {"rank1": 30.0, "mAP": 40.0}, model=False),
        FakeRun("g", 1, m_g1, per_query=g1),
    ]
    table, claims, readme, console = _report(tmp_path, only_g_has_results, capsys)
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    assert verdicts["every reconstruction strategy (a)–(g) beats the Baseline"] == (
        "no evidence (a, b, c, d, e, f not run; no seed with complete runs of both g and base)"
    )
    assert np.isnan(table.loc["g", "d_rank1"]) and table.loc["g", "n_paired"] == 0
    assert "base-s1 has no FINISHED run: seed 1 is left out of g − base" in console


def test_a_row_short_of_several_seeds_is_one_line(tmp_path, capsys):
    g0, m_g0 = _pq([1] * 5 + [0] * 5, [0.5] * 10)
    runs = [FakeRun("base", s, m_g0, per_query=g0) for s in (0, 1, 2)] + [
        FakeRun("g", 0, m_g0, per_query=g0)
    ]
    _, _, readme, console = _report(tmp_path, runs, capsys)
    line = "g has no FINISHED run at seeds 1 2: they are left out of g − base"
    assert line in console and line in readme and "g-s1" not in readme


def test_per_query_names_every_run_it_skips_and_fails(tmp_path, capsys):
    from ablations import per_query

    uri = new_store(tmp_path / "store")
    log_experiment(uri, tmp_path / "store", _probe_runs(True))
    capsys.readouterr()
    assert per_query.main(["--tracking-uri", uri]) == 1
    err = capsys.readouterr().err
    assert (
        "skipped table2-synthetic-tiny base-s1" in err and "no model.pt among its artifacts" in err
    )
    assert (
        err.strip().splitlines()[-1].startswith("error: 1 run(s) could not be given per_query.npz")
    )
