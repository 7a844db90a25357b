"""Read one offset range of one Kafka partition with an assigned consumer (no group commits).

The one bounded read loop behind the request range reader, the dead-letter reader and the audit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def read_partition(
    consumer: Any, topic: str, partition: int, start: int, end: int, deadline: float
) -> Iterator[Any]:
    """Yield the messages at offsets ``[start, end)`` of ``topic``/``partition``, in offset order.

    ``consumer`` is a confluent_kafka ``Consumer``; it is assigned to the partition at ``start`` and
    unassigned when the range is done. The read also ends at a partition-EOF event (only delivered with
    ``enable.partition.eof``: the range's end is a transaction marker or was never written). ``deadline`` is
    a ``time.monotonic()`` value: TimeoutError (naming how far the read got) once it passes before ``end``;
    RuntimeError on a Kafka error.
    """
    from confluent_kafka import KafkaError, TopicPartition

    consumer.assign([TopicPartition(topic, partition, start)])
    next_offset = start
    while next_offset < end:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"read {topic}[{partition}] only up to offset {next_offset} of [{start},{end})"
            )
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            raise RuntimeError(f"reading {topic}[{partition}]: {msg.error()}")
        next_offset = msg.offset() + 1
        if msg.offset() >= end:
            break
        yield msg
    consumer.unassign()
