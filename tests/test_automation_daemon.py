"""Feature runs started by landings under a real ``dagster-daemon``, with a trigger of
``QP_FEATURE_TRIGGER`` (CI: automation): exact runs per day, nothing lost, and the landing -> run requested latency.

One landing -> exactly one run of the day. Two more landings while that run builds -> a follow-up run
exactly when the run did not catch up with them (its recorded ``landing_signature`` is not the day's
final one), never more; at the end the day's latest build covers every landed file and Iceberg holds a
row per landed result. Under automation a follow-up is created only after the first run ended (the
sensor may queue it behind the running one).

The daemon loads the product's definitions on this stack's bucket (``raw/topics/``, the default Iceberg
namespace): the test's files carry unique run ids and are deleted at the end (the next build of the day
drops their rows). The landing sensor's cursor starts at today's files as landed now, so files other tests
left there start nothing. The request sensor starts at the end of ``vqe.requests``
(``QP_REQUEST_SENSOR_GRACE_S=0``): with the default 30 s grace its first tick ran the request the previous
test (test_audit_services) had just left there, and that run's result landed in today's partition during
this test, a file the test did not expect (the flake of CI-like runs 11 and 12). A file that is not the
test's own still fails the test, by name.
"""

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import AssetRecordsFilter, DagsterInstance, RunsFilter
from orchestration_helpers import stop_process_groups

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _cli(env: dict, *args: str) -> None:
    subprocess.run(
        [str(BIN / "dagster"), *args, "-m", "qp_assets.definitions"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _ticked(instance, name: str) -> bool:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name and instance.get_ticks(
            state.instigator_origin_id, state.selector_id, limit=1
        ):
            return True
    return False


def _day_runs(instance, day: str) -> list:
    """The feature runs of ``day`` (qp/kind=features, any job), oldest first."""
    records = instance.get_run_records(RunsFilter(tags={"qp/kind": "features", "dagster/partition": day}))
    return sorted(records, key=lambda r: r.create_timestamp)


def _wait(predicate, timeout_s: float, what: str, daemon, log_path: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, log_path.read_text()[-3000:]
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s; daemon log:\n" + log_path.read_text()[-3000:])


# The default trigger (automation) also drives the feature runs of every other daemon test
# (test_orchestration_e2e, the UI tests, tests/faults); the sensor opt-out is not run here, to keep the
# suite within its CI budget (its plan: test_orchestration_units, test_orchestration_sensors).
@pytest.mark.parametrize("trigger", ["automation"])
def test_landings_start_one_run_per_day_and_lose_nothing(stack, tmp_path, trigger):
    from qp_assets.assets.features import LANDING_SIGNATURE, feature_asset_key
    from qp_assets.features.catalog import read_rows
    from qp_assets.features.golden import LandingSink, make_result, write_landed_file
    from qp_assets.landing import RAW_PREFIX, day_of
    from qp_assets.s3 import s3_client
    from qp_assets.sensors.landing import changed_days, landed_per_day

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "QP_FEATURE_TRIGGER": trigger,
        "QP_LANDING_LOOKBACK_DAYS": "0",
        "QP_FEATURE_RETRY_DELAY_S": "5",
        "QP_REQUEST_SENSOR_GRACE_S": "0",  # no request of an earlier test runs and lands a file today
    }
    env.pop("QP_SENSORS_RUNNING", None)
    client = s3_client(stack)
    now = datetime.now(UTC)
    today = now.date()
    day = today.isoformat()

    def listed() -> dict[str, str]:
        """Today's landed keys -> LastModified."""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=RAW_PREFIX)
        return {
            o["Key"]: o["LastModified"].isoformat()
            for page in pages
            for o in page.get("Contents", [])
            if day_of(o["Key"]) == today
        }

    def signature() -> str:
        return landed_per_day(client, stack.bucket, "raw/topics/", [today])[today].signature()

    before = listed()
    _, cursor = changed_days(None, landed_per_day(client, stack.bucket, "raw/topics/", [today]))
    if cursor:
        _cli(env, "sensor", "cursor", "landing_sensor", "--set", cursor)
        _cli(env, "sensor", "start", "landing_sensor")  # a stored cursor creates the sensor STOPPED
    sink = LandingSink(s3_client=client, bucket=stack.bucket)
    tag = uuid.uuid4().hex[:8]
    keys: list[str] = []

    def land(i: int) -> float:
        run_id = f"auto-{tag}-{i}"
        record = {**make_result(i, now, run_id=run_id), "request_id": run_id}
        uri = write_landed_file(sink, [record], topic=f"vqe_result_v3.auto{tag}", offset=i)
        keys.append(uri.split(f"{stack.bucket}/", 1)[1])
        return time.time()

    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log, DagsterInstance.from_config(str(home)) as instance:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            _wait(lambda: _ticked(instance, "landing_sensor"), 120, "landing_sensor tick", daemon, log_path)
            if trigger == "automation":
                _wait(
                    lambda: _ticked(instance, "feature_automation_sensor"),
                    60, "feature_automation_sensor tick", daemon, log_path,
                )  # fmt: skip
            assert _day_runs(instance, day) == []
            # 1. one landing -> exactly one run
            landed_at = land(0)
            first = _wait(lambda: _day_runs(instance, day), 30, "a run for the landing", daemon, log_path)[0]
            latency = first.create_timestamp.timestamp() - landed_at
            # 2. two landings while it builds
            _wait(
                lambda: instance.get_run_by_id(first.dagster_run.run_id).status.value == "STARTED",
                60, "the run started", daemon, log_path,
            )  # fmt: skip
            time.sleep(2)
            land(1)
            time.sleep(1)
            land(2)
            final = signature()

            def covered_by(run_id: str) -> str | None:
                for rec in instance.fetch_materializations(
                    AssetRecordsFilter(asset_key=feature_asset_key("vqe_results"), asset_partitions=[day]),
                    limit=50,
                ).records:
                    if rec.run_id == run_id:
                        entry = rec.asset_materialization.metadata.get(LANDING_SIGNATURE)
                        return entry.value if entry else None
                return None

            def settled():
                """The runs once all finished, the last one covers what has landed (a follow-up that is due
                is waited for, however long the daemon takes) and none ended in the last 12 s (two sensor
                loops without a new run)."""
                runs = _day_runs(instance, day)
                if not all(r.dagster_run.is_finished for r in runs):
                    return None
                if (
                    runs[-1].dagster_run.status.value == "SUCCESS"
                    and covered_by(runs[-1].dagster_run.run_id) != signature()
                ):
                    return None
                last_end = max(r.end_time or 0 for r in runs)
                return runs if time.time() - last_end > 12 else None

            runs = _wait(settled, 150, "the day's runs covering every landed file", daemon, log_path)
            foreign = {k: t for k, t in listed().items() if k not in keys and before.get(k) != t}
            assert not foreign, f"files this test did not land were written during it: {foreign}"
            assert [r.dagster_run.status.value for r in runs] == ["SUCCESS"] * len(runs)

            caught_up = covered_by(first.dagster_run.run_id) == final
            assert len(runs) == (1 if caught_up else 2), [
                (r.dagster_run.run_id, r.create_timestamp) for r in runs
            ]
            assert covered_by(runs[-1].dagster_run.run_id) == final  # nothing lost
            if not caught_up and trigger == "automation":
                assert runs[1].create_timestamp.timestamp() >= runs[0].end_time
            ids = set(read_rows("vqe_results", day=today, settings=stack).column("run_id").to_pylist())
            assert {f"auto-{tag}-{i}" for i in range(3)} <= ids
            print(f"\n{trigger}: runs of {day}: {len(runs)} for 3 landings (first caught up: {caught_up}); "
                  f"landing -> run created {latency:.2f} s")  # fmt: skip
        finally:
            stop_process_groups([daemon])
            if keys:
                client.delete_objects(Bucket=stack.bucket, Delete={"Objects": [{"Key": k} for k in keys]})
