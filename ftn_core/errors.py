"""User-facing errors: one clear line (what was wrong, what to do) and a non-zero exit."""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class FTNError(Exception):
    """An error caused by the user's input or environment, printed as one line."""


def exit_on_interrupt_during_startup() -> None:
    """Call first thing in a command run as a script: until its ``main`` starts (the imports of
    torch and MLflow take seconds), Ctrl-C or SIGTERM ends it at once with one line and exit
    130 instead of an import traceback. Nothing has been written yet, so nothing is lost."""

    def handler(signum, frame):
        os.write(2, b"interrupted while starting; nothing was done\n")
        os._exit(130)

    handler.at_startup = True  # cli_main ignores signals once the command is done (it only exits)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def start_command(module: str) -> int | None:
    """An installed command (``ftn-run`` …, the ``commands`` modules): ``module``'s ``main`` run
    as ``python <script>`` runs it, Ctrl-C while ``module`` still imports ending it with one line
    (``exit_on_interrupt_during_startup``) instead of an import traceback."""
    exit_on_interrupt_during_startup()
    return importlib.import_module(module).main()


_received: list[int] = []
"""Signals received since the current command's ``main`` started."""


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM arrived since ``main`` started, even if the KeyboardInterrupt
    it raised was swallowed on the way (Python only prints "Exception ignored" when it lands in
    a finaliser): check it before writing a result."""
    return bool(_received)


def _interrupt(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def _quiet_unraisable(unraisable) -> None:
    """A KeyboardInterrupt that lands in a finaliser cannot propagate; Python would print its
    traceback as "Exception ignored". ``interrupted()`` still knows of it: print nothing."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def cli_main(func: F) -> F:
    """Wrap a command's ``main``: ``FTNError`` → ``error: <message>`` on stderr, exit 2;
    Ctrl-C or SIGTERM (outside training, which handles them itself) → one line, exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        previous = {}
        _received.clear()
        hook, sys.unraisablehook = sys.unraisablehook, _quiet_unraisable
        if threading.current_thread() is threading.main_thread():
            # SIGINT too: a command started in the background of a script inherits SIGINT
            # ignored, and `kill -INT` (or a scheduler's) must still stop it cleanly.
            previous = {
                signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
                signal.SIGINT: signal.signal(signal.SIGINT, _interrupt),
            }
        try:
            return func(*args, **kwargs)
        except FTNError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                "interrupted; nothing half-written is left: run the same command again to go on",
                file=sys.stderr,
            )
            return 130
        except (
            SystemExit
        ) as exit_:  # argparse (--help, a bad value): a return code when called in-process
            if exit_.code is None or isinstance(exit_.code, int):
                return exit_.code or 0
            raise
        finally:
            sys.unraisablehook = hook
            for sig, handler in previous.items():
                # A command run as a script is done: the process only exits now (MLflow's threads
                # end), and Ctrl-C there must not turn a normal finish into a signal's exit code.
                signal.signal(
                    sig, signal.SIG_IGN if getattr(handler, "at_startup", False) else handler
                )

    return wrapper  # type: ignore[return-value]


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: …``, exit 2), like every
    other error of the suite, instead of the usage block and the message."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def int_at_least(low: int):
    """An argparse ``type``: an integer ≥ ``low`` (argparse prints one line and exits 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}; give an integer ≥ {low}")
        return value

    parse.__name__ = f"integer ≥ {low}"
    return parse


def float_in(low: float, high: float = math.inf, low_open: bool = True, high_open: bool = True):
    """An argparse ``type``: a finite number in the interval (open ends by default)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        bad = (
            not math.isfinite(value)
            or value < low
            or value > high
            or low_open
            and value == low
            or high_open
            and value == high
        )
        if bad:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    parse.__name__ = "number"
    return parse


def check_writable_dir(folder: Path, flag: str, problem: str = "cannot write there") -> None:
    """``folder`` (or the nearest folder above it that exists) must be writable: probed with a
    temporary file that is removed at once, so nothing is created. ``FTNError`` otherwise."""
    probe_dir = Path(folder)
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    try:
        if not probe_dir.is_dir():
            raise NotADirectoryError(f"{probe_dir} is not a folder")
        fd, tmp = tempfile.mkstemp(prefix=".ftn-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise FTNError(
            f"{flag} {folder}: {problem} ({err.strerror or err}); pass another {flag}"
        ) from None
