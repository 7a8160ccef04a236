"""The installed command of ``reports`` (``pyproject.toml``): ``ftn-report`` starts
``reports.build``'s ``main`` through ``ftn_core.errors.start_command``, so Ctrl-C while it still
imports torch and MLflow ends it with one line and exit 130, as for ``python reports/build.py``."""

from ftn_core.errors import start_command


def report() -> int | None:
    return start_command("reports.build")
