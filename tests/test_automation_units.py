"""Declarative automation of the feature tables (``QP_FEATURE_TRIGGER=automation``, assets.automation):
the plain decision, the observing landing sensor over a fake S3, and the condition evaluated by Dagster's
own evaluator against an ephemeral instance (observations and materializations reported as the daemon's
runs would record them)."""

from datetime import UTC, datetime, timedelta

import pytest
from dagster import (
    AssetMaterialization,
    AssetObservation,
    DagsterInstance,
    DagsterRunStatus,
    MetadataValue,
    build_sensor_context,
    evaluate_automation_conditions,
)
from test_orchestration_units import _FakeS3

from qp_assets.assets.automation import LANDING_SIGNATURES, days_to_request, signature_newest
from qp_assets.assets.features import LANDING_SIGNATURE, RAW_ASSET_KEY, feature_asset_key
from qp_assets.features.transforms import TABLES

T0 = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)


def _sig(files: int, newest: datetime) -> str:
    return f"{files}:{files * 10}:{newest.isoformat()}"


def test_signature_newest_parses_the_iso_part():
    assert signature_newest(_sig(2, T0)) == T0
    assert signature_newest("0:0:") is None


def test_days_to_request_uncovered_and_not_failed_since():
    a, b, c, d = "2026-03-01", "2026-02-28", "2026-02-27", "2026-02-26"
    landed = {a: _sig(2, T0), b: _sig(1, T0), c: _sig(3, T0), d: _sig(1, T0)}
    built = {a: _sig(2, T0), b: _sig(0, T0 - timedelta(hours=1)), c: None}
    # a covered; b stale build; c a range build (no signature); d never built
    assert days_to_request(landed, built, {}) == {b, c, d}
    # b's latest run failed after its newest file: not retried; d's failed in the same second as its
    # newest file (LastModified has 1 s resolution): retried
    failed = {b: T0 + timedelta(seconds=30), d: T0 + timedelta(microseconds=900_000)}
    assert days_to_request(landed, built, failed) == {c, d}
    # a file landed after b's failed run: retried
    assert days_to_request({**landed, b: _sig(2, T0 + timedelta(minutes=1))}, built, failed) == {b, c, d}
    # a day with a run queued or in progress waits for it
    assert days_to_request(landed, built, {}, busy={b, c}) == {d}


@pytest.fixture
def automation_env(monkeypatch):
    monkeypatch.setenv("QP_FEATURE_TRIGGER", "automation")
    monkeypatch.setenv("QP_LANDING_LOOKBACK_DAYS", "1")
    monkeypatch.setenv("QP_SENSORS_RUNNING", "1")
    monkeypatch.setenv("QP_LANDING_SENSOR_WAIT_S", "0")  # evaluations with nothing to request return at once


def test_the_landing_sensor_only_observes_under_automation(automation_env):
    """Under automation the landing sensor requests no run: a changed day gives one observation of
    raw_vqe_results with every listed day's signature and a data version; nothing changed: a skip."""
    from qp_assets.assets.jobs import build_feature_job
    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.resources.core import BoundedS3Resource, LandingResource
    from qp_assets.sensors.definitions import build_sensors

    fake = _FakeS3()

    class FakeS3Resource(BoundedS3Resource):
        def get_client(self):
            return fake

    sensors = {s.name: s for s in build_sensors(build_vqe_runner_job(), build_feature_job())}
    assert "feature_automation_sensor" in sensors
    sensor = sensors["landing_sensor"]
    resources = {"s3": FakeS3Resource(), "landing": LandingResource(bucket="b")}
    today = datetime.now(UTC).date()
    prefix = f"raw/topics/vqe_result_v3.x/year={today:%Y}/month={today:%m}/day={today:%d}/hour=00/"
    fake.put(f"{prefix}f0.avro")
    fake.put(f"{prefix}f1.avro")
    with DagsterInstance.ephemeral() as instance:
        result = sensor(build_sensor_context(cursor=None, resources=resources, instance=instance))
        assert not result.run_requests
        [obs] = result.asset_events
        assert obs.asset_key == RAW_ASSET_KEY
        assert obs.metadata[LANDING_SIGNATURES].value == {
            today.isoformat(): f"2:20:{T0.replace(second=1).isoformat()}"
        }
        version = obs.tags["dagster/data_version"]
        assert len(version) == 16
        again = sensor(build_sensor_context(cursor=result.cursor, resources=resources, instance=instance))
        assert not again.asset_events and not again.run_requests and again.cursor == result.cursor
        fake.put(f"{prefix}f2.avro")
        third = sensor(build_sensor_context(cursor=result.cursor, resources=resources, instance=instance))
        assert third.asset_events[0].metadata[LANDING_SIGNATURES].value[today.isoformat()].startswith("3:30:")
        assert third.asset_events[0].tags["dagster/data_version"] != version


def _observe(instance, signatures: dict[str, str]) -> None:
    instance.report_runless_asset_event(
        AssetObservation(
            asset_key=RAW_ASSET_KEY, metadata={LANDING_SIGNATURES: MetadataValue.json(signatures)}
        )
    )


def _build(instance, day: str, signature: str | None) -> None:
    """A build of ``day`` covering ``signature`` (what a one-day run records on every table)."""
    for table in TABLES:
        metadata = {LANDING_SIGNATURE: signature} if signature is not None else {}
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=feature_asset_key(table), partition=day, metadata=metadata)
        )


def test_the_condition_requests_each_uncovered_day_once(automation_env):
    """Dagster's evaluator on the product's definitions: a landed, unbuilt day is requested for all ten
    tables (one run); not again on the next tick; nothing once a build covers its signature; again when a
    file lands after that build; a day whose latest run failed waits for a newer file."""
    from dagster._core.test_utils import create_run_for_test

    from qp_assets.definitions import build_definitions

    defs = build_definitions()
    today = datetime.now(UTC).date().isoformat()
    tables = {feature_asset_key(t) for t in TABLES}
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)  # files older than the runs below
    with DagsterInstance.ephemeral() as instance:
        cursor = None

        def evaluate() -> dict:
            nonlocal cursor
            result = evaluate_automation_conditions(defs, instance, cursor=cursor)
            cursor = result.cursor
            return {k: result.get_requested_partitions(k) for k in tables if result.get_num_requested(k)}

        assert evaluate() == {}  # nothing observed yet
        _observe(instance, {today: _sig(1, now)})
        assert evaluate() == {k: {today} for k in tables}
        assert evaluate() == {}  # requested on the previous tick: not again
        _build(instance, today, _sig(1, now))
        assert evaluate() == {}  # covered
        _observe(instance, {today: _sig(2, now)})  # a file landed after the build's last listing
        assert evaluate() == {k: {today} for k in tables}
        evaluate()
        create_run_for_test(
            instance,
            status=DagsterRunStatus.FAILURE,
            tags={"qp/kind": "features", "dagster/partition": today},
        )
        assert evaluate() == {}  # its latest run failed after the newest file: not retried every tick
        _observe(instance, {today: _sig(3, datetime.now(UTC) + timedelta(seconds=1))})
        running = create_run_for_test(
            instance,
            status=DagsterRunStatus.STARTED,
            tags={"qp/kind": "features", "dagster/partition": today},
        )
        assert evaluate() == {}  # a run of the day in progress: it, or the next evaluation after it, decides
        instance.delete_run(running.run_id)
        assert evaluate() == {k: {today} for k in tables}  # a newer file than the failed run


def test_every_feature_table_check_blocks_downstream_assets():
    """The science checks (variational bound, exact error, iterations vs results) and the data checks of the ten tables
    are blocking: a failed one fails its run, so nothing downstream of the table (the ML tables) is built
    from it in that run."""
    from qp_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    checks = {k: graph.get(k) for k in graph.asset_check_keys if k.asset_key.path[0] == "quantum_features"}
    names = {k.name for k in checks}
    science = {"variational_bound", "exact_error_consistent", "iterations_match_results"}
    assert science | {"no_null_keys", "landed_files_readable"} <= names
    assert len(checks) == len(TABLES) + 4
    assert all(node.blocking for node in checks.values()), [k for k, n in checks.items() if not n.blocking]


def test_an_evaluation_with_nothing_to_request_waits_for_a_landing():
    """The condition waits (up to the landing sensor's wait) for a newer observation and decides on it as
    soon as it is there; with nothing landing it returns nothing after the wait."""
    import threading
    import time

    from qp_assets.assets.automation import uncovered_days

    today = datetime.now(UTC).date().isoformat()
    with DagsterInstance.ephemeral() as instance:
        _observe(instance, {today: _sig(1, T0)})
        _build(instance, today, _sig(1, T0))
        started = time.monotonic()
        assert uncovered_days(instance, wait_s=1.0) == set()
        assert 0.75 <= time.monotonic() - started < 1.5
        later = threading.Timer(0.5, _observe, (instance, {today: _sig(2, T0)}))
        later.start()
        started = time.monotonic()
        try:
            assert uncovered_days(instance, wait_s=3.0) == {today}
        finally:
            later.join()
        assert 0.5 <= time.monotonic() - started < 1.5  # as soon as it was observed, not after the wait


def test_building_the_automation_sensor_shows_no_beta_warning():
    """``use_user_code_server`` is beta in Dagster 1.13; its BetaWarning (attributed to our module, so the
    CLI's filter of Dagster's own warnings missed it) was the one library warning in ``scripts/demo.sh``."""
    import warnings

    from dagster import BetaWarning, DefaultSensorStatus

    from qp_assets.assets.automation import feature_automation_sensor

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sensor = feature_automation_sensor(30, DefaultSensorStatus.STOPPED)
    assert sensor.name == "feature_automation_sensor"
    assert [w for w in seen if issubclass(w.category, BetaWarning)] == []
