"""``qp dlq list | show N | replay N [--all]``: inspect and resubmit the request dead-letter topic.

Every entry of ``vqe.requests.dlq`` carries the original bytes of the request (key and value), the reason
(``qp.error``), the stage that refused it (``qp.stage``: decode | admission | run) and its origin
(``qp.source.topic`` / ``.partition`` / ``.offset``). ``N`` is the entry's offset in the dead-letter topic.
``replay`` produces the original key and value unchanged to the origin topic (after the operator fixed
what refused it, e.g. raised a ``QP_MAX_*`` limit); the sensor then picks it up like any request. Entries
with the same origin (a range re-read after a crash) are listed as duplicates and replayed once.
Every network call is bounded (``--timeout``, default 30 s).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from qp_assets.streaming.topics import REQUESTS_DLQ_TOPIC, REQUESTS_TOPIC


def register(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="the request dead-letter topic (vqe.requests.dlq)")
    sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--topic", default=REQUESTS_DLQ_TOPIC, help="dead-letter topic")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds for every Kafka call")
    lst = sub.add_parser(
        "list", parents=[common], help="one line per entry: N, stage, origin, request id, reason"
    )
    lst.add_argument("--json", action="store_true", help="one JSON object per entry")
    lst.set_defaults(handler=list_command)
    show = sub.add_parser("show", parents=[common], help="one entry in full (headers, key, value)")
    show.add_argument("n", type=int, help="entry offset in the dead-letter topic")
    show.set_defaults(handler=show_command)
    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="resubmit the original bytes of entry N (or --all) to their origin topic",
    )
    replay.add_argument("n", type=int, nargs="?", help="entry offset in the dead-letter topic")
    replay.add_argument("--all", action="store_true", help="every entry (duplicates of an origin once)")
    replay.add_argument("--stage", default=None, help="with --all: only entries refused at this stage")
    replay.set_defaults(handler=replay_command)


@dataclass
class DlqEntry:
    n: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0
    duplicate_of: int | None = None

    @property
    def reason(self) -> str:
        return self.headers.get("qp.error", "")

    @property
    def stage(self) -> str:
        return self.headers.get("qp.stage", "decode" if "qp.request_id" not in self.headers else "?")

    @property
    def origin(self) -> tuple[str, int, int]:
        def as_int(v: str | None) -> int:
            try:
                return int(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return -1

        h = self.headers
        return (h.get("qp.source.topic", REQUESTS_TOPIC), as_int(h.get("qp.source.partition")),
                as_int(h.get("qp.source.offset")))  # fmt: skip

    @property
    def request_id(self) -> str | None:
        if self.headers.get("qp.request_id"):
            return self.headers["qp.request_id"]
        return self.key.decode("utf8", "replace") if self.key else None

    def to_dict(self) -> dict[str, Any]:
        topic, partition, offset = self.origin
        return {
            "n": self.n, "stage": self.stage, "request_id": self.request_id,
            "origin": {"topic": topic, "partition": partition, "offset": offset},
            "reason": self.reason, "value_bytes": None if self.value is None else int(
                self.headers.get("qp.value.bytes") or len(self.value)),
            "value_truncated": self.headers.get("qp.value.truncated") == "1",
            "timestamp_ms": self.timestamp_ms, "duplicate_of": self.duplicate_of,
        }  # fmt: skip


def read_entries(
    settings: Any, topic: str = REQUESTS_DLQ_TOPIC, timeout_s: float = 30.0, *, since_ms: int | None = None
) -> list[DlqEntry]:
    """Every entry of the dead-letter topic (all partitions, low to high watermark), within ``timeout_s``;
    with ``since_ms`` (epoch milliseconds) only the entries stamped at or after it."""
    from confluent_kafka import Consumer, TopicPartition

    from qp_assets.streaming.kafka_config import client_config
    from qp_assets.streaming.partition_read import read_partition

    consumer = Consumer(client_config(settings.kafka_bootstrap_servers, **{
        "group.id": f"qp-dlq-reader-{uuid.uuid4()}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
    }))  # fmt: skip
    deadline = time.monotonic() + timeout_s
    entries: list[DlqEntry] = []
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            return []  # nothing was ever dead-lettered
        for partition in sorted(tmeta.partitions):
            remaining = max(deadline - time.monotonic(), 1.0)
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=remaining)
            if since_ms is not None and high > low:
                (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)], remaining)
                low = high if found.offset < 0 else max(low, found.offset)  # -1: nothing that recent
            if high <= low:
                continue
            try:
                for msg in read_partition(consumer, topic, partition, low, high, deadline):
                    headers = {k: (v or b"").decode("utf8", "replace") for k, v in (msg.headers() or [])}
                    entries.append(
                        DlqEntry(msg.offset(), msg.key(), msg.value(), headers, msg.timestamp()[1])
                    )
            except TimeoutError as exc:
                raise TimeoutError(f"{exc} in {timeout_s} s") from None
    finally:
        consumer.close()
    first: dict[tuple[str, int, int], int] = {}
    for e in entries:
        if e.origin[1] >= 0 and e.origin[2] >= 0:
            e.duplicate_of = first.setdefault(e.origin, e.n)
            if e.duplicate_of == e.n:
                e.duplicate_of = None
    return entries


def dead_lettered_origins(
    settings: Any, origins: set[tuple[str, int, int]], dlq_topic: str = REQUESTS_DLQ_TOPIC, *,
    since_ms: int | None = None, timeout_s: float = 30.0,
) -> set[tuple[str, int, int]]:  # fmt: skip
    """Those of ``origins`` (topic, partition, offset) that already have an entry in ``dlq_topic``.

    ``since_ms``: the oldest origin message's timestamp (epoch ms); entries older than it minus
    :data:`CLOCK_SLACK_MS` cannot be about it and are not read, so the check stays cheap on a long DLQ.
    """
    wanted = {o for o in origins if o[1] >= 0 and o[2] >= 0}
    if not wanted:
        return set()
    since = None if since_ms is None or since_ms <= 0 else max(0, since_ms - CLOCK_SLACK_MS)
    return {e.origin for e in read_entries(settings, dlq_topic, timeout_s, since_ms=since)} & wanted


#: Clock difference tolerated between the producer of a request and the process that dead-letters it.
CLOCK_SLACK_MS = 10 * 60 * 1000


def list_command(args: argparse.Namespace) -> int:
    from qp_assets.settings import Settings

    entries = read_entries(Settings.from_env(), args.topic, args.timeout)
    if args.json:
        for e in entries:
            print(json.dumps(e.to_dict()))
        return 0
    print(f"{'N':>5}  {'stage':9}  {'origin':28}  {'request_id':38}  reason")
    for e in entries:
        topic, partition, offset = e.origin
        reason = " ".join(e.reason.split())
        dup = f"[duplicate of {e.duplicate_of}] " if e.duplicate_of is not None else ""
        print(f"{e.n:>5}  {e.stage:9}  {f'{topic}:{partition}@{offset}':28}  {(e.request_id or '-')[:38]:38}  "
              f"{dup}{reason[:160]}")  # fmt: skip
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {args.topic}")
    return 0


def _find(entries: list[DlqEntry], n: int, topic: str) -> DlqEntry:
    """Entry ``n``; a CliError (exit 2) naming the field and the offsets there are when none."""
    from qp_assets.cli_errors import USAGE, CliError

    found = next((e for e in entries if e.n == n), None)
    if found is None:
        raise CliError(
            f"field 'N' = {n}: no such entry in {topic} (offsets {[e.n for e in entries][:20]})", USAGE
        )
    return found


def show_command(args: argparse.Namespace) -> int:
    from qp_assets.settings import Settings

    entries = read_entries(Settings.from_env(), args.topic, args.timeout)
    entry = _find(entries, args.n, args.topic)
    out = entry.to_dict()
    out["headers"] = entry.headers
    out["key"] = entry.key.decode("utf8", "replace") if entry.key else None
    value = entry.value
    if value is None:
        out["value"] = None
    elif value[:1] == b"\x00" and len(value) >= 5:
        out["value"] = {"schema_id": int.from_bytes(value[1:5], "big"), "hex_prefix": value[:64].hex()}
    else:
        try:
            out["value"] = json.loads(value)
        except ValueError:
            out["value"] = {"hex_prefix": value[:64].hex()}
    print(json.dumps(out, indent=2, default=str))
    return 0


def replay_entry(settings: Any, entry: DlqEntry, timeout_s: float = 30.0) -> tuple[str, int, int]:
    """Produce the entry's original key and value to its origin topic; (topic, partition, offset) acked."""
    from qp_assets.streaming.publisher import _producer, discard_producer

    if entry.value is None:
        raise ValueError(f"entry {entry.n} is a tombstone (no value): nothing to replay")
    if entry.headers.get("qp.value.truncated") == "1":
        topic, partition, offset = entry.origin
        raise ValueError(
            f"entry {entry.n} holds only the first {len(entry.value)} of {entry.headers.get('qp.value.bytes')} "
            f"bytes: nothing to replay (the original is {topic}[{partition}]@{offset} until retention)"
        )
    topic = entry.origin[0]
    report: dict[str, Any] = {}
    producer = _producer(settings)
    producer.produce(topic, key=entry.key, value=entry.value, headers=[("qp.replay.of", str(entry.n).encode())],
                     on_delivery=lambda err, msg: report.update(err=err, msg=msg))  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while "err" not in report and time.monotonic() < deadline:
        producer.poll(0.1)
    if "err" not in report or report["err"] is not None:
        discard_producer(settings, producer)
    if "err" not in report:
        raise TimeoutError(f"no acknowledgement for {topic} within {timeout_s} s")
    if report["err"] is not None:
        raise RuntimeError(f"Kafka did not acknowledge {topic}: {report['err']}")
    return topic, report["msg"].partition(), report["msg"].offset()


def replay_command(args: argparse.Namespace) -> int:
    from qp_assets.settings import Settings

    if (args.n is None) == (not args.all):
        from qp_assets.cli_errors import USAGE, CliError

        raise CliError("give N or --all (not both)", USAGE)
    settings = Settings.from_env()
    entries = read_entries(settings, args.topic, args.timeout)
    if args.all:
        chosen = [
            e for e in entries if e.duplicate_of is None and (args.stage is None or e.stage == args.stage)
        ]
        for e in [e for e in chosen if e.value is None]:
            print(
                json.dumps({"n": e.n, "request_id": e.request_id, "replayed": False, "skipped": "tombstone"})
            )
        chosen = [e for e in chosen if e.value is not None]
    else:
        chosen = [_find(entries, args.n, args.topic)]
    failed = 0
    for e in chosen:
        try:
            topic, partition, offset = replay_entry(settings, e, args.timeout)
        except (ValueError, TimeoutError, RuntimeError) as exc:
            failed += 1
            print(json.dumps({"n": e.n, "request_id": e.request_id, "replayed": False, "error": str(exc)}))
            continue
        print(json.dumps({"n": e.n, "request_id": e.request_id, "replayed": True, "topic": topic,
                          "partition": partition, "offset": offset}))  # fmt: skip
    return 1 if failed else 0
