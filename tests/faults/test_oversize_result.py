"""A result Kafka refuses for its size is dead-lettered with the reason, never spooled (issue 14 item 5).

Before: the publish failure was taken for an outage, the result spooled, and ``qp results replay`` failed on
it forever. The fault: the VQE of one real request (sensor tick -> vqe_runner_job) returns a result
inflated past ``message.max.bytes`` (the real run's iterations repeated with random doubles, about 10 MB
serialized; the producer allows 8 MB, our brokers 10 MB: a record over either limit is refused the same
way, by the producer locally or in the broker's delivery report). The request ends as exactly one entry in ``vqe.requests.dlq`` (stage ``publish``, reason
naming the run, the size and message.max.bytes), nothing is left in the spool, the run succeeds.
"""

from __future__ import annotations

import random

import pytest
from dagster import DagsterInstance

from qp_assets.streaming.publisher import spool_dir
from tests.faults import flow
from tests.faults.tools import expect, run_audit

pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]
ITERATIONS = 150_000  # about 10 MB serialized: over the producer's 8 MB message.max.bytes


def test_oversize_result_is_dead_lettered_not_spooled(stack, monkeypatch) -> None:
    import qp_assets.vqe.runner as runner
    from qp_assets.definitions import defs

    settings = stack
    real_run_vqe = runner.run_vqe
    rng = random.Random(14)

    def oversize(*args, **kwargs):
        result = real_run_vqe(*args, **kwargs)
        first = result.iterations[0]
        noise = ("energy", "std", "gradient_norm", "parameter_delta_norm", "cumulative_min_energy")
        result.iterations = [
            {**first, "iteration": i + 1, **{k: rng.random() for k in noise if k in first}}
            for i in range(ITERATIONS)
        ]
        return result

    monkeypatch.setattr(runner, "run_vqe", oversize)
    prefix = flow.new_prefix("oversize")
    spooled_before = set(spool_dir(settings).glob("*.json"))
    with DagsterInstance.ephemeral() as instance:
        cursor = flow.cursor_at_end(settings)
        (rid,) = flow.submit_h2(settings, prefix, 1)
        planned, _ = flow.tick(instance, defs, cursor)
        assert len(planned) == 1
        result = flow.execute(instance, defs.resolve_job_def("vqe_runner_job"), planned[0])
        assert result.success
    assert set(spool_dir(settings).glob("*.json")) == spooled_before  # nothing spooled
    report = run_audit(flow.today(), settings, prefix, "oversize result")
    assert report.green, report.violations
    assert report.counts["requests"] == 1 and report.counts["ok_dlq"] == 1
    assert report.counts["dlq_entries"] == 1 and report.counts["result_messages"] == 0
    (trace,) = report.requests
    assert trace.request_id == rid
    reason = trace.dlq[0].reason
    assert reason.startswith("result ") and "bytes refused by" in reason and "message.max.bytes" in reason, (
        reason
    )
    expect("result over message.max.bytes", prefix, flow.today(),
           {"requests": 1, "ok_dlq": 1, "dlq_entries": 1, "result_messages": 0}, None, settings,
           "dead-lettered with the reason at publish, not spooled")  # fmt: skip
