"""The installed commands of ``ablations`` (``pyproject.toml``: ``ftn-run`` is ``run`` …). Each
starts its module's ``main`` through ``ftn_core.errors.start_command``, so Ctrl-C while the
module still imports torch and MLflow ends it with one line and exit 130, as it does for
``python ablations/run.py``."""

from ftn_core.errors import start_command


def run() -> int | None:
    return start_command("ablations.run")


def evaluate() -> int | None:
    return start_command("ablations.evaluate")


def per_query() -> int | None:
    return start_command("ablations.per_query")


def pretrain() -> int | None:
    return start_command("ablations.pretrain")


def tune() -> int | None:
    return start_command("ablations.tune")


def ui() -> int | None:
    return start_command("ablations.ui")


def embed() -> int | None:
    return start_command("ablations.embed")


def search() -> int | None:
    return start_command("ablations.search")


def export() -> int | None:
    return start_command("ablations.export")
