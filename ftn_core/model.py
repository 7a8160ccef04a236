"""The FTN model (paper §3, Fig. 2): S-Enc, global/local/attention branches, TF-Dec.

Every Table 1/2 variant is one ``ModelConfig``; ``build_model`` is the only place that reads it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ftn_core import losses as L
from ftn_core.attention import CFA, PAMCAM, AttentionOut
from ftn_core.backbone import SEnc
from ftn_core.config import ModelConfig
from ftn_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ftn_core.decoder import TFDec
from ftn_core.errors import FTNError
from ftn_core.masks import STRATEGY_MASKS, reconstruction_target
from ftn_core.seeding import seeded


class EmbeddingHead(nn.Module):
    """Linear(C→d) → BN → ReLU gives the branch feature (triplet); a Linear classifier (CE)."""

    def __init__(self, in_channels: int, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Linear(in_channels, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """pooled (B, C) → feat (B, d), logits (B, num_classes)."""
        feat = self.embed(pooled)
        return feat, self.classifier(feat)


class Encoded(NamedTuple):
    """What the encoder computes once per batch and the branches and decoder share."""

    stage3: Tensor  # (B, C3, H/8, W/8)
    stage4: Tensor  # (B, C4, H/16, W/16): input of CFA and TF-Dec
    attn: AttentionOut | None  # A′ (B, C4, H/16, W/16) and the PA / CA maps


class FTNOutput(NamedTuple):
    """Training-mode output. ``feats`` / ``logits`` are keyed by branch (global, local, attn)."""

    feats: dict[str, Tensor]
    logits: dict[str, Tensor]
    recon: Tensor | None  # (B, 3, H, W)
    target: Tensor | None  # (B, 3, H, W), detached
    encoded: Encoded


PLACEMENTS = ("series", "residual", "parallel")


class FTN(nn.Module):
    """Baseline (global + local branches), + CFA or PAM-CAM branch, + TF-Dec.

    ``placement`` says what stage 5 consumes when there is an attention module: A′
    (``series``), A + A′ with A′ zero at initialisation (``residual``), or A (``parallel``:
    the attention is a side branch that feeds only its own head and the masks).

    ``init`` (``model.init``): where S-Enc starts (``ftn_core/init.py``); CFA, TF-Dec and the
    heads start from ``init_seed`` whatever it is.

    ``forward`` takes images in [0, 1] (B, 3, H, W) and normalises them itself, so the same
    tensor serves as the reconstruction target. In eval mode it returns only the test
    embedding (B, n_branches·embed_dim); the decoder never runs at inference.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: bool = False,
        weights_path: str = "",
        attention: str = "cfa",
        use_pa: bool = True,
        use_ca: bool = True,
        use_cmp: bool = True,
        decoder: bool = True,
        decoder_width: int = 64,
        mask: str = "gm_pam_cam",
        gauss_sy: float = 0.5,
        gauss_sx: float = 0.35,
        embed_dim: int = 512,
        last_stride: int = 1,
        stage4_stride: int = 2,
        placement: str = "parallel",
        init_seed: int | None = None,
        init: str = "scratch",
        load_init: bool = True,
    ) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise FTNError(
                f"model.cfa_placement={placement}: unknown; one of {', '.join(PLACEMENTS)}"
            )
        # Each part's initial weights are a function of (init_seed, its name) alone, so two
        # variants of one seed start identical in every part they share (seeding.py); without
        # init_seed, one draw of the caller's generator stands in for it.
        if init_seed is None:
            init_seed = int(torch.randint(2**62, (1,)).item())
        with seeded("init", init_seed, "senc"):
            self.senc = SEnc(
                backbone, pretrained, weights_path, last_stride, stage4_stride, init, load_init
            )
        c4, c5 = self.senc.stage4_channels, self.senc.stage5_channels
        self.placement = placement
        with seeded("init", init_seed, "attention", attention):
            if attention == "cfa":
                self.attention: nn.Module | None = CFA(
                    c4, use_pa=use_pa, use_ca=use_ca, use_cmp=use_cmp
                )
            elif attention == "pamcam":
                self.attention = PAMCAM(c4)
            else:
                self.attention = None
        if self.attention is not None and placement == "residual":
            self.attention.zero_init_output()  # A + A′ = A at step 0: the backbone path is intact
        heads = {}
        for name, channels in (("global", c5), ("local", c5), ("attn", c4)):
            if name != "attn" or self.attention is not None:
                with seeded("init", init_seed, "heads", name):
                    heads[name] = EmbeddingHead(channels, embed_dim, num_classes)
        self.heads = nn.ModuleDict(heads)
        num_up = self.senc.stage4_stride.bit_length() - 1  # ×16 → 4 up blocks, ×8 → 3
        with seeded("init", init_seed, "decoder"):
            self.decoder = TFDec(c4, decoder_width, num_up) if decoder else None
        self.mask, self.gauss_sy, self.gauss_sx = mask, gauss_sy, gauss_sx
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def init_digest(self) -> str:
        """Digest of the weights file S-Enc was loaded from ("" for a random start)."""
        return self.senc.init_digest

    @property
    def embedding_dim(self) -> int:
        return sum(h.classifier.in_features for h in self.heads.values())

    def forward_encoder(self, img: Tensor) -> Encoded:
        """img (B, 3, H, W) in [0, 1] → stages 3–4 and the attention output."""
        x = (img - self.mean) / self.std
        s3 = self.senc.stage3(self.senc.stage2(self.senc.stage1(x)))
        s4 = self.senc.stage4(s3)
        attn = self.attention(s4) if self.attention is not None else None
        return Encoded(s3, s4, attn)

    def stage5_input(self, enc: Encoded) -> Tensor:
        """What stage 5 consumes: (B, C4, h, w), by ``placement``."""
        if enc.attn is None or self.placement == "parallel":
            return enc.stage4
        if self.placement == "residual":
            return enc.stage4 + enc.attn.out
        return enc.attn.out  # series

    def forward_reid(self, enc: Encoded) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Global (stage5 → GAP), local (extra block → GMP) and attention (A′ → GAP) branches."""
        s5 = self.senc.stage5(self.stage5_input(enc))
        pooled = {
            "global": s5.mean(dim=(2, 3)),  # GAP: (B, C5)
            "local": self.senc.local_block(s5).amax(dim=(2, 3)),
        }  # GMP: (B, C5)
        if enc.attn is not None:
            pooled["attn"] = enc.attn.out.mean(dim=(2, 3))  # GAP: (B, C4)
        feats, logits = {}, {}
        for name, head in self.heads.items():
            feats[name], logits[name] = head(pooled[name])
        return feats, logits

    def forward_decoder(self, enc: Encoded) -> Tensor:
        """TF-Dec on the stage-4 map: (B, C4, H/16, W/16) → recon (B, 3, H, W)."""
        if self.decoder is None:
            raise RuntimeError("this model has no decoder (model.decoder=false)")
        return self.decoder(enc.stage4)

    def forward(
        self,
        img: Tensor,
        reid: bool = True,
        recon: bool | None = None,
        fg_mask: Tensor | None = None,
    ) -> FTNOutput | Tensor:
        """Train mode: FTNOutput with the parts asked for (recon defaults to "if there is a
        decoder"). Eval mode: the test embedding (B, n_branches·embed_dim).
        ``fg_mask`` (B, 1, H, W): the ground-truth person mask, used by the ``oracle`` target."""
        enc = self.forward_encoder(img)
        if not self.training:
            feats, _ = self.forward_reid(enc)
            return torch.cat(list(feats.values()), dim=1)
        feats, logits = self.forward_reid(enc) if reid else ({}, {})
        want_recon = self.decoder is not None if recon is None else recon
        rec = target = None
        if want_recon:
            rec = self.forward_decoder(enc)
            pa = enc.attn.pa if enc.attn is not None else None
            ca = enc.attn.ca if enc.attn is not None else None
            target = reconstruction_target(
                img, self.mask, pa, ca, self.gauss_sy, self.gauss_sx, fg_mask
            )
        return FTNOutput(feats, logits, rec, target, enc)

    def losses(
        self,
        out: FTNOutput,
        pids: Tensor | None,
        margin: float = 0.3,
        label_smooth: float = 0.0,
        gradient: bool = True,
        recon_reduction: str = "paper",
    ) -> dict[str, Tensor]:
        """Unweighted loss terms of Eq. 6 for what ``out`` holds: ``ce/<branch>``,
        ``triplet/<branch>``, ``grad``, ``l1``. Weight them with ``losses.combine``."""
        terms: dict[str, Tensor] = {}
        # In fp32 whatever the forward pass ran in (bf16/fp16 autocast): .float() of fp32 is a no-op.
        for name, logits in out.logits.items():
            terms[f"ce/{name}"] = L.cross_entropy(logits.float(), pids, label_smooth)
            terms[f"triplet/{name}"] = L.batch_hard_triplet(out.feats[name].float(), pids, margin)
        if out.recon is not None:
            recon, target = out.recon.float(), out.target.float()
            if gradient:
                terms["grad"] = L.gradient_loss(recon, target, recon_reduction)
            terms["l1"] = L.l1_loss(recon, target, recon_reduction)
        return terms

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Stages 1–4 of S-Enc: what both the Re-ID and the reconstruction batches train."""
        return [
            p
            for stage in (self.senc.stage1, self.senc.stage2, self.senc.stage3, self.senc.stage4)
            for p in stage.parameters()
        ]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """backbone (S-Enc and the local block), heads, attention, decoder — for warm-up freezing."""
        groups = {
            "backbone": list(self.senc.parameters()),
            "heads": list(self.heads.parameters()),
            "attention": [],
            "decoder": [],
        }
        if self.attention is not None:
            groups["attention"] = list(self.attention.parameters())
        if self.decoder is not None:
            groups["decoder"] = list(self.decoder.parameters())
        return groups

    @torch.no_grad()
    def activation_maps(self, img: Tensor, enc: Encoded | None = None) -> dict[str, Tensor]:
        """Feature maps for the paper's Figures 4–5: stage3, stage4, attention (A′), global
        (stage5), local (extra block). Each (B, C, h, w); works in either mode, runs no decoder.
        ``enc``: the encoder output for ``img`` when the caller has it already."""
        enc = self.forward_encoder(img) if enc is None else enc
        s5 = self.senc.stage5(self.stage5_input(enc))
        maps = {
            "stage3": enc.stage3,
            "stage4": enc.stage4,
            "global": s5,
            "local": self.senc.local_block(s5),
        }
        if enc.attn is not None:
            maps["attn"] = enc.attn.out
        return maps


def validate(cfg: ModelConfig) -> None:
    """Reject configurations that cannot be built, with one line saying what to change."""
    needs = STRATEGY_MASKS.get(cfg.mask)
    if needs is None:
        raise FTNError(f"model.mask={cfg.mask}: unknown; one of {', '.join(STRATEGY_MASKS)}")
    if cfg.decoder:
        for name, flag in (("pam", "use_pa"), ("cam", "use_ca")):
            if name in needs and not (cfg.attention == "cfa" and getattr(cfg, flag)):
                raise FTNError(
                    f"model.mask={cfg.mask} needs the CFA's {name[:2].upper()} map: "
                    f"set model.attention=cfa and model.{flag}=true, or another mask"
                )
    if cfg.attention == "cfa" and not (cfg.use_pa or cfg.use_ca):
        raise FTNError("model.use_pa and model.use_ca are both false: CFA needs at least one")


def build_model(
    cfg: ModelConfig, num_classes: int, init_seed: int | None = None, load_init: bool = True
) -> FTN:
    """Wire a ``ModelConfig`` to ``FTN`` (the only place that reads the config); ``init_seed``
    keys every part's initial weights (the run's seed in training). ``load_init=False`` does
    not read ``model.init``'s weights file (for a caller that loads a whole state dict next)."""
    validate(cfg)
    return FTN(
        num_classes,
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        weights_path=cfg.weights_path,
        attention=cfg.attention,
        use_pa=cfg.use_pa,
        use_ca=cfg.use_ca,
        use_cmp=cfg.use_cmp,
        decoder=cfg.decoder,
        decoder_width=cfg.decoder_width,
        mask=cfg.mask,
        gauss_sy=cfg.gauss_sy,
        gauss_sx=cfg.gauss_sx,
        embed_dim=cfg.embed_dim,
        last_stride=cfg.last_stride,
        stage4_stride=cfg.stage4_stride,
        placement=cfg.cfa_placement,
        init_seed=init_seed,
        init=cfg.init,
        load_init=load_init,
    )


def model_from_state(cfg: ModelConfig, state: dict[str, Tensor]) -> FTN:
    """``cfg``'s model with a saved state dict (a run's ``model.pt``), its classifiers sized
    from the state dict, in eval mode; ``model.init``'s weights file is not read."""
    model = build_model(cfg, classes_in_state(state), load_init=False)
    model.load_state_dict(state)
    return model.eval()


def classes_in_state(state: dict[str, Tensor]) -> int:
    """How many training identities a saved state dict's classifier has."""
    return int(state["heads.global.classifier.weight"].shape[0])
