"""Tune a variant's open hyperparameters with Optuna; each trial is an MLflow child run.

Trials are scored on held-out training identities (never the test split). Rerunning the same
command continues the study; several processes may run it at once (the journal file on one
machine, --storage postgresql://... across machines).

Examples:
  python ablations/tune.py --variant g --trials 30                 # cpu preset, synthetic data
  python ablations/tune.py --variant g --trials 30 --timeout 3600 --set train.epochs=8
  python ablations/tune.py --variant g --trials 100 --storage postgresql://user:pw@db:5432/optuna
  optuna-dashboard mlruns/optuna/tune-g-synthetic-cpu.journal      # pip install optuna-dashboard
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

from ablations import runner, store  # noqa: E402
from ablations.variants import TABLES  # noqa: E402
from ftn_core.config import parse_sets  # noqa: E402
from ftn_core.engine import Interrupted  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main, float_in, int_at_least  # noqa: E402
from ftn_core.presets import PRESETS  # noqa: E402

DEFAULT_ROOT = str(store.REPO / "data")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--variant", required=True, help="the variant to tune, e.g. g (full FTN) or base"
    )
    parser.add_argument(
        "--trials",
        type=int_at_least(1),
        required=True,
        help="finished (complete or pruned) trials the study should reach; workers share them",
    )
    parser.add_argument(
        "--table", type=int, default=2, help="the table the variant belongs to (default: 2)"
    )
    parser.add_argument(
        "--dataset", default="synthetic", help=f"one of: {', '.join(runner.DATASETS)}"
    )
    parser.add_argument(
        "--root", default=DEFAULT_ROOT, help="folder holding the datasets (default: %(default)s)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="paper | cpu | gpu | tiny (default: as run.py chooses)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config field (a searched one is then not searched); repeatable",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store or server (default: {store.DEFAULT_TRACKING_URI})",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: a journal file path or sqlite:///, postgresql://, mysql:// URL "
        "(default: optuna/<study>.journal beside the SQLite tracking store)",
    )
    parser.add_argument(
        "--study", default=None, help="study name (default: tune-<variant>-<dataset>-<preset>)"
    )
    parser.add_argument(
        "--timeout",
        type=float_in(0),
        default=None,
        metavar="S",
        help="stop starting new trials after S seconds",
    )
    parser.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="TPE sampler seed; give each concurrent worker its own (default: 0)",
    )
    parser.add_argument(
        "--holdout",
        type=float_in(0, 1),
        default=0.2,
        help="share of the training identities held out for validation (default: 0.2)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for plots and the trial table (default: reports/tune/<study>)",
    )
    return parser.parse_args(argv)


def best_command(
    table: int,
    preset: str,
    dataset: str,
    root: str,
    sets: dict[str, Any],
    params: dict[str, Any],
    params_file: Path | None = None,
) -> str:
    """The ``run.py`` line that trains the table with the study's best parameters (given as
    ``--set`` each, or as ``--params-file``) and the study's own ``--set``."""
    parts = ["python", "ablations/run.py", "--table", str(table), "--preset", preset]
    if dataset != "synthetic":
        parts += ["--dataset", dataset]
    if os.path.abspath(root) != os.path.abspath(DEFAULT_ROOT):
        parts += ["--root", root]
    if params_file is not None:
        parts += ["--params-file", str(params_file)]
    for key, value in ({**sets} if params_file else {**sets, **params}).items():
        parts += ["--set", f"{key}={value}"]
    return shlex.join(parts)


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: workers finishing together never leave half a file


def write_outputs(
    study, params: dict[str, Any], best_file: Path, out: Path, storage: str
) -> list[Path]:
    """``<study>-best.json`` (config overrides for ``run.py --params-file``), summary and trial table."""
    _write_json(best_file, params)
    best = study.best_trial
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    _write_json(
        out / "summary.json",
        {
            "study": study.study_name,
            "storage": storage,
            "best_trial": best.number,
            "best_value": best.value,
            "best_params": params,
            "trials": states,
        },
    )
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    return [best_file, out / "summary.json", out / "trials.csv"]


def save_plots(study, out: Path) -> list[Path]:
    """Optuna's matplotlib figures as PNGs: history, intermediate values, parallel coordinates,
    and parameter importances (fANOVA; needs two complete trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "intermediate_values": ovm.plot_intermediate_values,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
    }
    if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= 2:
        plots["param_importances"] = lambda s: ovm.plot_param_importances(
            s, evaluator=FanovaImportanceEvaluator(seed=0)
        )
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # matplotlib: one trial gives a flat axis
            try:
                ax = plot(study)
            except Exception as err:  # e.g. a search space with one value: skip that figure only
                print(f"warning: plot {name} skipped ({err})", file=sys.stderr)
                continue
        fig = ax.figure
        fig.set_size_inches(12 if name == "parallel_coordinate" else 9, 5)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        files.append(out / f"{name}.png")
    return files


def finish(opts, result) -> int:
    """Print and save the best parameters, plots and the trial table; close the parent run."""
    from ablations.optuna_study import close_parent

    study, client, parent = result.study, result.client, result.parent_run_id
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    print("trials: " + ", ".join(f"{n} {k}" for k, n in counts.items()), flush=True)
    out = Path(opts.out) if opts.out else store.REPO / "reports" / "tune" / opts.study_name
    if not counts.get("COMPLETE"):
        close_parent(client, parent, study, "FAILED" if counts.get("FAIL") else "FINISHED")
        print(
            "no trial has completed yet, so there are no best parameters; run more trials",
            flush=True,
        )
        return 1 if counts.get("FAIL") and not counts.get("PRUNED") else 0
    best = study.best_trial
    params = {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in best.params.items()}
    best_file = result.mlruns / "optuna" / f"{opts.study_name}-best.json"
    files = write_outputs(study, params, best_file, out, result.storage)
    files += save_plots(study, out)
    for f in files:
        client.log_artifact(parent, str(f), "plots" if f.suffix == ".png" else None)
    client.log_metric(parent, "best/val_mAP", float(best.value), step=len(trials))
    client.set_tag(parent, "best_trial", str(best.number))
    close_parent(client, parent, study, "FINISHED")
    print(f"best val/mAP {best.value:.2f} on the held-out ids (trial {best.number}):")
    for key, value in params.items():
        print(f"  {key} = {value}")
    print(f"written: {best_file}; plots, summary.json and trials.csv in {out}")
    where = (opts.table, opts.preset, opts.dataset, opts.root, opts.sets, params)
    print(
        f"reuse them with either of:\n  {best_command(*where)}\n  {best_command(*where, best_file)}",
        flush=True,
    )
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = sys.argv if argv is None else ["ablations/tune.py", *argv]
    if args.table not in TABLES:
        raise FTNError(f"--table {args.table}: unknown; one of {', '.join(map(str, TABLES))}")
    keys = [v.key for v in TABLES[args.table]]
    if args.variant not in keys:
        raise FTNError(
            f"--variant {args.variant}: not in Table {args.table}; choose from {' '.join(keys)}"
        )
    preset, why = runner.choose_preset(args.preset, [args.dataset])
    print(f"preset: {preset} ({why})", flush=True)
    from ablations import (
        optuna_study,  # optuna is imported only once the arguments are known to be good
    )

    opts = optuna_study.TuneOptions(
        args.variant,
        args.trials,
        args.table,
        args.dataset,
        args.root,
        preset,
        parse_sets(args.sets),
        args.tracking_uri,
        args.storage,
        args.study,
        args.out,
        args.timeout,
        args.seed,
        args.holdout,
        tuple(argv),
    )
    try:
        result = optuna_study.run_study(opts)
    except Interrupted as err:
        print(
            f"interrupted: {err}; run the same command again to continue the study", file=sys.stderr
        )
        return 130
    return finish(opts, result)


if __name__ == "__main__":
    raise SystemExit(main())
