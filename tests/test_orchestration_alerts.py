"""A failing feature run is retried per policy and mails its failure through a real local SMTP server
(aiosmtpd on an ephemeral loopback port); a successful run mails success."""

import socket
import time

import pytest
from aiosmtpd.controller import Controller
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context
from orchestration_helpers import feature_definitions, isolated

from qp_assets.resources.core import SmtpResource

pytestmark = [pytest.mark.services]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = _Inbox()
    with socket.socket() as probe:  # an ephemeral loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_failing_feature_run_is_retried_and_mails_failure(stack, smtp_server, monkeypatch, tmp_path):
    inbox, port = smtp_server
    monkeypatch.setenv("QP_FEATURE_MAX_RETRIES", "2")
    monkeypatch.setenv("QP_FEATURE_RETRY_DELAY_S", "0.2")
    iso = isolated(stack)
    # an unsupported catalog URI makes the Spark session factory raise before any JVM starts
    defs = feature_definitions(iso.resources(catalog_uri="bogus://nowhere"))
    job = defs.resolve_job_def("feature_processing_job")
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        started = time.monotonic()
        result = job.execute_in_process(partition_key="2026-02-03", instance=instance, raise_on_error=False)
        elapsed = time.monotonic() - started
        assert not result.success
        restarts = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_RESTARTED]
        assert len(restarts) == 2  # 1 try + 2 retries
        assert elapsed >= 0.4  # the delay between attempts was honoured
        failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert "iceberg_catalog_uri" in failures[-1].event_specific_data.error.to_string()

        from qp_assets.sensors.definitions import build_sensors

        sensors = {s.name: s for s in build_sensors(defs.resolve_job_def("feature_processing_job"), job)}
        run = instance.get_run_by_id(result.run_id)
        run_failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
        ctx = build_run_status_sensor_context(
            sensor_name="feature_run_failure_email",
            dagster_event=run_failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"smtp": SmtpResource(port=port, recipients="oncall@example.test, lead@example.test")},
        ).for_run_failure()
        sensors["feature_run_failure_email"](ctx)
    assert len(inbox.messages) == 1
    sender, rcpts, content = inbox.messages[0]
    assert rcpts == ["oncall@example.test", "lead@example.test"]
    assert "feature_processing_job FAILED: partition 2026-02-03" in content
    assert result.run_id in content and "iceberg_catalog_uri" in content


def test_success_mail(stack, smtp_server, tmp_path):
    """The success sensor's mail names job, partition and run (evaluated on a real successful run); only
    feature runs (``qp/kind=features``) are mailed."""
    inbox, port = smtp_server
    from dagster import job, op

    @op
    def noop():
        return 1

    @job(name="feature_processing_job")
    def fake_feature_job():
        noop()

    from qp_assets.sensors.definitions import build_sensors

    sensor = {s.name: s for s in build_sensors(fake_feature_job, fake_feature_job)}[
        "feature_run_success_email"
    ]
    with DagsterInstance.local_temp(str(tmp_path)) as instance:

        def run_and_evaluate(tags: dict[str, str]) -> None:
            result = fake_feature_job.execute_in_process(instance=instance, tags=tags)
            success = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
            ctx = build_run_status_sensor_context(
                sensor_name="feature_run_success_email",
                dagster_event=success,
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(result.run_id),
                resources={"smtp": SmtpResource(port=port)},
            )
            sensor(ctx)

        run_and_evaluate({"dagster/partition": "2026-02-04", "qp/kind": "features"})
        # the sensors watch every job of the location: a run that is not a feature run gets no mail
        run_and_evaluate({"dagster/partition": "2026-02-05"})
    assert len(inbox.messages) == 1
    assert "feature_processing_job SUCCEEDED: partition 2026-02-04" in inbox.messages[0][2]
