"""The store's experiment names (``ablations.store``): written and read back by one module, and the
reports keep no store definitions of their own. No MLflow store is opened."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ablations import store
from ablations.store import ExperimentName, experiment_name, parse_experiment, study_experiments
from ablations.study import as_study, parse
from ftn_core.errors import FTNError

REPO = Path(__file__).resolve().parents[1]
DASHED = """
name = "mask-width"
reference = "a"
[[row]]
key = "a"
[[row]]
key = "b"
set = { "model.gauss_sy" = 0.25 }
"""


@pytest.mark.parametrize(
    "study, dataset, preset, parts",
    [
        (2, "synthetic", "cpu", ExperimentName(2, None, "synthetic", "cpu")),
        (
            1,
            "market-1501",
            "paper",
            ExperimentName(1, None, "market-1501", "paper"),
        ),  # dashed dataset
        (
            "mask-width",
            "synthetic",
            "tiny",
            ExperimentName(None, "mask-width", "synthetic", "tiny"),
        ),
        ("my-table1", "msmt17", "gpu", ExperimentName(None, "my-table1", "msmt17", "gpu")),
    ],
)
def test_experiment_names_read_back(study, dataset, preset, parts):
    name = experiment_name(study, dataset, preset)
    assert name == f"{'table' if isinstance(study, int) else 'study-'}{study}-{dataset}-{preset}"
    assert parse_experiment(name) == parts


def test_names_that_are_no_experiment_and_a_studys_dashed_dataset():
    for name in (
        "Default",
        "table2-synthetic",
        "tableX-synthetic-cpu",
        "table2-synthetic-",
        "study-mask-cpu",
        "pretrain-fractal",
    ):
        assert parse_experiment(name) is None, name
    # A study's name takes the dashes: a dataset with one does not read back (as ever).
    assert parse_experiment(experiment_name("s", "a-b", "cpu")) == (None, "s-a", "b", "cpu")


def test_a_study_names_its_experiments_through_the_store():
    assert as_study(2).experiment("synthetic", "cpu") == experiment_name(2, "synthetic", "cpu")
    assert parse(DASHED, "s.toml").experiment("x", "tiny") == "study-mask-width-x-tiny"


def test_study_experiments_are_those_its_name_writes():
    names = [
        "table2-synthetic-cpu",
        "table2-market-1501-cpu",
        "table22-synthetic-cpu",
        "table02-synthetic-cpu",
        "study-mask-width-synthetic-tiny",
        "study-mask-synthetic-tiny",
        "study-mask-width-x-synthetic-tiny",
        "Default",
    ]
    exps = [SimpleNamespace(name=n) for n in names]
    client = SimpleNamespace(search_experiments=lambda max_results: exps)
    assert [e.name for e in study_experiments(client, as_study(2))] == [
        "table2-market-1501-cpu",  # as --table 2 finds it
        "table2-synthetic-cpu",
    ]
    mask = parse(DASHED, "s.toml")
    assert [e.name for e in study_experiments(client, mask)] == ["study-mask-width-synthetic-tiny"]
    client = SimpleNamespace(search_experiments=lambda max_results: [])
    with pytest.raises(FTNError, match="no experiment of study mask-width in the store"):
        study_experiments(client, mask)


def test_an_experiment_keeps_its_parts_as_tags(tmp_path):
    """A study experiment's tags give its dataset whole, dashes and all; a second study whose
    name writes the same experiment name is refused; an experiment without the tags (made
    before them) is read from its name."""
    from mlflow import MlflowClient

    from tests.fake_store import new_store

    client = MlflowClient(new_store(tmp_path))
    mine = ExperimentName(None, "mask", "my-data", "cpu")
    name = experiment_name("mask", "my-data", "cpu")
    exp_id = store.get_or_create_experiment(client, name, mine)
    assert store.experiment_parts(client.get_experiment(exp_id)) == mine
    assert parse_experiment(name) == (None, "mask-my", "data", "cpu")  # the name alone cannot
    assert [
        e.name
        for e in study_experiments(client, parse(DASHED.replace("mask-width", "mask"), "m.toml"))
    ] == [name]
    with pytest.raises(FTNError, match="no experiment of study mask-my"):
        study_experiments(client, parse(DASHED.replace("mask-width", "mask-my"), "m.toml"))
    with pytest.raises(FTNError, match="holds the runs of study mask on my-data"):
        store.get_or_create_experiment(client, name, ExperimentName(None, "mask-my", "data", "cpu"))
    assert store.get_or_create_experiment(client, name, mine) == exp_id  # its own: found
    old = client.create_experiment("study-mask-width-synthetic-tiny")
    assert store.experiment_parts(client.get_experiment(old)) == (
        None,
        "mask-width",
        "synthetic",
        "tiny",
    )
    store.get_or_create_experiment(  # touched again by a run: the tags are added
        client,
        "study-mask-width-synthetic-tiny",
        ExperimentName(None, "mask-width", "synthetic", "tiny"),
    )
    assert client.get_experiment(old).tags["ftn.dataset"] == "synthetic"
    # Made before the tags and holding another study's runs: refused too, from a run's tags.
    older = client.create_experiment("study-a-b-c-cpu")
    client.create_run(
        older, tags={"kind": "child", "study": "a", "dataset": "b-c", "preset": "cpu"}
    )
    with pytest.raises(FTNError, match="holds the runs of study a on b-c"):
        store.get_or_create_experiment(
            client, "study-a-b-c-cpu", ExperimentName(None, "a-b", "c", "cpu")
        )
    # A tag that is no table number is not believed: the name is read instead.
    odd = client.create_experiment(
        "table2-synthetic-cpu", tags={k: "x" for k in store.EXPERIMENT_TAGS}
    )
    assert store.experiment_parts(client.get_experiment(odd)) == (2, None, "synthetic", "cpu")


def test_every_run_tag_the_code_reads_or_writes_is_a_store_tag():
    """A tag read as ``tags.<name>`` (a filter string, a runs-frame column, ``run.data.tags``)
    or written by the runner's tag dictionaries is one of ``store.RUN_TAGS``: a misspelt tag is
    a filter that silently matches nothing."""
    read = re.compile(
        r'\btags\.(?!get\b|items\b|pop\b|mlflow\b)([a-z_]+)|tags(?:\.get\(|\[)"([a-z_]+)"'
    )
    written = re.compile(r"^\s+\"([a-z_]+)\": ", re.M)
    unknown = {}
    for folder in ("ablations", "reports"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names = {a or b for a, b in read.findall(text)}
            if path.name == "runner.py":  # its tag dictionaries: the child's and the parent's
                for block in re.findall(r"def _child_tags.*?\n\n\n|tags=\{.*?\}", text, re.S):
                    names |= set(written.findall(block))
            bad = names - set(store.RUN_TAGS)
            if bad:
                unknown[str(path.relative_to(REPO))] = sorted(bad)
    assert unknown == {}
    assert {"kind", "variant", "seed", "config_hash", "data_digest"} <= set(store.RUN_TAGS)


def test_reports_use_the_stores_location_and_names():
    """No module of ``reports/`` defines where the store is or compiles its own name pattern."""
    from reports import index, load

    assert not hasattr(load, "DEFAULT_TRACKING_URI") and not hasattr(load, "connect")
    assert index.DEFAULT_TRACKING_URI is store.DEFAULT_TRACKING_URI
    own = []
    for path in sorted((REPO / "reports").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            own += [
                f"{path.name}: {t.id}"
                for t in targets
                if isinstance(t, ast.Name)
                and t.id in ("REPO", "MLRUNS", "DEFAULT_TRACKING_URI", "NAME_RE", "STUDY_RE")
            ]
    assert not own, own


def test_reading_a_missing_store_creates_nothing(tmp_path):
    db = tmp_path / "none" / "mlflow.db"
    with pytest.raises(FTNError, match="no tracking store at"):
        store.connect(f"sqlite:///{db}")
    assert not db.parent.exists()
    with pytest.raises(FTNError, match="expected sqlite:///path/to/mlflow.db"):
        store.connect(str(db))
