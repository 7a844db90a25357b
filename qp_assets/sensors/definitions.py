"""Dagster sensors: Kafka requests -> vqe_runner_job, landed files -> feature partitions, run e-mails."""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from qp_assets.resources.core import BoundedS3Resource, KafkaResource, LandingResource, SmtpResource
from qp_assets.sensors.kafka_offsets import dump_cursor, parse_cursor, plan_ranges
from qp_assets.sensors.landing import (
    DayLanding,
    changed_days,
    landed_data_version,
    landed_per_day,
    landed_signatures,
    recent_days,
)
from qp_assets.settings import load_env


def _default_status() -> DefaultSensorStatus:
    """Sensors start RUNNING under the daemon unless ``QP_SENSORS_RUNNING=0``."""
    return DefaultSensorStatus.STOPPED if not load_env().sensors_running else DefaultSensorStatus.RUNNING


def job_sensor(name: str, job, interval_s: int, description: str):
    """``@sensor`` decorator of a sensor that starts runs of ``job``, ticking at most every ``interval_s``
    seconds, started per :func:`_default_status` (``QP_SENSORS_RUNNING``)."""
    return sensor(
        name=name,
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=_default_status(),
        description=description,
    )


def _mail_status() -> DefaultSensorStatus:
    """E-mail sensors run by default only when an SMTP host is configured (``QP_SMTP_HOST``)."""
    if not load_env().smtp_host:
        return DefaultSensorStatus.STOPPED
    return _default_status()


#: On a new instance's first tick, ``latest`` still takes requests stamped this many seconds before the
#: tick (``QP_REQUEST_SENSOR_GRACE_S``): a request submitted right after ``dagster dev`` started, before
#: the daemon's first tick, is not skipped.
DEFAULT_START_GRACE_S = 30

#: How long one tick of the request sensor waits for a new request (``QP_REQUEST_SENSOR_WAIT_S``, default 5 s,
#: at most 30 so a tick ends well within Dagster's 60 s sensor gRPC timeout; ``qp_assets.settings.Env``).
#: Dagster 1.13's sensor daemon starts its evaluation loop at most every 5 s (``MIN_INTERVAL_LOOP_TIME``,
#: not configurable; a smaller ``minimum_interval_seconds`` changes nothing), so a tick that returned at once
#: would see a request on average 2.5 s late. Waiting inside the tick, re-reading the watermarks every
#: 0.25 s, covers the gap until the next loop: a request is seen within ~0.3 s.


#: SMTP timeout (s, per socket operation) of the dead-lettered-range mail sent from a sensor tick: a tick
#: must end well within Dagster's 60 s sensor gRPC timeout.
ALERT_SMTP_TIMEOUT_S = 5.0


def mail_dead_lettered(alerts: list[str], log=None) -> bool:
    """Mail the ranges dead-lettered this tick (one mail) to ``QP_ALERT_TO`` through ``QP_SMTP_HOST``.

    Never raises: the requests are already in the DLQ and the alert was logged at ERROR; a mail that
    cannot be sent is logged (naming the server) and the tick goes on. Returns whether it was sent."""
    from qp_assets.resources.core import smtp_resource

    smtp = smtp_resource(timeout_s=ALERT_SMTP_TIMEOUT_S)
    subject = f"[qp] {len(alerts)} request range(s) dead-lettered after failed runs"
    body = (
        "\n".join(alerts)
        + "\n\nThe requests are in the dead-letter topic: `qp dlq list` shows them with the reason."
    )
    try:
        smtp.send(subject, body)
        return True
    except Exception as exc:  # noqa: BLE001 - the alert is logged either way; a tick never fails on mail
        if log is not None:
            log.error(f"dead-lettered range alert not mailed via SMTP {smtp.host}:{smtp.port}: {exc}")
        return False


def request_sensor_result(
    cursor: str | None,
    kafka: KafkaResource,
    max_per_run: int,
    start: str,
    grace_s: int = DEFAULT_START_GRACE_S,
    instance=None,
    job_name: str = "vqe_runner_job",
    log=None,
    wait_s: float = 0.0,
) -> SensorResult | SkipReason:
    """One tick of the Kafka request sensor (watermarks only; see kafka_offsets).

    When nothing new is there, the tick waits up to ``wait_s`` seconds for a request and returns as soon as
    one arrives (never on the very first tick of an instance, which only places the cursor).

    ``start`` applies to the partitions that exist at the sensor's very first tick (no cursor yet):
    ``latest`` (the default) starts a new instance at the requests stamped in the last ``grace_s`` seconds,
    so history another instance or ``qp e2e`` already processed is not re-run; ``earliest`` re-runs all
    retained history. Partitions that appear later (the topic created after the sensor started, or grown)
    start at their beginning: every request submitted while the sensor runs is processed.

    With ``instance``, ranges whose runs failed are requested again or, after ``QP_REQUEST_RANGE_ATTEMPTS``
    (default 5) failed runs, dead-lettered with an ERROR alert (``sensors.range_retry``); the retry waits
    ``QP_REQUEST_RANGE_RETRY_DELAY_S`` (default 60) after the last run ended. Both are read at each tick.
    """
    started = time.monotonic()
    topic = kafka.requests_topic
    marks = kafka.watermarks(topic)
    if not marks:
        return SensorResult(
            skip_reason=SkipReason(f"topic {topic} has no partitions yet"), cursor=dump_cursor(topic, {})
        )
    next_offsets = parse_cursor(cursor, topic)
    if not cursor and start == "latest":
        since_ms = int((time.time() - grace_s) * 1000)
        next_offsets = kafka.offsets_at_time(topic, sorted(marks), since_ms)
    ranges, planned = plan_ranges(topic, next_offsets, marks, max_per_run)
    retries: list[RunRequest] = []
    if instance is not None:
        from qp_assets.sensors.range_retry import failed_range_requests

        env = load_env()
        retries, alerts = failed_range_requests(
            instance,
            job_name,
            kafka.settings(),
            env.request_range_attempts,
            float(env.request_range_retry_delay_s),
        )
        for alert in alerts:
            if log is not None:
                log.error(alert)
        if alerts and env.smtp_host:
            mail_dead_lettered(alerts, log)
    if not ranges and not retries and cursor and wait_s > 0:
        marks = kafka.wait_for_new_offsets(topic, next_offsets, wait_s) or marks
        ranges, planned = plan_ranges(topic, next_offsets, marks, max_per_run)
    new_cursor = dump_cursor(topic, planned)
    if not ranges and not retries:
        return SensorResult(
            skip_reason=SkipReason(f"no new requests on {topic} ({time.monotonic() - started:.2f}s)"),
            cursor=new_cursor,
        )
    requests = [
        RunRequest(
            run_key=r.run_key,
            run_config={
                "ops": {
                    "load_request_batch": {
                        "config": {
                            "topic": r.topic,
                            "partition": r.partition,
                            "start_offset": r.start,
                            "end_offset": r.end,
                        }
                    }
                }
            },
            tags={
                "qp/request_topic": r.topic,
                "qp/request_partition": str(r.partition),
                "qp/offset_range": f"{r.start}-{r.end}",
            },
        )
        for r in ranges
    ]
    return SensorResult(run_requests=requests + retries, cursor=new_cursor)


@dataclass(frozen=True)
class FeatureRunState:
    """What the instance says about the feature runs of the days whose landed files changed.

    ``pending``: days with a feature run that has not started yet (it lists the landed files when it starts);
    ``running``: day -> ids of its feature runs in progress; ``built``: day -> (run id, landing signature it
    covers or None) of the day's latest ``vqe_results`` materialization (see
    ``qp_assets.assets.features.LANDING_SIGNATURE``)."""

    pending: frozenset[str] = frozenset()
    running: Mapping[str, frozenset[str]] = field(default_factory=dict)
    built: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)


def plan_landing(
    changed: list[date], signatures: Mapping[date, str], state: FeatureRunState
) -> tuple[list[date], list[date], list[date]]:
    """Split the changed days into (request a run, covered, held). Plain logic of one landing-sensor tick.

    * covered: a run of the day has not started yet (it will list the new files), or the day's latest build
      already covers the current signature (a run caught up with the files landed during its build);
    * held: a run of the day is in progress and has not reported its tables yet, so it is still building
      and catches up with the new files itself (``build_until_caught_up``); the day stays changed and is
      looked at again by the next tick, after that run ended;
    * request: anything else, including a run in progress whose build has already reported without them
      (its follow-up then queues behind it).
    """
    request, covered, held = [], [], []
    for d in changed:
        iso = d.isoformat()
        run_id, signature = state.built.get(iso, (None, None))
        if iso in state.pending or signature == signatures[d]:
            covered.append(d)
        elif iso in state.running and run_id not in state.running[iso]:
            held.append(d)
        else:
            request.append(d)
    return request, covered, held


def list_until_changed(
    cursor: str | None,
    s3: BoundedS3Resource,
    landing: LandingResource,
    lookback_days: int,
    first_day: str,
    wait_s: float,
    poll_s: float,
) -> tuple[dict[date, DayLanding], list[date], str]:
    """List the recent days' landings (days from ``first_day`` on); when none changed against ``cursor``,
    list again every ``poll_s`` seconds for up to ``wait_s`` seconds (never on an instance's first tick,
    which only places the cursor). Returns (landings per day, changed days, new cursor)."""
    days = [d for d in recent_days(datetime.now(UTC).date(), lookback_days) if d.isoformat() >= first_day]
    client = s3.get_client()
    deadline = time.monotonic() + wait_s
    while True:
        landed = landed_per_day(client, landing.bucket, landing.raw_prefix, days)
        changed, new_cursor = changed_days(cursor, landed)
        if changed or not cursor or time.monotonic() + poll_s > deadline:
            return landed, changed, new_cursor
        time.sleep(poll_s)


def landing_observer_result(
    cursor: str | None,
    s3: BoundedS3Resource,
    landing: LandingResource,
    lookback_days: int,
    first_day: str,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
) -> SensorResult:
    """One tick of the landing sensor under ``QP_FEATURE_TRIGGER=automation``: no run requests; when a
    recent day's landed files changed (listed as :func:`list_until_changed` does), one observation of
    ``raw_vqe_results`` with the listed days' signatures (``assets.automation.LANDING_SIGNATURES``) and
    their data version, which ``feature_automation_sensor`` turns into runs."""
    from qp_assets.assets.automation import LANDING_SIGNATURES
    from qp_assets.assets.features import RAW_ASSET_KEY

    landed, changed, new_cursor = list_until_changed(
        cursor, s3, landing, lookback_days, first_day, wait_s, poll_s
    )
    if not changed:
        return SensorResult(skip_reason=SkipReason("no new landed files"), cursor=new_cursor)
    observation = AssetObservation(
        asset_key=RAW_ASSET_KEY,
        metadata={
            LANDING_SIGNATURES: MetadataValue.json(landed_signatures(landed)),
            "changed_days": [d.isoformat() for d in changed],
        },
        tags={DATA_VERSION_TAG: landed_data_version(landed)},
    )
    return SensorResult(asset_events=[observation], cursor=new_cursor)


def landing_sensor_result(
    cursor: str | None,
    s3: BoundedS3Resource,
    landing: LandingResource,
    lookback_days: int,
    first_day: str,
    run_state: FeatureRunState | Callable[[list[date]], FeatureRunState] | None = None,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
) -> SensorResult | SkipReason:
    """One tick of the landing sensor: partitions of the recent days whose landed files changed.

    ``run_state`` (or a callable asked with the changed days at the moment a change is seen) says which of
    them already have a run covering the change (see :func:`plan_landing`). When nothing changed, the tick
    lists again every ``poll_s`` seconds for up to ``wait_s`` seconds and returns as soon as a file lands
    (never on an instance's first tick, which only places the cursor): the sensor loop starts at most every
    5 s, so a tick that returned at once would see a landing 2.5 s late on average.
    """
    landed, changed, new_cursor = list_until_changed(
        cursor, s3, landing, lookback_days, first_day, wait_s, poll_s
    )
    state = (run_state(changed) if callable(run_state) else run_state) or FeatureRunState()
    request, covered, held = plan_landing(changed, {d: landed[d].signature() for d in changed}, state)
    if held:  # looked at again next tick: keep their previous signature in the cursor
        previous = json.loads(cursor) if cursor else {}
        kept = json.loads(new_cursor)
        for d in held:
            kept.pop(d.isoformat(), None)
            if d.isoformat() in previous:
                kept[d.isoformat()] = previous[d.isoformat()]
        new_cursor = json.dumps(kept, sort_keys=True)
    if not request:
        reason = "; ".join(
            part
            for part in (
                "no new landed files" if not changed else "",
                f"new files for {_isos(covered)}: a queued run or the last build covers them"
                if covered
                else "",
                f"new files for {_isos(held)}: the run in progress catches up with them" if held else "",
            )
            if part
        )
        return SensorResult(skip_reason=SkipReason(reason), cursor=new_cursor)
    requests = [
        RunRequest(run_key=f"landing:{d.isoformat()}:{landed[d].signature()}", partition_key=d.isoformat())
        for d in request
    ]
    return SensorResult(run_requests=requests, cursor=new_cursor)


def _isos(days: list[date]) -> str:
    return ", ".join(d.isoformat() for d in days)


#: Feature runs in these states have not listed the landed files yet: they will read the newest ones.
PENDING_STATUSES = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING)


def run_days(tags: dict[str, str]) -> set[str]:
    """ISO days a run covers: its ``dagster/partition``, or every day of its partition range tags."""
    if tags.get("dagster/partition"):
        return {tags["dagster/partition"]}
    first, last = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    if not first or not last:
        return set()
    try:
        day, end = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError:  # not a daily range: covers no day
        return set()
    days = set()
    while day <= end:
        days.add(day.isoformat())
        day += timedelta(days=1)
    return days


def feature_run_state(instance, days: list[date]) -> FeatureRunState:
    """The feature runs (``qp/kind=features``, whichever way they were launched: landing sensor, schedule,
    UI Materialize, backfills) of ``days`` that have not started yet or are in progress (one run query,
    the latest 200), and each day's latest ``vqe_results`` materialization (one event query per day)."""
    from dagster import RunsFilter

    from qp_assets.assets.features import latest_builds
    from qp_assets.assets.run_tags import FEATURE_RUN_TAGS

    if not days:
        return FeatureRunState()
    runs = instance.get_runs(
        RunsFilter(tags=dict(FEATURE_RUN_TAGS), statuses=[*PENDING_STATUSES, DagsterRunStatus.STARTED]),
        limit=200,
    )
    pending: set[str] = set()
    running: dict[str, set[str]] = {}
    for r in runs:
        for day in run_days(r.tags):
            if r.status == DagsterRunStatus.STARTED:
                running.setdefault(day, set()).add(r.run_id)
            else:
                pending.add(day)
    built = latest_builds(instance, [d.isoformat() for d in days])
    return FeatureRunState(frozenset(pending), {d: frozenset(ids) for d, ids in running.items()}, built)


def is_feature_run(run) -> bool:
    """Whether ``run`` builds feature tables (``qp/kind=features``, ``assets.run_tags``), however launched."""
    from qp_assets.assets.run_tags import FEATURE_RUN_TAGS

    return all(run.tags.get(k) == v for k, v in FEATURE_RUN_TAGS.items())


def _run_mail(context: RunStatusSensorContext, status: str, error: str | None = None) -> tuple[str, str]:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition") or (
        f"{run.tags.get('dagster/asset_partition_range_start')}..{run.tags.get('dagster/asset_partition_range_end')}"
        if run.tags.get("dagster/asset_partition_range_start")
        else "-"
    )
    subject = f"[qp] {run.job_name} {status}: partition {partition} (run {run.run_id[:8]})"
    body = f"job: {run.job_name}\nrun id: {run.run_id}\nstatus: {status}\npartition: {partition}\n"
    if error:
        body += f"\nerror:\n{error}\n"
    return subject, body


def build_sensors(vqe_runner_job, feature_job) -> list:
    """All sensors, bound to the given jobs."""
    env = load_env()
    max_per_run, start = env.requests_per_run, env.request_sensor_start
    grace_s, wait_s = env.request_sensor_grace_s, env.request_sensor_wait_s

    @job_sensor(
        "kafka_vqe_request_sensor",
        vqe_runner_job,
        env.request_sensor_interval_s,
        "Watermarks of vqe.requests -> one vqe_runner_job run per new offset range",
    )
    def kafka_vqe_request_sensor(context: SensorEvaluationContext, kafka: KafkaResource):
        return request_sensor_result(
            context.cursor,
            kafka,
            max_per_run,
            start,
            grace_s,
            context.instance,
            vqe_runner_job.name,
            context.log,
            wait_s,
        )

    from qp_assets.assets.partitions import partitions_start_date

    first_day = partitions_start_date()
    lookback = env.landing_lookback_days

    landing_sensors = (
        _automation_landing_sensors(env, lookback, first_day)
        if env.feature_trigger == "automation"
        else [_landing_run_sensor(env, feature_job, lookback, first_day)]
    )

    # Every job of the location, filtered by kind: feature runs are feature_processing_job's (sensor,
    # schedule) or the implicit asset job's (declarative automation, UI Materialize, asset backfills).
    @run_failure_sensor(
        name="feature_run_failure_email",
        monitored_jobs=None,
        default_status=_mail_status(),
        minimum_interval_seconds=5,
    )
    def feature_run_failure_email(context: RunFailureSensorContext, smtp: SmtpResource):
        if not is_feature_run(context.dagster_run):
            return SkipReason(f"run {context.dagster_run.run_id} is not a feature run")
        error = context.failure_event.message if context.failure_event else None
        step_errors = []
        for event in context.get_step_failure_events():
            data = event.step_failure_data
            detail = data.error.to_string() if data and data.error else event.message
            step_errors.append(f"step {event.step_key}:\n{detail[-4000:]}")
        subject, body = _run_mail(context, "FAILED", "\n".join([error or "", *step_errors]))
        smtp.send(subject, body)

    @run_status_sensor(
        name="feature_run_success_email",
        run_status=DagsterRunStatus.SUCCESS,
        monitored_jobs=None,
        default_status=_mail_status(),
        minimum_interval_seconds=5,
    )
    def feature_run_success_email(context: RunStatusSensorContext, smtp: SmtpResource):
        if not is_feature_run(context.dagster_run):
            return SkipReason(f"run {context.dagster_run.run_id} is not a feature run")
        subject, body = _run_mail(context, "SUCCEEDED")
        smtp.send(subject, body)

    return [kafka_vqe_request_sensor, *landing_sensors, feature_run_failure_email, feature_run_success_email]


def _landing_run_sensor(env, feature_job, lookback: int, first_day: str):
    """``QP_FEATURE_TRIGGER=sensor``: the landing sensor requests the feature runs itself."""

    @job_sensor(
        "landing_sensor",
        feature_job,
        env.landing_sensor_interval_s,
        "New files under the recent day prefixes -> feature partitions of those days",
    )
    def landing_sensor(context: SensorEvaluationContext, s3: BoundedS3Resource, landing: LandingResource):
        return landing_sensor_result(
            context.cursor,
            s3,
            landing,
            lookback,
            first_day,
            lambda changed: feature_run_state(context.instance, changed),
            wait_s=load_env().landing_sensor_wait_s,
        )

    return landing_sensor


def _automation_landing_sensors(env, lookback: int, first_day: str) -> list:
    """``QP_FEATURE_TRIGGER=automation``: the landing sensor only observes ``raw_vqe_results``;
    ``feature_automation_sensor`` (``assets.automation``) requests the runs."""
    from qp_assets.assets.automation import feature_automation_sensor

    @sensor(
        name="landing_sensor",
        minimum_interval_seconds=env.landing_sensor_interval_s,
        default_status=_default_status(),
        description="New files under the recent day prefixes -> an observation of raw_vqe_results",
    )
    def landing_sensor(context: SensorEvaluationContext, s3: BoundedS3Resource, landing: LandingResource):
        return landing_observer_result(
            context.cursor, s3, landing, lookback, first_day, wait_s=load_env().landing_sensor_wait_s
        )

    return [landing_sensor, feature_automation_sensor(env.landing_sensor_interval_s, _default_status())]
