"""The daily partitioning shared by the feature assets, their job, schedule and the landing sensor."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

from dagster import DailyPartitionsDefinition, RetryPolicy

DEFAULT_START_DATE = "2026-01-01"


def partitions_start_date() -> str:
    """First day of the feature partitions (``QP_PARTITIONS_START``, YYYY-MM-DD; default 2026-01-01)."""
    value = os.environ.get("QP_PARTITIONS_START") or DEFAULT_START_DATE
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"QP_PARTITIONS_START: {value!r} is not a YYYY-MM-DD date") from None
    return value


def daily_partitions() -> DailyPartitionsDefinition:
    """UTC days from the start date up to and including today (``end_offset=1``: runs land the same day)."""
    return DailyPartitionsDefinition(start_date=partitions_start_date(), timezone="UTC", end_offset=1)


def feature_retry_policy() -> RetryPolicy:
    """Retries of the feature assets: ``QP_FEATURE_MAX_RETRIES`` (default 3) x ``QP_FEATURE_RETRY_DELAY_S``
    seconds (default 1200 = 20 minutes)."""
    retries = os.environ.get("QP_FEATURE_MAX_RETRIES") or "3"
    delay = os.environ.get("QP_FEATURE_RETRY_DELAY_S") or "1200"
    try:
        return RetryPolicy(max_retries=int(retries), delay=float(delay))
    except ValueError:
        raise ValueError(
            f"QP_FEATURE_MAX_RETRIES={retries!r} / QP_FEATURE_RETRY_DELAY_S={delay!r}: expected numbers"
        ) from None


def days_in_window(start: datetime, end: datetime) -> list[date]:
    """The UTC days of a half-open partition time window ``[start, end)``."""
    first = start.date()
    count = max(1, (end.date() - first).days)
    return [first + timedelta(days=i) for i in range(count)]
