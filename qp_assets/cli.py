"""``qp``: the platform's command line.

Each area registers its own sub-commands from ``qp_assets/<area>/cli.py`` through a
``register(subparsers)`` function, so this file stays a thin dispatcher. Only the area of the command
being run is imported (heavy areas pull in Dagster or PySpark), except for ``qp --help``. A sub-command
handler returns an exit code (0 ok, 1 failure, 2 bad input) or raises ``qp_assets.cli_errors.CliError``,
which is printed here as ``qp <command> <action>: error: ...`` (the one convention, see cli_errors).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

# command -> module that registers it, in the order they appear in ``qp --help``.
_COMMANDS = {
    "stack": "qp_assets.stack.cli",
    "vqe": "qp_assets.vqe.cli",
    "request": "qp_assets.streaming.cli",
    "results": "qp_assets.streaming.cli",
    "dlq": "qp_assets.streaming.dlq",
    "features": "qp_assets.features.cli",
    "monitoring": "qp_assets.monitoring.cli",
    "e2e": "qp_assets.assets.cli",
    "export": "qp_assets.export.cli",
    "audit": "qp_assets.audit",
    "campaign": "qp_assets.campaigns",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every area's commands, or only the area that registers ``command``."""
    parser = argparse.ArgumentParser(
        prog="qp",
        description="Quantum Pipeline: VQE on Qiskit Aer -> Avro/Kafka -> S3 -> Iceberg, orchestrated by Dagster.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [_COMMANDS[command]] if command in _COMMANDS else list(_COMMANDS.values())
    for module_name in dict.fromkeys(wanted):
        importlib.import_module(module_name).register(sub)
    return parser


def configure_output(verbose: bool) -> None:
    """What a person sees on the terminal.

    Default: our own progress (``qp_assets`` INFO, one short line each) and every library's warnings and
    errors; libraries' INFO chatter (qiskit transpiler passes, PySCF, alembic migrations, HTTP clients)
    and Python warnings about library APIs (Dagster beta/preview notices, deprecations) are hidden.
    ``-v``: everything at DEBUG with logger names, and all Python warnings.
    """
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = logging.getLogger("qp_assets")
    ours.setLevel(logging.INFO)
    if not ours.handlers:
        short = logging.StreamHandler()
        short.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        ours.addHandler(short)
        ours.propagate = False
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(dagster|authlib|pyspark|qiskit|pyscf)(\..*)?$")
    try:  # authlib installs an "always" filter for its own deprecations on import: import it first, then hide
        from authlib.deprecate import AuthlibDeprecationWarning

        warnings.filterwarnings("ignore", category=AuthlibDeprecationWarning)
    except ImportError:  # the registry client's optional dependency is absent: nothing to hide
        pass


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    # before any area is imported: some libraries warn at import time (the registry client's authlib)
    configure_output("-v" in argv or "--verbose" in argv)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        sys.exit(2)
    from qp_assets.cli_errors import run_handler

    sys.exit(run_handler(args))


if __name__ == "__main__":
    main()
