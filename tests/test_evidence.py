"""A report folder ships what its build read of the store (``evidence/``), and
``reports/build.py --from-evidence`` rebuilds the folder from it, byte for byte, with no store."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_store import FakeRun, log_experiment, new_store

from reports import build

REPO = Path(__file__).resolve().parents[1]
QUERIES, GALLERY = 20, 51  # the tiny synthetic benchmark's test split (seed 0)


def _per_query(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ap = rng.random(QUERIES)
    return {
        "index": np.arange(QUERIES),
        "pid": np.arange(QUERIES),
        "camid": np.zeros(QUERIES, int),
        "ap": ap,
        "first_rank": rng.integers(1, 5, QUERIES),
        "inp": ap / 2,
        "top10": rng.integers(0, GALLERY, (QUERIES, 10)),
    }


RUNS = {("base", 0): 50.0, ("base", 1): 54.0, ("cfa", 0): 53.0, ("cfa", 1): 55.0}


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root):
    """Table 1 on the tiny preset, built from a store with every part (visual figures, the
    efficiency table, logged to the parent run); the store is then deleted."""
    folder = tmp_path_factory.mktemp("evidence")
    store = folder / "store"
    store.mkdir()
    (store / "data").symlink_to(data_root)  # the runs' data.root: the visual figures draw from it
    uri = new_store(store)
    runs = [
        FakeRun(v, s, {"rank1": r1, "mAP": r1 - 10}, per_query=_per_query(10 * s + (v == "cfa")))
        for (v, s), r1 in RUNS.items()
    ]
    runs.append(FakeRun("cfa", 2, {"rank1": 1.0, "mAP": 1.0}, status="FAILED"))
    log_experiment(uri, store, runs, table=1)
    out = folder / "from-store"
    assert build.main(["--tracking-uri", uri, "--out", str(out), "--table", "1"]) == 0
    shutil.rmtree(store)  # from here on there is no store: every rebuild reads the evidence alone
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _same(a: Path, b: Path) -> list[str]:
    """The files that differ between two folders (or that one of them lacks); no file of a
    report names the time it was built, so every byte is compared."""
    fa, fb = _files(a), _files(b)
    return sorted(n for n in fa.keys() | fb.keys() if fa.get(n) != fb.get(n))


def test_the_evidence_holds_what_the_report_read(built):
    folder = built / "table1" / "synthetic-tiny"
    ev = folder / "evidence"
    manifest = json.loads((ev / "manifest.json").read_text())
    assert manifest["experiment"]["name"] == "table1-synthetic-tiny"
    runs = pd.read_parquet(ev / "runs-child.parquet")  # every child run, the FAILED one too
    assert sorted(runs["status"]) == ["FAILED"] + ["FINISHED"] * 4
    assert len(pd.read_parquet(ev / "runs-parent.parquet")) == 1
    name = dict(zip(runs["run_id"], runs["tags.mlflow.runName"]))
    pq = pd.read_parquet(ev / "per_query.parquet")
    assert list(pq.columns) == ["run_id", "index", "first_rank", "ap"]  # what the numbers use
    base0 = pq[pq["run_id"].map(name) == "base-s0"]
    assert base0["ap"].tolist() == _per_query(0)["ap"].tolist()
    assert len(pq) == 4 * QUERIES  # the FAILED run is never read
    hist = pd.read_parquet(ev / "histories.parquet")
    ce = hist[(hist["key"] == "train/loss_ce") & (hist["run_id"].map(name) == "cfa-s1")]
    assert ce["value"].tolist() == [2.0 + 0.1, 1.0 + 0.1]  # 2 / epoch + 0.1 · seed, 2 epochs
    assert manifest["build"] == {
        "visuals": True,
        "efficiency": True,
        "log": True,
        "logged": True,
        "log_notes": [],
    }
    kept = manifest["as_is"]
    assert set(kept) == {"visuals"}  # the efficiency table is drawn again, from efficiency.json
    assert {"stage3_vs_cfa.png", "global_local.pdf", "ranklist_cfa.png"} <= set(
        kept["visuals"]["files"]
    )
    shipped = json.loads(gzip.decompress((ev / "artifacts.json.gz").read_bytes()))
    measured = {name[r]: d["efficiency.json"] for r, d in shipped.items() if "efficiency.json" in d}
    assert sorted(measured) == ["base-s0", "cfa-s0"]  # the runs its table reads: the first seed
    assert measured["base-s0"]["machine"] == "a test machine"
    for part in kept.values():
        for file, digest in part["files"].items():
            assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest
    footer = (folder / "README.md").read_text().splitlines()[-1]
    assert "`python reports/build.py --from-evidence` rebuilds this folder" in footer
    assert "`stage3_vs_cfa.png`" in footer and "`efficiency.md`" not in footer


def test_a_report_rebuilt_from_its_evidence_is_the_same_bytes_without_the_store(
    built, tmp_path, capsys, monkeypatch
):
    from reports import index

    # Elsewhere than it was built: written into what counts as the repository's reports/. The
    # page still says what it said when it was built.
    monkeypatch.setattr(index, "REPO", tmp_path)
    out = tmp_path / "reports"
    assert build.main(["--from-evidence", str(built), "--table", "1", "--out", str(out)]) == 0
    assert "table1-synthetic-tiny: 4 runs, 1 reason(s) to leave runs out" in capsys.readouterr().out
    assert _same(built / "table1", out / "table1") == []
    assert len(_files(out / "table1")) > 25  # the tables, figures, README, index and evidence
    # In place, over the folder it reads from: the same bytes again.
    inplace = tmp_path / "inplace"
    shutil.copytree(built, inplace)
    assert build.main(["--from-evidence", str(inplace), "--out", str(inplace)]) == 0
    assert _same(built, inplace) == []


def test_the_numbers_come_from_the_evidence(built, tmp_path):
    """cfa-s1's final R-1 raised by 10 in the evidence: the rebuilt row's mean rises by 5."""
    src = tmp_path / "src"
    shutil.copytree(built, src)
    ev = src / "table1" / "synthetic-tiny" / "evidence"
    runs = pd.read_parquet(ev / "runs-child.parquet")
    runs.loc[runs["tags.mlflow.runName"] == "cfa-s1", "metrics.val/rank1"] += 10
    runs.to_parquet(ev / "runs-child.parquet", index=False)
    manifest = json.loads((ev / "manifest.json").read_text())
    manifest["files"]["runs-child.parquet"] = hashlib.sha256(
        (ev / "runs-child.parquet").read_bytes()
    ).hexdigest()
    (ev / "manifest.json").write_text(json.dumps(manifest))
    assert build.main(["--from-evidence", str(src), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "table1" / "synthetic-tiny" / "table.csv").set_index(
        "variant"
    )
    assert table.loc["cfa", "rank1_mean"] == pytest.approx((53 + 65) / 2)
    assert table.loc["base", "rank1_mean"] == pytest.approx((50 + 54) / 2)


def test_a_changed_file_is_refused_and_the_report_left_whole(built, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(built, src)
    folder = src / "table1" / "synthetic-tiny"
    before = _files(src)
    (folder / "stage3_vs_cfa.png").write_bytes(b"not the figure")  # drawn from data not shipped
    assert build.main(["--from-evidence", str(src), "--out", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert "stage3_vs_cfa.png is missing or is not the file its evidence lists (sha256)" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _files(src) == before | {"table1/synthetic-tiny/stage3_vs_cfa.png": b"not the figure"}
    (folder / "stage3_vs_cfa.png").write_bytes(before["table1/synthetic-tiny/stage3_vs_cfa.png"])
    with open(folder / "evidence" / "per_query.parquet", "ab") as fh:
        fh.write(b"\0")
    assert build.main(["--from-evidence", str(src), "--out", str(tmp_path / "out")]) == 2
    assert (
        "per_query.parquet is missing or is not the file the manifest lists"
        in capsys.readouterr().err
    )


def test_options_that_need_a_store_and_folders_without_evidence(built, tmp_path, capsys):
    argv = ["--from-evidence", str(built), "--out", str(tmp_path / "o")]
    assert build.main(argv + ["--no-visual", "--tracking-uri", "sqlite:///x.db"]) == 2
    assert "give it without --tracking-uri, --no-visual" in capsys.readouterr().err
    old = tmp_path / "old"
    shutil.copytree(built, old)
    shutil.rmtree(old / "table1" / "synthetic-tiny" / "evidence")  # a report from before evidence
    assert build.main(["--from-evidence", str(old), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "skipped table1/synthetic-tiny: no evidence/" in err.replace(str(old) + "/", "")
    assert "has evidence/ to rebuild from" in err
    assert not (tmp_path / "o" / "table1").exists()


def _committed() -> list[Path]:
    return sorted(
        p.parent
        for pattern in ("table*/*/README.md", "study-*/*/README.md")
        for p in (REPO / "reports").glob(pattern)
    )


def test_every_committed_report_ships_its_evidence():
    lacking = [
        str(f.relative_to(REPO))
        for f in _committed()
        if not (f / "evidence" / "manifest.json").is_file()
    ]
    assert _committed() and not lacking, (
        f"committed report folders without evidence/ (cannot be rebuilt without their store; "
        f"build them again from it with `python reports/build.py`): {', '.join(lacking)}"
    )


@pytest.mark.parametrize(
    "folder",
    [f for f in _committed() if (f / "evidence" / "manifest.json").is_file()],
    ids=lambda f: f"{f.parent.name}/{f.name}",
)
def test_a_committed_report_rebuilds_from_its_evidence(folder, tmp_path):
    name = json.loads((folder / "evidence" / "manifest.json").read_text())["experiment"]["name"]
    assert (
        build.main(
            ["--from-evidence", str(REPO / "reports"), "--experiment", name, "--out", str(tmp_path)]
        )
        == 0
    )
    again = tmp_path / folder.parent.name / folder.name
    differ = _same(folder, again)
    assert differ == [], (
        f"{folder.relative_to(REPO)}: rebuilt from its evidence, these files differ "
        f"from the committed ones (the code or the study changed since it was built; "
        f"rebuild it): {differ}"
    )
