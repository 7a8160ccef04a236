"""Evaluation speed and memory: a run's whole evaluation, and the protocol at Market-1501 and
MSMT17 scale.

A run's evaluation: the cpu preset's model (random weights: the time does not depend on them)
on the synthetic test split (``--run-test-ids``, 1000 by default: 3,547 queries and 12,124
gallery images, generated under ``--root`` first where missing), on ``--threads`` threads,
timed as before (``engine.evaluate_reference``: a loader decoding every image, a second encoder
pass for the diagnostics) and after (``engine.evaluate``: images decoded once per process, one
pass), interleaved (before, after, before, after …) so that a load that comes and goes hits
both; seconds per 1,000 test images, wall and CPU, and whether the two give the same numbers.

The protocol alone: synthetic features with a Re-ID-like structure (identity centre + camera
bias + noise, pid 0 distractors), so ranks, ties and match counts look like a trained model's,
not like noise. Peak memory is the growth of the process's resident set (Linux VmHWM, reset
before each measurement; a 5 ms psutil sampler where that is unavailable): torch's CPU
allocations are invisible to tracemalloc.

    .venv/bin/python benchmarks/eval_bench.py [--run-test-ids 1000] [--run-repeats 2] [--threads 1]
                                              [--ref-queries 600] [--msmt-dim 32] [--skip-rerank]
                                              [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from ftn_core.evaluation import (
    _distance_block,
    compute_distmat,
    evaluate_features,
    evaluate_rank,
    evaluate_rank_reference,
)
from ftn_core.rerank import rerank

MB = 1 << 20


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


CPU = [0.0]
"""Process CPU seconds of the last ``measure`` (all threads): shows when other jobs steal time."""


def measure(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Run ``fn``; return (result, wall seconds, peak RSS growth in MB)."""
    base, cpu = _rss(), time.process_time()
    if _reset_peak():
        t = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - t
        CPU[0] = time.process_time() - cpu
        return out, sec, (_hwm() - base) / MB
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    t = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t
    done.set()
    th.join()
    CPU[0] = time.process_time() - cpu
    return out, sec, (max(peak[0], _rss()) - base) / MB


def synthetic_reid(
    num_ids: int,
    num_q: int,
    num_g: int,
    num_distractors: int,
    num_cams: int,
    dim: int,
    centre_scale: float = 1.0,
    seed: int = 0,
):
    """Query/gallery features and labels; every query id has gallery images in other cameras."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    num_real = num_g - num_distractors
    every_id = np.arange(1, num_ids + 1)  # each id at least once, then random ids
    g_pids = np.concatenate(
        [
            every_id,
            rng.integers(1, num_ids + 1, num_real - num_ids),
            np.zeros(num_distractors, np.int64),
        ]
    )  # pid 0 distractors
    q_pids = np.concatenate([every_id, rng.integers(1, num_ids + 1, num_q - num_ids)])
    g_cams, q_cams = rng.integers(0, num_cams, num_g), rng.integers(0, num_cams, num_q)
    centre = centre_scale * torch.randn(num_ids + 1, dim, generator=gen)  # row 0: unused
    cam_bias = 0.5 * centre_scale * torch.randn(num_cams, dim, generator=gen)

    def feats(pids: np.ndarray, cams: np.ndarray) -> torch.Tensor:
        base = centre[torch.from_numpy(pids)]
        base[torch.from_numpy(pids == 0)] = centre_scale * torch.randn(
            int((pids == 0).sum()), dim, generator=gen
        )
        noise = torch.randn(len(pids), dim, generator=gen)
        return base + cam_bias[torch.from_numpy(cams)] + noise  # (N, dim)

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def market(args: argparse.Namespace) -> None:
    print(
        "== Market-1501 scale: 3,368 queries x 15,913 gallery (751 ids, 6 cams, "
        "2,793 pid-0 distractors), 1,536-d =="
    )
    q, g, q_pids, g_pids, q_cams, g_cams = synthetic_reid(
        751, 3368, 15913, 2793, 6, 1536, centre_scale=0.35
    )
    labels = (q_pids, g_pids, q_cams, g_cams)
    n_match = [int(((g_pids == p) & (g_cams != c)).sum()) for p, c in zip(q_pids, q_cams)]
    print(f"true matches per query: mean {np.mean(n_match):.1f}, max {max(n_match)}")

    dist, sec, mem = measure(lambda: compute_distmat(q, g, "euclidean"))
    print(
        f"compute_distmat euclidean   {sec:7.3f} s (cpu {CPU[0]:.2f} s)   peak +{mem:6.0f} MB "
        f"(result itself {dist.numel() * 4 / MB:.0f} MB)"
    )
    _, sec, mem = measure(lambda: compute_distmat(q, g, "cosine"))
    print(f"compute_distmat cosine      {sec:7.3f} s   peak +{mem:6.0f} MB")

    times, cpus, mems, res = [], [], [], None
    for _ in range(args.repeats):
        res, sec, mem = measure(lambda: evaluate_rank(dist, *labels))
        times.append(sec)
        cpus.append(CPU[0])
        mems.append(mem)
    print(
        f"evaluate_rank               first {times[0]:.3f} s, best {min(times):.3f} s, "
        f"median {statistics.median(times):.3f} s over {args.repeats} (cpu best "
        f"{min(cpus):.2f} s)   peak +{max(mems):.0f} MB"
    )
    print(
        f"  -> mAP {res.mAP:.4f}  mINP {res.mINP:.4f}  rank1 {res.cmc[0]:.4f}  "
        f"valid queries {res.num_valid_queries}"
    )
    noise = torch.rand(dist.shape, generator=torch.Generator().manual_seed(2))
    _, sec, mem = measure(functools.partial(evaluate_rank, noise, *labels))  # no closure: del below
    print(
        f"evaluate_rank, uniform random distances (worst case: hardest match deep in "
        f"every row)   {sec:.3f} s   peak +{mem:.0f} MB"
    )
    del noise

    n = min(args.ref_queries or len(q_pids), len(q_pids))
    sub = (dist[:n], q_pids[:n], g_pids, q_cams[:n], g_cams)
    ref, ref_sec, _ = measure(lambda: evaluate_rank_reference(*sub))
    fast, fast_sec, _ = measure(lambda: evaluate_rank(*sub))
    same = np.array_equal(ref.cmc, fast.cmc) and ref.num_valid_queries == fast.num_valid_queries
    diff = max(np.abs(ref.cmc - fast.cmc).max(), abs(ref.mAP - fast.mAP), abs(ref.mINP - fast.mINP))
    extrapolated = ref_sec * len(q_pids) / n
    print(
        f"literal loop on {n} queries  {ref_sec:.3f} s (fast path on the same: {fast_sec:.3f} s)"
        f"; extrapolated to all {len(q_pids)}: {extrapolated:.1f} s"
    )
    print(
        f"  -> identical: cmc and counts {'equal' if same else 'DIFFERENT'}, "
        f"max |diff| over cmc/mAP/mINP {diff:.2e}"
    )
    print(f"speed-up vs literal loop (extrapolated / best fast): {extrapolated / min(times):.1f}x")
    if args.device != "cpu":
        on_cpu, cpu_sec, _ = measure(lambda: evaluate_features(q, g, *labels))
        dev = torch.device(args.device)
        evaluate_features(q, g, *labels, device=dev)  # warm-up: kernels, allocator
        on_dev, sec, _ = measure(lambda: evaluate_features(q, g, *labels, device=dev))
        same = np.array_equal(on_cpu.per_query.first_rank, on_dev.per_query.first_rank)
        print(
            f"evaluate_features on {args.device}  {sec:7.3f} s (CPU path {cpu_sec:.3f} s, "
            f"{cpu_sec / sec:.1f}x); mAP {on_dev.mAP:.6f} vs CPU {on_cpu.mAP:.6f}, first-match "
            f"ranks {'identical' if same else 'differ (float rounding of the distances)'}"
        )
    if not args.skip_rerank:
        dev = torch.device(args.device)
        reranked, sec, mem = measure(lambda: rerank(q.to(dev), g.to(dev)))
        again = evaluate_rank(torch.from_numpy(reranked), *labels)
        print(
            f"k-reciprocal re-ranking     {sec:7.3f} s (cpu {CPU[0]:.2f} s; k1 20, k2 6, "
            f"λ 0.3)   peak +{mem:6.0f} MB"
        )
        print(
            f"  -> mAP {again.mAP:.4f} (plain {res.mAP:.4f})  rank1 {again.cmc[0]:.4f} "
            f"(plain {res.cmc[0]:.4f})"
        )


def msmt(args: argparse.Namespace) -> None:
    print(
        f"== MSMT17 scale: 11,659 queries x 82,161 gallery (3,060 ids, 15 cams), "
        f"{args.msmt_dim}-d, streamed =="
    )
    q, g, *labels = synthetic_reid(
        3060, 11659, 82161, 0, 15, args.msmt_dim, centre_scale=2.0, seed=1
    )
    print(f"a dense float32 distance matrix would take {11659 * 82161 * 4 / MB / 1024:.2f} GB")
    res, sec, mem = measure(lambda: evaluate_features(q, g, *labels, metric="euclidean"))
    print(f"evaluate_features           {sec:7.3f} s (cpu {CPU[0]:.2f} s)   peak +{mem:6.0f} MB")

    def distances_only() -> None:  # the kernel evaluate_features uses, into one reused block
        block = torch.empty(256, g.shape[0])
        g_sq = g.pow(2).sum(1)
        for s in range(0, len(q), 256):
            _distance_block(q[s : s + 256], g, "euclidean", g_sq, block[: len(q[s : s + 256])])

    _, d_sec, _ = measure(distances_only)
    print(
        f"  of which distances alone  ~{d_sec:6.3f} s (cpu {CPU[0]:.2f} s; same kernel and "
        f"blocks, results discarded)"
    )
    print(
        f"  -> mAP {res.mAP:.4f}  mINP {res.mINP:.4f}  rank1 {res.cmc[0]:.4f}  "
        f"valid queries {res.num_valid_queries}"
    )


def run_evaluation(args: argparse.Namespace) -> None:
    """A run's evaluation before and after, interleaved; seconds per 1,000 test images."""
    from ftn_core.data.loading import build_data, load_splits
    from ftn_core.engine import evaluate, evaluate_reference
    from ftn_core.model import build_model
    from ftn_core.presets import preset_config

    cfg = preset_config(
        "cpu", {"data.root": args.root, "data.synthetic_test_ids": args.run_test_ids}
    )
    splits = load_splits(cfg.data)  # generated first where missing (minutes for 1,000 ids)
    images = len(splits.query) + len(splits.gallery)
    print(
        f"== A run's evaluation: cpu preset model (FTN, random weights), synthetic test split: "
        f"{len(splits.query):,} queries + {len(splits.gallery):,} gallery = {images:,} images, "
        f"{torch.get_num_threads()} thread(s) =="
    )
    model = build_model(cfg.model, splits.num_train_pids, init_seed=0).eval()
    cpu, per_k = torch.device("cpu"), 1000 / images

    kept: dict = {}  # the old loaders' decoded images, as a run kept them for its later evaluations

    def before():  # a run's first evaluation: every image decoded
        return evaluate_reference(model, splits, cfg.data.height, cfg.data.width, cpu)

    def before_later():  # its later ones (eval_every): the run's own loaders had them decoded
        return evaluate_reference(model, splits, cfg.data.height, cfg.data.width, cpu, keep=kept)

    def after():  # any evaluation of any run: the process's decoded images, one pass
        return evaluate(model, build_data(cfg.data, splits=splits), cpu)

    def timed(fn):
        wall, cpu_s = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - wall, time.process_time() - cpu_s

    first, wall, cpu_s = timed(after)
    print(
        f"after, first in the process (decodes the test images): {wall * per_k:6.2f} s per 1,000 "
        f"images (cpu {cpu_s * per_k:.2f} s)",
        flush=True,
    )
    same = _same_numbers(timed(before_later)[0], first)  # decodes into `kept`
    kinds = {
        "before (a run's first evaluation)": before,
        "before (its later ones)": before_later,
        "after": after,
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for rep in range(args.run_repeats):
        for name, fn in kinds.items():
            out, wall, cpu_s = timed(fn)
            times[name].append((wall, cpu_s))
            same &= _same_numbers(out, first)
            print(
                f"{name:<34} #{rep + 1}  {wall * per_k:6.2f} s per 1,000 images "
                f"(cpu {cpu_s * per_k:.2f} s)  load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in times.items()
    }
    new_wall, new_cpu = med.pop("after")
    print(f"median after: {new_wall * per_k:.2f} s per 1,000 images (cpu {new_cpu * per_k:.2f} s)")
    for name, (wall, cpu_s) in med.items():
        print(
            f"median {name}: {wall * per_k:.2f} s per 1,000 images (cpu {cpu_s * per_k:.2f} s): "
            f"after takes 1/{wall / new_wall:.2f} of its wall time, "
            f"1/{cpu_s / new_cpu:.2f} of its CPU time"
        )
    print(
        f"  -> metrics, diagnostics and per-query results {'identical' if same else 'DIFFERENT'} "
        f"(R-1 {first[0]['val/rank1']:.2f}, mAP {first[0]['val/mAP']:.2f})"
    )


def _same_numbers(a, b) -> bool:
    (m_a, r_a), (m_b, r_b) = a, b
    return (
        m_a == m_b
        and np.array_equal(r_a.cmc, r_b.cmc)
        and all(np.array_equal(x, y) for x, y in zip(r_a.per_query, r_b.per_query))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run-test-ids",
        type=int,
        default=1000,
        help="synthetic test identities of the run evaluation (0: the size's own 100)",
    )
    ap.add_argument("--run-repeats", type=int, default=2, help="before/after pairs")
    ap.add_argument("--skip-run", action="store_true", help="no run evaluation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the run evaluation")
    ap.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parents[1] / "data"),
        help="where the synthetic data is (generated there if missing)",
    )
    ap.add_argument(
        "--ref-queries", type=int, default=600, help="queries for the literal loop (0 = all 3,368)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--msmt-dim", type=int, default=32)
    ap.add_argument("--skip-msmt", action="store_true")
    ap.add_argument("--skip-rerank", action="store_true", help="no k-reciprocal re-ranking")
    ap.add_argument("--device", default="cpu", help="also time the device path there (e.g. cuda)")
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_run:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        run_evaluation(args)
        torch.set_num_threads(threads)
    market(args)
    if not args.skip_msmt:
        msmt(args)


if __name__ == "__main__":
    main()
