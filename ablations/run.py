"""Run the variants of one of the paper's tables or of a study file, tracked in MLflow; rerunning resumes.

Examples:
  python ablations/run.py --table 2                      # Table 2 on the embedded synthetic data
  python ablations/run.py --table 1 --seeds 0 1 2 --variants base cfa
  python ablations/run.py --table 3 --dataset market1501 cuhk03_labeled --root /data/reid
  python ablations/run.py --table 2 --controls --seeds 0 1 2   # + base_matched and oracle
  python ablations/run.py --table 2 --dry-run            # the plan, what is done, time and disk
  python ablations/run.py --table 2 --seeds 0 1 2        # add seeds: finished runs are reused
  python ablations/run.py --table 1 --seeds 0 1 2 3 --jobs 2   # two runs at a time, one thread each
  torchrun --nproc-per-node 2 ablations/run.py --table 2 --preset paper --dataset market1501 --root /data
  python ablations/run.py --study ablations/studies/lambda3.toml --seeds 0 1 2   # your own study (docs/studies.md)
  python ablations/run.py --table 1 --until-halfwidth 1.0 --max-seeds 24   # seeds where Δ is unsure
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

from ablations import inits, runner, scheduling, store  # noqa: E402
from ablations.seed_rule import FIRST_SEEDS, SeedRule, next_pick  # noqa: E402
from ablations.study import load as load_study  # noqa: E402
from ablations.study import paper_study
from ftn_core.config import parse_sets  # noqa: E402
from ftn_core.data.digest import read_only_cache  # noqa: E402
from ftn_core.engine import Interrupted, deferred_interrupts  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main, float_in, int_at_least  # noqa: E402
from ftn_core.presets import PRESETS  # noqa: E402

DEFAULT_ROOT = store.REPO / "data"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--table",
        type=int,
        help="paper table: 1 (attention), 2 (TF-Dec targets), "
        "3 (Baseline and FTN per dataset); read from ablations/studies/table{N}.toml",
    )
    which.add_argument(
        "--study",
        metavar="FILE",
        help="a study file (TOML: rows, a sweep, claims; see docs/studies.md)",
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["synthetic"],
        metavar="NAME",
        help=f"one or more of: {', '.join(runner.DATASETS)} (default: synthetic, generated on first use)",
    )
    parser.add_argument(
        "--root",
        default=str(DEFAULT_ROOT),
        help="folder holding the datasets (and where synthetic data is generated); default: %(default)s",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="paper | cpu | gpu | tiny (default: paper with CUDA and a real dataset, gpu with CUDA on "
        "the synthetic data, else cpu)",
    )
    parser.add_argument(
        "--seeds",
        type=int_at_least(0),
        nargs="+",
        default=None,
        metavar="S",
        help="seeds (default: 0; with --until-halfwidth, the first seeds of "
        "every row, default 0 1 2)",
    )
    parser.add_argument(
        "--until-halfwidth",
        type=float_in(0),
        default=None,
        metavar="H",
        help="after the first seeds, give one more seed at a time to the row "
        "whose paired Δ R-1 interval against the reference row is widest "
        "(and the reference's run of that seed) until every row's "
        "half-width is at most H points or it has --max-seeds; the rule "
        "reads the interval's width only, never its sign or p-value "
        "(stopping on significance would bias the verdicts); works with "
        "--jobs, --shard and SLURM arrays (docs/scaling.md)",
    )
    parser.add_argument(
        "--max-seeds",
        type=int_at_least(2),
        default=None,
        metavar="N",
        help="with --until-halfwidth: the most seeds a row gets (default 24)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="KEY",
        help="a subset of the table's variants, e.g. base g (default: all)",
    )
    parser.add_argument(
        "--controls",
        action="store_true",
        help="also run the table's controls: base_matched (the Baseline with a TF-Dec "
        "variant's Re-ID updates) and oracle ((g) reconstructing the true person)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.epochs=20 (repeatable)",
    )
    parser.add_argument(
        "--params-file",
        default=None,
        metavar="FILE",
        help="JSON object of config overrides, e.g. the best parameters written by "
        "ablations/tune.py; --set wins over it",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where checkpoints for resuming are kept (default: the folder "
        "'checkpoints' beside a SQLite store, e.g. "
        f"{store.MLRUNS / 'checkpoints'}; for a server, that folder)",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run the K-th of N disjoint slices of the runs still to do "
        "(0-based), packed by expected time, then any other slice's run "
        "no process holds; defaults to SLURM_ARRAY_TASK_ID/"
        "SLURM_ARRAY_TASK_COUNT when set",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip (and count) unreadable images instead of stopping at the first one "
        "(= --set data.skip_bad_images=true)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep the resumable checkpoint of a FINISHED run (default: delete it; the "
        "final model stays as the run's artifact model.pt)",
    )
    parser.add_argument(
        "--jobs",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="train N runs at once on this machine, each with its share of the CPU "
        "threads (default 1); each job takes the next run no other job holds",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, what is done, the time it should take and the disk its "
        "checkpoints take; train nothing, create nothing",
    )
    return parser.parse_args(argv)


def parse_shard(text: str | None) -> tuple[int, int]:
    source = f"--shard {text}"
    if text is None:
        task, count = (
            os.environ.get("SLURM_ARRAY_TASK_ID"),
            os.environ.get("SLURM_ARRAY_TASK_COUNT"),
        )
        if task is None or count is None:
            return 0, 1
        env = {
            k: os.environ.get(f"SLURM_ARRAY_TASK_{k}", default)
            for k, default in (("ID", task), ("COUNT", count), ("STEP", "1"), ("MIN", "0"))
        }
        bad = [f"SLURM_ARRAY_TASK_{k}={v}" for k, v in env.items() if not v.strip().isdigit()]
        if bad or int(env["STEP"]) < 1 or int(env["COUNT"]) < 1:
            shown = (
                ", ".join(bad)
                or f"SLURM_ARRAY_TASK_STEP={env['STEP']}, SLURM_ARRAY_TASK_COUNT={env['COUNT']}"
            )
            raise FTNError(
                f"{shown}: not a usable SLURM array task (whole numbers, step and count ≥ 1); "
                f"pass --shard K/N instead"
            )
        step = int(env["STEP"])  # --array=0-6:2 → ids 0, 2, 4, 6
        text = f"{(int(task) - int(env['MIN'])) // step}/{count}"
        source = f"SLURM array task {task} (shard {text}; use --array=0-{int(count) - 1} or pass --shard)"
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise FTNError(f"{source}: expected K/N, e.g. --shard 0/4") from None
    if not (n >= 1 and 0 <= k < n):
        raise FTNError(f"{source}: need 0 <= K < N")
    return k, n


def read_params_file(path: str | None) -> dict[str, object]:
    """``{"loss.w_grad": 1.2, ...}`` from a JSON file (a preset-style set of overrides)."""
    if path is None:
        return {}
    try:
        params = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise FTNError(f"--params-file {path}: cannot read it as JSON ({err})") from None
    if not isinstance(params, dict):
        raise FTNError(f"--params-file {path}: expected a JSON object of config keys and values")
    return params


def without_jobs(argv: list[str]) -> list[str]:
    """``argv`` (after the program) without its ``--jobs N`` / ``--jobs=N``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--jobs":
            skip = True
        elif not item.startswith("--jobs="):
            out.append(item)
    return out


def run_jobs(jobs: int, argv: list[str], workers: int) -> int:
    """``workers`` copies of this command without ``--jobs``, side by side, each with its share
    of the CPU threads. They share the plan through the store: each run is trained under its
    lease, so a job takes the next run that no other job holds. Their lines are printed prefixed
    with the job's number; Ctrl-C or SIGTERM stops them all (each marks its run KILLED, and the
    same command resumes). Returns the worst exit code (1 if a run FAILED, 130 if stopped)."""
    import signal
    import subprocess
    import threading

    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), *without_jobs(argv[1:])]
    print(f"{workers} job(s) side by side, {threads} thread(s) each", flush=True)
    # Their own sessions: a Ctrl-C at the terminal reaches them once, through this process.
    procs = [
        subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        for _ in range(workers)
    ]

    def relay(k: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            print(f"[job {k}] {line}", end="", flush=True)

    relays = [
        threading.Thread(target=relay, args=(k, p), daemon=True) for k, p in enumerate(procs, 1)
    ]
    for t in relays:
        t.start()
    stopped: list[int] = []

    def stop(signum, frame):  # pass it on once; every job marks its run KILLED and exits 130
        if not stopped:
            stopped.append(signum)
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    for t in relays:
        t.join(timeout=5)
    if stopped or any(c == 130 for c in codes):
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return max(codes)


def init_distributed() -> tuple[int, int]:
    """Under torchrun: join the process group (NCCL on CUDA, gloo on CPU); returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def seed_rule_of(args: argparse.Namespace) -> SeedRule | None:
    """The ``--until-halfwidth`` rule the arguments ask for (None: the seeds of ``--seeds``)."""
    if args.until_halfwidth is None:
        if args.max_seeds is not None:
            raise FTNError(
                "--max-seeds: only with --until-halfwidth H (else --seeds are the seeds)"
            )
        return None
    first = tuple(dict.fromkeys(args.seeds or FIRST_SEEDS))
    max_seeds = 24 if args.max_seeds is None else args.max_seeds
    if len(first) < 2:
        raise FTNError(
            f"--seeds {' '.join(map(str, first))}: --until-halfwidth needs at least "
            f"2 first seeds (an interval over seeds), e.g. --seeds 0 1 2 (the default)"
        )
    if max_seeds < len(first):
        raise FTNError(
            f"--max-seeds {max_seeds}: below the {len(first)} first seeds (--seeds); raise it"
        )
    return SeedRule(args.until_halfwidth, max_seeds, first)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    study = (
        load_study(args.study) if args.study else paper_study(args.table)
    )  # checked whole, first
    argv = sys.argv if argv is None else ["ablations/run.py", *argv]
    rule = seed_rule_of(args)
    rank, world = init_distributed()
    shard = parse_shard(args.shard)
    preset, why = runner.choose_preset(args.preset, args.dataset)
    sets = {**read_params_file(args.params_file), **parse_sets(args.sets)}
    if args.skip_bad_images:
        sets.setdefault("data.skip_bad_images", "true")
    if world > 1 and "train.device" not in sets:
        import torch

        if torch.cuda.is_available():
            sets["train.device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    keys = args.variants
    if rule is not None and keys and study.reference not in keys:  # every Δ is against it
        keys = [study.reference, *keys]
    seeds = rule.seeds() if rule is not None else (args.seeds or [0])
    plan = runner.build_plan(
        study, keys, seeds, args.dataset, args.root, preset, sets, args.controls
    )
    for p in plan:
        p.seed_rule = rule.tag if rule is not None else ""
    uri = store.check_uri(args.tracking_uri)  # a bad store is refused before the data is read
    work_dir = Path(args.work_dir) if args.work_dir else store.checkpoint_dir(uri)
    runner.check_work_dir(work_dir)
    inits.fill_init_digests(plan, uri, fetch=not args.dry_run)  # a bad model.init too
    if not plan:
        raise FTNError(
            f"nothing to run: no row of the plan applies to {' '.join(args.dataset)} (the "
            f"oracle control needs the synthetic data's true masks); choose other --variants"
        )
    if rank == 0:
        print(f"preset: {preset} ({why})", flush=True)
    if args.dry_run:  # reads the data and the store, creates nothing
        if rank == 0:
            dry_run(plan, study, rule, shard, uri, work_dir)
        return 0
    splits = runner.read_data(plan)
    # Read the store first, create nothing until every run still to do is known to start.
    client = store.open_store(uri, create=False) if rank == 0 else None
    if client is not None:
        runner.mark_existing(plan, client)
    if world > 1:
        import torch.distributed as dist

        statuses = [[(p.status, p.run_id) for p in plan]]
        dist.broadcast_object_list(statuses, src=0)
        for p, (status, run_id) in zip(plan, statuses[0]):
            p.status, p.run_id = status, run_id
    first = [p for p in plan if rule is None or p.seed in rule.initial]  # what shards split
    seconds, unit = (
        scheduling.expected_cost(first, client) if rank == 0 and shard != (0, 1) else ([], "s")
    )
    own_index = (
        scheduling.shard_bins(first, shard[1], seconds)[shard[0]]
        if seconds
        else list(range(len(first)))
    )
    own = [first[i] for i in runner._sync(own_index, world)]
    if rule is None and all(p.status == "done" for p in plan):
        if rank == 0:
            print(
                f"all {len(plan)} runs are already FINISHED in the store on this data; nothing to train "
                f"(change a --set to run a new configuration)"
            )
        return 0
    idle = (
        rule is not None
        and rank == 0
        and client is not None
        and not rule_has_work(plan, rule, client)
    )
    if runner._sync(idle, world):
        return 0
    if rank == 0:
        if seconds:
            print(scheduling.describe_shard(first, shard, seconds, unit))
        more = (
            f"; then one seed at a time where the Δ R-1 interval is widest ({rule.tag})"
            if rule is not None
            else ""
        )
        pace = runner.measured_pace(plan, client) if client else None
        print(runner.describe_start(own, pace) + more, flush=True)
    todo = [p for p in plan if p.status != "done"]
    splits = runner.load_todo(todo, splits)
    runner.check_todo(
        todo, splits
    )  # e.g. data.num_ids beyond the data: refused before the store is touched
    if rank == 0:
        client = store.open_store(uri)
    if args.jobs > 1 and world == 1:
        return run_jobs(args.jobs, argv, min(args.jobs, len(todo)))
    leases = store.lease_dir(uri, work_dir)
    parents: dict[str, str] = {}
    try:
        if rank == 0:
            with deferred_interrupts():  # each parent run is created whole, or not at all
                parents = runner.start_parents(todo, client, argv)
        if rule is not None:
            mine = {(p.experiment, p.variant.key, p.seed) for p in own} if seconds else set()
            failed = scheduling.run_until_halfwidth(
                plan,
                rule,
                client,
                work_dir,
                parents,
                splits,
                rank,
                world,
                args.keep_checkpoints,
                leases,
                mine,
            )
        else:
            failed = train(
                own,
                plan,
                shard,
                client,
                work_dir,
                parents,
                splits,
                rank,
                world,
                args.keep_checkpoints,
                leases,
            )
    except (Interrupted, KeyboardInterrupt) as err:
        if rank == 0:
            runner.end_parents(client, parents, "KILLED")
            print(f"{err or 'interrupted'}; run the same command again to resume", file=sys.stderr)
        return 130
    except BaseException:
        if rank == 0:
            runner.end_parents(client, parents, "FAILED")
        raise
    if rank == 0:
        runner.end_parents(client, parents, "FAILED" if failed else "FINISHED")
        if failed:
            print(
                f"error: {len(failed)} run(s) did not finish (their errors above): "
                f"{', '.join(failed)}",
                file=sys.stderr,
            )
            return 1
        where = f" --tracking-uri {shlex.quote(args.tracking_uri)}" if args.tracking_uri else ""
        which = f"--table {study.table}" if study.is_paper else f"--study {shlex.quote(args.study)}"
        done = "no run left for this process" if rule is not None else "all runs finished"
        print(f"{done}; build the report with: python reports/build.py {which}{where}")
    return 0


def train(
    own: list[runner.PlannedRun],
    plan: list[runner.PlannedRun],
    shard: tuple[int, int],
    client,
    work_dir: Path,
    parents: dict[str, str],
    splits: dict,
    rank: int,
    world: int,
    keep: bool,
    leases: Path,
) -> list[str]:
    """Copy or train this shard's runs, then (work stealing) the other shards' runs that no
    process holds; returns the names of the runs that FAILED."""
    if rank == 0:
        runner.reuse_runs(own, client, parents, leases)
    failed = runner.execute(own, client, work_dir, parents, splits, rank, world, keep, leases)
    mine = {id(p) for p in own}
    rest = [p for p in plan if id(p) not in mine and p.status != "done"]
    if not rest:
        return failed
    if rank == 0:
        print(
            f"shard {shard[0]}/{shard[1]}: its own runs are done; taking the other shards' "
            f"runs that no process holds ({len(rest)} not FINISHED when it started)",
            flush=True,
        )
        runner.reuse_runs(rest, client, parents, leases)
    return failed + runner.execute(
        rest, client, work_dir, parents, splits, rank, world, keep, leases
    )


def rule_has_work(plan: list[runner.PlannedRun], rule: SeedRule, client) -> bool:
    """Whether the rule has a run to give now; if not, says where each row stands."""
    groups = scheduling.read_state(plan, client, {}, set())
    if next_pick(groups, rule) is not None:
        return True
    for group in groups:
        print(scheduling.describe(group, rule, f"nothing to run now, {rule.tag}"), flush=True)
    return False


def dry_run(
    plan: list[runner.PlannedRun],
    study,
    rule: SeedRule | None,
    shard: tuple[int, int],
    uri: str,
    work_dir: Path,
) -> None:
    """Print the plan (this shard's part), what is done, the time and the disk; with the rule,
    where each row stands and its next pick. Reads the data and the store, creates nothing."""
    if not study.is_paper:
        print(
            f"study {study.name} ({study.path}, hash {study.digest}): {len(study.rows)} rows, "
            f"{len(study.claims)} claim(s), Δ against {study.reference}",
            flush=True,
        )
    with read_only_cache():
        runner.read_data(plan, generate=False)
    client = store.open_store(uri, create=False)
    if client is not None:
        runner.mark_existing(plan, client)
    shown = [p for p in plan if rule is None or p.seed in rule.initial or p.status != "new"]
    if shard != (0, 1):
        seconds, unit = scheduling.expected_cost(shown, client)
        print(scheduling.describe_shard(shown, shard, seconds, unit))
        shown = scheduling.shard_runs(shown, shard, seconds)
    print(runner.format_plan(shown, work_dir))
    print(runner.describe_start(shown, runner.measured_pace(plan, client) if client else None))
    if rule is not None:
        groups = scheduling.read_state(plan, client, {}, set()) if client is not None else []
        pick = next_pick(groups, rule) if groups else None
        for group in groups:
            print(scheduling.describe(group, rule))
        print(
            f"the rule's next run: {f'{pick.row}-s{pick.seed} ({pick.why})' if pick else 'none'}"
            if groups
            else f"{rule.tag}: the first seeds of every row, then the rule"
        )


if __name__ == "__main__":
    raise SystemExit(main())
