"""Listing of the landed raw results per day (used by the landing sensor and the raw source asset).

Only the day prefixes of recent days are listed (``<raw_prefix><topic>/year=YYYY/month=MM/day=DD/``), never
the whole bucket, so a tick costs one listing of the topic folders plus one per topic and day.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from qp_assets.landing import day_prefix, topics_folder


@dataclass(frozen=True)
class DayLanding:
    """What has landed for one UTC day across all topics."""

    day: date
    files: int
    bytes: int
    last_modified: str  # ISO-8601 of the newest object ("" when none)

    def signature(self) -> str:
        return f"{self.files}:{self.bytes}:{self.last_modified}"


def _paginate(client: Any, **kwargs: Any) -> Iterable[dict[str, Any]]:
    token = None
    while True:
        page = client.list_objects_v2(**kwargs, **({"ContinuationToken": token} if token else {}))
        yield page
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")


def list_topics(client: Any, bucket: str, raw_prefix: str) -> list[str]:
    """Topic folder names under ``raw_prefix`` (one delimiter listing)."""
    prefix = topics_folder(raw_prefix)
    topics = []
    for page in _paginate(client, Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for cp in page.get("CommonPrefixes", []):
            topics.append(cp["Prefix"][len(prefix) :].rstrip("/"))
    return sorted(topics)


def landed_per_day(client: Any, bucket: str, raw_prefix: str, days: Iterable[date]) -> dict[date, DayLanding]:
    """Files, bytes and newest modification per day (hidden/temp objects skipped)."""
    topics = list_topics(client, bucket, raw_prefix)
    out = {}
    for day in days:
        files = size = 0
        newest = ""
        for topic in topics:
            for page in _paginate(client, Bucket=bucket, Prefix=day_prefix(topic, day, raw_prefix)):
                for obj in page.get("Contents", []):
                    name = obj["Key"].rsplit("/", 1)[-1]
                    if name.startswith((".", "_")) or name.endswith((".tmp", ".crc")):
                        continue
                    files += 1
                    size += int(obj.get("Size", 0))
                    modified = obj["LastModified"].isoformat() if obj.get("LastModified") else ""
                    newest = max(newest, modified)
        out[day] = DayLanding(day, files, size, newest)
    return out


def recent_days(today: date, lookback_days: int) -> list[date]:
    """``today`` and the ``lookback_days`` days before it, oldest first."""
    if lookback_days < 0:
        raise ValueError(f"lookback_days: must be >= 0, got {lookback_days}")
    return [today - timedelta(days=i) for i in range(lookback_days, -1, -1)]


def changed_days(cursor: str | None, landed: dict[date, DayLanding]) -> tuple[list[date], str]:
    """Days with files whose landing signature differs from the cursor's; returns (days, new cursor).

    The cursor is JSON ``{"YYYY-MM-DD": "<files>:<bytes>:<newest>"}`` for the listed days only (older
    days drop out of it as they leave the lookback window).
    """
    try:
        previous = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        raise ValueError(f"cursor: not JSON: {cursor[:80]!r}") from None
    changed = [
        d
        for d, info in sorted(landed.items())
        if info.files and previous.get(d.isoformat()) != info.signature()
    ]
    new_cursor = json.dumps(
        {d.isoformat(): info.signature() for d, info in sorted(landed.items())}, sort_keys=True
    )
    return changed, new_cursor


def landed_signatures(landed: dict[date, DayLanding]) -> dict[str, str]:
    """``{"YYYY-MM-DD": signature}`` of the days with files (what a landing observation records)."""
    return {d.isoformat(): info.signature() for d, info in sorted(landed.items()) if info.files}


def landed_data_version(landed: dict[date, DayLanding]) -> str:
    """Data version of the listed days' landings: 16 hex digits of the SHA-256 of every day's signature;
    changes whenever a file lands in any of them."""
    signature = "|".join(f"{d}:{info.signature()}" for d, info in sorted(landed.items()))
    return hashlib.sha256(signature.encode()).hexdigest()[:16]
