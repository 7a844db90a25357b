"""The whole path on the real services.

* ``test_sensor_runs_publish_exactly_once``: N H2 requests -> one kafka_vqe_request_sensor tick ->
  vqe_runner_job runs -> exactly N results in Kafka (read back at the offsets the ops recorded, keyed by
  run id); a second tick requests nothing of ours; executing an older cursor's requests again starts no run.
* ``test_landed_results_become_iceberg_rows``: those results land in S3 through Kafka Connect and today's
  feature run turns them into exactly N vqe_results rows with our request ids and chemically accurate
  energies.
* ``test_daemon_drives_request_to_iceberg``: ``qp request submit`` with a real ``dagster-daemon`` running
  the sensors: the request ends up as a row in Iceberg without any other intervention.

The landing tests skip (saying why) while Kafka Connect has no S3 sink connector registered.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance
from orchestration_helpers import stop_process_groups

from qp_assets import e2e
from qp_assets.resources.core import REQUESTS_TOPIC
from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
from qp_assets.streaming.kafka_config import client_config

pytestmark = [pytest.mark.services, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
H2_FCI = -1.13727017  # hartree, /work/shared/data/reference_molecules.json
N = 3


def _require_sink(settings) -> None:
    connectors = httpx.get(f"{settings.kafka_connect_url}/connectors", timeout=10).json()
    if not connectors:
        pytest.skip("Kafka Connect has no connector registered yet: results cannot land in S3")


def _rows_for(settings, request_ids: set[str]) -> list[dict]:
    from qp_assets.features.catalog import read_rows

    rows = read_rows("vqe_results", day=datetime.now(UTC).date(), settings=settings).to_pylist()
    return [r for r in rows if r["request_id"] in request_ids]


def _home(path: Path) -> Path:
    home = path / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _cursor_at_end(settings) -> str | None:
    marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
    return dump_cursor(REQUESTS_TOPIC, {p: h for p, (_l, h) in marks.items()}) if marks else None


def _wait_for_first_tick(home: str, sensor: str, daemon: subprocess.Popen, log_path: Path) -> None:
    """Until the daemon's first tick of ``sensor`` stored a cursor (120 s at most)."""
    from dagster._core.scheduler.instigation import InstigatorType

    deadline = time.monotonic() + 120
    with DagsterInstance.from_config(home) as instance:
        while time.monotonic() < deadline:
            assert daemon.poll() is None, log_path.read_text()[-3000:]
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if any(
                s.instigator_name == sensor and s.instigator_data and s.instigator_data.cursor for s in states
            ):
                return
            time.sleep(1)
    raise AssertionError(f"{sensor} did not tick within 120 s:\n" + log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def runner_outcome(stack, tmp_path_factory):
    """Submit N H2 requests, tick the sensor, execute its run requests; keep everything for the tests."""
    home = _home(tmp_path_factory.mktemp("e2e"))
    old_home = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("QP_FEATURE_RETRY_DELAY_S", "10")  # shorter than the product's 60 s
    from qp_assets.definitions import build_definitions

    defs = build_definitions()

    h2 = e2e.molecule_requests(("H2",))[0]["molecule"]
    requests = [
        e2e.build_request(h2, {"seed": i}, request_id=f"orch-{uuid.uuid4().hex[:10]}") for i in range(N)
    ]
    instance = DagsterInstance.get()
    cursor = _cursor_at_end(stack)
    since = datetime.now(UTC).replace(microsecond=0)
    e2e.submit_requests(requests, stack)
    run_requests: list = []
    deadline = time.monotonic() + 30
    while not run_requests and time.monotonic() < deadline:
        run_requests, next_cursor = e2e.run_sensor_once(instance, defs, cursor)
    dagster_runs = e2e.execute_run_requests(instance, defs, run_requests)
    yield {
        "defs": defs,
        "instance": instance,
        "requests": requests,
        "cursor": cursor,
        "next_cursor": next_cursor,
        "run_requests": run_requests,
        "dagster_runs": dagster_runs,
        "since": since,
    }
    instance.dispose()
    if old_home is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = old_home


def test_sensor_runs_publish_exactly_once(stack, runner_outcome):
    from confluent_kafka import Consumer, TopicPartition

    o = runner_outcome
    ours = {r["request_id"] for r in o["requests"]}
    assert o["run_requests"] and all(r.run_key.startswith(f"{REQUESTS_TOPIC}:") for r in o["run_requests"])
    published = e2e.op_metadata(o["instance"], o["dagster_runs"])
    assert ours <= set(published)  # others may have submitted to the shared topic meanwhile
    mine = [published[r] for r in ours]
    assert all(m["published"] and m["molecule"] == "H2" for m in mine)
    assert all(abs(m["total_energy_ha"] - H2_FCI) < 1.6e-3 for m in mine)
    # exactly one result per request in Kafka: read each recorded offset back, its key is the run id
    consumer = Consumer(client_config(stack.kafka_bootstrap_servers, **{"group.id": f"orch-{uuid.uuid4()}"}))
    try:
        keys = []
        for m in mine:
            consumer.assign([TopicPartition(m["result_topic"], m["kafka_partition"], m["kafka_offset"])])
            msg = consumer.poll(15)
            assert msg is not None and not msg.error()
            keys.append(msg.key().decode())
    finally:
        consumer.close()
    assert sorted(keys) == sorted(m["run_id"] for m in mine) and len(set(keys)) == N
    # a second tick from the new cursor never re-plans our ranges
    again, _ = e2e.run_sensor_once(o["instance"], o["defs"], o["next_cursor"])
    assert not {r.run_key for r in again} & {r.run_key for r in o["run_requests"]}
    # the older cursor re-plans the same run keys, and they are not run twice
    replay, _ = e2e.run_sensor_once(o["instance"], o["defs"], o["cursor"])
    assert {r.run_key for r in o["run_requests"]} <= {r.run_key for r in replay}
    assert e2e.execute_run_requests(o["instance"], o["defs"], o["run_requests"]) == []


@pytest.mark.spark
def test_landed_results_become_iceberg_rows(stack, runner_outcome):
    _require_sink(stack)
    o = runner_outcome
    published = e2e.op_metadata(o["instance"], o["dagster_runs"])
    ours = {r["request_id"] for r in o["requests"]}
    e2e.wait_for_landing(stack, [published[r]["run_id"] for r in ours], o["since"], timeout_s=180)
    day = datetime.now(UTC).date().isoformat()
    job = o["defs"].resolve_job_def("feature_processing_job")
    result = job.execute_in_process(partition_key=day, instance=o["instance"])
    assert result.success
    rows = _rows_for(stack, ours)
    assert sorted(r["request_id"] for r in rows) == sorted(ours)  # exactly one row per request
    for r in rows:
        assert r["molecule_name"] == "H2" and abs(r["total_energy"] - H2_FCI) < 1.6e-3
        assert r["total_energy"] >= r["exact_energy"] - 1e-6


@pytest.mark.spark
def test_daemon_drives_request_to_iceberg(stack, runner_outcome, tmp_path):
    _require_sink(stack)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(_home(tmp_path)),
        "QP_REQUEST_SENSOR_INTERVAL_S": "2",
        "QP_LANDING_SENSOR_INTERVAL_S": "5",
        "QP_LANDING_LOOKBACK_DAYS": "0",
        # the shared SQLite catalog can be busy with other writers: retry soon rather than in 20 minutes
        "QP_FEATURE_RETRY_DELAY_S": "15",
    }
    env.pop("QP_SENSORS_RUNNING", None)
    env.pop("QP_REQUEST_SENSOR_START", None)
    # The request sensor starts where a new instance does by default: the requests this module already
    # ran (runner_outcome) are history and must not run again. The landing sensor starts at
    # today's files as landed now.
    from qp_assets.s3 import s3_client
    from qp_assets.sensors.landing import changed_days, landed_per_day

    env["QP_REQUEST_SENSOR_GRACE_S"] = "0"  # the test waits for the first tick before it submits
    history = _rows_for(stack, {r["request_id"] for r in runner_outcome["requests"]})
    assert history, "the module's earlier requests should already be rows"
    today = datetime.now(UTC).date()
    _, landing_cursor = changed_days(
        None, landed_per_day(s3_client(stack), stack.bucket, "raw/topics/", [today])
    )
    for name, cursor in (("landing_sensor", landing_cursor),):
        if not cursor:
            continue
        subprocess.run(
            [str(BIN / "dagster"), "sensor", "cursor", name, "--set", cursor, "-m", "qp_assets.definitions"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        # a stored cursor creates the sensor's state as STOPPED: start it explicitly
        subprocess.run(
            [str(BIN / "dagster"), "sensor", "start", name, "-m", "qp_assets.definitions"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait_for_first_tick(env["DAGSTER_HOME"], "kafka_vqe_request_sensor", daemon, log_path)
            prefix = f"orch-daemon-{uuid.uuid4().hex[:8]}-"
            submit = subprocess.run(
                [str(BIN / "qp"), "request", "submit", "--molecule", "H2", "--request-id-prefix", prefix, "--seed", "1"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert submit.returncode == 0, submit.stdout + submit.stderr
            request_id = json.loads(submit.stdout.strip().splitlines()[-1])["request_id"]
            deadline = time.monotonic() + 420
            rows: list = []
            while time.monotonic() < deadline and not rows:
                assert daemon.poll() is None, log_path.read_text()[-3000:]
                try:
                    rows = _rows_for(stack, {request_id})
                except Exception:  # table not there yet
                    rows = []
                if not rows:
                    time.sleep(5)
            assert rows, "request not in Iceberg after 420 s; daemon log:\n" + log_path.read_text()[-3000:]
            assert len(rows) == 1 and abs(rows[0]["total_energy"] - H2_FCI) < 1.6e-3
            # the daemon's runs finish cleanly: the runner run and the landing-triggered feature run
            with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                while time.monotonic() < deadline:
                    runs = instance.get_runs()
                    if runs and all(r.is_finished for r in runs):
                        break
                    time.sleep(3)
                    runs = instance.get_runs()
            # the feature run is the implicit asset job's (automation, the default) or feature_processing_job's
            # (QP_FEATURE_TRIGGER=sensor): found by its qp/kind=features tag
            jobs = {(r.job_name, r.status.value, r.tags.get("qp/kind")) for r in runs}
            assert ("vqe_runner_job", "SUCCESS", "vqe") in jobs, jobs
            assert {s for _job, s, kind in jobs if kind == "features"} == {"SUCCESS"}, jobs
            # the new instance ran only the new request (one range of one offset), not the module's history
            ranges = [r.tags.get("qp/offset_range") for r in runs if r.job_name == "vqe_runner_job"]
            assert len(ranges) == 1 and ranges[0].endswith(f"-{int(ranges[0].split('-')[0]) + 1}"), ranges
            # and today's table holds exactly one row per request id
            from qp_assets.features.catalog import read_rows

            today_ids = read_rows("vqe_results", day=today, settings=stack).column("request_id").to_pylist()
            assert len(today_ids) == len(set(today_ids)), "duplicate request_id rows"
        finally:
            stop_process_groups([daemon])
