"""Sensors against the real services: the Kafka request sensor reads watermarks of a real topic and plans
exactly-once offset ranges; the landing sensor requests exactly the touched days of a real bucket."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context
from orchestration_helpers import isolated

from qp_assets.resources.core import KafkaResource, LandingResource
from qp_assets.streaming.kafka_config import client_config

pytestmark = [pytest.mark.services]


def _sensors():
    from qp_assets.assets.jobs import build_feature_job
    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.sensors.definitions import build_sensors

    return {s.name: s for s in build_sensors(build_vqe_runner_job(), build_feature_job())}


def _produce(settings, topic: str, n: int, partitions: int = 2) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(settings.kafka_bootstrap_servers))
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    producer = Producer(client_config(settings.kafka_bootstrap_servers))
    for i in range(n):
        producer.produce(topic, json.dumps({"request_id": f"r{i}"}).encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def _tick(sensor, cursor, kafka, instance):
    ctx = build_sensor_context(cursor=cursor, resources={"kafka": kafka}, instance=instance)
    started = time.monotonic()
    result = sensor(ctx)
    return result, time.monotonic() - started


def test_kafka_sensor_plans_each_offset_once(stack, monkeypatch):
    monkeypatch.setenv("QP_REQUESTS_PER_RUN", "3")
    monkeypatch.setenv("QP_REQUEST_SENSOR_START", "earliest")
    monkeypatch.setenv("QP_REQUEST_SENSOR_WAIT_S", "0")  # planning only; the wait has its own test
    topic = f"test.orch.requests.{uuid.uuid4().hex[:8]}"
    _produce(stack, topic, 7)
    sensor = _sensors()["kafka_vqe_request_sensor"]
    kafka = KafkaResource(bootstrap_servers=stack.kafka_bootstrap_servers, requests_topic=topic)
    with DagsterInstance.ephemeral() as instance:
        first, seconds = _tick(sensor, None, kafka, instance)
        assert isinstance(first, SensorResult) and seconds < 10
        keys = [r.run_key for r in first.run_requests]
        # 7 requests over 2 partitions (4 + 3), at most 3 per run
        assert keys == [f"{topic}:0:0-3", f"{topic}:0:3-4", f"{topic}:1:0-3"]
        covered = sum(
            c["end_offset"] - c["start_offset"]
            for c in (r.run_config["ops"]["load_request_batch"]["config"] for r in first.run_requests)
        )
        assert covered == 7
        # second tick, nothing new: no run requested, cursor unchanged
        second, _ = _tick(sensor, first.cursor, kafka, instance)
        assert not second.run_requests and second.cursor == first.cursor
        # two more requests: only the new offsets
        _produce_more(stack, topic, 2)
        third, _ = _tick(sensor, first.cursor, kafka, instance)
        assert [r.run_key for r in third.run_requests] == [f"{topic}:0:4-5", f"{topic}:1:3-4"]
        # re-evaluating from the older cursor re-plans the same keys -> Dagster dedups them by run key
        replay, _ = _tick(sensor, first.cursor, kafka, instance)
        assert [r.run_key for r in replay.run_requests] == [r.run_key for r in third.run_requests]


def test_kafka_sensor_new_instance_starts_at_the_end_but_reads_a_topic_created_later(stack, monkeypatch):
    """Default start: history older than the grace window is not re-run; a topic that appears after the
    first tick is read from offset 0 (the first requests on a fresh stack are not skipped)."""
    monkeypatch.delenv("QP_REQUEST_SENSOR_START", raising=False)
    monkeypatch.setenv("QP_REQUEST_SENSOR_GRACE_S", "0")
    sensor = _sensors()["kafka_vqe_request_sensor"]
    old_topic = f"test.orch.requests.{uuid.uuid4().hex[:8]}"
    _produce(stack, old_topic, 4)
    kafka = KafkaResource(bootstrap_servers=stack.kafka_bootstrap_servers, requests_topic=old_topic)
    new_topic = f"test.orch.requests.{uuid.uuid4().hex[:8]}"
    later = KafkaResource(bootstrap_servers=stack.kafka_bootstrap_servers, requests_topic=new_topic)
    with DagsterInstance.ephemeral() as instance:
        first, _ = _tick(sensor, None, kafka, instance)
        assert not first.run_requests and json.loads(first.cursor)["next"] == {"0": 2, "1": 2}
        _produce_more(stack, old_topic, 2)
        second, _ = _tick(sensor, first.cursor, kafka, instance)
        assert [r.run_key for r in second.run_requests] == [f"{old_topic}:0:2-3", f"{old_topic}:1:2-3"]

        # with the default 30 s grace, a new instance still takes the requests of the last 30 s: all 6
        monkeypatch.delenv("QP_REQUEST_SENSOR_GRACE_S")
        graced, _ = _tick(_sensors()["kafka_vqe_request_sensor"], None, kafka, instance)
        assert [r.run_key for r in graced.run_requests] == [f"{old_topic}:0:0-3", f"{old_topic}:1:0-3"]

        before, _ = _tick(sensor, None, later, instance)  # the topic does not exist yet
        assert not before.run_requests and json.loads(before.cursor) == {"topic": new_topic, "next": {}}
        _produce(stack, new_topic, 3)
        after, _ = _tick(sensor, before.cursor, later, instance)
        assert [r.run_key for r in after.run_requests] == [f"{new_topic}:0:0-2", f"{new_topic}:1:0-1"]


def test_kafka_sensor_tick_waits_for_a_request_and_returns_when_it_arrives(stack, monkeypatch):
    """The daemon starts a sensor loop at most every 5 s: a tick with nothing new waits up to
    QP_REQUEST_SENSOR_WAIT_S for a request and returns as soon as one is on the topic."""
    import threading

    monkeypatch.setenv("QP_REQUEST_SENSOR_START", "earliest")
    monkeypatch.setenv("QP_REQUEST_SENSOR_WAIT_S", "4")
    topic = f"test.orch.requests.{uuid.uuid4().hex[:8]}"
    _produce(stack, topic, 2)
    sensor = _sensors()["kafka_vqe_request_sensor"]
    kafka = KafkaResource(bootstrap_servers=stack.kafka_bootstrap_servers, requests_topic=topic)
    with DagsterInstance.ephemeral() as instance:
        first, seconds = _tick(sensor, None, kafka, instance)  # requests there: no wait
        assert [r.run_key for r in first.run_requests] == [f"{topic}:0:0-1", f"{topic}:1:0-1"] and seconds < 3
        later = threading.Timer(1.0, _produce_more, (stack, topic, 1))
        later.start()
        try:
            second, seconds = _tick(sensor, first.cursor, kafka, instance)
        finally:
            later.join()
        assert [r.run_key for r in second.run_requests] == [f"{topic}:0:1-2"]
        assert 1.0 <= seconds < 3.0  # returned once the request was there, not after the 4 s wait
        third, seconds = _tick(sensor, second.cursor, kafka, instance)  # nothing comes: waits, skips
        assert not third.run_requests and third.cursor == second.cursor and 4.0 <= seconds < 6.0


def _produce_more(settings, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(client_config(settings.kafka_bootstrap_servers))
    for i in range(n):
        producer.produce(topic, b"{}", partition=i % 2)
    assert producer.flush(30) == 0


def test_landing_sensor_requests_exactly_the_touched_days(stack, monkeypatch):
    from qp_assets.features.golden import make_result, write_landed_file

    monkeypatch.setenv(
        "QP_FEATURE_TRIGGER", "sensor"
    )  # the opt-out (automation: tests/test_automation_units.py)
    monkeypatch.setenv("QP_LANDING_LOOKBACK_DAYS", "3")
    monkeypatch.setenv("QP_LANDING_SENSOR_WAIT_S", "0")  # the waiting tick: next test
    iso = isolated(stack)
    sensor = _sensors()["landing_sensor"]
    resources = {
        "s3": iso.resources()["s3"],
        "landing": LandingResource(bucket=stack.bucket, raw_prefix=iso.raw_prefix),
    }
    today = datetime.now(UTC).replace(hour=0, minute=30, second=0, microsecond=0)
    sink = iso.sink()
    try:
        with DagsterInstance.ephemeral() as instance:
            empty = sensor(build_sensor_context(cursor=None, resources=resources, instance=instance))
            assert not empty.run_requests
            two_days_ago = today - timedelta(days=2)
            write_landed_file(sink, [make_result(1, two_days_ago)], offset=0)
            write_landed_file(sink, [make_result(2, today)], offset=1)
            first = sensor(build_sensor_context(cursor=empty.cursor, resources=resources, instance=instance))
            assert sorted(r.partition_key for r in first.run_requests) == sorted(
                [two_days_ago.date().isoformat(), today.date().isoformat()]
            )
            again = sensor(build_sensor_context(cursor=first.cursor, resources=resources, instance=instance))
            assert not again.run_requests
            write_landed_file(sink, [make_result(3, today)], offset=2, topic="vqe_result_v3.other-config")
            third = sensor(build_sensor_context(cursor=first.cursor, resources=resources, instance=instance))
            assert [r.partition_key for r in third.run_requests] == [today.date().isoformat()]
            # a queued (not yet started) run of today lists the new files itself: nothing more requested
            from qp_assets.sensors.definitions import FeatureRunState, landing_sensor_result

            write_landed_file(sink, [make_result(4, today)], offset=3)
            pending = FeatureRunState(pending=frozenset({today.date().isoformat()}))
            held = landing_sensor_result(
                third.cursor, resources["s3"], resources["landing"], 3, "2026-01-01", pending
            )
            assert (
                not held.run_requests
                and "a queued run or the last build covers" in held.skip_reason.skip_message
            )
    finally:
        iso.cleanup()


def test_landing_sensor_tick_waits_for_a_landing(stack, monkeypatch):
    """A tick with nothing new lists again every second for up to QP_LANDING_SENSOR_WAIT_S and returns as soon
    as a file lands; with nothing landing it skips after the wait, cursor unchanged."""
    from qp_assets.features.golden import make_result, write_landed_file

    monkeypatch.setenv("QP_FEATURE_TRIGGER", "sensor")
    monkeypatch.setenv("QP_LANDING_LOOKBACK_DAYS", "1")
    monkeypatch.setenv("QP_LANDING_SENSOR_WAIT_S", "4")
    iso = isolated(stack)
    sensor = _sensors()["landing_sensor"]
    resources = {
        "s3": iso.resources()["s3"],
        "landing": LandingResource(bucket=stack.bucket, raw_prefix=iso.raw_prefix),
    }
    today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sink = iso.sink()

    def tick(cursor, instance):
        started = time.monotonic()
        result = sensor(build_sensor_context(cursor=cursor, resources=resources, instance=instance))
        return result, time.monotonic() - started

    try:
        with DagsterInstance.ephemeral() as instance:
            first, seconds = tick(None, instance)  # first tick: places the cursor, never waits
            assert not first.run_requests and seconds < 3
            later = threading.Timer(1.0, write_landed_file, (sink, [make_result(1, today)]), {"offset": 0})
            later.start()
            try:
                second, seconds = tick(first.cursor, instance)
            finally:
                later.join()
            assert [r.partition_key for r in second.run_requests] == [today.date().isoformat()]
            assert 1.0 <= seconds < 3.5  # returned once the file was there, not after the 4 s wait
            third, seconds = tick(second.cursor, instance)  # nothing lands: waits, skips
            assert not third.run_requests and third.cursor == second.cursor and 3.0 <= seconds < 6.5
    finally:
        iso.cleanup()


def test_raw_source_observation_counts_files_and_bytes_per_day(stack):
    from dagster._core.definitions.observe import observe  # the public UI/daemon path runs the same op

    from qp_assets.assets.raw import raw_vqe_results
    from qp_assets.features.golden import make_result, write_landed_file

    iso = isolated(stack)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    sink = iso.sink()
    try:
        for i in range(3):
            write_landed_file(sink, [make_result(i, now)], offset=i)
        client = iso.s3()
        sizes = [
            o["Size"]
            for o in client.list_objects_v2(Bucket=stack.bucket, Prefix=iso.raw_prefix).get("Contents", [])
        ]
        resources = {
            "s3": iso.resources()["s3"],
            "landing": LandingResource(bucket=stack.bucket, raw_prefix=iso.raw_prefix),
        }
        with DagsterInstance.ephemeral() as instance:
            result = observe([raw_vqe_results], instance=instance, resources=resources)
            assert result.success
            obs = result.asset_observations_for_node("raw_vqe_results")[0]
        assert obs.metadata["files"].value == 3
        assert obs.metadata["bytes"].value == sum(sizes)
        assert obs.metadata["per_day"].value[now.date().isoformat()] == {"files": 3, "bytes": sum(sizes)}
    finally:
        iso.cleanup()
