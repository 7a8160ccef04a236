"""Open the MLflow UI on the suite's store, at the runs of the newest experiment.

Starts ``mlflow ui`` on 127.0.0.1 with one worker and MLflow's job workers off
(MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: ~0.6 GB instead of ~2.2 GB) and prints the URL of
the runs table of the most recently updated experiment of the suite (a paper table's or a
study file's; MLflow's own "Default" is skipped). The link opens MLflow's
"Model training" workflow on the child runs (one per variant and seed), best ``val/rank1``
first, with ``val/rank1``, ``val/mAP``, ``model.attention`` and ``model.mask`` as columns: a
view saved in the experiment as a shared view (MLflow shows "You're viewing a shared view";
"Exit shared view" returns to your own). Other columns: the "Columns" menu.

Examples:
  python -m ablations.ui                       # mlruns/mlflow.db on port 5000
  python -m ablations.ui --port 5001 --tracking-uri sqlite:////data/ftn/mlflow.db
  python -m ablations.ui --print-url           # only print where to look
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

if __name__ == "__main__":
    from ftn_core.errors import exit_on_interrupt_during_startup

    exit_on_interrupt_during_startup()

from ablations import store  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main  # noqa: E402

HOST = "127.0.0.1"

# What the link asks of MLflow's UI (3.17). The URL parameter ``workflowType`` picks the
# workflow ("machine_learning" is "Model training"; without it the UI uses the one last chosen
# in the browser, GenAI at first). ``viewStateShareKey=K`` loads a view saved as the experiment
# tag ``mlflow.sharedViewState.K`` (a JSON object): the search facets (filter, sort) and the
# table's columns. The columns can only come from such a view: the URL itself carries only the
# facets. A child run is shown under its parent only when someone expands it, so the view
# filters on ``tags.kind = 'child'``: a run whose parent is not listed is a row of its own.
WORKFLOW = "machine_learning"
VIEW_KEY = "reid-runs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
RANK1, MAP = "metrics.`val/rank1`", "metrics.`val/mAP`"
PARAMS = ["params.`model.attention`", "params.`model.mask`"]
FACETS = {"searchFilter": store.CHILD_RUNS, "orderByKey": RANK1, "orderByAsc": "false"}
VIEW = {
    **FACETS,
    "orderByAsc": False,
    "selectedColumns": [RANK1, MAP, *PARAMS],
    "columnOrder": ["attributes.`Run Name`", RANK1, MAP, *PARAMS, "runDateAndNestInfo", "duration"],
}


def facets(experiment) -> dict:
    """The filter and sort of an experiment's runs view: a tuning experiment's rows are its
    trials (``tags.kind = 'trial'``), scored on held-out ids by ``val/mAP``; any other's the
    child runs, best ``val/rank1`` first."""
    if experiment.name.startswith("tune-"):
        return {"searchFilter": "tags.kind = 'trial'", "orderByKey": MAP, "orderByAsc": "false"}
    return FACETS


def save_view(client, experiment) -> bool:
    """Store the experiment's view (``VIEW`` with its ``facets``) as its shared view
    ``VIEW_KEY``; False (and why, on stderr) when the store refuses the write."""
    value = json.dumps({**VIEW, **facets(experiment), "orderByAsc": False}, separators=(",", ":"))
    if experiment.tags.get(VIEW_TAG) == value:
        return True
    try:
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG, value)
    except Exception as err:  # e.g. a store locked by a training job: the link still works
        print(
            f"could not save the runs view in the store ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); the link sorts and filters, "
            f"but add val/rank1 and val/mAP with Columns",
            file=sys.stderr,
        )
        return False
    return True


def runs_url(client, host: str, port: int) -> str:
    """The runs view of the most recently updated experiment (a paper table's or a study's;
    MLflow's "Default" is skipped; with none, the list): child runs, best ``val/rank1`` first,
    R-1 and mAP as columns, in the "Model training" workflow."""
    tables = [e for e in client.search_experiments() if e.name != "Default"]
    base = f"http://{host}:{port}"
    if not tables:
        return f"{base}/#/experiments"
    newest = max(tables, key=lambda e: e.last_update_time or e.creation_time or 0)
    page = f"{base}/#/experiments/{newest.experiment_id}/runs?workflowType={WORKFLOW}"
    if save_view(client, newest):
        return f"{page}&viewStateShareKey={VIEW_KEY}"
    # Without the stored view: the same filter and sort from the URL (MLflow ignores a shared
    # view when the URL has any of these, so it is one or the other).
    return f"{page}&{urlencode(facets(newest), quote_via=quote)}"


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; give one in 1..65535")
    return value


def port_problem(port: int) -> str | None:
    """Why ``mlflow ui`` could not listen on ``HOST:port`` (None when it can): bound briefly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port held only by connections closing (TIME_WAIT) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as err:
            return "already in use" if err.errno == errno.EADDRINUSE else (err.strerror or str(err))
    return None


def check_port(port: int) -> None:
    """``FTNError`` naming the port, and a free neighbour to pass instead, when it is taken."""
    problem = port_problem(port)
    if problem is None:
        return
    neighbours = range(port + 1, min(port + 20, 65535) + 1)
    free = next((p for p in neighbours if port_problem(p) is None), None)
    hint = f"pass --port {free}" if free else "pass another --port N"
    if problem == "already in use":
        raise FTNError(
            f"--port {port}: {HOST}:{port} is already in use (another program, or a UI "
            f"started before); {hint}, or stop what serves there"
        )
    raise FTNError(f"--port {port}: cannot serve on {HOST}:{port} ({problem}); {hint}")


def mlflow_command(uri: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def serve(cmd: list[str]) -> int:
    """Run the UI until it stops; Ctrl-C (or SIGTERM) stops it, the normal end: exit 0."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached the UI too; a SIGTERM sent to this process only did
        # not: mlflow passes SIGTERM on to its server, so the port is free once it returns.
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print("stopped the MLflow UI", file=sys.stderr)
        return 0
    if code != 0:
        raise FTNError(f"the MLflow UI stopped with exit code {code}; see its messages above")
    return 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"a SQLite store (default: {store.DEFAULT_TRACKING_URI})",
    )
    parser.add_argument(
        "--port", type=port_number, default=5000, help="port, 1..65535 (default: 5000)"
    )
    parser.add_argument(
        "--print-url",
        action="store_true",
        help="print the URL (saving its view in the store) and exit; start nothing",
    )
    args = parser.parse_args(argv)
    uri = args.tracking_uri or store.DEFAULT_TRACKING_URI
    if not uri.startswith("sqlite:///"):
        raise FTNError(
            f"--tracking-uri {uri}: the UI is started on a SQLite store; a server is already a UI "
            f"(open its address)"
        )
    if not Path(uri[len("sqlite:///") :]).is_file():
        raise FTNError(
            f"no store at {uri[len('sqlite:///') :]}: run `python ablations/run.py --table 2` first"
        )
    if not args.print_url:  # else a UI may well be serving there already
        check_port(args.port)
    url = runs_url(store.open_store(uri), HOST, args.port)
    print(f"runs of the newest experiment: {url}", flush=True)
    if args.print_url:
        return 0
    return serve(mlflow_command(uri, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
