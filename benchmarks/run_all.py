"""Every speed and cost figure of the suite, printed in one go (`make bench`).

  python benchmarks/run_all.py [--quick] [--table2]

--quick skips the slow parts (paper-preset training speed, MSMT17-scale evaluation); with a
CUDA device the cost, evaluation, loader and training figures are measured on it; --table2
also times the whole of `ablations/run.py --table 2 --preset cpu` in a fresh store (wall time
and peak memory; 17–20 minutes).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def section(title: str, cmd: list[str]) -> int:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    return subprocess.run([sys.executable, *cmd], cwd=REPO).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the slowest measurements")
    parser.add_argument(
        "--table2", action="store_true", help="also time the whole cpu-preset Table 2 (17–20 min)"
    )
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()  # then the GPU figures too (README "On a GPU")
    gpu = ["--device", "cuda"] if cuda else []
    codes = [
        section("Model cost (paper §4.2 efficiency claim)", ["-m", "ftn_core.cost", *gpu]),
        section(
            "Evaluation protocol",
            ["benchmarks/eval_bench.py", *(["--skip-msmt"] if args.quick else []), *gpu],
        ),
        section(
            "Decode + augment",
            ["benchmarks/data_bench.py", *(["--workers", "4", "8"] if cuda else [])],
        ),
        section("Synthetic benchmark generation", ["benchmarks/synthetic_bench.py"]),
        *(
            []
            if cuda
            else [
                section(
                    "Training step: fp32 and bf16, GFLOP/s, share of the matmul peak",
                    ["benchmarks/step_bench.py", "--preset", "cpu"],
                )
            ]
        ),
        section(
            "Training / inference speed and engine overhead",
            [
                "benchmarks/train_bench.py",
                "--presets",
                "tiny",
                "cpu",
                *([] if args.quick else ["paper"]),
            ]
            if not cuda
            else ["benchmarks/train_bench.py", "--device", "cuda", "--presets", "paper", "gpu"],
        ),
    ]
    if args.table2:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                "ablations/run.py",
                "--table",
                "2",
                "--preset",
                "cpu",
                "--tracking-uri",
                f"sqlite:///{tmp}/mlflow.db",
                "--work-dir",
                f"{tmp}/ckpt",
            ]
            t0 = time.perf_counter()
            codes.append(section("Table 2, cpu preset, fresh store", cmd))
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(
                f"Table 2 (cpu preset): wall {time.perf_counter() - t0:.0f} s, peak RSS {peak_mb:.0f} MB"
            )
    return max(codes)


if __name__ == "__main__":
    raise SystemExit(main())
