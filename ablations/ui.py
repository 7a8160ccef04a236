"""Open the MLflow UI on the suite's store, at the runs view of the newest table experiment.

Starts ``mlflow ui`` on 127.0.0.1 with one worker and MLflow's job workers off
(MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: ~0.6 GB instead of ~2.2 GB) and prints the URL of
the runs table of the most recently updated ``table…`` experiment. In the runs table, the
"Columns" menu adds ``val/rank1``, ``val/mAP`` and ``val/fg_focus_norm_attn`` (metrics) and
``model.mask`` / ``model.attention`` (parameters); sort by a column by clicking its header.

Examples:
  python -m ablations.ui                       # mlruns/mlflow.db on port 5000
  python -m ablations.ui --port 5001 --tracking-uri sqlite:////data/ftn/mlflow.db
  python -m ablations.ui --print-url           # only print where to look
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations import tracking  # noqa: E402
from ftn_core.errors import FTNError, OneLineParser, cli_main, int_at_least  # noqa: E402


def runs_url(client, host: str, port: int) -> str:
    """The runs view of the most recently updated ``table…`` experiment (else the list)."""
    tables = [e for e in client.search_experiments() if e.name.startswith("table")]
    base = f"http://{host}:{port}"
    if not tables:
        return f"{base}/#/experiments"
    newest = max(tables, key=lambda e: e.last_update_time or e.creation_time or 0)
    return f"{base}/#/experiments/{newest.experiment_id}/runs"


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m ablations.ui", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None,
                        help=f"a SQLite store (default: {tracking.DEFAULT_TRACKING_URI})")
    parser.add_argument("--port", type=int_at_least(1), default=5000, help="port (default: 5000)")
    parser.add_argument("--print-url", action="store_true", help="print the URL and exit; start nothing")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking.DEFAULT_TRACKING_URI
    if not uri.startswith("sqlite:///"):
        raise FTNError(f"--tracking-uri {uri}: the UI is started on a SQLite store; a server is already a UI "
                       f"(open its address)")
    if not Path(uri[len("sqlite:///"):]).is_file():
        raise FTNError(f"no store at {uri[len('sqlite:///'):]}: run `python ablations/run.py --table 2` first")
    url = runs_url(tracking.open_store(uri), "127.0.0.1", args.port)
    print(f"runs of the newest table experiment: {url}", flush=True)
    if args.print_url:
        return 0
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port), "--workers", "1"]
    try:
        return subprocess.run(cmd, env=env).returncode
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
