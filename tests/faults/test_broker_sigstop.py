"""Broker SIGSTOPped during a range read (issue 14): no request lost or run twice.

Two requests are planned by the real request sensor (one range, or one per partition their ids hash to,
run one after the other); the broker's process group is SIGSTOPped for ``STOP_S`` seconds just as the
first range's run starts (``load_request_batch`` reading the range
blocks on it), then SIGCONT (guaranteed by ``tools.stopped``).

The issue's 90 s, with the product's settings: longer than the read's budget (``QP_REQUEST_READ_TIMEOUT_S``,
60 s), so the first attempt fails with a TimeoutError while the broker is still stopped,
``load_request_batch``'s own retry (the product's policy: 10 s later) starts while it is still stopped, and
that attempt's read waits for the broker within its budget (attempt 1 times out at about 61 s, attempt 2
starts at about 71 s and reads once the broker answers at 90 s). The run succeeds after exactly one retry
of the read, runs both VQEs and publishes each result once; the next sensor tick re-requests nothing. Each
request ends as exactly one vqe_results row (audit after the suite's build, test_zz_audit). Recovery =
SIGCONT -> both landed. About 105 s.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from dagster import DagsterEventType, DagsterInstance

from qp_assets import e2e
from qp_assets.stack.launcher import our_process_groups
from tests.faults import flow
from tests.faults.tools import expect, stopped

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]
STOP_S = 90.0
READ_BUDGET_S = 60  # the product's default, set explicitly so a user's environment cannot change the case


def test_broker_sigstop_during_range_read(stack, monkeypatch) -> None:
    from qp_assets.definitions import defs

    settings = stack
    job = defs.resolve_job_def("vqe_runner_job")
    prefix = flow.new_prefix("brokerstop")
    n = 2
    monkeypatch.setenv("QP_REQUEST_READ_TIMEOUT_S", str(READ_BUDGET_S))
    with DagsterInstance.ephemeral() as instance:
        cursor = flow.cursor_at_end(settings)
        since = datetime.now(UTC).replace(microsecond=0)
        ids = flow.submit_h2(settings, prefix, n)
        planned, cursor = flow.tick(instance, defs, cursor)  # one range per partition the ids hashed to
        assert 1 <= len(planned) <= n, [r.run_key for r in planned]
        resumed = threading.Event()
        resumed_at: list[float] = []

        def stop_broker() -> None:
            with stopped(our_process_groups(settings)["kafka"], max_s=STOP_S + 30):
                time.sleep(STOP_S)
            resumed_at.append(time.monotonic())
            resumed.set()

        stopper = threading.Thread(target=stop_broker, daemon=True)
        started = time.monotonic()
        stopper.start()
        results = [flow.execute(instance, job, r) for r in planned]  # the first one meets the stopped broker
        assert all(r.success for r in results)
        assert resumed.is_set() and time.monotonic() - started >= STOP_S  # the read waited for the broker
        events = [e for r in results for e in r.all_events]
        (retried,) = [e for e in events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
        assert retried.step_key == "load_request_batch"  # the first read ran out of its budget, once
        assert "TimeoutError" in str(retried.event_specific_data.error), retried.event_specific_data.error
        run_ids = e2e.published_run_ids(instance, [r.run_id for r in results])
        assert len(run_ids) == n
        assert flow.tick(instance, defs, cursor)[0] == []  # nothing to re-run: the range succeeded once
        flow.wait_landed(settings, run_ids, since)
        recovery = flow.monotonic_since(resumed_at[0])
    assert sorted(ids) == [f"{prefix}{i}" for i in range(n)]
    expect(f"broker SIGSTOP {STOP_S:.0f} s during a range read", prefix, flow.today(),
           {"requests": n, "ok_row": n, "iceberg_rows": n, "result_messages": n, "dlq_entries": 0},
           recovery, settings, f"read timed out ({READ_BUDGET_S} s budget), the op's retry read the range; "
           "recovery = SIGCONT -> landed")  # fmt: skip
