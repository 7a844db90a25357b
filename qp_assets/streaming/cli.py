"""``qp request submit`` (VQE requests to ``vqe.requests``) and ``qp results replay`` (spooled results)."""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from qp_assets.cli_errors import USAGE, CliError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    from qp_assets.vqe.cli import add_config_arguments

    submit = _add_action(
        subparsers,
        ("request", "VQE requests on Kafka (consumed by the Dagster sensor)"),
        ("submit", "publish VQE request(s) to vqe.requests"),
        "Validate and publish one request per molecule (and per --repeat) to vqe.requests. "
        "Nothing is published if any molecule or option is invalid.",
    )
    submit.add_argument("--molecule", "-m", action="append", default=[], help="molecule name (repeatable)")
    submit.add_argument("--all", action="store_true", help="every molecule in the molecules file")
    submit.add_argument("--molecules-file", type=Path, default=None, help="JSON list (default: shipped file)")
    submit.add_argument("--repeat", type=int, default=1, help="requests per molecule (distinct request ids)")
    submit.add_argument("--request-id-prefix", default="", help="prefix for generated request ids")
    submit.add_argument(
        "--force",
        action="store_true",
        help="compute even when an earlier result of the same experiment exists",
    )
    add_config_arguments(submit)
    s = submit.add_argument_group("scan (one request per molecule; one result per point, sharing a scan_id)")
    s.add_argument("--scan", action="store_true", help="a potential-energy scan instead of one run")
    s.add_argument("--stretch", metavar="I,J", help="0-based atom indices; atom J moves along I->J")
    s.add_argument("--from", dest="scan_from", type=float, help="first I-J distance (angstrom)")
    s.add_argument("--to", dest="scan_to", type=float, help="last I-J distance (angstrom)")
    s.add_argument("--points", type=int, help="number of distances, both ends included")
    s.add_argument("--cold", action="store_true", help="start every point from the initial state")
    submit.set_defaults(handler=submit_command)

    replay = _add_action(
        subparsers,
        ("results", "VQE results on Kafka"),
        ("replay", "republish results spooled while Kafka was unreachable"),
        "Republish every result in <runtime dir>/spool; a spool file is deleted only after "
        "Kafka acknowledged it. Exit 1 if any result stays spooled.",
    )
    replay.set_defaults(handler=replay_command)


def _add_action(
    subparsers: Any, command: tuple[str, str], action: tuple[str, str], description: str
) -> argparse.ArgumentParser:
    """Add ``qp COMMAND ACTION``: ``command`` and ``action`` are (name, one-line help) pairs; the command
    requires its ACTION (``dest`` ``<command>_command``). Returns the action's parser for its arguments."""
    parent = subparsers.add_parser(command[0], help=command[1])
    actions = parent.add_subparsers(dest=f"{command[0]}_command", metavar="ACTION", required=True)
    return actions.add_parser(action[0], help=action[1], description=description)


def build_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Requests for the chosen molecules; raises InputError before anything is published."""
    from qp_assets.vqe.admission import check_molecules_file
    from qp_assets.vqe.cli import config_from_args
    from qp_assets.vqe.errors import InputError
    from qp_assets.vqe.molecule import load_molecules

    check_molecules_file(args.molecules_file)  # atom counts before the (quadratic) molecule validation
    molecules = load_molecules(args.molecules_file)
    names = list(molecules) if args.all else args.molecule
    if not names:
        raise InputError("request: give --molecule NAME (repeatable) or --all")
    unknown = [n for n in names if n not in molecules]
    if unknown:
        raise InputError(
            f"request: field 'molecule' has unknown name(s) {unknown}; known: {', '.join(molecules)}"
        )
    if args.repeat < 1:
        raise InputError(f"request: field 'repeat' must be >= 1, got {args.repeat}")
    config = config_from_args(args).to_dict()
    scan = scan_from_args(args)
    requests = []
    for name in names:
        for _ in range(args.repeat):
            rid = f"{args.request_id_prefix}{uuid.uuid4()}"
            requests.append({"request_id": rid, "molecule": molecules[name].to_dict(), **config,
                             **({"scan": scan} if scan else {}), **({"force": True} if args.force else {})})  # fmt: skip
    return requests


def scan_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The request's ``scan`` record from ``--scan --stretch I,J --from A --to B --points N [--cold]``
    (None without ``--scan``); raises InputError naming a missing or malformed option."""
    from qp_assets.vqe.errors import InputError

    given = [f"--{n}" for n, v in (("stretch", args.stretch), ("from", args.scan_from), ("to", args.scan_to),
                                   ("points", args.points)) if v is not None]  # fmt: skip
    if not args.scan:
        if given or args.cold:
            raise InputError(f"request: {', '.join(given) or '--cold'} need(s) --scan")
        return None
    missing = [n for n in ("--stretch", "--from", "--to", "--points") if n not in given]
    if missing:
        raise InputError(f"request: --scan needs {', '.join(missing)}")
    try:
        i, j = (int(v) for v in args.stretch.split(","))
    except ValueError:
        raise InputError(f"request: field 'stretch' must be I,J, got {args.stretch!r}") from None
    return {"atoms": [i, j], "start": args.scan_from, "stop": args.scan_to, "points": args.points,
            "warm_start": not args.cold}  # fmt: skip


def submit_command(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from qp_assets.settings import Settings
    from qp_assets.streaming.publisher import publish_request, request_record
    from qp_assets.streaming.serde import RegistryUnavailableError
    from qp_assets.vqe.admission import AdmissionLimits, admit_request
    from qp_assets.vqe.errors import InputError

    try:
        limits = AdmissionLimits.from_env()
        requests = build_requests(args)
        records = [request_record(r) for r in requests]  # validate all before publishing any
        for request in requests:  # the admission policy (no SCF), also before publishing any
            admit_request(request, limits)
    except (InputError, ValueError) as exc:
        raise CliError(exc, USAGE) from exc
    settings = Settings.from_env()
    for done, record in enumerate(records):
        try:
            outcome = publish_request(record, settings)
        except (KafkaException, RegistryUnavailableError) as exc:  # one clear line, no credential in it
            raise CliError(f"{exc} ({done} of {len(records)} request(s) published)") from exc
        print(json.dumps({"request_id": record["request_id"], "molecule": record["molecule"]["name"],
                          **({"scan_points": record["scan"]["points"]} if record.get("scan") else {}),
                          "topic": outcome.topic, "partition": outcome.partition, "offset": outcome.offset}))  # fmt: skip
    return 0


def replay_command(args: argparse.Namespace) -> int:
    from qp_assets.streaming.publisher import replay_spool

    published, kept = replay_spool()
    print(f"replayed {published} result(s); {kept} still spooled")
    return 1 if kept else 0
