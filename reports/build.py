"""Regenerate the ablation reports from the MLflow runs (no training; seconds).

For each experiment ``table{N}-{dataset}-{preset}`` in the store it writes
``<out>/table{N}/<dataset>-<preset>/``: the table (Markdown, CSV, LaTeX) beside the paper's
numbers, figures (PNG + PDF), visual figures and an efficiency table from what each run
measured of its model when it finished, and a README; ``<out>/table{N}/README.md`` shows every experiment of the table. A study file's
experiments (``study-{name}-{dataset}-{preset}``) go to ``<out>/study-{name}/``, with the sweep
figure when the study has a sweep. The same files are logged as artifacts (``report/``) of the
experiment's newest parent run. Each folder ships what was read of the store (``evidence/``):
``--from-evidence`` rebuilds the folders from it byte for byte, without the store (the visual
figures, drawn from each run's figure data and the dataset's images, are kept as they were built).
Nothing here builds or runs a model.

    python reports/build.py --table 2
    python reports/build.py --study ablations/studies/lambda3.toml
    python reports/build.py --experiment table2-synthetic-cpu --tracking-uri sqlite:///x.db
    python reports/build.py --table 1 --from-evidence --out /tmp/again
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from ablations import ranklists  # noqa: E402
from ablations.store import EFFICIENCY, REPO, connect, study_experiments  # noqa: E402
from ablations.study import Study  # noqa: E402
from ablations.study import load as load_study
from ftn_core.errors import FTNError, OneLineParser, check_writable_dir, cli_main  # noqa: E402
from reports import (  # noqa: E402
    claims,
    diagnostics_table,
    efficiency,
    evidence,  # noqa: E402
    figures,
    gaps,
    summary,
    sweep,
    tables,
    visual,
)
from reports.index import experiment_readme, in_repository, table_index  # noqa: E402
from reports.load import (  # noqa: E402
    EPOCH_SECONDS,
    LOSS_KEYS,
    TableRuns,
    artifact_json,
    find_experiments,
    load_runs,
    metric_history,
    per_query_results,
)
from reports.report import Report  # noqa: E402
from reports.source import Source  # noqa: E402
from reports.wording import wording  # noqa: E402


def build_experiment(
    client: Source,
    tr: TableRuns,
    folder: Path,
    visuals: bool = True,
    cost: bool = True,
    log: bool = True,
) -> Report:
    """Write every file of one experiment's report into ``folder`` (emptied first), from the
    store (``evidence.FromStore``) or from a report's evidence (``evidence.FromEvidence``)."""
    t0 = time.perf_counter()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rep = Report(tr, folder, client.tracking_uri)
    rep.in_repository = (
        client.in_repository if client.in_repository is not None else in_repository(folder)
    )
    figures.set_style()
    order = tr.order
    rep.per_query = per_query_results(client, tr.runs)
    words = wording(tr.study)
    rep.summary = summary.summarize(tr, rep.per_query)
    rep.seed_gaps = gaps.seed_gaps(tr, rep.per_query)
    rep.missing = len(summary.missing_runs(tr, rep.per_query))
    rep.data_gaps = gaps.data_gaps(tr)
    rep.setting_gaps = gaps.setting_gaps(tr)
    if rep.per_query:
        rep.summary = summary.add_uncertainty(rep.summary, tr, rep.per_query)
    else:
        rep.notes.append(
            "no per_query.npz in these runs (trained before per-query results existed): "
            "no confidence intervals, and no claim can be judged; "
            "`python ablations/per_query.py` adds them"
        )
    caption = (
        f"Table {tr.table} on {tr.dataset} ({tr.preset} preset): ours vs the paper"
        if tr.study.is_paper
        else f"Study {tr.study.name} on {tr.dataset} ({tr.preset} preset): Δ against {tr.study.reference}"
    )
    tables.write_tables(rep.summary, folder, caption, words)
    note = paper_note(tr.dataset)
    rep.figures["delta_ci"] = figures.delta_intervals(
        rep.summary, tr.table, note, folder / "delta_ci", words
    )
    rep.figures["delta"] = figures.delta_scatter(rep.summary, tr.table, note, folder / "delta")
    rep.figures["cmc"] = figures.cmc_curves(
        cmc_frame(client, tr, rep.notes),
        order,
        tr.table,
        folder / "cmc",
        reference=tr.study.reference,
        words=words,
    )
    hist = metric_history(client, tr.runs, LOSS_KEYS + ("val/mAP",))
    if hist.empty:
        rep.notes.append("no train/loss_* or val/mAP history logged: no training curves")
    rep.figures["curves"] = figures.training_curves(hist, order, tr.table, folder / "curves")
    spent = metric_history(client, tr.runs, (EPOCH_SECONDS,))
    rep.train_seconds = float(spent["value"].sum()) if len(spent) else None
    if visuals:  # drawn from figure data and images not shipped: a rebuild keeps them as they are
        client.as_is(rep, "visuals", lambda: draw_visuals(client, tr, rep))
    per_run = diagnostics_table.run_values(
        tr.runs, metric_history(client, tr.runs, (diagnostics_table.RATIO_KEY,))
    )
    rep.diagnostics = diagnostics_table.summarize(tr, per_run)
    diagnostics_table.write_tables(
        rep.diagnostics,
        folder,
        f"Table {tr.table} on {tr.dataset} ({tr.preset} preset): foreground diagnostics",
    )
    rep.figures["diagnostics"] = diagnostics_table.figure(
        per_run, order, tr.table, folder / "diagnostics"
    )
    if cost:
        efficiency_section(client, tr, rep)
    rep.claims = claims.claims(tr, rep.summary, rep.per_query, cost, rep.attention_costs)
    if len(rep.claims):  # every claim of the study, judged or saying why not
        rep.claims.to_csv(folder / "claims.csv", index=False)
    rep.logged = log and tr.parent_run_id is not None
    if log and tr.parent_run_id is None:
        rep.notes.append("no parent run in the experiment: the report is not logged to MLflow")
    rep.seconds = time.perf_counter() - t0
    (folder / "README.md").write_text(experiment_readme(rep), encoding="utf-8")
    return rep


def paper_note(dataset: str) -> str:
    pd_name = summary.paper_dataset(dataset)
    return f"paper on {pd_name}" + (", our data synthetic" if pd_name != dataset else "")


def cmc_frame(client: MlflowClient, tr: TableRuns, notes: list[str]) -> pd.DataFrame:
    """Long frame (variant, seed, rank, value in percent) from each run's metrics.json."""
    rows, lacking = [], []
    for run in tr.runs.itertuples():
        d = artifact_json(client, run, "metrics.json")
        cmc = (d or {}).get("cmc")
        if not cmc:
            lacking.append(run.name)
            continue
        rows += [(run.variant, run.seed, k + 1, 100.0 * float(v)) for k, v in enumerate(cmc)]
    if lacking:
        notes.append(f"no CMC in metrics.json of {', '.join(lacking)}")
    return pd.DataFrame(rows, columns=["variant", "seed", "rank", "value"])


def _seed_runs(tr: TableRuns) -> dict[str, object]:
    """One run per variant: the lowest seed that every variant has (else each one's lowest)."""
    common = set.intersection(*(set(g["seed"]) for _, g in tr.runs.groupby("variant")))
    out = {}
    for key in tr.order:
        sub = tr.runs[tr.runs["variant"] == key]
        seed = min(common) if common else sub["seed"].min()
        out[key] = next(sub[sub["seed"] == seed].itertuples())
    return out


def draw_visuals(client: MlflowClient, tr: TableRuns, rep: Report) -> None:
    """Figures 4 and 5 and the TF-Dec reconstructions from each variant's ``figure_data.npz``,
    and the rank lists of the reference row and the study's full row (``Study.full``) from
    their per-query results."""
    runs = _seed_runs(tr)
    study = tr.study
    full = study.full
    shown = [k for k in dict.fromkeys((study.reference, full)) if k is not None]
    short = {v.key: v.short or v.key for v in study.rows}
    data: dict[str, dict] = {}
    for key, run in runs.items():
        try:
            data[key] = visual.figure_data(client, run)
        except visual.Skip as err:
            rep.notes.append(f"visual figures: {err}")
    label = {key: str(run.variant_label) for key, run in runs.items()}
    jobs = []
    if full in data:
        jobs.append(
            (
                "stage3_vs_cfa",
                lambda: visual.figure_stage3_vs_cfa(
                    data[full], label[full], rep.folder / "stage3_vs_cfa"
                ),
            )
        )
    pair = {short[k]: data[k] for k in shown if k in data}
    if pair:
        jobs.append(
            ("global_local", lambda: visual.figure_global_local(pair, rep.folder / "global_local"))
        )
    if any("rec_output" in d for d in data.values()):
        jobs.append(("recon", lambda: visual.figure_reconstructions(data, rep.folder / "recon")))
    ranked = {k: rep.per_query.get((k, int(runs[k].seed))) for k in shown if k in runs}
    ranked = {k: a for k, a in ranked.items() if a is not None and "top10" in a}
    if ranked:  # rank lists of the first seed's runs, on the queries the first one picks
        try:
            splits = visual.query_data(visual.run_config(client, runs[next(iter(ranked))]))
        except visual.Skip as err:
            rep.notes.append(f"rank lists skipped: {err}")
            ranked = {}
    if ranked:
        ref = next(iter(ranked))
        picks = [(f"{short[ref]}'s {group}", q) for group, q in ranklists.pick(ranked[ref])]
    for key, arrays in ranked.items():
        jobs.append(
            (
                f"ranklist_{key}",
                lambda key=key, arrays=arrays: [
                    ranklists.draw(
                        arrays,
                        splits,
                        rep.folder / f"ranklist_{key}.png",
                        f"{label[key]} (seed {int(runs[key].seed)})",
                        picks=picks,
                    )
                ],
            )
        )
    for name, job in jobs:
        try:
            rep.figures[name] = job()
        except visual.Skip as err:
            rep.notes.append(f"{name}: {err}")


def efficiency_section(client: MlflowClient, tr: TableRuns, rep: Report) -> None:
    """The efficiency table from each variant's ``efficiency.json`` (its seed of ``_seed_runs``);
    a run without one is named in the notes and left out."""
    measured = {}
    for key, run in _seed_runs(tr).items():
        d = artifact_json(client, run, EFFICIENCY)
        if d is None:
            rep.notes.append(
                f"efficiency: {run.name}: no {EFFICIENCY} (trained before runs "
                f"measured their cost): `python ablations/per_query.py` adds it"
            )
            continue
        measured[key] = (str(run.variant_label), d)
    if not measured:
        return
    rep.efficiency = efficiency.efficiency_table(measured, tr.study.reference)
    rep.attention_costs = next(iter(measured.values()))[1].get("attention_costs")
    efficiency.write_efficiency(rep.efficiency, rep.folder, tr.study.reference_name)
    rep.efficiency_note = efficiency.latency_note(measured)


def log_report(client: MlflowClient, rep: Report) -> None:
    """Attach the folder to the experiment's newest parent run (``report/``); on failure the
    README says so."""
    if not rep.logged:
        return
    try:
        client.log_artifacts(rep.tr.parent_run_id, str(rep.folder), artifact_path="report")
    except (MlflowException, OSError) as err:
        rep.logged = False
        rep.notes.append(
            f"could not log the report to run {rep.tr.parent_run_id}: {str(err).splitlines()[0]}"
        )
        (rep.folder / "README.md").write_text(experiment_readme(rep), encoding="utf-8")


def table_folder(out: Path, tr: TableRuns) -> Path:
    return out / study_folder(tr.study) / f"{tr.dataset}-{tr.preset}"


def study_folder(study: Study) -> str:
    return f"table{study.table}" if study.is_paper else f"study-{study.name}"


def add_sweep_figure(rep: Report) -> None:
    """The sweep figure of a study with a ``[sweep]``, added to the experiment's README."""
    if rep.tr.study.sweep is None or rep.summary is None:
        return
    rep.figures["sweep"] = sweep.figure(
        rep.summary, rep.tr.runs, rep.tr.study, rep.folder / "sweep"
    )
    (rep.folder / "README.md").write_text(experiment_readme(rep), encoding="utf-8")


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--table",
        type=int,
        choices=[1, 2, 3],
        help="only this table's experiments (default: every table in the store)",
    )
    parser.add_argument(
        "--study",
        metavar="FILE",
        help="the experiments of this study file "
        "(ablations/run.py --study FILE), instead of the paper's tables",
    )
    parser.add_argument("--experiment", help="only this experiment, e.g. table2-synthetic-cpu")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default sqlite:///<repo>/mlruns/mlflow.db) or server URL",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "reports",
        help="output folder (default: the repository's reports/)",
    )
    parser.add_argument(
        "--no-visual", action="store_true", help="skip the figures drawn from saved weights"
    )
    parser.add_argument("--no-efficiency", action="store_true", help="skip the cost table")
    parser.add_argument(
        "--no-log",
        action="store_true",
        help="do not log the report to the parent run (leave the store untouched)",
    )
    parser.add_argument(
        "--from-evidence",
        nargs="?",
        const=REPO / "reports",
        type=Path,
        metavar="REPORTS",
        help="rebuild the report folders from the evidence they "
        "ship (<folder>/evidence/), without the store, byte for byte as they were "
        "built: those under REPORTS (default: the repository's reports/), only "
        "the --table, --study or --experiment given; written to --out",
    )
    args = parser.parse_args(argv)
    study = load_study(args.study) if args.study else None
    if study is not None and (args.table or args.experiment):
        raise FTNError("--study: give it alone, without --table or --experiment")
    check_writable_dir(args.out, "--out", "cannot write the report there")
    built = from_store(args, study) if args.from_evidence is None else from_evidence(args, study)
    for table in sorted({r.tr.study for r in built}, key=lambda s: s.name):
        index = table_index(
            args.out / study_folder(table), table.table if table.is_paper else table
        )
        print(f"index: {_rel(index)}")
    return 0


def from_store(args: argparse.Namespace, study: Study | None) -> list[Report]:
    """Each experiment's report from the store, with its evidence (``evidence/``)."""
    client, _ = connect(args.tracking_uri)
    built: list[Report] = []
    exps = (
        study_experiments(client, study)
        if study
        else find_experiments(client, args.table, args.experiment)
    )
    for exp in exps:
        source = evidence.FromStore(
            client, exp, study, not args.no_visual, not args.no_efficiency, not args.no_log
        )
        tr = load_runs(source, exp, study)
        if tr.runs.empty:
            why = "; ".join(tr.left_out) or "no child runs"
            print(f"skipped {exp.name}: no usable (FINISHED) child runs ({why})", file=sys.stderr)
            continue

        def logged(rep: Report, source: evidence.FromStore = source) -> None:
            source.write(rep)  # before the logging, so that the parent run's copy holds it
            notes = len(rep.notes)
            log_report(client, rep)
            if len(rep.notes) > notes:  # the logging failed, and the page says so
                source.write(rep, rep.notes[notes:])

        built.append(_write_report(source, tr, args.out, source.build, logged))
    if not built:
        raise FTNError("no experiment had FINISHED child runs to report; see the lines above")
    return built


def from_evidence(args: argparse.Namespace, study: Study | None) -> list[Report]:
    """Each report folder under ``args.from_evidence`` (of the table, study or experiment
    asked for) again from its evidence, into ``args.out``; no store is read."""
    root = args.from_evidence
    given = [
        o
        for o, v in (
            ("--tracking-uri", args.tracking_uri),
            ("--no-visual", args.no_visual),
            ("--no-efficiency", args.no_efficiency),
        )
        if v
    ]
    if given:
        raise FTNError(
            f"--from-evidence reads no store and rebuilds each report as it was built: "
            f"give it without {', '.join(given)}"
        )
    if not root.is_dir():
        raise FTNError(f"--from-evidence {root}: no such folder")
    groups = (
        [root / study_folder(study)]
        if study
        else [root / f"table{args.table}"]
        if args.table
        else sorted(root.glob("table*")) + sorted(root.glob("study-*"))
    )
    built: list[Report] = []
    for folder in sorted(
        p.parent for g in groups for p in g.glob("*/README.md") if not p.parent.name.startswith(".")
    ):
        if not (folder / evidence.FOLDER / evidence.MANIFEST).is_file():
            print(
                f"skipped {_rel(folder)}: no evidence/ (built before reports shipped their "
                f"evidence): build it from its store once",
                file=sys.stderr,
            )
            continue
        source = evidence.FromEvidence(folder)
        if args.experiment and source.experiment.name != args.experiment:
            continue
        tr = load_runs(source, source.experiment, source.study(study))

        def replayed(rep: Report, source: evidence.FromEvidence = source) -> None:
            source.finish(rep)
            (rep.folder / "README.md").write_text(experiment_readme(rep), encoding="utf-8")

        built.append(_write_report(source, tr, args.out, source.build, replayed))
    if not built:
        raise FTNError(
            f"no report folder under {root} that was asked for has evidence/ to rebuild "
            f"from: build it from its store (python reports/build.py without "
            f"--from-evidence)"
        )
    return built


def _write_report(source: Source, tr: TableRuns, out: Path, how: dict, finish) -> Report:
    """One experiment's report into its folder under ``out``; ``how``: visuals, efficiency and
    log as ``build_experiment`` takes them; ``finish(rep)`` ends it before it is put in place."""
    final = table_folder(out, tr)
    staging = final.parent / f".{final.name}.building-{os.getpid()}"
    try:  # built beside the old report and moved into place whole: an interruption leaves it as it was
        rep = build_experiment(source, tr, staging, how["visuals"], how["efficiency"], how["log"])
        add_sweep_figure(rep)
        finish(rep)
        install(staging, final)
        rep.folder = final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"{tr.experiment}: {len(tr.runs)} runs, {len(tr.left_out)} reason(s) to leave runs out, "
        f"{rep.missing} run(s) missing from a paired Δ → {_rel(rep.folder)} "
        f"({rep.seconds:.1f} s)"
    )
    unpaired = rep.seed_gaps + rep.data_gaps
    lines = [f"left out: {r}" for r in tr.left_out] + [f"unpaired: {g}" for g in unpaired]
    for line in lines + [f"unlike: {g}" for g in rep.setting_gaps]:
        print(f"  {line}")
    return rep


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the block ends (a few renames)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def install(staging: Path, final: Path) -> None:
    """Put the finished folder ``staging`` where ``final`` is, replacing the old one whole."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    with _signals_held():
        if final.exists():
            os.rename(final, old)
        os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
