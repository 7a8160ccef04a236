"""The installed command of ``ftn_core`` (``pyproject.toml``): ``ftn-synthetic`` starts
``ftn_core.data.synthetic``'s ``main`` through ``ftn_core.errors.start_command``, so Ctrl-C while
it still imports ends it with one line and exit 130, as for ``python -m ftn_core.data.synthetic``."""

from ftn_core.errors import start_command


def synthetic() -> int | None:
    return start_command("ftn_core.data.synthetic")
