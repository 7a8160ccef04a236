"""Augmentation pipeline, RandomPatch and ReIDDataset."""

from __future__ import annotations

import pytest
import torch
from fixtures_layouts import corrupt_file, write_image
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ftn_core.data.dataset import ReIDDataset
from ftn_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    RandomPatch,
    build_transforms,
    resize_transform,
)
from ftn_core.data.types import Sample
from ftn_core.errors import FTNError


def person_pair(h: int = 32, w: int = 16) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """An asymmetric 'person' (an L shape, left of centre) painted white, and its mask."""
    mask = torch.zeros(1, h, w, dtype=torch.uint8)
    mask[0, h // 8 : h * 5 // 8, w // 8 : w * 3 // 8] = 255  # the body
    mask[0, h // 2 : h * 5 // 8, w * 3 // 8 : w * 11 // 16] = 255  # a foot pointing right
    img = torch.full((3, h, w), 40, dtype=torch.uint8)
    img[:, mask[0] > 0] = 250
    return tv_tensors.Image(img), tv_tensors.Mask(mask)


def test_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_eval_pipeline_is_resize_and_scale():
    t = build_transforms(256, 128, train=False)
    img = tv_tensors.Image(torch.randint(0, 256, (3, 128, 64), dtype=torch.uint8))
    out = t(img)
    assert out.shape == (3, 256, 128) and out.dtype == torch.float32
    expected = F.resize(img, [256, 128], antialias=True).float() / 255
    torch.testing.assert_close(out.as_subclass(torch.Tensor), expected.as_subclass(torch.Tensor))
    const = t(tv_tensors.Image(torch.full((3, 128, 64), 51, dtype=torch.uint8)))
    torch.testing.assert_close(const, torch.full_like(const, 0.2))
    # PIL input works too
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    torch.testing.assert_close(t(pil).as_subclass(torch.Tensor), out.as_subclass(torch.Tensor))


def test_train_pipeline_shape_dtype_range():
    t = build_transforms(64, 32, train=True, flip=0.5, pad=10)
    batch = BatchAugment(random_patch=1.0, random_erasing=1.0)
    batch.random_patch.min_pool = 5
    outs = []
    for seed in range(30):
        torch.manual_seed(seed)
        img = tv_tensors.Image(torch.randint(0, 256, (3, 48, 20), dtype=torch.uint8))
        out = t(img)
        assert out.shape == (3, 64, 32) and out.dtype == torch.float32
        outs.append(out.as_subclass(torch.Tensor))
    imgs = torch.stack(outs)
    out = batch(imgs, (0, 0, 0))
    assert out.shape == imgs.shape and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and not torch.equal(out, imgs)
    assert len(batch.random_patch.pool) == 30  # one patch cut per image, in batch order


@pytest.mark.parametrize("flip,pad", [(1.0, 0), (0.5, 0), (0.0, 0), (0.5, 10)])
def test_geometry_applies_identically_to_image_and_mask(flip, pad):
    img, mask = person_pair()
    t = build_transforms(32, 16, train=True, flip=flip, pad=pad)
    flipped = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_img, out_mask = t(img, mask)
        assert isinstance(out_mask, tv_tensors.Mask) and out_mask.shape == (1, 32, 16)
        assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {0, 255}
        bright = out_img[0] > 0.9  # the white person pixels after the transform
        assert torch.equal(bright, out_mask[0] > 0)
        if pad == 0:
            mirrored = torch.equal(out_mask, mask.flip(-1))
            assert mirrored or torch.equal(out_mask, mask)
            flipped += int(mirrored)
    if pad > 0:
        return
    if flip == 1.0:
        assert flipped == 20
    elif flip == 0.0:
        assert flipped == 0
    else:
        assert 0 < flipped < 20


def test_erasing_changes_pixels_not_the_mask():
    img, _ = person_pair()
    erase = BatchAugment(random_patch=0, random_erasing=1.0)
    assert erase.random_patch is None
    out_img = erase(img[None].float() / 255, (0, 0, 0))[0]
    changed = ((out_img - img.float() / 255).abs() > 1e-6).any(0)
    assert changed.any()
    mean = torch.tensor(IMAGENET_MEAN)[:, None]
    torch.testing.assert_close(out_img[:, changed], mean.expand(3, int(changed.sum())))
    rows, cols = changed.nonzero().unbind(1)  # erased area is one rectangle
    assert changed.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_random_patch_pastes_a_pool_patch_and_leaves_masks_alone():
    rp = RandomPatch(p=1.0, min_pool=1, pool_size=10, flip=0.0)
    rp.pool.append(torch.zeros(3, 4, 5, dtype=torch.uint8))  # an "earlier image" patch
    img = tv_tensors.Image(torch.full((3, 24, 12), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(1, 24, 12, dtype=torch.uint8))
    pasted = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out, out_mask = rp(img, mask)
        assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
        assert torch.equal(out_mask, mask)
        assert set(out.unique().tolist()) <= {0, 200}  # only our two sources
        zero = (out == 0).all(0)
        if zero.any():
            pasted += 1
            rows, cols = zero.nonzero().unbind(1)
            assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (4, 5)
            assert zero.sum() == 20
    assert pasted > 0
    assert len(rp.pool) == 10, "one patch cut per call, FIFO capped at pool_size"
    assert torch.equal(img, torch.full((3, 24, 12), 200, dtype=torch.uint8)), "input untouched"


def test_random_patch_waits_for_the_pool_and_respects_p():
    img = tv_tensors.Image(torch.randint(0, 256, (3, 24, 12), dtype=torch.uint8))
    rp = RandomPatch(p=1.0, min_pool=5)
    for _ in range(4):
        assert torch.equal(rp(img), img)  # pool below min_pool: no paste
    never = RandomPatch(p=0.0, min_pool=1)
    for _ in range(10):
        assert torch.equal(never(img), img)
    assert len(never.pool) > 0


# --------------------------------------------------------------------------- dataset


def write_pair(tmp_path, name: str) -> Sample:
    img, mask = person_pair(128, 64)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{name}.png")
    Image.fromarray(mask[0].numpy()).save(tmp_path / f"{name}_mask.png")
    return Sample(str(tmp_path / f"{name}.png"), 3, 1, str(tmp_path / f"{name}_mask.png"))


def test_dataset_items(tmp_path):
    s = write_pair(tmp_path, "a")
    write_image(tmp_path / "b.jpg", size=(64, 128))
    samples = [s, Sample(str(tmp_path / "b.jpg"), 5, 2)]
    ds = ReIDDataset(samples, build_transforms(64, 32, train=True, pad=2), with_mask=True)
    torch.manual_seed(0)
    item = ds[0]
    assert set(item) == {"img", "pid", "camid", "index", "mask"}
    assert item["img"].shape == (3, 64, 32) and item["img"].dtype == torch.float32
    assert 0 <= item["img"].min() and item["img"].max() <= 1
    assert item["mask"].shape == (1, 64, 32) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert (item["pid"], item["camid"], item["index"]) == (3, 1, 0)
    assert "mask" not in ds[1] and ds[1]["pid"] == 5
    plain = ReIDDataset(samples, None, with_mask=False)[0]
    assert "mask" not in plain and plain["img"].shape == (3, 128, 64)
    torch.testing.assert_close(plain["img"][0, 0, 0], torch.tensor(40 / 255))
    # eval pipeline keeps the mask aligned with the bright person pixels
    item = ReIDDataset([s], build_transforms(128, 64, train=False), with_mask=True)[0]
    assert torch.equal(item["img"][0] > 0.9, item["mask"][0] > 0)


def test_keyed_items_repeat_their_augmentation_and_the_cache_changes_nothing(tmp_path):
    samples = [write_pair(tmp_path, f"p{i}") for i in range(3)]
    t = build_transforms(32, 16, train=True, pad=4, resize=False)
    plain = ReIDDataset(samples, t, with_mask=True, prepare=resize_transform(32, 16))
    cached = ReIDDataset(samples, t, with_mask=True, prepare=resize_transform(32, 16), cache=True)
    views = [plain[(1, (0, 0, k))] for k in range(8)]
    assert len({v["img"].sum().item() for v in views}) > 1  # keys give different draws
    for k, view in enumerate(views):
        torch.manual_seed(k)  # what was drawn before does not matter
        again = cached[(1, (0, 0, k))]
        assert torch.equal(again["img"], view["img"]) and torch.equal(again["mask"], view["mask"])
    assert set(cached.cache) == {1} and plain.cache is None
    # Resizing as a cached first step gives what the one-piece test pipeline gives.
    whole = ReIDDataset(samples, build_transforms(32, 16, train=False), with_mask=True)
    split = ReIDDataset(
        samples,
        build_transforms(32, 16, train=False, resize=False),
        with_mask=True,
        prepare=resize_transform(32, 16),
        cache=True,
    )
    for _ in range(2):  # decoded, then from the cache
        assert torch.equal(whole[2]["img"], split[2]["img"]) and torch.equal(
            whole[2]["mask"], split[2]["mask"]
        )


def test_dataset_batches_through_dataloader(tmp_path):
    samples = [write_pair(tmp_path, f"p{i}") for i in range(4)]
    ds = ReIDDataset(samples, build_transforms(32, 16, train=True), with_mask=True)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["img"].shape == (4, 3, 32, 16) and batch["mask"].shape == (4, 1, 32, 16)
    assert batch["index"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("how", ["garbage", "truncated", "missing"])
def test_corrupt_image_at_load_time(tmp_path, how):
    path = tmp_path / "x.jpg"
    write_image(path, size=(32, 64))
    if how == "missing":
        path.unlink()
    else:
        corrupt_file(path, how)
    ds = ReIDDataset([Sample(str(path), 0, 0)], build_transforms(32, 16, train=False))
    with pytest.raises(FTNError, match=r"cannot decode image .*x\.jpg .*--skip-bad-images") as err:
        ds[0]
    assert "\n" not in str(err.value)
