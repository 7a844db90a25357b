"""``qp stack up | down | status | logs | fetch``: the local service stack.

Exit codes: 0 ok, 1 a service/download failed (one line naming it and its log), 2 bad input
(unknown service name).
"""

from __future__ import annotations

import argparse
import sys
import time

from qp_assets.cli_errors import reported
from qp_assets.settings import Settings
from qp_assets.stack.errors import StackError, UnknownServiceError
from qp_assets.stack.services import SERVICE_ORDER, StackContext


def _service_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _run(fn, *args) -> int:
    """``fn(*args)``; an unknown service exits 2, any other StackError 1 (``qp_assets.cli_errors``)."""
    with reported(usage=(UnknownServiceError,), failure=(StackError,)):
        return fn(*args)


def _print_status(services: list[str] | None) -> int:
    from qp_assets.stack.launcher import status

    rows = status(services)
    print(f"{'service':<13} {'endpoint':<22} {'pid':>8} {'rss MB':>8}  {'health':<17} log")
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        rss = f"{row.rss_bytes / 2**20:.0f}" if row.rss_bytes else "-"
        print(f"{row.name:<13} {row.endpoint:<22} {pid:>8} {rss:>8}  {row.state:<17} {row.log_file}")
    return 0 if all(r.state in ("healthy", "external-healthy") for r in rows) else 1


def _up(args: argparse.Namespace) -> int:
    from qp_assets.settings import prepare_dagster_home
    from qp_assets.stack.launcher import ensure_up, low_disk_warning

    def go() -> int:
        t0 = time.monotonic()
        settings = ensure_up(_service_list(args.only))
        home = prepare_dagster_home()
        print(f"stack up in {time.monotonic() - t0:.1f}s; DAGSTER_HOME={home}")
        warning = low_disk_warning(settings.runtime_dir)
        if warning:
            print(warning, file=sys.stderr)
        return _print_status(_service_list(args.only))

    return _run(go)


def _down(args: argparse.Namespace) -> int:
    from qp_assets.stack.launcher import down

    def go() -> int:
        stopped = down(_service_list(args.only))
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0

    return _run(go)


def _restart(args: argparse.Namespace) -> int:
    from qp_assets.stack.launcher import restart

    def go() -> int:
        restart(_service_list(args.only))
        return _print_status(_service_list(args.only))

    return _run(go)


def _status(args: argparse.Namespace) -> int:
    return _run(_print_status, _service_list(args.only))


def _fetch(args: argparse.Namespace) -> int:
    from qp_assets.stack.launcher import fetch

    def go() -> int:
        fetch(_service_list(args.only))
        print("fetched: all JVM dependencies and packages are present")
        return 0

    return _run(go)


def _logs(args: argparse.Namespace) -> int:
    from qp_assets.stack.launcher import validate_services

    def go() -> int:
        names = validate_services([args.service] if args.service else None)
        ctx = StackContext(Settings.from_env())
        for name in names:
            path = ctx.log_file(name)
            if len(names) > 1:
                print(f"==> {name}: {path} <==")
            if not path.exists():
                print(f"(no log yet at {path})")
                continue
            with open(path, "rb") as handle:
                lines = handle.read().decode(errors="replace").splitlines()
            for line in lines[-args.lines :]:
                print(line)
        return 0

    return _run(go)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``qp stack ...`` to the top-level parser."""
    stack = subparsers.add_parser(
        "stack", help="local service stack (Kafka, registry, Connect, S3, Spark Connect, Prometheus)"
    )
    sub = stack.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    only_help = f"comma-separated subset of: {','.join(SERVICE_ORDER)}"

    for action, handler, help_ in (
        ("up", _up, "start the stack (idempotent; dependencies first)"),
        ("down", _down, "stop our services in reverse order"),
        ("restart", _restart, "stop then start (e.g. --only connect after rebuilding a plugin)"),
        ("status", _status, "service, endpoint, pid, memory, health (exit 1 unless all healthy)"),
    ):
        p = sub.add_parser(action, help=help_)
        p.add_argument("--only", help=only_help)
        p.set_defaults(handler=handler)

    logs = sub.add_parser("logs", help="print the tail of a service's log (all services if none given)")
    logs.add_argument("service", nargs="?", help=f"one of: {', '.join(SERVICE_ORDER)}")
    logs.add_argument("-n", "--lines", type=int, default=50, help="number of lines (default 50)")
    logs.set_defaults(handler=_logs)

    fetch = sub.add_parser(
        "fetch", help="download/resolve every dependency (jars, packages) without starting"
    )
    fetch.add_argument("--only", help=only_help)
    fetch.set_defaults(handler=_fetch)
