"""The evaluation path (images decoded once per process, one forward pass per batch for the
embedding and the diagnostics, channels-last pooling) gives what the straightforward path gave."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ftn_core import engine
from ftn_core.config import ModelConfig, override
from ftn_core.data import dataset as dataset_module
from ftn_core.data import loading
from ftn_core.data.dataset import DecodedImages, ReIDDataset
from ftn_core.data.loading import build_data
from ftn_core.data.transforms import build_transforms, resize_transform
from ftn_core.diagnostics import forward_with_maps, mask_auc
from ftn_core.engine import Trainer, evaluate, evaluate_reference
from ftn_core.model import build_model

CPU = torch.device("cpu")


def _same_result(a, b) -> None:
    (m_a, r_a), (m_b, r_b) = a, b
    assert m_a == m_b  # every val/ metric, the diagnostics too, to the bit
    np.testing.assert_array_equal(r_a.cmc, r_b.cmc)
    assert (r_a.mAP, r_a.mINP, r_a.num_valid_queries) == (r_b.mAP, r_b.mINP, r_b.num_valid_queries)
    for name, x, y in zip(r_a.per_query._fields, r_a.per_query, r_b.per_query):
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"model.attention": "none", "model.decoder": False},
        {"model.attention": "pamcam", "model.decoder": False},
    ],
)
def test_a_trained_run_scores_what_the_straightforward_path_scores(tiny_cfg, variant):
    """A tiny run's final metrics, CMC and per-query results (AP, first-match rank, INP, top 10)
    equal those of ``evaluate_reference``: a loader decoding every image, ``model(img)`` and a
    second encoder pass for the diagnostics."""
    cfg = override(tiny_cfg, variant)
    d = cfg.data
    trainer = Trainer(cfg, build_data(d, seed=0), progress=False)
    final = trainer.fit()
    reference = evaluate_reference(trainer.model, trainer.data.splits, d.height, d.width, CPU)
    assert final.metrics == reference[0] and "val/fg_focus_norm_global" in final.metrics
    assert final.cmc == [float(c) for c in reference[1].cmc]
    for name in ("index", "ap", "first_rank", "inp", "top"):
        np.testing.assert_array_equal(final.per_query[name], getattr(reference[1].per_query, name))
    # Again with the images the run decoded (shared in this process), and over several batches
    # (the same ones: the last bits of a feature depend on its batch's size).
    _same_result(evaluate(trainer.model, build_data(d, seed=1), CPU), reference)
    splits = trainer.data.splits
    in_batches = evaluate_reference(trainer.model, splits, d.height, d.width, CPU, batch_size=6)
    _same_result(evaluate(trainer.model, build_data(d, seed=0, eval_batch=6), CPU), in_batches)
    kept: dict = {}  # the reference's own loaders, keeping their decoded images across calls
    for _ in range(2):
        again = evaluate_reference(trainer.model, splits, d.height, d.width, CPU, keep=kept)
        _same_result(again, reference)
    assert len(kept) == 2 and all(len(ds.cache) == len(ds) for ds in kept.values())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trainer.model.modules())


@pytest.mark.parametrize(
    "attention,placement",
    [
        ("cfa", "series"),
        ("cfa", "residual"),
        ("cfa", "parallel"),
        ("pamcam", "parallel"),
        ("none", "parallel"),
    ],
)
def test_one_pass_gives_the_embedding_and_the_activation_maps(attention, placement):
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone="resnet18",
        attention=attention,
        decoder=False,
        embed_dim=8,
        stage4_stride=1,
        last_stride=2,
        cfa_placement=placement,
    )
    model = build_model(cfg, num_classes=3, init_seed=0).eval()
    img = torch.rand(3, 3, 64, 32)
    with torch.no_grad():
        feat, enc, maps = forward_with_maps(model, img)
        assert torch.equal(feat, model(img))
        expected = model.activation_maps(img)
        assert list(maps) == list(expected)
        assert all(torch.equal(maps[k], expected[k]) for k in expected)
        again = model.forward_encoder(img)
        if attention == "none":
            assert enc.attn is None
        else:
            assert torch.equal(enc.attn.out, again.attn.out)
            for name in ("pa", "ca"):
                x, y = getattr(enc.attn, name), getattr(again.attn, name)
                assert (x is None and y is None) or torch.equal(x, y)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="eval-mode"):
        forward_with_maps(model.train(), img)


def test_channels_last_pooling_changes_no_bit_and_leaves_no_hook():
    model = build_model(
        ModelConfig(backbone="resnet10", decoder=False, embed_dim=8), num_classes=3, init_seed=0
    ).eval()
    img = torch.rand(4, 3, 64, 32)
    with torch.no_grad():
        plain = model(img)
        pool = model.senc.stage1[3]
        seen = []
        handle = pool.register_forward_hook(
            lambda m, a, out: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
        )
        with engine.channels_last_pooling(model):
            fast = model(img)
        handle.remove()
    assert seen == [True] and torch.equal(plain, fast)
    assert not pool._forward_hooks and not pool._forward_pre_hooks


def _test_items(samples, h=32, w=16):
    test_tf = build_transforms(h, w, train=False, resize=False)
    return ReIDDataset(samples, test_tf, True, resize_transform(h, w))


def test_a_split_is_decoded_once_per_process_and_again_when_a_file_changes(tiny_cfg, monkeypatch):
    loading._DECODED.clear()
    reads = []
    original = dataset_module.read_image
    monkeypatch.setattr(
        dataset_module, "read_image", lambda path, *a: reads.append(path) or original(path, *a)
    )
    first, second = build_data(tiny_cfg.data, seed=0), build_data(tiny_cfg.data, seed=3)
    query = first.query_loader.dataset
    assert isinstance(query, DecodedImages) and second.query_loader.dataset is query
    assert reads == []  # nothing is read before an evaluation asks
    batches = list(query.batches(7))
    n_query = len(first.splits.query)
    assert len(reads) == 2 * n_query  # each image and its mask, once
    list(second.query_loader.dataset.batches(5))
    assert len(reads) == 2 * n_query
    # The items and batches are what the decoding loader gives.
    plain = _test_items(first.splits.query, tiny_cfg.data.height, tiny_cfg.data.width)
    loader = torch.utils.data.DataLoader(plain, batch_size=7)
    for ours, theirs in zip(batches, loader, strict=True):
        for key in ("img", "mask", "pid", "camid"):
            assert torch.equal(ours[key], theirs[key]), key
    item, expected = query[3], plain[3]
    assert set(item) == set(expected)
    assert all(torch.equal(torch.as_tensor(item[k]), torch.as_tensor(expected[k])) for k in item)
    # A file written since (new size and time) is a new key: decoded again.
    path = first.splits.query[0].path
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        third = build_data(tiny_cfg.data, seed=0)
        assert third.query_loader.dataset is not query
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert build_data(tiny_cfg.data, seed=0).gallery_loader.dataset is first.gallery_loader.dataset


def test_the_process_keeps_at_most_twice_the_cache_bytes(tiny_cfg, monkeypatch):
    loading._DECODED.clear()
    first = build_data(tiny_cfg.data)
    per_split = [n for _, n in loading._DECODED.values()]
    assert len(per_split) == 2 and min(per_split) > 0
    monkeypatch.setattr(loading, "CACHE_BYTES", sum(per_split) // 2 + 1)  # room for these two only
    other = build_data(override(tiny_cfg, {"data.height": 16, "data.width": 8}).data)
    kept = [d for d, _ in loading._DECODED.values()]
    assert other.query_loader.dataset in kept and other.gallery_loader.dataset in kept
    assert first.query_loader.dataset not in kept  # the least recently used goes first
    assert sum(n for _, n in loading._DECODED.values()) <= 2 * loading.CACHE_BYTES


def test_mask_auc_of_one_expanded_map_equals_each_image_ranked():
    torch.manual_seed(0)
    one = torch.rand(1, 1, 16, 8)
    masks = (torch.rand(5, 1, 16, 8) > 0.6).float()
    masks[4] = 0  # no person: NaN either way
    expanded = mask_auc(one.expand(5, 1, 16, 8), masks)
    copied = mask_auc(one.repeat(5, 1, 1, 1), masks)
    assert torch.equal(expanded[:4], copied[:4]) and expanded[4].isnan() and copied[4].isnan()
