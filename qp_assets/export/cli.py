"""``qp export airflow``: write Airflow 3 DAG files derived from the Dagster Definitions."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

from qp_assets.cli_errors import USAGE, CliError, iso_day, reported
from qp_assets.export.airflow_dags import DEFAULT_MODULE, AirflowExportOptions, export_airflow
from qp_assets.export.graph import ExportError


def _load_defs(module_name: str):
    import dagster as dg

    module = importlib.import_module(module_name)
    defs = getattr(module, "defs", None)
    if not isinstance(defs, dg.Definitions):
        found = [name for name, value in vars(module).items() if isinstance(value, dg.Definitions)]
        if len(found) != 1:
            raise ExportError(f"module {module_name!r} has no single Definitions object (found {found})")
        defs = getattr(module, found[0])
    return defs


def _options(args: argparse.Namespace) -> AirflowExportOptions:
    """The options given on the command line, matched to :class:`AirflowExportOptions` by name; an option
    left out (None) keeps the dataclass default. ``--project-dir`` is made absolute."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AirflowExportOptions)
        if getattr(args, f.name, None) is not None
    }
    if "email" in given:
        given["email"] = tuple(given["email"])
    if "project_dir" in given:
        given["project_dir"] = str(Path(given["project_dir"]).resolve())
    return AirflowExportOptions(**given)


def _run_airflow(args: argparse.Namespace) -> int:
    options = _options(args)
    with reported(usage=(ExportError,), failure=()):
        try:
            defs = _load_defs(args.module)
        except ModuleNotFoundError as exc:
            raise CliError(f"--module {args.module!r}: {exc}", USAGE) from exc
        paths = export_airflow(defs, Path(args.out), options)
    for path in paths:
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``qp export airflow``."""
    export = subparsers.add_parser("export", help="export the orchestration to other systems")
    export_sub = export.add_subparsers(dest="export_target", metavar="TARGET")
    export.set_defaults(handler=lambda _args: (export.print_help(), 2)[1])
    p = export_sub.add_parser(
        "airflow",
        help="write Airflow 3 DAG files derived from the Dagster asset graph",
        description="Writes quantum_feature_processing.py (one task per daily feature asset, in dependency "
        "order) and vqe_batch_generation.py into --out.",
    )
    p.add_argument("--out", required=True, help="output directory (created if missing; must be writable)")
    p.add_argument(
        "--start-date",
        type=iso_day,
        default=None,
        help="DAG start date YYYY-MM-DD (default: first partition)",
    )
    p.add_argument(
        "--email",
        action="append",
        default=None,
        help="notification address (repeatable); failure + success mails",
    )
    p.add_argument("--email-from", default="airflow@localhost", help="sender address of notifications")
    p.add_argument("--smtp-conn-id", default="smtp_default", help="Airflow SMTP connection id")
    p.add_argument("--retries", type=int, default=3, help="task retries (default 3)")
    p.add_argument(
        "--retry-delay-minutes", type=float, default=20.0, help="minutes between retries (default 20)"
    )
    p.add_argument("--schedule", default="@daily", help="feature DAG cron (default @daily = 0 0 * * * UTC)")
    p.add_argument("--module", default=DEFAULT_MODULE, help="module holding the Dagster Definitions `defs`")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument(
        "--job", default=None, help="export the assets of this job (default feature_processing_job)"
    )
    sel.add_argument("--group", default=None, help="export the assets of this asset group instead of a job")
    p.add_argument(
        "--dagster-bin", default=None, help="dagster executable the tasks call (default: this venv's)"
    )
    p.add_argument("--qp-bin", default=None, help="qp executable the batch DAG calls (default: this venv's)")
    p.add_argument(
        "--project-dir", default=None, help="working directory of the tasks (default: this checkout)"
    )
    p.add_argument("--dagster-home", default=None, help="DAGSTER_HOME for the tasks (default: inherited)")
    p.add_argument("--molecules-file", default=None, help="default molecules JSON of vqe_batch_generation")
    p.add_argument("--submit-args", default="", help="extra arguments appended to `qp request submit`")
    p.set_defaults(handler=_run_airflow)
