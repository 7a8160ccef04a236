"""User-facing errors: one clear line (what was wrong, what to do) and a non-zero exit."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class FTNError(Exception):
    """An error caused by the user's input or environment, printed as one line."""


def cli_main(func: F) -> F:
    """Wrap a command's ``main``: ``FTNError`` → ``error: <message>`` on stderr, exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FTNError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper  # type: ignore[return-value]
