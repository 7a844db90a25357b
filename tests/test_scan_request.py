"""A scan as a request kind, on the real stack: ``qp request submit --scan`` -> one request on
``vqe.requests`` -> the request sensor plans it -> ``vqe_runner_job`` runs every point in order (warm-started)
and publishes one v4 result per point sharing the scan id, with the PES plot as the step's metadata.

Cost: about 20-30 s (one Dagster run in process, 21 H2 points, reading one result topic back).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from dagster import DagsterEventType, DagsterInstance

from qp_assets import e2e
from qp_assets.resources.core import REQUESTS_TOPIC
from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
from qp_assets.streaming.kafka_config import client_config
from qp_assets.streaming.serde import value_deserializer

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent
POINTS = 21
CHEMICAL_ACCURACY_MHA = 1.6


def _step_metadata(instance, run_ids: list[str], request_id: str) -> dict:
    for rid in run_ids:
        for entry in instance.all_logs(rid, of_type=DagsterEventType.STEP_OUTPUT):
            meta = entry.dagster_event.event_specific_data.metadata or {}
            if "request_id" in meta and meta["request_id"].value == request_id:
                return {k: v.value for k, v in meta.items()}
    raise AssertionError(f"no step output for request {request_id} in runs {run_ids}")


def _topic_records(settings, topic: str, partition: int, end: int) -> list[dict]:
    """Every record of ``topic``/``partition`` up to offset ``end`` (inclusive), decoded with its writer schema."""
    decode = value_deserializer(settings.schema_registry_url)
    consumer = Consumer(
        client_config(settings.kafka_bootstrap_servers, **{"group.id": f"scan-{uuid.uuid4()}"})
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        while True:
            msg = consumer.poll(15)
            assert msg is not None, f"{topic}[{partition}]: no record before offset {end}"
            if msg.error():
                continue
            out.append(decode(topic, msg.value()))
            if msg.offset() >= end:
                return out
    finally:
        consumer.close()


def test_scan_request_fans_out_into_one_result_per_point(stack, tmp_path, monkeypatch, capsys):
    from qp_assets.cli import main
    from qp_assets.definitions import build_definitions

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    defs = build_definitions()
    instance = DagsterInstance.get()
    marks = read_watermarks(stack.kafka_bootstrap_servers, REQUESTS_TOPIC)
    cursor = dump_cursor(REQUESTS_TOPIC, {p: h for p, (_l, h) in marks.items()}) if marks else None

    prefix = f"scan-{uuid.uuid4().hex[:8]}-"
    argv = ["request", "submit", "-m", "H2", "--scan", "--stretch", "0,1", "--from", "0.5", "--to", "2.5",
            "--points", str(POINTS), "--request-id-prefix", prefix]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    request_id = line["request_id"]
    assert request_id.startswith(prefix) and line["scan_points"] == POINTS

    run_requests, _ = e2e.run_sensor_once(instance, defs, cursor)
    assert len(run_requests) == 1  # one request, one range
    run_ids = e2e.execute_run_requests(instance, defs, run_requests)
    meta = _step_metadata(instance, run_ids, request_id)
    assert meta["scan_id"] == request_id and meta["scan_points"] == POINTS and meta["published"] == POINTS
    assert (
        meta["pes_plot"].startswith("![PES](data:image/png;base64,") and Path(meta["pes_plot_path"]).is_file()
    )

    # exactly POINTS results on the result topic carry this scan id, one per point, in order
    outcomes = meta["result_offsets"]
    assert [o["status"] for o in outcomes] == ["published"] * POINTS
    topics = {(o["topic"], o["partition"]) for o in outcomes}
    assert len(topics) == 1
    (topic, partition), last = topics.pop(), max(o["offset"] for o in outcomes)
    assert topic.startswith("vqe_result_v4.")
    records = [r for r in _topic_records(stack, topic, partition, last) if r.get("scan_id") == request_id]
    assert len(records) == POINTS
    assert [r["scan_point"]["index"] for r in records] == list(range(POINTS))
    assert [r["request_id"] for r in records] == [f"{request_id}#{k}" for k in range(POINTS)]
    assert [r["run_id"] for r in records] == meta["run_ids"]
    distances = [r["scan_point"]["distance"] for r in records]
    assert distances[0] == pytest.approx(0.5) and distances[-1] == pytest.approx(2.5)
    assert all(
        r["scan_point"]["atoms"] == [0, 1] and r["scan_point"]["num_points"] == POINTS for r in records
    )
    for r in records:  # every point within chemical accuracy of the exact energy at its own geometry
        bond = sum((a - b) ** 2 for a, b in zip(*r["molecule"]["coords"], strict=True)) ** 0.5
        assert bond == pytest.approx(r["scan_point"]["distance"], abs=1e-9)
        assert abs(r["total_energy"] - r["reference_energies"]["exact"]) * 1000 < CHEMICAL_ACCURACY_MHA
        assert r["backend"]["kernel"] == "sector"
    # warm starts: every point after the first starts from its neighbours' optima
    assert records[0]["initial_parameters"] == [0.0] * len(records[0]["initial_parameters"])
    assert all(any(abs(v) > 1e-6 for v in r["initial_parameters"]) for r in records[1:])
