"""``qp e2e``: run the end-to-end pipeline once on the local stack and print the Iceberg summary."""

import argparse

from qp_assets.cli_errors import USAGE, CliError, reported


def _handle_e2e(args: argparse.Namespace) -> int:
    from qp_assets.e2e import DEFAULT_MOLECULES, format_report, run_e2e

    molecules = tuple(m.strip() for m in args.molecules.split(",") if m.strip()) or DEFAULT_MOLECULES
    if args.landing_timeout <= 0:
        raise CliError(f"--landing-timeout: must be > 0, got {args.landing_timeout}", USAGE)
    with reported("e2e failed", failure=(RuntimeError, TimeoutError)):
        report = run_e2e(molecules, landing_timeout_s=args.landing_timeout)
    print(format_report(report))
    return 0 if len(report.rows) == len(report.result_run_ids) and report.rows else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "e2e",
        help="end-to-end run: requests -> Dagster sensor + VQE runs -> Kafka -> S3 -> Iceberg summary",
        description="Submit VQE requests, run them through the Kafka sensor and vqe_runner_job, wait for "
        "Kafka Connect to land them, materialize today's feature partition and print the Iceberg summary.",
    )
    parser.add_argument(
        "--molecules", default="H2,HeH+,LiH", help="comma-separated molecule names (default H2,HeH+,LiH)"
    )
    parser.add_argument(
        "--landing-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for results to land (default 300)",
    )
    parser.set_defaults(handler=_handle_e2e)
