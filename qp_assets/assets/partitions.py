"""The daily partitioning shared by the feature assets, their job, schedule and the landing sensor."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dagster import DailyPartitionsDefinition, FreshnessPolicy, RetryPolicy

from qp_assets.landing import read_first_landed_day
from qp_assets.settings import SettingsError, load_env, runtime_dir

#: The daily rebuild of yesterday (``daily_feature_schedule``), UTC.
DAILY_REBUILD_CRON = "30 0 * * *"
#: Feature tables are stale when no build finished between the daily rebuild (00:30 UTC) and 03:00 UTC:
#: 2.5 h leave room for the build and the first retries of the retry policy.
FRESHNESS_DEADLINE_CRON = "0 3 * * *"
FRESHNESS_LOWER_BOUND = timedelta(hours=2, minutes=30)

# Default ``QP_PARTITIONS_START`` (``qp_assets.settings.Env``): ``first-landed``, the first day results
#: landed, so the assets show no unfillable days before the platform's first result ("0% filled") and no
#: history is hidden. Definitions must load without services (no S3 listing at import), so the feature builds
#: record that day in ``QP_HOME`` (``qp_assets.landing.record_landed_days``) and it is read from there; until
#: a build has recorded one (a fresh runtime), the start is ``today-7``, the last week, which covers the
#: landing sensor's lookback (``QP_LANDING_LOOKBACK_DAYS``, 2) with room for late files. A running code
#: location keeps the start it loaded with until it reloads.
FIRST_LANDED_FALLBACK = "today-7"


def partitions_start_date(today: date | None = None) -> str:
    """First day of the feature partitions, YYYY-MM-DD, from ``QP_PARTITIONS_START``: ``first-landed``
    (default: the recorded first landed day, never after ``today``; ``today-7`` when none is recorded yet),
    a date (``2026-01-01``, for history older than the first recorded landing) or ``today-N`` (N days
    before ``today``, UTC, evaluated when the code location loads). Raises ValueError naming the variable
    and value."""
    value = load_env().partitions_start  # its form is checked at load (first-landed, a date or today-N)
    today = today or datetime.now(UTC).date()
    if value == "first-landed":
        first = read_first_landed_day(runtime_dir())
        if first is not None:
            return min(first, today).isoformat()
        value = FIRST_LANDED_FALLBACK
    if value.startswith("today-"):
        return (today - timedelta(days=int(value.removeprefix("today-")))).isoformat()
    start = date.fromisoformat(value)
    if start > today:
        raise SettingsError(f"QP_PARTITIONS_START={value!r} is after today ({today.isoformat()}, UTC)")
    return start.isoformat()


def daily_partitions() -> DailyPartitionsDefinition:
    """UTC days from the start date up to and including today (``end_offset=1``: runs land the same day)."""
    return DailyPartitionsDefinition(start_date=partitions_start_date(), timezone="UTC", end_offset=1)


def feature_freshness_policy() -> FreshnessPolicy:
    """The feature tables' daily cadence as a Dagster freshness policy: a table passes from the 03:00 UTC
    deadline on when it materialized (any partition) after that day's 00:30 rebuild, and fails until it
    materializes again otherwise (``FreshnessPolicy.cron``, evaluated by the daemon's freshness daemon)."""
    return FreshnessPolicy.cron(
        deadline_cron=FRESHNESS_DEADLINE_CRON, lower_bound_delta=FRESHNESS_LOWER_BOUND, timezone="UTC"
    )


def feature_retry_policy() -> RetryPolicy:
    """Retries of the feature assets: ``QP_FEATURE_MAX_RETRIES`` (default 3) x ``QP_FEATURE_RETRY_DELAY_S``
    seconds (default 60; was 20 minutes: a failed build rolls its days back, so retrying soon is safe, and
    the transient faults seen here, S3 resets, a restarted Spark server, last seconds to a minute)."""
    env = load_env()
    return RetryPolicy(max_retries=env.feature_max_retries, delay=env.feature_retry_delay_s)


def days_in_window(start: datetime, end: datetime) -> list[date]:
    """The UTC days of a half-open partition time window ``[start, end)``."""
    first = start.date()
    count = max(1, (end.date() - first).days)
    return [first + timedelta(days=i) for i in range(count)]
