"""The landing layout: the S3 key of a landed result file, and the day a key belongs to.

The one Python home of the layout that the S3 sink plugin writes (``infra/connect/s3-avro-sink``,
``ObjectKeys.java``; date and hour are those of the file's first record, UTC)::

    <raw prefix><topic>/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition>+<start offset, 19 digits>.avro

with the raw prefix ``raw/topics/`` below the bucket (a test may put its own prefix in front). The writers
of landed files outside the sink (``features.golden``), the listings of a day (``features.raw``,
``sensors.landing``, ``audit``, ``e2e``) and the parsing of a key's day (``features.build``) go through this
module: nothing else spells ``year=``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

#: Key prefix of the topic folders below the bucket (the sink's ``topics.dir`` ``raw/topics``).
RAW_PREFIX = "raw/topics/"
#: Regular expression of a key's day folders; groups 1-3 are year, month and day (also given to Spark's
#: ``regexp_extract``, whose Java regex syntax accepts it unchanged).
DAY_PATTERN = r"year=(\d{4})/month=(\d{2})/day=(\d{2})/"


def day_suffix(day: date) -> str:
    """``year=YYYY/month=MM/day=DD/``: the day folders below a topic folder."""
    return f"year={day:%Y}/month={day:%m}/day={day:%d}/"


def topics_folder(raw_prefix: str = RAW_PREFIX) -> str:
    """The folder of the topic folders: ``raw_prefix`` with its trailing slash (added if it lacks one)."""
    return raw_prefix if raw_prefix.endswith("/") else raw_prefix + "/"


def topic_prefix(topic: str, raw_prefix: str = RAW_PREFIX) -> str:
    """``<raw_prefix><topic>/`` (:func:`topics_folder` of ``raw_prefix``, then the topic's folder)."""
    return f"{topics_folder(raw_prefix)}{topic}/"


def day_prefix(topic: str, day: date, raw_prefix: str = RAW_PREFIX) -> str:
    """Key prefix of every file of ``topic`` landed for ``day``."""
    return topic_prefix(topic, raw_prefix) + day_suffix(day)


def object_key(topic: str, partition: int, offset: int, when: datetime, raw_prefix: str = RAW_PREFIX) -> str:
    """Key of the file whose first record is ``offset`` of ``topic``/``partition``, stamped ``when``
    (timezone-aware; its UTC date and hour name the folders), exactly as the sink names it."""
    if when.tzinfo is None:
        raise ValueError(f"landing time {when.isoformat()} has no timezone (the layout's folders are UTC)")
    return (
        f"{topic_prefix(topic, raw_prefix)}year={when:%Y}/month={when:%m}/day={when:%d}/hour={when:%H}/"
        f"{topic}+{partition}+{offset:019d}.avro"
    )


def day_of(key: str) -> date | None:
    """The day a landed key or URI belongs to (its ``year=/month=/day=`` folders), None if it has none."""
    match = re.search(DAY_PATTERN, key)
    return date(int(match[1]), int(match[2]), int(match[3])) if match else None


# --- the first landed day (the feature partitions' default start) ---------------------------------------


def first_landed_file(runtime_dir: Path) -> Path:
    """Where the feature builds record the first day results landed: ``<QP_HOME>/state/first_landed_day``
    (one line, YYYY-MM-DD), read when the Dagster definitions load (no service needed there)."""
    return Path(runtime_dir) / "state" / "first_landed_day"


def read_first_landed_day(runtime_dir: Path) -> date | None:
    """The recorded first landed day, or None when no build recorded one (or the file is unreadable)."""
    try:
        return date.fromisoformat(first_landed_file(runtime_dir).read_text().strip())
    except (OSError, ValueError):
        return None


def record_landed_days(runtime_dir: Path, days: Iterable[date]) -> date | None:
    """Keep the earliest of the recorded day and ``days`` (days that had landed files) as the first landed
    day; written atomically (a reader never sees half a date). Returns the recorded day."""
    recorded = read_first_landed_day(runtime_dir)
    first = min([*days, *([recorded] if recorded else [])], default=None)
    if first is None or first == recorded:
        return recorded
    path = first_landed_file(runtime_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(first.isoformat() + "\n")
    tmp.replace(path)
    return first
