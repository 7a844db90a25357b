"""Declarative automation of the feature tables (``QP_FEATURE_TRIGGER=automation``).

The landing sensor only observes: when a recent day's landed files change it records an observation of
``raw_vqe_results`` whose metadata ``LANDING_SIGNATURES`` holds every listed day's landing signature
(``files:bytes:newest``, ``sensors.landing.DayLanding.signature``). ``feature_automation_sensor`` then
evaluates :func:`feature_automation_condition` on the ten tables and requests one run per day that needs
one. The decision is stateless: a day is requested while its latest observed signature differs from the
signature its latest ``vqe_results`` build covered (``assets.features.LANDING_SIGNATURE``), so a file that
lands after a run's last listing is never lost (the run covers the older signature, the day is requested
again once that run ended) and a file the run caught up with costs nothing. No day is requested while a
run of it is queued or in progress (read before the builds, see :func:`_uncovered`), nor on the tick right
after it was requested.

A day whose latest feature run failed (after its retries) is requested again only once a file landed
after that run was created, so a day that cannot be built is not retried every tick.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime

from dagster import (
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationContext,
    AutomationResult,
    BetaWarning,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
)

from qp_assets.assets.run_tags import FEATURE_GROUP, FEATURE_RUN_TAGS
from qp_assets.settings import load_env

#: Metadata key of ``raw_vqe_results`` observations: JSON ``{"YYYY-MM-DD": signature}`` of the listed days
#: with files.
LANDING_SIGNATURES = "landing_signatures"

FAILED_STATUSES = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


def signature_newest(signature: str) -> datetime | None:
    """The newest ``LastModified`` of a landing signature ``files:bytes:<ISO-8601>`` (None when empty)."""
    parts = signature.split(":", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    return datetime.fromisoformat(parts[2])


def days_to_request(
    landed: Mapping[str, str],
    built: Mapping[str, str | None],
    failed_at: Mapping[str, datetime],
    busy: AbstractSet[str] = frozenset(),
) -> set[str]:
    """Days to request a feature run for. Plain logic of one evaluation.

    ``landed``: day -> latest observed signature; ``built``: day -> the signature its latest build covers
    (None: a build that recorded none, e.g. a range run); ``failed_at``: day -> creation time (UTC) of
    the day's latest feature run when that run failed or was canceled; ``busy``: days with a feature run
    queued, starting or in progress. A day is requested when it is not busy, its signature is not covered
    and, if its latest run failed, a file landed at or after that run's creation (``LastModified`` has 1 s
    resolution: the same second counts as after)."""
    out = set()
    for day, signature in landed.items():
        if day in busy or built.get(day) == signature:
            continue
        if day in failed_at:
            newest = signature_newest(signature)
            if newest is None or newest < failed_at[day].replace(microsecond=0):
                continue
        out.add(day)
    return out


def latest_landing(instance) -> tuple[int | None, dict[str, str]]:
    """(storage id, ``LANDING_SIGNATURES``) of the latest ``raw_vqe_results`` observation ((None, {}) when
    none)."""
    from dagster import AssetRecordsFilter

    from qp_assets.assets.features import RAW_ASSET_KEY

    records = instance.fetch_observations(AssetRecordsFilter(asset_key=RAW_ASSET_KEY), limit=1).records
    if not records:
        return None, {}
    entry = records[0].asset_observation.metadata.get(LANDING_SIGNATURES)
    return records[0].storage_id, (dict(entry.value) if entry is not None else {})


def latest_failed_runs(instance, days: list[str]) -> dict[str, datetime]:
    """Day -> creation time of its latest feature run (``qp/kind=features``, tag ``dagster/partition``)
    when that run failed or was canceled (one run query per day)."""
    out = {}
    for day in days:
        records = instance.get_run_records(
            RunsFilter(tags={**FEATURE_RUN_TAGS, "dagster/partition": day}), limit=1
        )
        if records and records[0].dagster_run.status in FAILED_STATUSES:
            out[day] = records[0].create_timestamp
    return out


def busy_days(instance) -> set[str]:
    """Days with a feature run (``qp/kind=features``, any launcher) queued, starting or in progress (one run
    query, the latest 200; a range run counts for each of its days)."""
    from qp_assets.sensors.definitions import PENDING_STATUSES, run_days

    runs = instance.get_runs(
        RunsFilter(tags=dict(FEATURE_RUN_TAGS), statuses=[*PENDING_STATUSES, DagsterRunStatus.STARTED]),
        limit=200,
    )
    return {day for run in runs for day in run_days(run.tags)}


def _uncovered(instance, landed: dict[str, str]) -> set[str]:
    """The runs are read before the builds: a run that ends between the two reads has materialized by the
    second, so a day is never taken as both idle and not covered by a build that just happened (which
    evaluating ``~in_progress`` separately, after this, could do)."""
    from qp_assets.assets.features import latest_builds

    busy = busy_days(instance)
    idle = [day for day in landed if day not in busy]
    built = {day: signature for day, (_run, signature) in latest_builds(instance, idle).items()}
    uncovered = [day for day in idle if built.get(day) != landed[day]]
    return days_to_request(landed, built, latest_failed_runs(instance, uncovered), busy)


def uncovered_days(instance, wait_s: float = 0.0, poll_s: float = 0.25) -> set[str]:
    """:func:`days_to_request` on what ``instance`` holds: the latest landing observation, each observed
    day's latest build and, for the uncovered days, their latest failed run.

    When no day is to be requested, waits up to ``wait_s`` seconds for a newer observation (one query every
    ``poll_s`` seconds) and decides again on it, like the waiting sensors: Dagster 1.13 starts a sensor loop
    at most every 5 s and evaluates this condition in parallel with the landing sensor's tick, so without
    the wait a landing would be acted on by the next loop, 2.5 s later on average."""
    deadline = time.monotonic() + wait_s
    seen, landed = latest_landing(instance)
    while True:
        days = _uncovered(instance, landed)
        if days:
            return days
        while True:
            if time.monotonic() + poll_s > deadline:
                return set()
            time.sleep(poll_s)
            newest, landed = latest_landing(instance)
            if newest != seen:
                seen = newest
                break


class LandingNotCovered(AutomationCondition):
    """True for the day partitions of :func:`uncovered_days` (computed once per evaluation, shared by the
    ten tables: they are requested together, one run per day), waiting up to ``QP_LANDING_SENSOR_WAIT_S``
    seconds for a landing when there is nothing to request."""

    _cache: tuple[tuple[int, datetime], frozenset[str]] | None = None

    @property
    def requires_cursor(self) -> bool:
        return False

    @property
    def name(self) -> str:
        return "landing_not_covered"

    @property
    def description(self) -> str:
        return "files landed for the day that its latest build does not cover"

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        tick = (context.evaluation_id, context.evaluation_time)  # the evaluation id alone may repeat
        cached = LandingNotCovered._cache
        if cached is None or cached[0] != tick:
            wait_s = load_env().landing_sensor_wait_s
            cached = (tick, frozenset(uncovered_days(context.asset_graph_view.instance, wait_s)))
            LandingNotCovered._cache = cached
        keys = set(cached[1]) & set(context.candidate_subset.expensively_compute_partition_keys())
        if not keys:
            return AutomationResult(context, context.get_empty_subset())
        return AutomationResult(
            context, context.candidate_subset.compute_intersection_with_partition_keys(keys)
        )


def feature_automation_condition() -> AutomationCondition:
    """Request a day of the feature tables when its landed files are not covered, no run of it is queued
    or in progress, and it was not requested on the previous tick."""
    return (
        LandingNotCovered() & ~AutomationCondition.in_progress() & ~AutomationCondition.newly_requested()
    ).with_label("landed files not covered by a build")


def feature_automation_sensor(interval_s: int, status: DefaultSensorStatus):
    """The sensor evaluating the feature tables' conditions in the code server (custom condition), every
    ``interval_s`` seconds (Dagster 1.13's sensor loop runs every 5 s at most), one run per day
    (``emit_backfills=False``: a backfill of several days would be one range run, which records no landing
    signature). ``use_user_code_server`` is a beta parameter of Dagster 1.13, chosen on purpose: its
    BetaWarning is not shown to every user who loads the definitions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return AutomationConditionSensorDefinition(
            "feature_automation_sensor",
            target=AssetSelection.groups(FEATURE_GROUP),
            default_status=status,
            minimum_interval_seconds=interval_s,
            use_user_code_server=True,
            emit_backfills=False,
            run_tags=dict(FEATURE_RUN_TAGS),
            description="Declarative automation of the feature tables: one run per day whose landed files "
            "no build covers (QP_FEATURE_TRIGGER=automation)",
        )
