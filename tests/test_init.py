"""model.init: where S-Enc starts. Exact loading, strict shapes, digests, one-line errors, and
the runner's identity: a run from a changed weights file is a new run, never a done one."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
import torch

from ftn_core import init as finit
from ftn_core.config import ModelConfig, config_hash, override
from ftn_core.errors import FTNError
from ftn_core.init import backbone_state
from ftn_core.model import build_model
from ftn_core.presets import preset_config

# The cpu preset's backbone (ResNet-10, stage 4 at stride 1, stage 5 at stride 2), small heads.
CPU = ModelConfig(
    backbone="resnet10", stage4_stride=1, last_stride=2, embed_dim=16, decoder_width=4
)


def _weights(tmp_path, seed: int = 7, local_block: bool = False, half: bool = False, name="w.pt"):
    """A weights file from another model's S-Enc (as ablations/pretrain.py writes it)."""
    with torch.no_grad():
        donor = build_model(CPU, num_classes=5, init_seed=seed)
        for p in donor.senc.parameters():  # not the init's distribution: a copy is visibly a copy
            p.add_(torch.randn_like(p))
        for m in donor.senc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(123)
    state = backbone_state(donor.senc, local_block=local_block)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_a_weights_file_starts_the_backbone_bit_for_bit_and_nothing_else(tmp_path):
    path, state = _weights(tmp_path)
    model = build_model(dataclasses.replace(CPU, init=str(path)), num_classes=5, init_seed=0)
    scratch = build_model(CPU, num_classes=5, init_seed=0)
    loaded = backbone_state(model.senc, local_block=False)
    assert loaded.keys() == state.keys() and len(state) > 40
    for key, value in state.items():  # every weight and BN statistic, bit for bit
        assert torch.equal(loaded[key], value), key
    assert int(model.senc.stage1[1].num_batches_tracked) == 123
    assert not torch.equal(model.senc.stage2[0].conv1.weight, scratch.senc.stage2[0].conv1.weight)
    # The file has no local block: it starts as a scratch run of the same seed, as do CFA,
    # TF-Dec and the heads.
    rest = {k: v for k, v in scratch.state_dict().items() if not k.startswith("senc.stage")}
    ours = model.state_dict()
    assert any(k.startswith("senc.local_block.") for k in rest)
    assert any(k.startswith("decoder.") for k in rest)
    for key, value in rest.items():
        assert torch.equal(ours[key], value), key
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert model.init_digest == digest == finit.init_digest(str(path), "resnet10")
    assert scratch.init_digest == "" == finit.init_digest("scratch", "resnet10")


def test_the_local_block_is_loaded_when_the_file_has_it_and_fp16_is_upcast_exactly(tmp_path):
    path, state = _weights(tmp_path, local_block=True, half=True)
    model = build_model(dataclasses.replace(CPU, init=str(path)), num_classes=5, init_seed=0)
    assert model.senc.local_block.conv1.weight.dtype == torch.float32
    loaded = backbone_state(model.senc)
    assert any(k.startswith("local_block.") for k in state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value.float() if value.is_floating_point() else value), key


def test_wrong_shapes_keys_and_files_are_one_line_each(tmp_path):
    path, state = _weights(tmp_path)
    cfg = dataclasses.replace(CPU, init=str(path))
    bad = dict(state, **{"layer2.0.conv1.weight": torch.zeros(128, 64, 1, 1)})
    torch.save(bad, path)
    with pytest.raises(FTNError) as err:
        build_model(cfg, 5)
    msg = str(err.value)
    assert "\n" not in msg and "layer2.0.conv1.weight" in msg
    assert "(128, 64, 1, 1)" in msg and "(128, 64, 3, 3)" in msg
    torch.save({k: v for k, v in state.items() if k != "bn1.running_var"}, path)
    with pytest.raises(FTNError, match=r"has no bn1\.running_var"):
        build_model(cfg, 5)
    torch.save(dict(state, **{"layer1.1.conv1.weight": torch.zeros(64, 64, 3, 3)}), path)
    with pytest.raises(FTNError, match=r"layer1\.1\.conv1\.weight, which this model\.backbone"):
        build_model(cfg, 5)
    # a ResNet-18's backbone into the ResNet-10: refused, not silently half-loaded
    r18 = build_model(ModelConfig(backbone="resnet18", embed_dim=8, decoder_width=4), 3).senc
    torch.save(backbone_state(r18), path)
    with pytest.raises(FTNError, match=r"layer1\.1\..*which this model\.backbone has not"):
        build_model(cfg, 5)
    torch.save(r18.state_dict(), path)  # S-Enc's own names are not the file format
    with pytest.raises(FTNError, match=r"has no conv1\.weight"):
        build_model(cfg, 5)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FTNError, match="not a readable state dict"):
        build_model(cfg, 5)
    torch.save({"a": 1}, path)
    with pytest.raises(FTNError, match="not a state dict of tensors"):
        build_model(cfg, 5)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("missing/weights.pt", "no such file"),
        ("weights.pt", "no such file"),
        ("nosuchname", r"shipped backbone \(shipped: none\)"),
        ("runs:/" + "a" * 32, "an MLflow run's weights, not fetched yet"),
        ("b" * 32, "an MLflow run's weights, not fetched yet"),
        ("", "model.init is empty"),
    ],
)
def test_unusable_inits_are_one_line(spec, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(finit, "SHIPPED", tmp_path / "shipped")
    with pytest.raises(FTNError, match=match) as err:
        build_model(dataclasses.replace(CPU, init=spec), 5)
    assert "\n" not in str(err.value)


def test_shipped_names_run_ids_and_the_older_fields(tmp_path, monkeypatch):
    path, state = _weights(tmp_path, name="pre.pt")
    monkeypatch.setattr(finit, "SHIPPED", tmp_path)
    model = build_model(dataclasses.replace(CPU, init="pre"), 5)
    assert torch.equal(model.senc.stage5[0].conv2.weight, state["layer4.0.conv2.weight"])
    rid = "0123456789abcdef0123456789abcdef"
    monkeypatch.setenv("FTN_CACHE_DIR", str(tmp_path / "cache"))
    finit.run_cache_path(rid).parent.mkdir(parents=True)
    finit.run_cache_path(rid).write_bytes(path.read_bytes())
    for spec in (f"runs:/{rid}", rid, f"runs:/{rid}/backbone.pt"):
        assert finit.run_id(spec) == rid
        model = build_model(dataclasses.replace(CPU, init=spec), 5)
        assert model.init_digest == finit.file_digest(path)
    assert finit.run_id("runs:/xyz") is None and finit.run_id("a" * 31) is None
    with pytest.raises(FTNError, match="both say where the backbone starts"):
        build_model(dataclasses.replace(CPU, init="pre", pretrained=True), 5)


def test_imagenet_reads_torchs_cache_and_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    small = ModelConfig(backbone="resnet18", embed_dim=8, decoder_width=4)
    for cfg in (
        dataclasses.replace(small, init="imagenet"),
        dataclasses.replace(small, pretrained=True),
    ):
        with pytest.raises(FTNError) as err:
            build_model(cfg, 3)
        msg = str(err.value)
        assert "\n" not in msg and "nothing is downloaded" in msg
        assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
        assert "model.weights_path" in msg
    with pytest.raises(FTNError, match="resnet10 has no ImageNet weights"):
        build_model(dataclasses.replace(CPU, init="imagenet"), 3)
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), cached)  # with fc.*, as torchvision ships it: ignored
    model = build_model(dataclasses.replace(small, init="imagenet"), 3)
    assert torch.equal(model.senc.stage4[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert torch.equal(model.senc.local_block.conv2.weight, ref.layer4[1].conv2.weight)
    assert model.init_digest == finit.file_digest(cached)


def test_the_init_is_a_location_in_the_hash_its_weights_digest_is_the_identity(tmp_path):
    cfg = preset_config("cpu")
    assert cfg.model.init == "people"  # the shipped backbone the pilot adopted
    h = config_hash(cfg)
    assert config_hash(override(cfg, {"model.init": "scratch"})) == h
    # where the weights live is not what they are: the runner keys runs by init_digest
    assert config_hash(override(cfg, {"model.init": str(tmp_path / "w.pt")})) == h
    assert config_hash(override(cfg, {"model.embed_dim": 128})) != h


def test_the_cpu_presets_shipped_backbone_is_the_pilots_and_fits_it():
    assert finit.init_digest("people", "resnet10") == "56d4e896dad465b9"  # docs/results.md
    assert finit.SHIPPED.joinpath("people.pt").stat().st_size <= 25 * 2**20
    cfg = preset_config("cpu")
    model = build_model(cfg.model, num_classes=3, init_seed=0)
    assert model.init_digest == "56d4e896dad465b9"
    state = torch.load(finit.SHIPPED / "people.pt", weights_only=True)
    loaded = backbone_state(model.senc, local_block=True)
    assert loaded.keys() == state.keys()
    for key, value in state.items():  # fp16 in the file, upcast exactly
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


# --------------------------------------------------------------------------- through the runner


def _tiny_weights(path, seed: int):
    """A weights file for the tiny preset's backbone (ResNet-18), different for each seed."""
    cfg = preset_config("tiny").model
    with torch.no_grad():
        donor = build_model(cfg, num_classes=3, init_seed=seed)
        for p in donor.senc.parameters():
            p.add_(torch.randn_like(p))
    state = backbone_state(donor.senc, local_block=False)
    torch.save(state, path)
    return state


def _run(store, data_root, *extra):
    from ablations import run as run_cli

    return run_cli.main(
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
            "train.epochs=1",
            *extra,
        ]
    )


def _children(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("table1-synthetic-tiny")
    return client.search_runs(
        [exp.experiment_id],
        filter_string="tags.kind = 'child'",
        order_by=["attributes.start_time ASC"],
    )


@pytest.mark.slow
def test_a_run_starts_from_the_file_carries_its_digest_and_a_changed_file_is_a_new_run(
    store, data_root, tmp_path, monkeypatch, capsys
):
    from ablations import runner

    built = []

    class Recording(runner.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(backbone_state(self.model.senc, local_block=False))

    monkeypatch.setattr(runner, "Trainer", Recording)
    path = tmp_path / "backbone.pt"
    state = _tiny_weights(path, 1)
    assert _run(store, data_root, "--set", f"model.init={path}") == 0
    assert len(built) == 1 and built[0].keys() == state.keys()
    for key, value in state.items():  # the model as built, before its first step
        assert torch.equal(built[0][key], value), key
    (run,) = _children(store["uri"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["init_digest"] == finit.file_digest(path) != ""
    assert run.data.params["model.init"] == str(path)
    capsys.readouterr()
    assert _run(store, data_root, "--set", f"model.init={path}") == 0  # the same file: done
    assert "already FINISHED" in capsys.readouterr().out and len(built) == 1
    moved = tmp_path / "elsewhere" / "copy.pt"  # the same weights at another path: done too
    moved.parent.mkdir()
    moved.write_bytes(path.read_bytes())
    assert _run(store, data_root, "--set", f"model.init={moved}") == 0
    assert "already FINISHED" in capsys.readouterr().out and len(built) == 1
    _tiny_weights(path, 2)  # the same path, other weights: a new run, never the old one
    assert _run(store, data_root, "--set", f"model.init={path}") == 0
    assert len(built) == 2 and not torch.equal(built[1]["conv1.weight"], state["conv1.weight"])
    runs = _children(store["uri"])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    new, old = runs[1].data.tags["init_digest"], runs[0].data.tags["init_digest"]
    assert new == finit.file_digest(path) != old
    assert runs[0].data.tags["config_hash"] == runs[1].data.tags["config_hash"]


def test_an_unusable_init_stops_the_runner_before_any_store_exists(
    store, data_root, tmp_path, capsys
):
    db = store["uri"][len("sqlite:///") :]
    bad = tmp_path / "bad.pt"
    state = _tiny_weights(bad, 1)
    state["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    torch.save(state, bad)
    cases = [
        (f"model.init={tmp_path / 'missing.pt'}", "no such file"),
        (f"model.init={bad}", "layer3.0.conv1.weight has shape (256, 128, 1, 1)"),
        ("model.init=runs:/" + "c" * 32, "does not exist"),
    ]
    for item, match in cases:
        capsys.readouterr()
        assert _run(store, data_root, "--set", item) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1, err
        assert not os.path.exists(db)
