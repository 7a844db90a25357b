"""``qp monitoring groups | cleanup | push-pipeline | check-dashboards``.

Exit codes: 0 ok, 1 a service failed or a check found problems, 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time

from qp_assets.cli_errors import USAGE, CliError, reported, run_handler

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(value: str) -> float:
    """'90', '90s', '15m', '6h', '7d', '2w' -> seconds; ValueError naming the value otherwise."""
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"--older-than: expected a duration like 30s, 15m, 6h, 7d; got {value!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _settings():
    from qp_assets.settings import Settings

    return Settings.from_env()


def _groups(args: argparse.Namespace) -> int:
    from qp_assets.monitoring.metrics import list_groups

    with reported("PushGateway unreachable", usage=(), failure=(OSError,)):
        groups = list_groups(_settings())
    now = time.time()
    print(f"{'age':>10}  grouping key")
    for group in sorted(groups, key=lambda g: -g["push_time_seconds"]):
        age = now - group["push_time_seconds"]
        key = ", ".join(f"{k}={v}" for k, v in sorted(group["labels"].items()))
        print(f"{age:>9.0f}s  {key}")
    print(f"{len(groups)} groups")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from qp_assets.monitoring.metrics import cleanup_stale_groups

    with reported(failure=()):
        older_than_s = parse_duration_s(args.older_than)
    with reported("PushGateway unreachable", usage=(), failure=(OSError,)):
        deleted = cleanup_stale_groups(
            _settings(), older_than_s, job=None if args.all_jobs else args.job, dry_run=args.dry_run
        )
    verb = "would delete" if args.dry_run else "deleted"
    for labels in deleted:
        print(f"{verb} " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    print(f"{verb} {len(deleted)} groups older than {args.older_than}")
    return 0


def _push_pipeline(args: argparse.Namespace) -> int:
    from qp_assets.monitoring.pipeline_metrics import collect_and_push

    if args.days < 1:
        raise CliError(f"--days must be >= 1, got {args.days}", USAGE)
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=i) for i in range(args.days)]
    out = collect_and_push(_settings(), days)
    print(json.dumps(out, indent=2, default=str))
    return 0 if out["pushed"] and not out["errors"] else 1


def _check_dashboards(args: argparse.Namespace) -> int:
    from qp_assets.monitoring.dashboards import exported_metric_names, missing_metrics, referenced_metrics

    refs = referenced_metrics()
    unknown = {n: w for n, w in refs.items() if n not in exported_metric_names()}
    for name, where in sorted(unknown.items()):
        print(f"not exported by any code path: {name} (used in {'; '.join(where)})")
    missing = {}
    if not args.static:
        with reported("Prometheus unreachable", usage=(), failure=(OSError,)):
            missing = missing_metrics(_settings().prometheus_url)
        for name, where in missing.items():
            print(f"not in Prometheus yet: {name} (used in {'; '.join(where)})")
    print(
        f"{len(refs)} metrics referenced, {len(unknown)} not exported, {len(missing)} missing in Prometheus"
    )
    return 0 if not unknown and not missing else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("monitoring", help="metrics, PushGateway groups and dashboards")
    sub = parser.add_subparsers(dest="monitoring_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("groups", help="list PushGateway groups with their age")
    p.set_defaults(handler=_groups)

    p = sub.add_parser("cleanup", help="delete PushGateway groups whose last push is older than a duration")
    p.add_argument("--older-than", required=True, help="duration: 30s, 15m, 6h, 7d, 2w")
    p.add_argument(
        "--job", default="quantum_pipeline", help="only groups of this job (default quantum_pipeline)"
    )
    p.add_argument("--all-jobs", action="store_true", help="consider groups of every job")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(handler=_cleanup)

    p = sub.add_parser("push-pipeline", help="measure Kafka lag, landed files, feature rows and push them")
    p.add_argument("--days", type=int, default=2, help="UTC days back from today to measure (default 2)")
    p.set_defaults(handler=_push_pipeline)

    p = sub.add_parser(
        "check-dashboards", help="check dashboard/rule metric names against code and Prometheus"
    )
    p.add_argument("--static", action="store_true", help="only check against the exported-name registry")
    p.set_defaults(handler=_check_dashboards)


def main(argv: list[str] | None = None) -> int:
    """``python -m qp_assets.monitoring.cli SUBCOMMAND ...`` (same as ``qp monitoring SUBCOMMAND ...``)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m qp_assets.monitoring.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["monitoring", *(sys.argv[1:] if argv is None else argv)])
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
