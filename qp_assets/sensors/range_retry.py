"""Failed request ranges are retried until they succeed or are explicitly dead-lettered (never stranded).

The request sensor advances its cursor when it *plans* a range, so a ``vqe_runner_job`` run that fails for
good (its ``load_request_batch`` retry budget spent during a registry or broker outage, a killed worker, ...)
would otherwise leave its requests unprocessed forever. Each sensor tick therefore also looks at the recent
runs of the job, grouped by range (tags ``qp/request_topic``, ``qp/request_partition``, ``qp/offset_range``):

* a range with a successful or an unfinished run needs nothing;
* a range whose runs all failed, fewer than ``max_attempts`` of them, is requested again (run key
  ``<range run key>:attempt<N>``, same run config) once ``retry_delay_s`` passed since its last run ended;
* a range with ``max_attempts`` failed runs is dead-lettered: every message of the range whose request was
  not already handled by one of those runs (published, spooled or rejected) is copied to
  ``vqe.requests.dlq`` with its original bytes, origin and the reason ``range <topic>:<p>:[s,e) failed in N
  runs (last run <id>: <error>)``; the last run gets the tag ``qp/range_dead_lettered=true`` and the sensor
  logs the alert at ERROR. ``qp dlq replay`` resubmits such requests once the cause is fixed.

Dead-lettering reads the raw range (no registry needed) and is once per origin (``send_to_dead_letter``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from qp_assets.settings import Settings

log = logging.getLogger(__name__)

RANGE_TAGS = ("qp/request_topic", "qp/request_partition", "qp/offset_range")
ATTEMPT_TAG = "qp/range_attempt"
DEAD_TAG = "qp/range_dead_lettered"
#: How many of the job's most recent failed/canceled runs are examined per tick.
RUN_WINDOW = 200


@dataclass
class RangeRuns:
    """The runs of one offset range, newest first."""

    topic: str
    partition: int
    start: int
    end: int
    runs: list[Any] = field(default_factory=list)

    @property
    def run_key(self) -> str:
        return f"{self.topic}:{self.partition}:{self.start}-{self.end}"


@dataclass
class RangeDecision:
    retry: list[tuple[RangeRuns, int]]  # (range, attempt number of the new run)
    dead: list[RangeRuns]


def group_ranges(runs: list[Any]) -> list[RangeRuns]:
    """Runs (DagsterRun, newest first) with the range tags, grouped per range."""
    groups: dict[tuple[str, int, int, int], RangeRuns] = {}
    for run in runs:
        tags = run.tags
        if not all(t in tags for t in RANGE_TAGS):
            continue
        start, _, end = tags["qp/offset_range"].partition("-")
        try:
            key = (tags["qp/request_topic"], int(tags["qp/request_partition"]), int(start), int(end))
        except ValueError:
            continue
        groups.setdefault(key, RangeRuns(*key)).runs.append(run)
    return list(groups.values())


def decide(
    ranges: list[RangeRuns], end_times: dict[str, float | None], max_attempts: int, retry_delay_s: float,
    now: float,
) -> RangeDecision:  # fmt: skip
    """Which ranges to re-request and which to dead-letter (pure; ``end_times``: run id -> epoch s)."""
    from dagster import DagsterRunStatus

    retry, dead = [], []
    for rng in ranges:
        statuses = {r.status for r in rng.runs}
        if DagsterRunStatus.SUCCESS in statuses:
            continue
        if statuses - {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}:
            continue  # a run of the range is queued or running
        if any(r.tags.get(DEAD_TAG) == "true" for r in rng.runs):
            continue
        if len(rng.runs) >= max_attempts:
            dead.append(rng)
            continue
        ended = max((end_times.get(r.run_id) or 0.0) for r in rng.runs)
        if now - ended >= retry_delay_s:
            retry.append((rng, len(rng.runs) + 1))
    return RangeDecision(retry, dead)


def handled_request_ids(instance: Any, run_ids: list[str]) -> set[str]:
    """Request ids a ``run_vqe_request`` step of these runs already handled (published, spooled, rejected)."""
    from dagster import DagsterEventType

    out = set()
    for rid in run_ids:
        for entry in instance.all_logs(rid, of_type=DagsterEventType.STEP_OUTPUT):
            event = entry.dagster_event
            if not event.step_key.startswith("run_vqe_request"):
                continue
            meta = event.event_specific_data.metadata or {}
            if "request_id" in meta:
                out.add(str(meta["request_id"].value))
    return out


def last_error(instance: Any, run_id: str) -> str:
    """The first step failure message of a run (for the dead-letter reason), or its run failure message."""
    from dagster import DagsterEventType

    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data
        if data and data.error:
            messages, error = [], data.error
            while error is not None:  # "Exceeded max_retries" wraps the cause worth reading
                messages.append(error.message.strip())
                error = error.cause
            return f"{entry.dagster_event.step_key}: {' <- '.join(messages)}"[:1000]
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE):
        return (entry.dagster_event.message or "run failed")[:1000]
    return "run failed"


def dead_letter_range(instance: Any, rng: RangeRuns, settings: Settings, timeout_s: float = 60.0) -> int:
    """Copy the range's unhandled messages to the DLQ with the reason; tag the last run. Returns the count
    sent (messages already dead-lettered for this origin are not sent again)."""
    from qp_assets.streaming.requests import read_range_raw, send_to_dead_letter

    run_ids = [r.run_id for r in rng.runs]
    handled = handled_request_ids(instance, run_ids)
    reason = (
        f"range {rng.topic}:{rng.partition}:[{rng.start},{rng.end}) failed in {len(run_ids)} runs "
        f"(last run {run_ids[0]}: {last_error(instance, run_ids[0])})"
    )
    sent = 0
    for msg in read_range_raw(rng.topic, rng.partition, rng.start, rng.end, settings, timeout_s=timeout_s):
        key = msg.key.decode("utf8", "replace") if msg.key is not None else None
        if key is not None and key in handled:
            continue
        sent += send_to_dead_letter(
            settings, rng.topic, rng.partition, msg.offset, msg.key, msg.value, reason,
            stage="range", request_id=key, source_timestamp_ms=msg.timestamp_ms,
        )  # fmt: skip
    instance.add_run_tags(run_ids[0], {DEAD_TAG: "true"})
    log.error("%s; %d request(s) dead-lettered", reason, sent)
    return sent


def failed_range_requests(
    instance: Any, job_name: str, settings: Settings, max_attempts: int, retry_delay_s: float
) -> tuple[list[Any], list[str]]:
    """One tick: (RunRequests re-running failed ranges, alert lines for ranges dead-lettered now)."""
    from dagster import DagsterRunStatus, RunRequest, RunsFilter

    failed = instance.get_runs(
        RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]),
        limit=RUN_WINDOW,
    )
    ranges = []
    for rng in group_ranges(failed):  # every run of each range with a failure (successes included)
        tags = {t: rng.runs[0].tags[t] for t in RANGE_TAGS}
        ranges += group_ranges(instance.get_runs(RunsFilter(job_name=job_name, tags=tags)))
    if not ranges:
        return [], []
    records = instance.get_run_records(RunsFilter(run_ids=[r.run_id for rng in ranges for r in rng.runs]))
    end_times = {rec.dagster_run.run_id: rec.end_time for rec in records}
    decision = decide(ranges, end_times, max_attempts, retry_delay_s, time.time())
    requests = [
        RunRequest(
            run_key=f"{rng.run_key}:attempt{attempt}",
            run_config=rng.runs[0].run_config,
            tags={
                **{t: rng.runs[0].tags[t] for t in RANGE_TAGS},
                ATTEMPT_TAG: str(attempt),
            },
        )
        for rng, attempt in decision.retry
    ]
    alerts = []
    for rng in decision.dead:
        sent = dead_letter_range(instance, rng, settings)
        alerts.append(f"range {rng.run_key} failed {len(rng.runs)} times: {sent} request(s) dead-lettered")
    return requests, alerts
