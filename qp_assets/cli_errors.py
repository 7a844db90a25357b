"""The one error convention of the ``qp`` command line.

A command fails with one line on stderr, ``qp <command> <action>: error: <message>``, secrets masked
(:func:`qp_assets.redact.redact`), and an exit code that says whose move it is:

- **2, usage**: the input is wrong (arguments, a molecule, a bad variable): fix it and run again;
- **1, failure**: a service, the storage or the run failed: look at the service, retry.

Commands raise :class:`CliError` (or let a usage/failure exception out of a :func:`reported` block);
``qp_assets.cli.main`` prints it with the command's name. No command prints its own prefix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

USAGE = 2
FAILURE = 1


class CliError(Exception):
    """What a command reports as its one error line; ``code`` is :data:`USAGE` or :data:`FAILURE`."""

    def __init__(self, message: object, code: int = FAILURE):
        super().__init__(str(message))
        self.code = code


@contextmanager
def reported(
    context: str = "",
    *,
    usage: tuple[type[BaseException], ...] = (ValueError,),
    failure: tuple[type[BaseException], ...] = (Exception,),
) -> Iterator[None]:
    """Turn the block's exceptions into :class:`CliError`: a ``usage`` one (the user's input; ValueError,
    hence InputError and SettingsError) exits 2 with its own message, a ``failure`` one exits 1 with
    ``context`` in front (e.g. ``"cannot read quantum_features.molecules"``). Others pass through."""
    try:
        yield
    except CliError:
        raise
    except usage as exc:
        raise CliError(exc, USAGE) from exc
    except failure as exc:
        raise CliError(f"{context}: {exc}" if context else exc, FAILURE) from exc


def iso_day(text: str) -> date:
    """argparse ``type=`` for a UTC day ``YYYY-MM-DD``; anything else is a usage error quoting the text."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def report(prog: str, message: object, code: int) -> int:
    """Print ``<prog>: error: <message>`` (masked) on stderr and return ``code``."""
    from qp_assets.redact import redact

    print(f"{prog}: error: {redact(message)}", file=sys.stderr)
    return code


def prog_name(command: str | None, args: object) -> str:
    """``qp <command> <action>``: the action is the value of the command's subparser (``*_command`` or
    ``*_target`` in ``args``), when it has one."""
    action = next(
        (
            v
            for k, v in sorted(vars(args).items())
            if k.endswith(("_command", "_target")) and isinstance(v, str)
        ),
        None,
    )
    return " ".join(part for part in ("qp", command, action) if part)


def run_handler(args: object) -> int:
    """Run ``args.handler(args)`` (an area's sub-command) under the convention: its exit code, or the code
    of the one error line printed for a :class:`CliError`, a bad variable (usage) or an interrupt."""
    from qp_assets.settings import SettingsError

    prog = prog_name(getattr(args, "command", None), args)
    try:
        return int(args.handler(args) or 0)
    except CliError as exc:
        return report(prog, exc, exc.code)
    except SettingsError as exc:  # a bad variable, whichever command read it first: name it, no traceback
        return report(prog, exc, USAGE)
    except KeyboardInterrupt:
        return report(prog, "interrupted", FAILURE)
