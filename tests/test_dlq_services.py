"""``qp dlq list | show | replay`` on the stack: an operator inspects a refused request, raises the limit
that refused it and replays the original bytes, which then run to a published result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from qp_assets.settings import Settings
from tests.test_admission_hostile import H2, _produce, _request, _run_range

pytestmark = [pytest.mark.services, pytest.mark.slow]


def _qp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qp_assets.cli", "dlq", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})  # fmt: skip


def test_list_show_and_replay_after_raising_the_limit(stack: Settings) -> None:
    from qp_assets.streaming.publisher import serializer
    from qp_assets.streaming.schemas import REQUEST_SCHEMA, latest_version

    tag = uuid.uuid4().hex[:8]
    topic = f"qp_test_dlq_{tag}"
    ser = serializer(stack, topic, REQUEST_SCHEMA, latest_version(REQUEST_SCHEMA))
    rid = f"dlq-{tag}"
    original = ser(_request(rid, H2, {"max_iterations": 20_000, "seed": 3}))
    _produce(stack, topic, [(b"garbage", b"\x01not avro"), (rid.encode(), original)])
    run, outputs, _s, _d = _run_range(stack, topic, 0, 2)
    assert run.success and rid not in outputs  # refused before fan-out: no VQE step at all

    listed = _qp("list", "--json")
    assert listed.returncode == 0, listed.stderr
    ours = [json.loads(line) for line in listed.stdout.splitlines() if f'"{topic}"' in line]
    assert [(e["origin"]["partition"], e["origin"]["offset"], e["stage"]) for e in ours] == [
        (0, 0, "decode"),
        (0, 1, "admission"),
    ]
    # the same range read again (a retry, a cursor reset, a new Dagster instance): no second entry
    again, again_outputs, _s, _d = _run_range(stack, topic, 0, 2)
    assert again.success and rid not in again_outputs
    relisted = _qp("list", "--json")
    assert [json.loads(line)["n"] for line in relisted.stdout.splitlines() if f'"{topic}"' in line] == [
        e["n"] for e in ours
    ]
    refused = ours[1]
    assert (
        refused["request_id"] == rid
        and "'max_iterations' = 20000" in refused["reason"]
        and "QP_MAX_ITERATIONS" in refused["reason"]
    )
    table = _qp("list")
    assert f"{topic}:0@1" in table.stdout and rid in table.stdout

    shown = _qp("show", str(refused["n"]))
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["headers"]["qp.source.topic"] == topic and detail["headers"]["qp.stage"] == "admission"
    assert detail["value"]["schema_id"] == int.from_bytes(original[1:5], "big")
    assert _qp("show", "999999999").returncode == 2

    t0 = time.perf_counter()
    replayed = _qp("replay", str(refused["n"]))
    print(f"\nqp dlq replay {refused['n']}: {replayed.stdout.strip()} in {time.perf_counter() - t0:.2f} s")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    out = json.loads(replayed.stdout)
    assert out["replayed"] and out["topic"] == topic and out["offset"] == 2

    os.environ["QP_MAX_ITERATIONS"] = "50000"  # the operator's fix
    try:
        run, outputs, _s, _d = _run_range(stack, topic, 2, 3)
    finally:
        os.environ.pop("QP_MAX_ITERATIONS")
    assert run.success and outputs[rid]["status"] == "published"
    assert abs(outputs[rid]["total_energy"] - -1.13727017) < 1.6e-3


def test_submit_refusal_publishes_nothing_and_runner_wall_clock_stops_a_run(
    stack: Settings, tmp_path
) -> None:
    """``qp request submit`` of benzene against the live stack: exit 2 in seconds and the request topic's
    watermarks do not move; a runner run under QP_MAX_WALL_S=0 stops after one iteration and still publishes."""
    from qp_assets.sensors.kafka_offsets import read_watermarks
    from qp_assets.streaming.publisher import serializer
    from qp_assets.streaming.schemas import REQUEST_SCHEMA, latest_version
    from qp_assets.streaming.topics import REQUESTS_TOPIC
    from tests.test_admission_units import BENZENE

    path = tmp_path / "benzene.json"
    path.write_text(json.dumps([BENZENE]))
    before = read_watermarks(stack.kafka_bootstrap_servers, REQUESTS_TOPIC)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qp_assets.cli", "request", "submit", "--molecules-file", str(path),
                           "-m", "benzene"], capture_output=True, text=True, timeout=120)  # fmt: skip
    elapsed = time.perf_counter() - t0
    print(
        f"\nqp request submit benzene on the stack: exit {proc.returncode} in {elapsed:.2f} s: {proc.stderr.strip()}"
    )
    assert proc.returncode == 2 and "field 'num_qubits' = 72" in proc.stderr
    assert read_watermarks(stack.kafka_bootstrap_servers, REQUESTS_TOPIC) == before
    assert elapsed < 15

    tag = uuid.uuid4().hex[:8]
    topic = f"qp_test_wall_{tag}"
    lih = {**H2, "name": "LiH", "symbols": ["Li", "H"], "coords": [[0.0, 0.0, 0.0], [0.0, 0.0, 1.5949]]}
    ser = serializer(stack, topic, REQUEST_SCHEMA, latest_version(REQUEST_SCHEMA))
    rid = f"wall-{tag}"
    _produce(stack, topic, [(rid.encode(), ser(_request(rid, lih, {"seed": 1})))])
    os.environ["QP_MAX_WALL_S"] = "0.001"
    try:
        run, outputs, _s, _d = _run_range(stack, topic, 0, 1)
    finally:
        os.environ.pop("QP_MAX_WALL_S")
    assert run.success and outputs[rid]["status"] == "published"
    meta = {e.step_key: e for e in run.all_node_events if e.event_type_value == "STEP_OUTPUT"}
    step = next(v for k, v in meta.items() if k.startswith("run_vqe_request"))
    md = step.event_specific_data.metadata
    assert md["iterations"].value == 1 and md["placement"].value == "CPU requested"
    assert "wall-clock limit 0.001 s (QP_MAX_WALL_S)" in md["optimizer_message"].value
