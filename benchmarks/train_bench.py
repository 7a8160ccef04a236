"""Training and inference speed per preset, and the engine's overhead against a bare loop.

  python benchmarks/train_bench.py [--presets tiny cpu paper] [--batches 6]

For each preset: training img/s and inference img/s of Baseline and FTN on random images of
the preset's size and batch; then the engine's ``train_epoch`` against a bare loop doing the
same forward/backward/step on the same preloaded batches (aim: overhead ≤ 5 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftn_core.config import override  # noqa: E402
from ftn_core.data.loading import DataBundle  # noqa: E402
from ftn_core.data.types import DatasetSplits, Sample  # noqa: E402
from ftn_core.engine import Trainer  # noqa: E402
from ftn_core.losses import combine  # noqa: E402
from ftn_core.model import build_model  # noqa: E402
from ftn_core.presets import preset_config  # noqa: E402

NUM_CLASSES = 150


def _batches(cfg, n: int) -> list[dict[str, torch.Tensor]]:
    d = cfg.data
    bsz = d.num_ids * d.num_instances
    g = torch.Generator().manual_seed(0)
    return [{"img": torch.rand(bsz, 3, d.height, d.width, generator=g),
             "pid": torch.arange(d.num_ids).repeat_interleave(d.num_instances)} for _ in range(n)]


class _Sampler:
    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict:
        return {}


def _bundle(batches) -> DataBundle:
    splits = DatasetSplits("bench", "", [Sample("", i % NUM_CLASSES, 0) for i in range(NUM_CLASSES)])
    return DataBundle(splits, batches, _Sampler(), [], [])  # type: ignore[arg-type]


def engine_seconds(cfg, batches) -> float:
    trainer = Trainer(cfg, _bundle(batches), progress=False)
    trainer.train_epoch(cfg.train.warmup_epochs)  # warm up allocator and kernels
    t0 = time.perf_counter()
    trainer.train_epoch(cfg.train.warmup_epochs)
    return time.perf_counter() - t0


def bare_seconds(cfg, batches) -> float:
    """The same work without the engine: forward, losses, backward, Adam step."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, NUM_CLASSES).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    reid, recon = {"ce": 1.0, "triplet": 0.1}, {"grad": 1.0, "l1": 1.0}

    def epoch() -> None:
        for i, b in enumerate(batches):
            kind_recon = model.decoder is not None and i % 3 == 2
            out = model(b["img"], reid=not kind_recon, recon=kind_recon)
            loss = combine(model.losses(out, b["pid"]), recon if kind_recon else reid)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()

    epoch()
    t0 = time.perf_counter()
    epoch()
    return time.perf_counter() - t0


def inference_img_s(cfg, batches) -> float:
    model = build_model(cfg.model, NUM_CLASSES).eval()
    with torch.inference_mode():
        model(batches[0]["img"])
        t0 = time.perf_counter()
        for b in batches:
            model(b["img"])
    return sum(len(b["img"]) for b in batches) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu", "paper"])
    parser.add_argument("--batches", type=int, default=6, help="batches per measurement (a multiple of 3)")
    parser.add_argument("--repeats", type=int, default=3, help="engine/bare pairs (median reported)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'preset':<7} {'model':<9} {'input':<9} {'batch':>5} {'train img/s':>12} {'infer img/s':>12}")
    overheads = {}
    for preset in args.presets:
        cfg = preset_config(preset, {"train.device": "cpu", "model.pretrained": False, "train.max_batches": 0})
        n = args.batches if preset != "paper" else 3
        batches = _batches(cfg, n)
        for label, changes in (("Baseline", {"model.attention": "none", "model.decoder": False}), ("FTN", {})):
            c = override(cfg, changes)
            c = dataclasses.replace(c, train=dataclasses.replace(c.train, warmup_epochs=0))
            train = sum(len(b["img"]) for b in batches) / engine_seconds(c, batches)
            infer = inference_img_s(c, batches)
            size = f"{cfg.data.height}x{cfg.data.width}"
            print(f"{preset:<7} {label:<9} {size:<9} {len(batches[0]['img']):>5} {train:>12.1f} {infer:>12.1f}",
                  flush=True)
        if preset != "paper":
            c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warmup_epochs=0))
            pairs = [(engine_seconds(c, batches), bare_seconds(c, batches)) for _ in range(args.repeats)]
            overheads[preset] = statistics.median(e / b - 1 for e, b in pairs)
    for preset, ov in overheads.items():
        print(f"engine overhead vs bare loop ({preset}, FTN, median of {args.repeats}): {100 * ov:+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
