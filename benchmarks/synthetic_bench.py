"""Synthetic benchmark: generation time and images/s, exact counts, and the background shortcut.

Prints, for the ``tiny`` and ``default`` sizes, the wall time of a fresh generation (1 and 2
worker processes) and images/s; the exact split counts of ``default``; the train
background/identity correlation for several ``bias`` values (from the plan, no pixels); and
the rank-1 of nearest-neighbour probes that see only background or only person pixels
(``shortcut_rank1``) — a tempting shortcut is high on train and near zero on test.

    .venv/bin/python benchmarks/synthetic_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from ftn_core.data import synthetic as S
from ftn_core.data import synthetic_checks as C


def timed_generation(
    root: str, size: str, workers: int, bias: float | None = None
) -> tuple[float, str]:
    t0 = time.perf_counter()
    path = S.generate(root, size, seed=0, force=True, bias=bias, workers=workers, progress=False)
    return time.perf_counter() - t0, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip 2-worker timing and the bias 0 / 1 shortcut probes",
    )
    args = parser.parse_args()
    print(f"CPU cores visible: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as root:
        print("\n== generation (fresh, force=True) ==")
        for size in ("tiny", "default"):
            for workers in (1,) if args.quick else (1, 2):
                seconds, path = timed_generation(root, size, workers)
                with open(os.path.join(path, S.MARKER), encoding="utf-8") as f:
                    n = sum(json.load(f)["counts"].values())
                print(
                    f"{size:<8} workers={workers}: {seconds:6.2f} s  {n:5d} images  "
                    f"{n / seconds:6.0f} images/s"
                )

        print("\n== default size: exact counts ==")
        splits = S.load_synthetic(root, "default", 0)
        print(splits.summary())
        distractors = sum(1 for s in splits.gallery if s.pid == 0)
        print(
            f"  distractors (pid 0) in the gallery: {distractors}; cameras: "
            f"{splits.num_train_cams}; total images: "
            f"{len(splits.train) + len(splits.query) + len(splits.gallery)}"
        )

        print("\n== train background/identity correlation (plan of the default size) ==")
        print("bias  top-2 cameras share  (uniform)  top object share")
        for bias in (0.0, 0.5, 0.8, 1.0):
            shots, _ = S.plan(S.get_spec("default", bias), seed=0)
            rows = [{"split": s.split, "pid": s.pid, "cam": s.cam, "obj": s.obj} for s in shots]
            st = C.bias_stats(rows)
            print(
                f"{bias:4.1f}  {st['cam_top_share']:19.3f}  {st['cam_uniform']:9.3f}  "
                f"{st['obj_top_share']:16.3f}"
            )

        print("\n== background shortcut: NN rank-1 of region-only probes (default size) ==")
        print(
            f"chance ≈ {1 / S.SIZES['default'].train_ids:.3f} (train) ; "
            f"{1 / S.SIZES['default'].test_ids:.3f} (test)"
        )
        print("bias  background train  background test  person train  person test")
        for bias in (0.8,) if args.quick else (0.0, 0.8, 1.0):
            sp = splits if bias == 0.8 else S.load_synthetic(root, "default", 0, bias=bias)
            bg, fg = C.shortcut_rank1(sp, "background"), C.shortcut_rank1(sp, "person")
            print(
                f"{bias:4.1f}  {bg['train']:16.3f}  {bg['test']:15.3f}  {fg['train']:12.3f}  "
                f"{fg['test']:11.3f}"
            )


if __name__ == "__main__":
    main()
