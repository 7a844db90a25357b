"""The Kafka request sensor on a fake Kafka (fast tier, no services, ~1 s in all): the same sensor as
``tests/test_orchestration_sensors.py`` drives on the real broker, built by ``build_sensors`` and ticked with
``build_sensor_context``; the fake implements ``KafkaResource``'s three read methods over an in-memory log."""

from __future__ import annotations

import json
import time
from typing import ClassVar

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from qp_assets.resources.core import KafkaResource


class FakeKafka(KafkaResource):
    """Topics as lists of record timestamps (ms) per partition; ``arrivals`` land during a tick's wait."""

    logs: ClassVar[dict[str, dict[int, list[int]]]] = {}
    arrivals: ClassVar[dict[str, dict[int, int]]] = {}

    def watermarks(self, topic=None):
        return {p: (0, len(ts)) for p, ts in self.logs.get(topic or self.requests_topic, {}).items()}

    def wait_for_new_offsets(self, topic, next_offsets, wait_s):
        for partition, n in self.arrivals.pop(topic, {}).items():
            produce(topic, {partition: n})
        return self.watermarks(topic)

    def offsets_at_time(self, topic, partitions, timestamp_ms):
        log = self.logs.get(topic, {})
        return {p: next((i for i, t in enumerate(log.get(p, [])) if t >= timestamp_ms), len(log.get(p, [])))
                for p in partitions}  # fmt: skip


def produce(topic: str, counts: dict[int, int], age_s: float = 0.0) -> None:
    stamp = int((time.time() - age_s) * 1000)
    for partition, n in counts.items():
        FakeKafka.logs.setdefault(topic, {}).setdefault(partition, []).extend([stamp] * n)


@pytest.fixture
def sensor(monkeypatch):
    from qp_assets.assets.jobs import build_feature_job
    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.sensors.definitions import build_sensors

    FakeKafka.logs.clear()
    FakeKafka.arrivals.clear()

    def build(**env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        sensors = build_sensors(build_vqe_runner_job(), build_feature_job())
        return next(s for s in sensors if s.name == "kafka_vqe_request_sensor")

    return build


def tick(sensor, cursor, topic, instance) -> SensorResult:
    kafka = FakeKafka(bootstrap_servers="fake:9092", requests_topic=topic)
    return sensor(build_sensor_context(cursor=cursor, resources={"kafka": kafka}, instance=instance))


def keys(result: SensorResult) -> list[str]:
    return [r.run_key for r in result.run_requests or []]


def test_each_offset_is_planned_once_in_batches(sensor) -> None:
    s = sensor(QP_REQUESTS_PER_RUN="3", QP_REQUEST_SENSOR_START="earliest", QP_REQUEST_SENSOR_WAIT_S="0")
    produce("t", {0: 4, 1: 3})
    with DagsterInstance.ephemeral() as instance:
        first = tick(s, None, "t", instance)
        assert keys(first) == ["t:0:0-3", "t:0:3-4", "t:1:0-3"]
        config = first.run_requests[0].run_config["ops"]["load_request_batch"]["config"]
        assert config == {"topic": "t", "partition": 0, "start_offset": 0, "end_offset": 3}
        again = tick(s, first.cursor, "t", instance)
        assert keys(again) == [] and "no new requests on t" in again.skip_reason.skip_message
        produce("t", {1: 2})
        assert keys(tick(s, again.cursor, "t", instance)) == ["t:1:3-5"]
        assert keys(tick(s, first.cursor, "t", instance)) == ["t:1:3-5"]  # same cursor, same run keys


def test_a_new_instance_starts_at_the_grace_window_and_a_later_topic_at_zero(sensor) -> None:
    s = sensor(QP_REQUEST_SENSOR_GRACE_S="30", QP_REQUEST_SENSOR_WAIT_S="0")
    produce("old", {0: 2, 1: 2}, age_s=3600)  # history another instance processed
    produce("old", {0: 1})  # submitted just before the first tick
    with DagsterInstance.ephemeral() as instance:
        first = tick(s, None, "old", instance)
        assert keys(first) == ["old:0:2-3"] and json.loads(first.cursor)["next"] == {"0": 3, "1": 2}
        before = tick(s, None, "later", instance)  # the topic does not exist yet
        assert keys(before) == [] and json.loads(before.cursor) == {"topic": "later", "next": {}}
        produce("later", {0: 2, 1: 1})
        assert keys(tick(s, before.cursor, "later", instance)) == ["later:0:0-2", "later:1:0-1"]


def test_a_tick_waits_for_a_request_but_not_on_the_first_tick(sensor) -> None:
    s = sensor(QP_REQUEST_SENSOR_START="earliest", QP_REQUEST_SENSOR_WAIT_S="4")
    produce("w", {0: 1})
    with DagsterInstance.ephemeral() as instance:
        FakeKafka.arrivals["w"] = {0: 1}
        first = tick(s, None, "w", instance)
        assert keys(first) == ["w:0:0-1"] and "w" in FakeKafka.arrivals  # no wait: there was work
        second = tick(s, first.cursor, "w", instance)  # nothing new: waits, the request arrives meanwhile
        assert keys(second) == ["w:0:1-2"] and "w" not in FakeKafka.arrivals


def test_bad_sensor_settings_fail_at_definition_naming_the_variable(sensor) -> None:
    from qp_assets.settings import SettingsError

    with pytest.raises(
        SettingsError, match="QP_REQUEST_SENSOR_START='middle' is not one of earliest, latest"
    ):
        sensor(QP_REQUEST_SENSOR_START="middle")
