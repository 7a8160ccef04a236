"""The FTN model core: shapes of every variant, CFA semantics, masks, decoder placement."""

from __future__ import annotations

import dataclasses
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from ablations.variants import TABLES
from ftn_core.attention import CFA, PAMCAM, channel_max_pool
from ftn_core.config import ModelConfig
from ftn_core.cost import conv_linear_macs, count_params
from ftn_core.decoder import MSRB, TFDec
from ftn_core.errors import FTNError
from ftn_core.masks import attention_mask, gaussian_mask, reconstruction_target
from ftn_core.model import FTN, build_model

SMALL = ModelConfig(backbone="resnet18", decoder_width=8, embed_dim=32)
ALL_VARIANTS = [(t, v) for t, rows in TABLES.items() for v in rows]


@pytest.mark.parametrize("size", [(256, 128), (128, 64)])
@pytest.mark.parametrize(
    "table,variant", ALL_VARIANTS, ids=[f"t{t}-{v.key}" for t, v in ALL_VARIANTS]
)
def test_every_variant_shapes(table, variant, size):
    torch.manual_seed(0)
    cfg = variant.model_config(SMALL)
    model = build_model(cfg, num_classes=5).train()
    h, w = size
    img = torch.rand(4, 3, h, w)
    truth = (torch.rand(4, 1, h, w) > 0.5).float()
    out = model(img, fg_mask=truth if cfg.mask == "oracle" else None)
    branches = ["global", "local"] + (["attn"] if cfg.attention != "none" else [])
    assert list(out.feats) == branches
    for name in branches:
        assert out.feats[name].shape == (4, 32)
        assert out.logits[name].shape == (4, 5)
    if cfg.decoder:
        assert out.recon.shape == out.target.shape == (4, 3, h, w)
        assert not out.target.requires_grad
    else:
        assert out.recon is None and out.target is None
    assert out.encoded.stage4.shape == (4, 256, h // 16, w // 16)
    model.eval()
    emb = model(img)
    assert emb.shape == (4, 32 * len(branches)) == (4, model.embedding_dim)


def test_resnet50_stage_widths_and_last_stride():
    model = build_model(ModelConfig(decoder_width=8), num_classes=3).train()
    out = model(torch.rand(2, 3, 256, 128))
    assert out.encoded.stage3.shape == (2, 512, 32, 16)
    assert out.encoded.stage4.shape == (2, 1024, 16, 8)
    assert out.encoded.attn.out.shape == (2, 1024, 16, 8)
    maps = model.activation_maps(torch.rand(2, 3, 256, 128))
    assert maps["global"].shape == maps["local"].shape == (2, 2048, 16, 8)  # stride 1: still 16×8
    assert model.eval()(torch.rand(2, 3, 256, 128)).shape == (2, 3 * 512)


def test_channel_max_pool_matches_hand_written_max():
    a = torch.randn(2, 6, 3, 2)
    expected = torch.empty(2, 3, 3, 2)
    for b in range(2):
        for d in range(3):
            for y in range(3):
                for x in range(2):
                    expected[b, d, y, x] = max(a[b, 2 * d, y, x], a[b, 2 * d + 1, y, x])
    assert torch.equal(channel_max_pool(a, 2), expected)


def _recover_input(cfa: CFA, a: torch.Tensor) -> torch.Tensor:
    """B′: what CFA feeds its recover layer."""
    seen = {}
    handle = cfa.recover.register_forward_hook(lambda m, args, out: seen.update(b=args[0]))
    cfa(a)
    handle.remove()
    return seen["b"]


def test_cfa_with_zero_weights_is_identity_on_b():
    torch.manual_seed(0)
    cfa = CFA(16).eval()
    a = torch.randn(2, 16, 4, 2)
    assert cfa.gamma.item() == 0 and cfa.phi.item() == 0  # paper: both initialised to 0
    assert torch.equal(_recover_input(cfa, a), channel_max_pool(a))


def _cfa_pair(**ablation) -> tuple[CFA, CFA]:
    torch.manual_seed(0)
    full = CFA(16).eval()
    with torch.no_grad():
        full.gamma.fill_(0.7)
        full.phi.fill_(-1.3)
        for bn in (full.bn_q, full.bn_k, full.recover[0]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    ablated = CFA(16, **ablation).eval()
    ablated.load_state_dict(full.state_dict(), strict=False)
    return full, ablated


def test_cfa_without_pa_drops_only_the_pa_term():
    full, no_pa = _cfa_pair(use_pa=False)
    a = torch.randn(2, 16, 4, 2)
    out_full, out_no = full(a), no_pa(a)
    assert out_no.pa is None and torch.allclose(out_no.ca, out_full.ca)
    assert torch.allclose(
        _recover_input(no_pa, a), channel_max_pool(a) + 0.7 * out_full.ca, atol=1e-6
    )
    with torch.no_grad():
        full.phi.zero_()
    assert torch.allclose(full(a).out, out_no.out, atol=1e-6)


def test_cfa_without_ca_drops_only_the_ca_term():
    full, no_ca = _cfa_pair(use_ca=False)
    a = torch.randn(2, 16, 4, 2)
    out_full, out_no = full(a), no_ca(a)
    assert out_no.ca is None and torch.allclose(out_no.pa, out_full.pa)
    assert torch.allclose(
        _recover_input(no_ca, a), channel_max_pool(a) - 1.3 * out_full.pa, atol=1e-6
    )
    with torch.no_grad():
        full.gamma.zero_()
    assert torch.allclose(full(a).out, out_no.out, atol=1e-6)


def test_cfa_without_cmp_replaces_only_the_pooling():
    full, no_cmp = _cfa_pair(use_cmp=False)
    # Inputs whose even channel is the max of each pair: CMP then selects channels 0, 2, 4, …,
    # and a 1×1 conv that selects the same channels must give the same output.
    a = torch.randn(2, 16, 4, 2)
    a[:, 1::2] = a[:, 0::2] - a[:, 1::2].abs() - 0.1
    with torch.no_grad():
        no_cmp.reduce.weight.zero_()
        for d in range(8):
            no_cmp.reduce.weight[d, 2 * d] = 1.0
    assert torch.allclose(no_cmp(a).out, full(a).out, atol=1e-6)
    assert count_params(no_cmp) - count_params(full) == 16 * 8  # the conv C→D, no bias


@pytest.mark.parametrize("c", [1024, 256, 64])
def test_cfa_parameter_count_matches_formula(c):
    d = c // 2
    # Q, K, V: 3 × (D·D + D); BN of Q and K: 2 × 2D; recover BN 2D + conv D·C + C; γ, φ.
    formula = 3 * (d * d + d) + 2 * 2 * d + 2 * d + d * c + c + 2
    assert count_params(CFA(c)) == formula
    if c == 1024:
        assert abs(formula / 1.3e6 - 1) < 0.03  # the paper's 1.3 M


def test_cfa_macs_match_paper():
    macs = conv_linear_macs(CFA(1024).eval(), torch.randn(1, 1024, 16, 8))
    assert macs == (3 * 512 * 512 + 512 * 1024) * 128
    assert abs(macs / 0.168e9 - 1) < 0.03


def test_pamcam_parameter_count_matches_formula():
    c, mid = 64, 32
    formula = (
        (9 * c * mid + 2 * mid)
        + 2 * (mid * mid // 8 + mid // 8)
        + (mid * mid + mid)
        + 1
        + 1
        + (9 * mid * c + c)
    )
    assert count_params(PAMCAM(c)) == formula
    assert PAMCAM(c)(torch.randn(2, c, 4, 2)).out.shape == (2, c, 4, 2)


def test_decoder_width_and_shapes():
    dec = TFDec(1024, width=64)
    assert dec.head.out_channels == 64 and dec.tail.in_channels == 64 and dec.tail.out_channels == 3
    assert len(dec.body) == 4
    for block in dec.body:
        assert block.expand.in_channels == 64 and block.expand.out_channels == 256
        assert block.msrb.fuse.in_channels == 256 and block.msrb.fuse.out_channels == 64
    msrb = MSRB(4)
    n = 4
    assert (
        count_params(msrb)
        == (9 + 25) * (n * n + 0) + 2 * n + (9 + 25) * (4 * n * n) + 2 * 2 * n + 4 * n * n + n
    )
    assert TFDec(32, width=8)(torch.randn(2, 32, 16, 8)).shape == (2, 3, 256, 128)


def test_gaussian_mask_values():
    m = gaussian_mask(8, 4, sy=0.5, sx=0.35)
    assert m.shape == (8, 4) and float(m.max()) <= 1 and float(m.min()) > 0
    assert torch.allclose(m, m.flip(0)) and torch.allclose(m, m.flip(1))  # centred
    # pixel (0, 0): centre offsets y = 0.5 − 4 = −3.5 px, x = 0.5 − 2 = −1.5 px
    expected = torch.exp(torch.tensor(-0.5 * ((3.5 / 4.0) ** 2 + (1.5 / 1.4) ** 2)))
    assert torch.isclose(m[0, 0], expected)


def test_attention_masks_in_unit_range_and_detached():
    attn = torch.randn(3, 8, 4, 2, requires_grad=True)
    m = attention_mask(attn, (16, 8))
    assert m.shape == (3, 1, 16, 8) and not m.requires_grad
    assert torch.allclose(m.flatten(1).amin(1), torch.zeros(3))
    assert torch.allclose(m.flatten(1).amax(1), torch.ones(3))
    img = torch.rand(3, 3, 16, 8, requires_grad=True)
    for strategy in ("input", "gm", "gm_pam", "gm_cam", "gm_pam_cam"):
        target = reconstruction_target(img, strategy, pa=attn, ca=attn * 2)
        assert not target.requires_grad
        assert float(target.min()) >= 0 and float(target.max()) <= 1
    assert torch.equal(reconstruction_target(img, "input"), img.detach())
    with pytest.raises(ValueError, match="PA map"):
        reconstruction_target(img, "gm_pam")


def test_no_gradient_reaches_the_masks():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).train()
    out = model(torch.rand(2, 3, 64, 32), reid=False)
    terms = model.losses(out, None)
    sum(terms.values()).backward()
    # The recon loss must not train CFA through the target: CFA gets no gradient at all.
    assert all(p.grad is None for p in model.attention.parameters())


def test_reconstruction_loss_reaches_encoder_up_to_stage4_and_decoder_only():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).train()
    out = model(torch.rand(2, 3, 64, 32), reid=False, recon=True)
    assert out.feats == {} and out.logits == {}
    loss = sum(model.losses(out, None).values())
    loss.backward()
    for name in ("stage1", "stage2", "stage3", "stage4"):
        grads = [p.grad for p in getattr(model.senc, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is not None for p in model.decoder.parameters())
    for module in (model.senc.stage5, model.senc.local_block, model.heads):
        assert all(p.grad is None for p in module.parameters())


def test_every_parameter_gets_a_finite_gradient_in_joint_training():
    torch.manual_seed(0)
    model = build_model(SMALL, num_classes=4).train()
    with torch.no_grad():  # γ = φ = 0 at init would block gradient into Q/K; open them
        model.attention.gamma.fill_(0.5)
        model.attention.phi.fill_(0.5)
    out = model(torch.rand(4, 3, 64, 32), reid=True, recon=True)
    terms = model.losses(out, torch.tensor([0, 0, 1, 1]))
    assert set(terms) == {
        f"{t}/{b}" for t in ("ce", "triplet") for b in ("global", "local", "attn")
    } | {"grad", "l1"}
    sum(terms.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_inference_runs_no_decoder_module():
    model = build_model(SMALL, num_classes=4).eval()
    calls = []
    for m in model.decoder.modules():
        m.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 32))
        model.activation_maps(torch.rand(2, 3, 64, 32))
    assert calls == []
    model.train()(torch.rand(2, 3, 64, 32))
    assert calls  # the hooks do fire when the decoder runs


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"attention": "none", "mask": "gm_pam"}, "needs the CFA's PA map"),
        ({"use_ca": False, "mask": "gm_cam"}, "needs the CFA's CA map"),
        ({"attention": "pamcam"}, "needs the CFA's PA map"),
        ({"mask": "nope"}, "model.mask=nope: unknown"),
        ({"use_pa": False, "use_ca": False, "decoder": False}, "CFA needs at least one"),
        ({"backbone": "vgg16"}, "model.backbone=vgg16: unknown"),
    ],
)
def test_invalid_configs_fail_with_one_line(changes, match):
    with pytest.raises(FTNError, match=match) as err:
        build_model(dataclasses.replace(SMALL, **changes), num_classes=3)
    assert "\n" not in str(err.value)


def test_pretrained_offline_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline, raising=False)
    with pytest.raises(FTNError) as err:
        build_model(dataclasses.replace(SMALL, pretrained=True), num_classes=3)
    msg = str(err.value)
    assert "\n" not in msg and "resnet18" in msg and "model.weights_path" in msg
    assert "resnet18-f37072fd.pth" in msg


def test_weights_path_loads_the_given_state_dict(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(dataclasses.replace(SMALL, weights_path=str(path)), num_classes=3)
    assert torch.equal(model.senc.stage1[0].weight, ref.conv1.weight)
    assert torch.equal(model.senc.stage5[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(model.senc.local_block.conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(FTNError, match="no such file"):
        build_model(dataclasses.replace(SMALL, weights_path=str(tmp_path / "missing.pth")), 3)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FTNError, match="not a readable state dict"):
        build_model(dataclasses.replace(SMALL, weights_path=str(tmp_path / "bad.pth")), 3)


def test_parameter_groups_partition_the_model():
    model: FTN = build_model(SMALL, num_classes=3)
    groups = model.parameter_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert isinstance(model.attention, nn.Module) and groups["attention"] and groups["decoder"]


def test_stage4_stride_one_gives_an_8x4_map_at_64x32_and_a_matching_decoder():
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, stage4_stride=1, last_stride=2)
    model = build_model(cfg, num_classes=4).train()
    out = model(torch.rand(2, 3, 64, 32))
    assert out.encoded.stage3.shape == (2, 128, 8, 4)
    assert out.encoded.stage4.shape == out.encoded.attn.out.shape == (2, 256, 8, 4)
    assert len(model.decoder.body) == 3  # ×8 from stage 4 back to the input
    assert out.recon.shape == out.target.shape == (2, 3, 64, 32)
    assert model.activation_maps(torch.rand(2, 3, 64, 32))["global"].shape == (2, 512, 4, 2)
    with pytest.raises(FTNError, match="stage4_stride=3"):
        build_model(dataclasses.replace(SMALL, stage4_stride=3), num_classes=4)


def _stage5_input(model: FTN, img: torch.Tensor):
    enc = model.forward_encoder(img)
    return enc, model.stage5_input(enc)


def test_residual_cfa_is_the_identity_at_initialisation():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL, cfa_placement="residual"), num_classes=4).train()
    enc, s5_in = _stage5_input(model, torch.rand(2, 3, 64, 32))
    assert torch.count_nonzero(enc.attn.out) == 0  # A′ = 0: the recover conv starts at zero
    assert torch.equal(s5_in, enc.stage4)  # stage 5 sees exactly the backbone's stage-4 map
    # ... and the attention still trains: a Re-ID loss reaches the recover convolution.
    out = model(torch.rand(4, 3, 64, 32), reid=True, recon=False)
    sum(model.losses(out, torch.tensor([0, 0, 1, 1])).values()).backward()
    assert model.attention.recover[1].weight.grad.abs().sum() > 0
    # Series keeps the paper's wiring: stage 5 consumes A′ itself.
    series = build_model(dataclasses.replace(SMALL, cfa_placement="series"), num_classes=4)
    enc, s5_in = _stage5_input(series, torch.rand(2, 3, 64, 32))
    assert s5_in is enc.attn.out and torch.count_nonzero(enc.attn.out) > 0


def test_parallel_cfa_leaves_stage5_input_untouched():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL, cfa_placement="parallel"), num_classes=4).eval()
    img = torch.rand(2, 3, 64, 32)
    enc, s5_in = _stage5_input(model, img)
    assert s5_in is enc.stage4
    before = model.activation_maps(img)["global"]
    with torch.no_grad():  # whatever CFA computes, stage 5 and the global branch do not change
        for p in model.attention.parameters():
            p.add_(torch.randn_like(p))
    after = model.activation_maps(img)
    assert torch.equal(before, after["global"])
    assert not torch.equal(after["attn"], enc.attn.out)  # while CFA's own output did change
    with pytest.raises(FTNError, match="cfa_placement=diagonal"):
        build_model(dataclasses.replace(SMALL, cfa_placement="diagonal"), num_classes=4)


def test_oracle_target_is_the_input_times_the_true_person_mask():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(SMALL, mask="oracle"), num_classes=4).train()
    img = torch.rand(2, 3, 64, 32)
    truth = torch.zeros(2, 1, 64, 32)
    truth[0, :, 10:50, 8:24] = 1  # a person box in image 0, none in image 1
    out = model(img, reid=False, recon=True, fg_mask=truth)
    assert torch.equal(out.target, img * truth)
    assert torch.count_nonzero(out.target[1]) == 0 and not out.target.requires_grad
    with pytest.raises(ValueError, match="ground-truth person masks"):
        model(img, reid=False, recon=True)
