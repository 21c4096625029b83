"""What the command-line tools share: flags, one-line errors, exit statuses, quiet Optuna."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import optuna

from tuning.study.secrets import STORAGE_ENV, install_scrubber, scrub
from tuning.training.device import DEVICES
from tuning.workers import cores
from tuning.workers.signals import (
    Stopped,
    exit_status,
    raise_on_stop_signals,
    redeliver,
    stop_reason,
)


class Main(Protocol):
    """A tool's entry point: ``main(argv=None) -> exit status``."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...

# Exit statuses of every tool.
EXIT_OK = 0
EXIT_FAILED = 1  # the work itself failed (a trial, the workers, a write)
EXIT_USAGE = 2  # bad input: a flag, a file, a study that cannot be used as asked
# Stopped by Ctrl-C, SIGTERM or SIGHUP: 128 + the signal, from signals.exit_status.
DEBUG_ENV = "FASHION_TUNE_DEBUG"  # set (not empty, not 0): as --debug, for every tool
_debug_flag = False  # the last parsed --debug of this process


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2; it adds --debug.

    Abbreviations are refused (``--n-tri`` is not ``--n-trials``): a typo must not pass as
    another flag.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        global _debug_flag
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        _debug_flag = False  # a tool builds its parser afresh for each run
        # SUPPRESS: a subcommand's own --debug default must not reset the main parser's.
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=f"after an error's one line, print its traceback (also: "
                          f"{DEBUG_ENV}=1)")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        global _debug_flag
        parsed, extra = super().parse_known_args(args, namespace)
        if hasattr(parsed, "debug"):  # given, to the tool or to its subcommand
            _debug_flag = True
            del parsed.debug  # not a setting of the tool: only how its errors are printed
        return parsed, extra

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None: those flags say in words what they default to."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def add_study_arguments(parser: argparse.ArgumentParser, default_name: str) -> None:
    """The --study-name and --storage flags every tool that opens a study takes."""
    parser.add_argument("--study-name", default=default_name, help="name of the study")
    parser.add_argument(
        "--storage", default=None,
        help=f"database URL of the study (default: ${STORAGE_ENV} if set, else "
        "sqlite:///studies/<study-name>.db); a password in it is never shown",
    )



def add_data_and_device_arguments(
    parser: argparse.ArgumentParser, data_dir: Path, device: str
) -> None:
    """The --data-dir and --device flags of every tool that trains."""
    parser.add_argument(
        "--data-dir", type=Path, default=data_dir,
        help="folder with the FashionMNIST IDX files, tried before $FASHION_MNIST_DIR, "
        "Debian's /usr/share/datasets/fashion-mnist and a torchvision download into it",
    )
    parser.add_argument("--device", choices=DEVICES, default=device,
                        help="where to train; auto picks cuda, then mps, then cpu")


def stoppable(prog: str) -> Callable[[Main], Main]:
    """Decorate a tool's ``main`` so a stop signal that lands anywhere ends it in one line.

    Each tool catches a stop where it can say more (what was kept, how to resume); this is the
    net under it, for a signal during start-up or in between: no traceback, 128 + the signal.
    """

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: signals.Stopped
                print(f"{prog}: {stop_reason(exc).lower()}; stopped.", file=sys.stderr)
                return exit_status(exc)

        return run

    return decorate


def debugging() -> bool:
    """Whether errors are printed with their traceback: --debug, or $FASHION_TUNE_DEBUG set."""
    return _debug_flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(prog: str, message: str, status: int = EXIT_USAGE,
         exc: BaseException | None = None) -> int:
    """Print ``message`` as the tool's error on stderr; return the exit status to use.

    Every error line of every tool is printed here. With --debug (``debugging()``), the
    traceback of ``exc``, the error behind the message, follows the line. Storage passwords
    are removed from all of it.
    """
    if exc is not None and debugging():
        message += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    print(f"{prog}: error: {scrub(message)}", file=sys.stderr)  # no storage password
    return status


def claim_cores(prog: str, device_type: str, threads: int) -> None:
    """Claim this tool's CPU threads; warn on stderr when other processes already fill the cores.

    Called by every tool that trains, once it knows its threads and before its first epoch.
    """
    if device_type != "cpu":
        return
    warning = cores.crowding(cores.claim(prog, threads), threads, cores.cpu_cores())
    if warning is not None:
        print(f"{prog}: warning: {warning}", file=sys.stderr, flush=True)


class _QuietAfterInterrupt(logging.Filter):
    """Drops Optuna's log records once Ctrl-C was pressed: the CLI itself says what happened."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.interrupted


def quiet_optuna(level: int = logging.WARNING) -> None:
    """Show Optuna's warnings and errors, but not its per-trial chatter or its Ctrl-C traceback.

    Ctrl-C, SIGTERM and SIGHUP raise ``signals.Stopped`` (a KeyboardInterrupt) where they land;
    Optuna then marks the running trial failed and logs that with a traceback, which this drops.
    """
    install_scrubber()  # no storage password in any log record, warning or traceback
    quiet = _QuietAfterInterrupt()
    optuna.logging.disable_default_handler()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("optuna %(levelname)s: %(message)s"))
    handler.addFilter(quiet)
    logger = logging.getLogger("optuna")
    for old in [h for h in logger.handlers if getattr(h, "fashion_tune", False)]:
        logger.removeHandler(old)  # a second call in one process replaces, never doubles
    handler.fashion_tune = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    optuna.logging.set_verbosity(level)

    def hush() -> None:
        quiet.interrupted = True
        # A stop that lands while SQLAlchemy's pool returns a connection makes the pool log
        # "Exception during reset or similar" with the stop's traceback (or Python report it
        # as unraisable, where that happened in a finaliser); the CLI says what happened.
        logging.getLogger("sqlalchemy.pool").disabled = True
        sys.unraisablehook = _drop_stops(sys.unraisablehook)

    raise_on_stop_signals(before=hush)


def _drop_stops(hook: Callable[[sys.UnraisableHookArgs], object]
                ) -> Callable[[sys.UnraisableHookArgs], object]:
    """``hook`` for everything but a stop signal's ``KeyboardInterrupt``, which is not reported.

    A ``Stopped`` that Python reports as unraisable landed in a finaliser and went no further:
    the tool would go on as if never stopped (a search trained on to its target, a worker was
    killed by its supervisor with its trial left RUNNING). So its signal is delivered again.
    """
    if getattr(hook, "drops_stops", False):
        return hook

    def drop(unraisable: sys.UnraisableHookArgs) -> object:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            if isinstance(unraisable.exc_value, Stopped):
                redeliver(unraisable.exc_value.signum)
            return None
        return hook(unraisable)

    drop.drops_stops = True  # type: ignore[attr-defined]
    return drop
