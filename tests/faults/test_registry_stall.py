"""Registry stalled (accepts, never answers) for longer than ``load_request_batch``'s retry budget.

The runner reads the registry through a loopback :class:`FaultProxy`. While it stalls, every run of the
range fails after its whole op retry budget (the job is built with a 1-retry budget and a 2 s registry
timeout so the case stays bounded; production: 5 retries, about 6 minutes). The request sensor's cursor is
already past the range, so before the fix nothing would ever run it again. Now:

* ``test_range_retried_until_it_succeeds``: the sensor re-requests the failed range (attempt 2, still
  stalled, fails; attempt 3 after the registry answers again, succeeds); both results land once, and both
  requests end as exactly one vqe_results row each (audit green after the suite's build, test_zz_audit).
* ``test_range_dead_lettered_after_max_attempts``: the registry never comes back within
  ``QP_REQUEST_RANGE_ATTEMPTS=2`` runs: the sensor dead-letters the range's requests (reason names the
  range and the error) once and mails one alert (a local SMTP sink), a further tick sends nothing; audit
  green with exactly one DLQ entry each.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from dagster import DagsterInstance, Definitions, RetryPolicy

from tests.faults import flow
from tests.faults.tools import FaultProxy, expect, run_audit, smtp_sink

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def stalled_registry(stack, monkeypatch):
    """(settings, proxy): the runner's registry URL goes through a loopback proxy, now stalling."""
    proxy, url = FaultProxy.for_url(stack.schema_registry_url, max_lifetime_s=540)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", url)  # read by the runner's Settings.from_env()
    monkeypatch.setenv("QP_REGISTRY_TIMEOUT_S", "2")
    monkeypatch.setenv("QP_REQUEST_RANGE_RETRY_DELAY_S", "0")
    try:
        yield stack, proxy
    finally:
        proxy.close()


def _runner_job():
    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.definitions import defs

    job = build_vqe_runner_job(read_retry=RetryPolicy(max_retries=1, delay=1))
    return defs, Definitions(jobs=[job], resources=defs.resources).resolve_job_def("vqe_runner_job")


def _run_all(instance, job, requests) -> list:
    return [flow.execute(instance, job, r) for r in requests]


def test_range_retried_until_it_succeeds(stalled_registry, monkeypatch) -> None:
    settings, proxy = stalled_registry
    monkeypatch.setenv("QP_REQUEST_RANGE_ATTEMPTS", "5")
    defs, job = _runner_job()
    prefix = flow.new_prefix("regstall")
    with DagsterInstance.ephemeral() as instance:
        cursor = flow.cursor_at_end(settings)
        since = datetime.now(UTC).replace(microsecond=0)
        ids = flow.submit_h2(settings, prefix, 2)
        planned, cursor = flow.tick(instance, defs, cursor)
        assert planned and all(":attempt" not in r.run_key for r in planned)
        proxy.set_mode("stall")
        first = _run_all(instance, job, planned)
        assert [r.success for r in first] == [False] * len(planned)
        retried, cursor = flow.tick(instance, defs, cursor)
        assert sorted(r.run_key for r in retried) == sorted(f"{r.run_key}:attempt2" for r in planned)
        assert [r.success for r in _run_all(instance, job, retried)] == [False] * len(planned)
        proxy.set_mode("forward")
        back = time.monotonic()
        third, cursor = flow.tick(instance, defs, cursor)
        assert sorted(r.run_key for r in third) == sorted(f"{r.run_key}:attempt3" for r in planned)
        ok = _run_all(instance, job, third)
        assert all(r.success for r in ok)
        assert flow.tick(instance, defs, cursor)[0] == []  # nothing left to retry
        from qp_assets import e2e

        run_ids = e2e.published_run_ids(instance, [r.run_id for r in ok])
        assert len(run_ids) == 2
        flow.wait_landed(settings, run_ids, since)
        recovery = flow.monotonic_since(back)
    expect(
        "registry stalled > op retry budget", prefix, flow.today(),
        {"requests": 2, "ok_row": 2, "iceberg_rows": 2, "result_messages": 2, "dlq_entries": 0},
        recovery, settings, "sensor re-ran the range (attempt 3); recovery = registry back -> landed",
    )  # fmt: skip
    assert sorted(ids) == [f"{prefix}0", f"{prefix}1"]


def test_range_dead_lettered_after_max_attempts(stalled_registry, monkeypatch) -> None:
    settings, proxy = stalled_registry
    monkeypatch.setenv("QP_REQUEST_RANGE_ATTEMPTS", "2")
    defs, job = _runner_job()
    prefix = flow.new_prefix("regdead")
    with DagsterInstance.ephemeral() as instance:
        cursor = flow.cursor_at_end(settings)
        ids = flow.submit_h2(settings, prefix, 1)
        planned, cursor = flow.tick(instance, defs, cursor)
        assert len(planned) == 1
        proxy.set_mode("stall")
        assert not flow.execute(instance, job, planned[0]).success
        retried, cursor = flow.tick(instance, defs, cursor)
        assert [r.run_key for r in retried] == [f"{planned[0].run_key}:attempt2"]
        assert not flow.execute(instance, job, retried[0]).success
        with smtp_sink() as (inbox, port):
            monkeypatch.setenv("QP_SMTP_HOST", "127.0.0.1")
            monkeypatch.setenv("QP_SMTP_PORT", str(port))
            monkeypatch.setenv("QP_ALERT_TO", "oncall@example.test")
            assert flow.tick(instance, defs, cursor)[0] == []  # dead-lettered now, nothing re-run
            assert flow.tick(instance, defs, cursor)[0] == []  # and not sent again (nor mailed)
        (mail,) = inbox  # one alert mail, naming the range and the reason
        assert mail[1] == ["oncall@example.test"]
        assert "Subject: [qp] 1 request range(s) dead-lettered after failed runs" in mail[2]
        assert (
            f"range {planned[0].run_key.rsplit(':', 1)[0]}" in mail[2]
            and "1 request(s) dead-lettered" in mail[2]
        )
    report = run_audit(flow.today(), settings, prefix, "registry stalled > max attempts")
    assert report.green, report.violations
    assert report.counts["requests"] == 1 and report.counts["ok_dlq"] == 1
    assert report.counts["dlq_entries"] == 1 and report.counts["iceberg_rows"] == 0
    (trace,) = report.requests
    assert trace.request_id == ids[0]
    reason = trace.dlq[0].reason
    assert (
        reason.startswith(f"range {planned[0].run_key.rsplit(':', 1)[0]}:[") and "failed in 2 runs" in reason
    )
    assert "unavailable" in reason, reason
    expect("registry stalled > max range attempts", prefix, flow.today(),
           {"requests": 1, "ok_dlq": 1, "dlq_entries": 1, "iceberg_rows": 0}, None, settings,
           "range dead-lettered after 2 failed runs")  # fmt: skip
