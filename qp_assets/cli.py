"""``qp``: the platform's command line.

Each area registers its own sub-commands from ``qp_assets/<area>/cli.py`` through a
``register(subparsers)`` function, so this file stays a thin dispatcher. A sub-command handler
returns an exit code (0 ok, 1 failure, 2 bad input).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, purpose) in the order they appear in ``qp --help``.
_AREAS = [
    ("qp_assets.stack.cli", "local service stack"),
    ("qp_assets.vqe.cli", "VQE simulations"),
    ("qp_assets.streaming.cli", "requests and results on Kafka"),
    ("qp_assets.features.cli", "Iceberg feature tables"),
    ("qp_assets.export.cli", "exports (Airflow)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qp",
        description="Quantum Pipeline: VQE on Qiskit Aer -> Avro/Kafka -> S3 -> Iceberg, orchestrated by Dagster.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _purpose in _AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # area not built yet
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # per-request HTTP logs of the registry client are noise for users
        logging.getLogger("httpx").setLevel(logging.WARNING)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        sys.exit(2)
    sys.exit(int(handler(args) or 0))


if __name__ == "__main__":
    main()
