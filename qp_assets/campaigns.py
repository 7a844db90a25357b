"""Campaigns: many VQE requests from one definition, submitted together and followed as one thing.

A campaign file (YAML or JSON) is the product of molecules x configuration matrix x seeds::

    name: small-molecules
    molecules: [H2, HeH+, LiH]          # names in the molecules file (or molecules_file: path)
    config: {basis: sto3g, ansatz: uccsd, freeze_core: true}   # shared options (VQEConfig field names)
    matrix:                              # every combination of these lists
      optimizer: [L-BFGS-B, SLSQP, COBYLA, SPSA]
      initial_state: [hartree_fock, random]
    seeds: {start: 1, count: 21}         # or a list of integers
    force: false                         # true: compute every run, reuse no earlier result (docs/vqe.md)

Every request is checked (configuration, molecule, admission policy) before any is published, so a bad
campaign publishes nothing. Request ids are ``<campaign id>/<n>`` (5 digits), so the campaign's
requests are found anywhere by prefix (``qp audit --request-id-prefix``, the Dagster ``campaign_progress``
asset). The campaign's manifest (definition, request count, submit time) is stored in S3 as
``campaigns/<campaign id>.json`` in the stack's bucket, the one place ``status`` reads it from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from qp_assets.settings import Settings
from qp_assets.vqe.errors import InputError

#: Most requests one campaign may hold (a typo in a seed count must not flood the request topic).
MAX_REQUESTS = 20_000
#: Audit findings that only mean "not finished yet" while a campaign runs (any other kind is a violation).
IN_FLIGHT = frozenset({"missing", "published_not_landed", "landed_not_in_iceberg"})
#: Key prefix of the manifests in the stack's bucket.
MANIFEST_PREFIX = "campaigns/"
_SPEC_KEYS = {"name", "molecules", "molecules_file", "config", "matrix", "seeds", "force"}


@dataclass
class Campaign:
    """An expanded campaign: its id, definition and the requests to publish (in order)."""

    campaign_id: str
    name: str
    spec: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """The request-id prefix every request of the campaign carries."""
        return f"{self.campaign_id}/"


def load_spec(path: Path) -> dict[str, Any]:
    """The campaign definition in ``path`` (JSON, or YAML for .yaml/.yml); InputError naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"campaign: cannot read {path}: {exc.strerror or exc}") from None
    try:
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            spec = yaml.safe_load(text)
        else:
            spec = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the file's fault
        raise InputError(
            f"campaign: {path} is not valid {'YAML' if str(path).endswith(('.yaml', '.yml')) else 'JSON'}: {exc}"
        ) from None
    if not isinstance(spec, dict):
        raise InputError(f"campaign: {path} must hold a mapping, got {type(spec).__name__}")
    return spec


def _seeds(value: Any) -> list[int]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"start", "count"})
        if unknown or "count" not in value:
            raise InputError(f"campaign: field 'seeds' must be a list or {{start, count}}, got {value!r}")
        start, count = value.get("start", 0), value["count"]
        if not isinstance(start, int) or not isinstance(count, int) or count < 1:
            raise InputError(f"campaign: field 'seeds' needs integer start and count >= 1, got {value!r}")
        return list(range(start, start + count))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        if len(set(value)) != len(value):
            raise InputError(f"campaign: field 'seeds' repeats a seed: {value!r}")
        return list(value)
    raise InputError(
        f"campaign: field 'seeds' must be a non-empty list of integers or {{start, count}}, got {value!r}"
    )


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    if not slug:
        raise InputError(f"campaign: field 'name' needs letters or digits, got {name!r}")
    return slug


def new_campaign_id(name: str, spec: dict[str, Any], now: float | None = None) -> str:
    """``camp-<slug of name>-<8 hex>``: the hex is a hash of the definition and the submit time, so the
    same file submitted twice gives two campaigns."""
    digest = hashlib.sha256(
        json.dumps({"spec": spec, "at": now if now is not None else time.time()}, sort_keys=True).encode()
    ).hexdigest()[:8]
    return f"camp-{_slug(name)}-{digest}"


def expand(spec: dict[str, Any], campaign_id: str | None = None) -> Campaign:
    """Every request of ``spec`` (see the module doc), validated; raises InputError naming the field."""
    from qp_assets.vqe.admission import AdmissionLimits, admit_request, check_molecules_file
    from qp_assets.vqe.config import VQEConfig
    from qp_assets.vqe.molecule import load_molecules

    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise InputError(f"campaign: unknown field(s) {unknown}; valid: {', '.join(sorted(_SPEC_KEYS))}")
    name = spec.get("name")
    if not isinstance(name, str):
        raise InputError(f"campaign: field 'name' must be a string, got {name!r}")
    _slug(name)
    molecules_file = Path(spec["molecules_file"]) if spec.get("molecules_file") else None
    check_molecules_file(molecules_file)
    known = load_molecules(molecules_file)
    names = spec.get("molecules")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputError(f"campaign: field 'molecules' must be a non-empty list of names, got {names!r}")
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(
            f"campaign: field 'molecules' has unknown name(s) {missing}; known: {', '.join(known)}"
        )
    base = spec.get("config") or {}
    matrix = spec.get("matrix") or {}
    if not isinstance(base, dict):
        raise InputError(f"campaign: field 'config' must be a mapping, got {base!r}")
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise InputError(f"campaign: field 'matrix' must map option names to non-empty lists, got {matrix!r}")
    clash = sorted(set(base) & set(matrix)) + (["seed"] if "seed" in base or "seed" in matrix else [])
    if clash:
        raise InputError(f"campaign: field(s) {clash} given twice (config, matrix or seeds)")
    seeds = _seeds(spec["seeds"]) if "seeds" in spec else [0]
    force = spec.get("force", False)
    if not isinstance(force, bool):
        raise InputError(f"campaign: field 'force' must be true or false, got {force!r}")
    combos = [dict(zip(matrix, values, strict=True)) for values in itertools.product(*matrix.values())] or [
        {}
    ]
    total = len(names) * len(combos) * len(seeds)
    if total > MAX_REQUESTS:
        raise InputError(f"campaign: {total} requests exceed the limit of {MAX_REQUESTS}")
    campaign_id = campaign_id or new_campaign_id(name, spec)
    limits = AdmissionLimits.from_env()
    configs: dict[int, dict[str, Any]] = {}
    for i, combo in enumerate(combos):
        try:
            configs[i] = VQEConfig.from_dict({**base, **combo, "seed": seeds[0]}).to_dict()
        except InputError as exc:
            raise InputError(f"campaign: matrix entry {combo}: {exc}") from None
    requests = []
    for molecule in names:
        for i in range(len(combos)):
            for seed in seeds:
                request = {
                    "request_id": f"{campaign_id}/{len(requests):05d}",
                    "molecule": known[molecule].to_dict(),
                    **configs[i],
                    "seed": seed,
                    **({"force": True} if force else {}),
                }
                admit_request(request, limits)
                requests.append(request)
    return Campaign(campaign_id, name, spec, requests)


def manifest_key(campaign_id: str) -> str:
    return f"{MANIFEST_PREFIX}{campaign_id}.json"


def save_manifest(settings: Settings, campaign: Campaign, submitted_at: datetime) -> str:
    """Store the campaign's manifest in the stack's bucket; returns its key."""
    from qp_assets.s3 import s3_client

    body = {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "spec": campaign.spec,
        "requests": len(campaign.requests),
        "submitted_at": submitted_at.isoformat(),
    }
    key = manifest_key(campaign.campaign_id)
    s3_client(settings).put_object(Bucket=settings.bucket, Key=key, Body=json.dumps(body, indent=2).encode())
    return key


def load_manifest(settings: Settings, campaign_id: str) -> dict[str, Any]:
    """The stored manifest; InputError naming the campaign when there is none."""
    from botocore.exceptions import ClientError

    from qp_assets.s3 import s3_client

    try:
        obj = s3_client(settings).get_object(Bucket=settings.bucket, Key=manifest_key(campaign_id))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise InputError(
                f"campaign: no campaign {campaign_id!r} (no s3://{settings.bucket}/{manifest_key(campaign_id)})"
            ) from None
        raise
    return json.loads(obj["Body"].read())


def list_campaigns(settings: Settings) -> list[str]:
    """Ids of every campaign with a manifest, oldest key first."""
    from qp_assets.s3 import s3_client

    ids = []
    for page in (
        s3_client(settings)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=settings.bucket, Prefix=MANIFEST_PREFIX)
    ):
        ids += [
            o["Key"][len(MANIFEST_PREFIX) : -len(".json")]
            for o in page.get("Contents", [])
            if o["Key"].endswith(".json")
        ]
    return ids


def submit(campaign: Campaign, settings: Settings | None = None) -> dict[str, Any]:
    """Store the manifest, then publish every request (one topic check, acknowledged one by one).
    Returns {"campaign_id", "requests", "published", "seconds"}."""
    from qp_assets.streaming.publisher import publish_requests

    settings = settings or Settings.from_env()
    started = time.monotonic()
    save_manifest(settings, campaign, datetime.now(UTC))
    outcomes = publish_requests(campaign.requests, settings)
    return {
        "campaign_id": campaign.campaign_id,
        "requests": len(campaign.requests),
        "published": sum(1 for o in outcomes if o.published),
        "seconds": round(time.monotonic() - started, 2),
    }


def progress(settings: Settings, campaign_id: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Where the campaign's requests are, from ``qp audit`` over every day since it was submitted:
    requests, results published / landed, Iceberg rows, DLQ entries, done (a row or a DLQ entry), pending,
    requests still in flight, violations (duplicates, a row and a DLQ entry, ...: never expected),
    ``complete`` (every request done, nothing in flight, no violation) and runs done per minute since the
    submit (so far: the rate at completion once complete is the wall-clock figure to quote only when the
    status is read right then; ``benchmarks/campaign.py`` clocks it)."""
    from qp_assets.audit import audit_day

    manifest = load_manifest(settings, campaign_id)
    submitted = datetime.fromisoformat(manifest["submitted_at"])
    prefix = f"{campaign_id}/"
    totals: dict[str, int] = {}
    violations: list[dict[str, str]] = []
    day: date = submitted.date()
    while day <= datetime.now(UTC).date():
        report = audit_day(day, settings, request_id_prefix=prefix, timeout_s=timeout_s)
        for k, v in report.counts.items():
            totals[k] = totals.get(k, 0) + v
        violations += report.violations
        day += timedelta(days=1)
    broken = [v for v in violations if v["kind"] not in IN_FLIGHT]
    done = totals.get("ok_row", 0) + totals.get("ok_dlq", 0)
    expected = int(manifest["requests"])
    elapsed_s = max((datetime.now(UTC) - submitted).total_seconds(), 1e-9)
    return {
        "campaign_id": campaign_id,
        "name": manifest["name"],
        "submitted_at": manifest["submitted_at"],
        "expected": expected,
        "requests_seen": totals.get("requests", 0),
        "results_published": totals.get("results_published", 0),
        "results_landed": totals.get("results_landed", 0),
        "rows": totals.get("ok_row", 0),
        "dead_lettered": totals.get("ok_dlq", 0),
        "done": done,
        "pending": max(expected - done, 0),
        "in_flight": len(violations) - len(broken),
        "violations": len(broken),
        "violation_kinds": sorted({v["kind"] for v in broken}),
        "complete": done >= expected and not violations,
        "runs_per_minute": round(done / elapsed_s * 60, 1),
    }


# ---------------------------------------------------------------------------------------------- CLI


def _submit(args: Any) -> int:
    from confluent_kafka import KafkaException

    from qp_assets.cli_errors import USAGE, CliError, reported
    from qp_assets.streaming.serde import RegistryUnavailableError

    with reported(usage=(InputError, ValueError), failure=()):
        spec = load_spec(args.file)
        campaign = expand({**spec, "force": True} if args.force else spec, args.id)
    if args.dry_run:
        print(json.dumps({"campaign_id": campaign.campaign_id, "requests": len(campaign.requests)}))
        return 0
    if not campaign.requests:
        raise CliError("campaign: no requests", USAGE)
    with reported("publishing failed", usage=(), failure=(KafkaException, RegistryUnavailableError)):
        outcome = submit(campaign)
    print(json.dumps(outcome))
    return 0 if outcome["published"] == outcome["requests"] else 1


def _status(args: Any) -> int:
    from qp_assets.audit import AuditError
    from qp_assets.cli_errors import reported

    with reported(usage=(InputError,), failure=(AuditError,)):
        state = progress(Settings.from_env(), args.campaign_id, timeout_s=args.timeout)
    if args.json:
        print(json.dumps(state))
    else:
        print(
            f"{state['campaign_id']} ({state['name']}): {state['done']}/{state['expected']} done "
            f"({state['rows']} rows, {state['dead_lettered']} dead-lettered), {state['in_flight']} in flight, "
            f"{state['violations']} violation(s), {state['runs_per_minute']} runs/min since submit"
            + (", complete" if state["complete"] else "")
        )
    return 0 if state["violations"] == 0 else 1


def _list(args: Any) -> int:
    for campaign_id in list_campaigns(Settings.from_env()):
        print(campaign_id)
    return 0


def register(subparsers: Any) -> None:
    """Add ``qp campaign submit|status|list``."""
    p = subparsers.add_parser(
        "campaign", help="campaigns: molecules x configurations x seeds as one submission"
    )
    sub = p.add_subparsers(dest="campaign_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "submit",
        help="expand a campaign file and publish its requests",
        description="Expand FILE (YAML or JSON: name, molecules, config, matrix, seeds), check every request, "
        "store the manifest in S3 and publish the requests with ids <campaign id>/<n>. Nothing is published "
        "when one request is invalid.",
    )
    s.add_argument("file", type=Path, metavar="FILE")
    s.add_argument("--id", default=None, help="campaign id (default camp-<name>-<hash>)")
    s.add_argument("--dry-run", action="store_true", help="expand and check only; print the request count")
    s.add_argument("--force", action="store_true", help="compute every run (as 'force: true' in FILE)")
    s.set_defaults(handler=_submit)
    st = sub.add_parser("status", help="progress of a campaign (qp audit over its requests)")
    st.add_argument("campaign_id", metavar="ID")
    st.add_argument("--json", action="store_true", help="print the progress as JSON")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds per network call (default 10)")
    st.set_defaults(handler=_status)
    ls = sub.add_parser("list", help="ids of the campaigns with a manifest")
    ls.set_defaults(handler=_list)
