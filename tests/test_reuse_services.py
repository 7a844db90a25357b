"""Result reuse on the real services, through the real path (request topic -> kafka_vqe_request_sensor ->
vqe_runner_job's run_vqe_request op -> result topic -> Kafka Connect -> S3 -> feature_processing_job ->
Iceberg ``vqe_results``).

1. From an empty state (no result-reuse index object in S3), request ``a`` (H2, a seed of this test run's
   own) computes: its op says ``reused_from`` '' and its row carries the experiment key.
2. The day's feature build writes the index object, which maps the key to ``a``'s run and landed file.
   Then ``b`` (the same experiment) and ``c`` (the same, ``force: true``)
   are submitted together: ``b``'s op reports ``reused_from`` = ``a`` and its row has ``a``'s energy,
   iterations and optimal parameters exactly; ``c`` computes again (``reused_from`` null, same key).
3. ``qp audit`` of this test's requests is green: three requests, three rows, one each.

Kafka messages cannot be deleted; they stay in this (isolated) stack, under this test's id prefix.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from dagster import DagsterInstance

from qp_assets import e2e
from qp_assets.audit import audit_day
from qp_assets.resources.core import REQUESTS_TOPIC
from qp_assets.runner import reuse as runner_reuse
from qp_assets.s3 import s3_client
from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks

pytestmark = [pytest.mark.services, pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(1500)]
#: FCI of H2 / STO-3G at 0.7414 A (shared/data/reference_molecules.json), hartree; UCCSD reaches it.
H2_FCI_HA = -1.137270


def _run_requests(instance, defs, settings, requests: list[dict]) -> dict[str, dict[str, str]]:
    """Submit ``requests``, run the request sensor once from the topic's end and execute its runs;
    returns the ops' metadata per request id after the results landed."""
    marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
    cursor = dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})
    since = datetime.now(UTC).replace(microsecond=0)
    e2e.submit_requests(requests, settings)
    run_requests, _ = e2e.run_sensor_once(instance, defs, cursor)
    assert run_requests, "the sensor saw none of the submitted requests"
    outputs = e2e.op_metadata(instance, e2e.execute_run_requests(instance, defs, run_requests))
    assert sorted(outputs) == sorted(r["request_id"] for r in requests), outputs
    e2e.wait_for_landing(settings, [o["run_id"] for o in outputs.values()], since, timeout_s=420)
    return outputs


def _build_day(instance, defs, day) -> None:
    result = defs.resolve_job_def("feature_processing_job").execute_in_process(
        partition_key=day.isoformat(), instance=instance, run_config=e2e.quiet_run_logs()
    )
    assert result.success


def test_same_experiment_reuses_the_earlier_result_unless_forced(stack) -> None:
    from qp_assets.definitions import defs
    from qp_assets.features.catalog import read_rows

    settings = stack
    e2e.require_sink_connector(settings)
    tag = uuid.uuid4().hex[:8]
    prefix = f"reuse-{tag}-"
    # a seed of this test's own: an experiment no earlier run on this stack has (HF start: same energy)
    (base,) = e2e.molecule_requests(("H2",), seed=int(tag, 16))
    a, b, c = (dict(base, request_id=f"{prefix}{n}") for n in "abc")
    c["force"] = True
    day = datetime.now(UTC).date()
    s3 = s3_client(settings)
    # the empty state: no index yet (on this test's own stack; a missing index only costs recomputes)
    s3.delete_object(Bucket=settings.bucket, Key=runner_reuse.index_object_key(settings))
    assert runner_reuse.read_index(settings, 10.0, s3) is None
    started = time.monotonic()
    with DagsterInstance.ephemeral() as instance:
        first = _run_requests(instance, defs, settings, [a])
        assert (
            first[a["request_id"]]["reused_from"] == ""
            and len(first[a["request_id"]]["experiment_key"]) == 64
        )
        _build_day(instance, defs, day)
        t_first = time.monotonic() - started
        index = runner_reuse.read_index(settings, 10.0, s3)
        entry = index[first[a["request_id"]]["experiment_key"]]
        assert (entry.request_id, entry.run_id) == (a["request_id"], first[a["request_id"]]["run_id"])
        assert entry.source_file.startswith(f"s3a://{settings.bucket}/raw/topics/")
        second = _run_requests(instance, defs, settings, [b, c])
        _build_day(instance, defs, day)
    key = first[a["request_id"]]["experiment_key"]
    assert second[b["request_id"]]["reused_from"] == a["request_id"]
    assert second[b["request_id"]]["placement"] == "none: the result was reused, nothing simulated"
    assert second[c["request_id"]]["reused_from"] == "" and second[c["request_id"]]["placement"] != ""
    assert {second[r]["experiment_key"] for r in (b["request_id"], c["request_id"])} == {key}

    rows = {
        r["request_id"]: r
        for r in read_rows("vqe_results", day=day, settings=settings).to_pylist()
        if (r["request_id"] or "").startswith(prefix)
    }
    assert sorted(rows) == [a["request_id"], b["request_id"], c["request_id"]]
    ra, rb, rc = (rows[r["request_id"]] for r in (a, b, c))
    assert (ra["reused_from"], rb["reused_from"], rc["reused_from"]) == (None, a["request_id"], None)
    assert ra["experiment_key"] == rb["experiment_key"] == rc["experiment_key"] == key
    assert rb["run_id"] == second[b["request_id"]]["run_id"] != ra["run_id"]
    assert ra["total_energy"] == pytest.approx(H2_FCI_HA, abs=1e-5)
    assert rb["total_energy"] == ra["total_energy"]  # the same number, not a recomputation
    for column in (
        "num_iterations",
        "optimizer_nit",
        "optimizer_nfev",
        "exact_energy",
        "hf_energy",
        "total_s",
    ):
        assert rb[column] == ra[column], column
    assert rc["total_energy"] == pytest.approx(ra["total_energy"], abs=1e-12)  # computed again: same seed
    params = read_rows("optimal_parameters", day=day, settings=settings).to_pylist()

    def optimum(run_id: str) -> list[float]:
        return [
            p["value"] for p in sorted(params, key=lambda p: p["parameter_index"]) if p["run_id"] == run_id
        ]

    assert optimum(rb["run_id"]) == optimum(ra["run_id"]) and len(optimum(ra["run_id"])) == 3

    report = audit_day(day, settings, request_id_prefix=prefix)
    assert report.green and not report.violations
    assert (report.counts["requests"], report.counts["iceberg_rows"], report.counts["ok_row"]) == (3, 3, 3)
    print(f"reuse test: first request + build {t_first:.0f} s, all {time.monotonic() - started:.0f} s")
