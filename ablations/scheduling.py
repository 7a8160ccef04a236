"""Which run a worker takes next: shards balanced by expected cost, and ``--until-halfwidth``.

Shards (``--shard K/N``, SLURM arrays): the runs not yet FINISHED are packed into N shards by
expected seconds, longest first, each into the shard with the least work so far (LPT); ties go
to the earlier run and the lower shard, so the same plan and store state give the same shards
in every worker. A run's expected seconds are its epochs × the median seconds per epoch of its
row's FINISHED runs in the store (trained, not copied, on this preset and data), or, for a row
without one, its relative step cost (``relative_cost``) scaled to the rows that have one. A copy
of a FINISHED run from another experiment costs nothing. A shard that has done its own runs
takes, under their leases, the other shards' runs that no live process holds, so two shards
that started from different store states (and so disagree on the shards) still leave no run
undone and never train one twice.
"""

from __future__ import annotations

import statistics
import tempfile

import numpy as np
from mlflow.exceptions import MlflowException

from ablations import runner, store
from ablations.intervals import query_metric
from ablations.runner import PlannedRun
from ablations.seed_rule import Group, Row, SeedRule, next_pick, summary
from ftn_core.presets import RUN_SECONDS, preset_config

STEP_COST = {"attention": 0.2, "decoder": 0.5}
"""A training step's cost beyond the Baseline's (1), from the fp32 step times of
docs/performance.md (Baseline 103 ms, + CFA 121 ms, FTN (g) joint 157 ms): what a row without
FINISHED runs in the store is expected to cost, relative to the rows with some."""
TABLE2_STEP = 1.6
"""Table 2's mean step cost in Baseline steps (base 1, (a) 1.5, six rows of CFA and TF-Dec 1.7),
to which the presets' nominal run time refers."""


def relative_cost(p: PlannedRun) -> float:
    """``p``'s training cost in Baseline epochs (``STEP_COST``)."""
    m = p.cfg.model
    step = 1.0 + STEP_COST["attention"] * (m.attention != "none") + STEP_COST["decoder"] * m.decoder
    return step * p.cfg.train.epochs


def expected_seconds(plan: list[PlannedRun], client) -> list[float]:
    """Each planned run's expected seconds (module docstring); ``client`` None: none measured."""
    return expected_cost(plan, client)[0]


def expected_cost(plan: list[PlannedRun], client) -> tuple[list[float], str]:
    """(each planned run's expected cost, its unit): seconds as the store's runs measure them;
    where the store has none, the preset's nominal run time (``RUN_SECONDS``, as a Table 2 run
    of mean step cost ``TABLE2_STEP``) per Baseline epoch; else (a GPU preset) Baseline
    epochs."""
    keys = {(p.preset, p.data_digest) for p in plan if p.data_digest}
    spans: dict[tuple[str, str], list[float]] = {}
    for name in sorted({p.experiment for p in plan}) if client is not None else ():
        exp = client.get_experiment_by_name(name)
        for row, span in runner.epoch_spans(client, exp, keys) if exp is not None else ():
            spans.setdefault((name, row), []).append(span)
    per_epoch = {k: statistics.median(v) for k, v in spans.items()}
    first = {(p.experiment, p.variant.key): p for p in plan}
    units = [
        per_epoch[k] * p.cfg.train.epochs / relative_cost(p)
        for k, p in first.items()
        if k in per_epoch
    ]
    unit = "s"
    if units:  # seconds per Baseline epoch
        scale = statistics.median(units)
    elif plan and plan[0].preset in RUN_SECONDS:
        nominal = RUN_SECONDS[plan[0].preset] / preset_config(plan[0].preset).train.epochs
        scale = nominal / TABLE2_STEP
    else:
        scale, unit = 1.0, "Baseline epochs"
    out = []
    for p in plan:
        measured = per_epoch.get((p.experiment, p.variant.key))
        if p.status == "reuse":
            out.append(0.0)
        else:
            out.append(
                measured * p.cfg.train.epochs if measured is not None else relative_cost(p) * scale
            )
    return out, unit


def shard_bins(plan: list[PlannedRun], shards: int, seconds: list[float]) -> list[list[int]]:
    """The plan indices of each shard's runs (those not yet done), packed by LPT on ``seconds``;
    each shard's in plan order."""
    loads, bins = [0.0] * shards, [[] for _ in range(shards)]
    todo = [i for i, p in enumerate(plan) if p.status != "done"]
    for i in sorted(todo, key=lambda i: (-seconds[i], i)):
        j = min(range(shards), key=lambda b: (loads[b], b))
        bins[j].append(i)
        loads[j] += seconds[i]
    return [sorted(b) for b in bins]


def shard_runs(
    plan: list[PlannedRun], shard: tuple[int, int], seconds: list[float]
) -> list[PlannedRun]:
    """Shard K of N: its part of the runs not yet done (``shard_bins``); the whole plan for 0/1."""
    k, n = shard
    return list(plan) if n == 1 else [plan[i] for i in shard_bins(plan, n, seconds)[k]]


def describe_shard(
    plan: list[PlannedRun], shard: tuple[int, int], seconds: list[float], unit: str = "s"
) -> str:
    """One line: this shard's runs and expected time beside the others'."""
    k, n = shard
    bins = shard_bins(plan, n, seconds)
    loads = [sum(seconds[i] for i in b) for b in bins]
    todo = sum(len(b) for b in bins)
    return (
        f"shard {k}/{n}: {len(bins[k])} of the {todo} run(s) still to do, packed by expected "
        f"time (expected per shard: {', '.join(f'{x:.0f}' for x in loads)} {unit}); when "
        f"done it takes the other shards' runs that no process holds"
    )


def rank1_results(
    client, run_id: str, cache: dict[str, dict[int, float] | None]
) -> dict[int, float] | None:
    """``{query: 100 · [first match at rank 1]}`` of a FINISHED run's ``per_query.npz`` (None
    without one); kept in ``cache`` by run id (a FINISHED run's results never change)."""
    if run_id not in cache:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run_id, store.PER_QUERY, tmp)
                with np.load(path) as npz:
                    arrays = {k: npz[k] for k in ("index", "first_rank")}
                cache[run_id] = query_metric(arrays, "rank1")
            except (MlflowException, OSError, KeyError, ValueError):
                cache[run_id] = None
    return cache[run_id]


def read_state(
    plan: list[PlannedRun], client, cache: dict, tried: set[tuple[str, str, int]]
) -> list[Group]:
    """The rule's state from the store, per experiment: each row's FINISHED runs (with their
    R-1 per query) and unfinished ones. ``tried``: runs this process trained that are not
    FINISHED (they failed): given, never tried again here. Every run's status is read again."""
    for p in plan:
        p.status, p.run_id, p.source = "new", None, None
    runner.mark_existing(plan, client)
    groups: dict[str, Group] = {}
    digests: dict[tuple[str, str], str] = {}
    for p in plan:
        group = groups.setdefault(p.experiment, Group(p.experiment, p.study.reference, {}))
        row = group.rows.setdefault(p.variant.key, Row(p.variant.key))
        digests[(p.experiment, p.variant.key)] = p.data_digest
        if p.status == "done":
            row.finished[p.seed] = rank1_results(client, p.run_id, cache)
        elif (p.experiment, p.variant.key, p.seed) in tried:
            row.failed.add(p.seed)
        elif p.status == "resume":
            row.open.add(p.seed)
    for group in groups.values():
        ref = digests.get((group.name, group.reference))
        for key, row in group.rows.items():
            row.paired = ref is not None and digests[(group.name, key)] == ref
    return list(groups.values())


def run_until_halfwidth(
    plan: list[PlannedRun],
    rule: SeedRule,
    client,
    work_dir,
    parents: dict[str, str],
    splits: dict,
    rank: int = 0,
    world_size: int = 1,
    keep_checkpoints: bool = False,
    leases=None,
    first: set[tuple[str, str, int]] = frozenset(),
) -> list[str]:
    """Train runs of ``plan`` (every seed the rule may give) one at a time as the rule picks
    them (``seed_rule.next_pick``), reading the store again after each; ``first``: runs this
    worker takes before other required ones (its shard's). A run another process holds is left
    to it and counts as given. Returns the names of runs that FAILED. Ends when the rule picks
    nothing: every row at its target or its cap, or its remaining runs held by others (who go
    on with the rule when theirs finish)."""
    by_key = {(p.experiment, p.variant.key, p.seed): p for p in plan}
    cache: dict = {}
    failed: list[str] = []
    tried: set[tuple[str, str, int]] = set()
    groups: list[Group] = []
    while True:
        if rank == 0:
            groups = read_state(plan, client, cache, tried)
        trained = False
        while not trained:
            pick = next_pick(groups, rule, first) if rank == 0 else None
            pick = runner._sync(pick, world_size)
            if pick is None:
                break
            p = by_key[(pick.group, pick.row, pick.seed)]
            p.status, p.run_id = runner._sync((p.status, p.run_id), world_size)
            if rank == 0:
                print(f"[{rule.tag}] {p.experiment} {p.name}: {pick.why}", flush=True)
            lost = []
            if p.status == "reuse":
                if rank == 0:
                    runner.reuse_runs([p], client, parents, leases)
                p.status = runner._sync(p.status, world_size)
            else:
                lost = runner.execute(
                    [p],
                    client,
                    work_dir,
                    parents,
                    splits,
                    rank,
                    world_size,
                    keep_checkpoints,
                    leases,
                    label="   ",
                )
            row = next((g.rows[pick.row] for g in groups if g.name == pick.group), None)
            if p.status == "busy":  # another process has it: given, and the rule picks again
                if row is not None:
                    row.busy.add(pick.seed)
                continue
            tried.add((pick.group, pick.row, pick.seed))
            failed += lost
            trained = True
        if not trained:
            break
    if rank == 0:
        for group in groups:
            print(describe(group, rule), flush=True)
    return failed


def describe(group: Group, rule: SeedRule, head: str = "") -> str:
    """The group's name, then one indented line per row (``seed_rule.summary``)."""
    lines = [f"  {line}" for line in summary(group, rule)]
    return "\n".join([f"{group.name} ({head or rule.tag}):", *lines])
