"""Offset bookkeeping of the Kafka request sensor (pure planning + one watermark read).

The cursor is JSON ``{"topic": <topic>, "next": {"<partition>": <next offset to hand out>}}``. Each tick
reads only the low/high watermarks, then :func:`plan_ranges` cuts ``[next, high)`` of every partition into
half-open ranges of at most ``max_per_run`` offsets. A range's run key is ``<topic>:<partition>:<start>-<end>``
(``end`` exclusive), so re-evaluating from an older cursor yields the same keys and Dagster skips them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class OffsetRange:
    """Half-open offset range ``[start, end)`` of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def run_key(self) -> str:
        return f"{self.topic}:{self.partition}:{self.start}-{self.end}"

    @property
    def count(self) -> int:
        return self.end - self.start


def read_watermarks(
    bootstrap_servers: str, topic: str, timeout_s: float = 10.0
) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermarks of ``topic``; {} if the topic does not exist yet."""
    from confluent_kafka import TopicPartition

    consumer = _offsets_consumer(bootstrap_servers, timeout_s)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return {}
        return {
            p: tuple(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            )
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def wait_for_new_offsets(
    bootstrap_servers: str,
    topic: str,
    next_offsets: dict[int, int],
    wait_s: float,
    poll_s: float = 0.25,
    timeout_s: float = 10.0,
) -> dict[int, tuple[int, int]]:
    """Watermarks of ``topic`` as soon as a partition holds an offset not handed out yet, else after ``wait_s``.

    A partition has new offsets when its high watermark exceeds its entry in ``next_offsets`` (a partition
    absent from it: exceeds its low watermark). Re-reads the watermarks every ``poll_s`` seconds with one
    consumer; returns the last read (possibly unchanged) once ``wait_s`` seconds have passed, and ``{}``
    while the topic does not exist. Each read is bounded by ``timeout_s``.
    """
    from confluent_kafka import TopicPartition

    deadline = time.monotonic() + max(0.0, wait_s)
    consumer = _offsets_consumer(bootstrap_servers, timeout_s)
    try:
        while True:
            marks: dict[int, tuple[int, int]] = {}
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if meta is not None and meta.error is None:
                for p in sorted(meta.partitions):
                    marks[p] = tuple(
                        consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=timeout_s, cached=False
                        )
                    )
            if any(high > next_offsets.get(p, low) for p, (low, high) in marks.items()):
                return marks
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return marks
            time.sleep(min(poll_s, remaining))
    finally:
        consumer.close()


def _offsets_consumer(bootstrap_servers: str, timeout_s: float):
    """A consumer that only reads offsets (never subscribes or commits), with the cluster's security config."""
    from confluent_kafka import Consumer

    from qp_assets.streaming.kafka_config import client_config

    return Consumer(
        client_config(
            bootstrap_servers,
            **{
                "group.id": "qp-dagster-watermarks",
                "enable.auto.commit": False,
                "socket.timeout.ms": int(timeout_s * 1000),
            },
        )
    )


def offsets_at_time(
    bootstrap_servers: str, topic: str, partitions: list[int], timestamp_ms: int, timeout_s: float = 10.0
) -> dict[int, int]:
    """Partition -> offset of its first record stamped at or after ``timestamp_ms`` (the high watermark when
    there is none), for the given partitions of ``topic``."""
    from confluent_kafka import TopicPartition

    consumer = _offsets_consumer(bootstrap_servers, timeout_s)
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, timestamp_ms) for p in partitions], timeout=timeout_s
        )
        out = {}
        for tp in found:
            if tp.error is not None:
                raise RuntimeError(f"Kafka: offsets_for_times({topic}[{tp.partition}]) failed: {tp.error}")
            if tp.offset < 0:  # no record at or after the time: start at the end
                tp.offset = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=timeout_s, cached=False
                )[1]
            out[tp.partition] = tp.offset
        return out
    finally:
        consumer.close()


def parse_cursor(cursor: str | None, topic: str) -> dict[int, int]:
    """Partition -> next offset from a cursor string (empty for None or another topic's cursor)."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        if data.get("topic") != topic:
            return {}
        return {int(p): int(o) for p, o in data.get("next", {}).items()}
    except (json.JSONDecodeError, AttributeError, ValueError, TypeError):
        raise ValueError(f"cursor: not a request-sensor cursor: {cursor[:80]!r}") from None


def dump_cursor(topic: str, next_offsets: dict[int, int]) -> str:
    return json.dumps({"topic": topic, "next": {str(p): o for p, o in sorted(next_offsets.items())}})


def plan_ranges(
    topic: str,
    next_offsets: dict[int, int],
    watermarks: dict[int, tuple[int, int]],
    max_per_run: int = 10,
) -> tuple[list[OffsetRange], dict[int, int]]:
    """Ranges to run and the next-offset map after them.

    A partition absent from ``next_offsets`` starts at its low watermark (the sensor decides where a new
    instance starts by passing its own ``next_offsets``). Offsets below the low watermark (deleted by
    retention) are skipped.
    """
    if max_per_run < 1:
        raise ValueError(f"max_per_run: must be >= 1, got {max_per_run}")
    ranges = []
    updated = dict(next_offsets)
    for partition, (low, high) in sorted(watermarks.items()):
        pos = max(next_offsets.get(partition, low), low)
        while pos < high:
            end = min(pos + max_per_run, high)
            ranges.append(OffsetRange(topic, partition, pos, end))
            pos = end
        updated[partition] = pos
    return ranges, updated
