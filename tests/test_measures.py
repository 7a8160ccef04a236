"""What a run measures of its model for the reports (``ablations/measures.py``), and
``ablations/per_query.py`` giving it to runs trained before runs measured it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_store import NUM_CLASSES, FakeRun, log_experiment, new_store, run_config
from mlflow import MlflowClient

from ablations import measures, per_query
from ftn_core.data.splits import load_splits
from ftn_core.evaluation import activation_map, foreground_focus
from ftn_core.figure_data import figure_arrays, pick_identity, pick_pedestrians
from ftn_core.model import build_model
from reports import claims


def test_figure_arrays_are_the_models_maps_on_the_picked_images(data_root):
    cfg = run_config("tiny", 2, "g", 0, data_root)
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, NUM_CLASSES).eval()
    data = figure_arrays(model, cfg, splits)
    peds, ident = pick_pedestrians(splits), pick_identity(splits)
    assert len({s.pid for s in peds}) == 3 and list(data["ped_pid"]) == [s.pid for s in peds]
    assert len({s.camid for s in ident}) == len(ident) and len({s.pid for s in ident}) == 1
    assert data["ped_img"].dtype == np.uint8 and data["ped_img"].shape == (
        3,
        cfg.data.height,
        cfg.data.width,
        3,
    )
    # The stage-3 maps: channel means of the squared response on the images as logged.
    img = torch.from_numpy(data["ped_img"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = model.activation_maps(img)
    np.testing.assert_allclose(
        data["ped_stage3"], activation_map(feats["stage3"]).numpy(), rtol=1e-3, atol=1e-4
    )
    mask = torch.from_numpy(data["ped_mask"]).float()[:, None]
    focus = 100 * foreground_focus(torch.from_numpy(data["ped_stage3"]), mask).numpy()
    np.testing.assert_allclose(data["ped_fg_stage3"], focus, rtol=1e-5)
    assert 0 <= data["ped_fg_attn"].min() and data["ped_fg_attn"].max() <= 100
    # A Baseline has no attention map and no decoder: nothing for Fig. 4's A′ or TF-Dec.
    base = figure_arrays(
        build_model(run_config("tiny", 2, "base", 0, data_root).model, NUM_CLASSES), cfg, splits
    )
    assert "ped_attn" not in base and "rec_output" not in base and "id_global" in base


def test_the_cost_claim_is_judged_on_what_a_run_measured():
    # CFA 1.31 M params, 0.168 GMAC; PAM-CAM 1.0 GMAC: 83.2 % fewer MACs, within 5 of 83.4.
    good = {"CFA": {"params": 1.31e6, "gmac": 0.168}, "PAM-CAM": {"params": 2e6, "gmac": 1.0}}
    verdict, evidence = claims.cfa_cost(good)
    assert verdict == "holds" and "83.2 % fewer MACs" in evidence and "1.310 M params" in evidence
    far = {"CFA": {"params": 1.31e6, "gmac": 0.168}, "PAM-CAM": {"params": 2e6, "gmac": 0.2}}
    assert claims.cfa_cost(far)[0] == "fails"  # 16 % fewer MACs only


@pytest.fixture
def unmeasured(tmp_path, data_root):
    """A store with one run trained before runs measured their model: model.pt, config.json
    and per_query.npz, but no efficiency.json or figure_data.npz."""
    (tmp_path / "data").symlink_to(data_root)
    uri = new_store(tmp_path)
    arrays = {
        "index": np.arange(4),
        "pid": np.arange(4),
        "camid": np.zeros(4, int),
        "ap": np.full(4, 0.5),
        "first_rank": np.ones(4, int),
        "inp": np.full(4, 0.2),
        "top10": np.zeros((4, 10), int),
    }
    log_experiment(
        uri,
        tmp_path,
        [FakeRun("g", 0, {"rank1": 50.0, "mAP": 40.0}, per_query=arrays, measured=False)],
    )
    client = MlflowClient(uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("table2-synthetic-tiny").experiment_id],
        "tags.kind = 'child'",
    )
    return uri, client, run


def test_per_query_gives_an_older_run_its_measures_and_leaves_its_results(unmeasured, capsys):
    uri, client, run = unmeasured
    before = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert measures.missing(before) == measures.MEASURES
    assert per_query.main(["--table", "2", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "table2-synthetic-tiny g-s0: efficiency.json and figure_data.npz logged" in out
    assert "0 run(s) given per_query.npz" in out  # its per-query results stand
    after = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert after == before | set(measures.MEASURES)
    assert per_query.main(["--table", "2", "--tracking-uri", uri]) == 0  # nothing left to do
    assert "0 run(s) given efficiency.json or figure_data.npz" in capsys.readouterr().out
    assert per_query.main(["--table", "2", "--tracking-uri", uri, "--measure-again"]) == 0
    assert "g-s0: efficiency.json logged" in capsys.readouterr().out  # timed again, replaced
    assert {f.path for f in client.list_artifacts(run.info.run_id)} == after
