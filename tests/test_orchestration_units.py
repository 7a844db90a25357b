"""Unit tests of the orchestration logic (no services): offset planning, landing diffs, checks, GPU
pinning, the k8s GPU pod spec, and the shape of the Definitions."""

import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from qp_assets.assets import check_logic
from qp_assets.runner.gpu import pin_device
from qp_assets.sensors.kafka_offsets import dump_cursor, parse_cursor, plan_ranges
from qp_assets.sensors.landing import DayLanding, changed_days, recent_days

ROOT = Path(__file__).resolve().parent.parent


# --- Kafka offset planning ------------------------------------------------------------------------------


def test_plan_ranges_batches_each_partition_from_low_watermark():
    ranges, nxt = plan_ranges("t", {}, {0: (0, 25), 1: (5, 7)}, max_per_run=10)
    assert [r.run_key for r in ranges] == ["t:0:0-10", "t:0:10-20", "t:0:20-25", "t:1:5-7"]
    assert sum(r.count for r in ranges) == 27
    assert nxt == {0: 25, 1: 7}


def test_plan_ranges_second_tick_without_new_messages_requests_nothing():
    _, nxt = plan_ranges("t", {}, {0: (0, 3)})
    ranges, again = plan_ranges("t", nxt, {0: (0, 3)})
    assert ranges == [] and again == {0: 3}


def test_plan_ranges_from_older_cursor_reproduces_the_same_run_keys():
    first, nxt = plan_ranges("t", {0: 0}, {0: (0, 4)}, max_per_run=2)
    cursor = dump_cursor("t", nxt)
    # more messages arrive; a re-evaluation from the old cursor re-plans [0,4) with identical keys
    replay, _ = plan_ranges("t", {0: 0}, {0: (0, 6)}, max_per_run=2)
    assert [r.run_key for r in first] == ["t:0:0-2", "t:0:2-4"]
    assert [r.run_key for r in replay][:2] == [r.run_key for r in first]
    assert parse_cursor(cursor, "t") == {0: 4}


def test_plan_ranges_retention_gap():
    ranges, _ = plan_ranges("t", {0: 2}, {0: (5, 8)})  # offsets 2..4 deleted by retention
    assert [r.run_key for r in ranges] == ["t:0:5-8"]


def test_plan_ranges_and_cursor_reject_bad_input():
    with pytest.raises(ValueError, match="max_per_run"):
        plan_ranges("t", {}, {0: (0, 1)}, max_per_run=0)
    with pytest.raises(ValueError, match="cursor"):
        parse_cursor("{not json", "t")
    assert parse_cursor(dump_cursor("other", {0: 3}), "t") == {}


# --- landing diffs --------------------------------------------------------------------------------------


def test_changed_days_requests_exactly_the_touched_days():
    d1, d2, d3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
    landed = {d1: DayLanding(d1, 2, 100, "a"), d2: DayLanding(d2, 0, 0, ""), d3: DayLanding(d3, 1, 10, "b")}
    days, cursor = changed_days(None, landed)
    assert days == [d1, d3]
    assert changed_days(cursor, landed)[0] == []
    landed[d3] = DayLanding(d3, 2, 30, "c")
    assert changed_days(cursor, landed)[0] == [d3]
    assert recent_days(d3, 2) == [d1, d2, d3]
    with pytest.raises(ValueError, match="cursor"):
        changed_days("nope", landed)


class _FakeS3:
    """The two list_objects_v2 shapes landed_per_day uses (delimiter listing of topics, prefix listing)."""

    def __init__(self) -> None:
        self.objects: dict[str, datetime] = {}

    def put(self, key: str) -> None:
        self.objects[key] = datetime(2026, 3, 1, 12, 0, len(self.objects), tzinfo=UTC)

    def list_objects_v2(self, Bucket: str, Prefix: str, Delimiter: str | None = None, **_: object) -> dict:
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        if Delimiter:
            folders = sorted({Prefix + k[len(Prefix) :].split(Delimiter, 1)[0] + Delimiter for k in keys})
            return {"CommonPrefixes": [{"Prefix": f} for f in folders], "IsTruncated": False}
        return {
            "Contents": [{"Key": k, "Size": 10, "LastModified": self.objects[k]} for k in keys],
            "IsTruncated": False,
        }


def test_landing_sensor_coalesces_feature_runs_of_one_day(monkeypatch):
    """Issue 18 saw 3 feature runs for one day within 2 minutes: a day whose run has not started yet (queued,
    not started, starting; a UI backfill's range counts for each of its days) gets no other run; a run in
    progress that is still building catches up with new files itself (held: no run, the day stays changed
    in the cursor); once it has reported its tables, the next tick requests a run only if the files it
    covers (its ``landing_signature``) are not the current ones."""
    from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context
    from dagster._core.utils import make_new_run_id

    from qp_assets.assets.features import LANDING_SIGNATURE
    from qp_assets.assets.jobs import build_feature_job
    from qp_assets.assets.vqe_runner import build_vqe_runner_job
    from qp_assets.resources.core import BoundedS3Resource, LandingResource
    from qp_assets.sensors.definitions import build_sensors
    from qp_assets.sensors.landing import landed_per_day

    fake = _FakeS3()

    class FakeS3Resource(BoundedS3Resource):
        def get_client(self):
            return fake

    monkeypatch.setenv("QP_LANDING_LOOKBACK_DAYS", "0")
    monkeypatch.setenv("QP_FEATURE_TRIGGER", "sensor")  # the opt-out: the landing sensor requests the runs
    job = build_feature_job()
    sensor = {s.name: s for s in build_sensors(build_vqe_runner_job(), job)}["landing_sensor"]
    resources = {"s3": FakeS3Resource(), "landing": LandingResource(bucket="b")}
    today = datetime.now(UTC).date()
    day = today.isoformat()
    prefix = f"raw/topics/vqe_result_v3.x/year={today:%Y}/month={today:%m}/day={today:%d}/hour=00/"

    with DagsterInstance.ephemeral() as instance:
        # The sensor asks the instance for runs by job and status (RunsFilter); a queued DagsterRun cannot be
        # built without a code location origin, so the instance's run listing is a fake over these records,
        # and so is the day's latest vqe_results materialization (run id, landing signature covered).
        runs: dict[str, SimpleNamespace] = {}
        built: list[SimpleNamespace] = []

        def get_runs(filters, limit=None):
            return [
                r
                for r in runs.values()
                if filters.tags.items() <= r.tags.items() and r.status in filters.statuses
            ][:limit]

        def fetch_materializations(records_filter, limit):
            assert (
                list(records_filter.asset_partitions) == [day]
                and records_filter.asset_key.path[-1] == "vqe_results"
            )
            return SimpleNamespace(records=built[-limit:])

        monkeypatch.setattr(instance, "get_runs", get_runs)
        monkeypatch.setattr(instance, "fetch_materializations", fetch_materializations)

        def run(status: DagsterRunStatus, job_name: str = job.name, **tags: str) -> str:
            run_id = make_new_run_id()
            tags = {
                "qp/kind": "features",
                **tags,
            }  # what the job's tags / QpRunCoordinator put on every feature run
            runs[run_id] = SimpleNamespace(job_name=job_name, run_id=run_id, status=status, tags=tags)
            return run_id

        def report(run_id: str) -> None:
            """The run materialized vqe_results covering what has landed now."""
            signature = landed_per_day(fake, "b", "raw/topics/", [today])[today].signature()
            meta = {LANDING_SIGNATURE: SimpleNamespace(value=signature)}
            built.append(SimpleNamespace(run_id=run_id, asset_materialization=SimpleNamespace(metadata=meta)))

        cursor = None

        def tick(land: int | None = None) -> list[str]:
            nonlocal cursor
            if land is not None:
                fake.put(f"{prefix}vqe_result_v3.x+0+{land:019d}.avro")
            result = sensor(build_sensor_context(cursor=cursor, resources=resources, instance=instance))
            cursor = result.cursor
            return [r.partition_key for r in result.run_requests]

        assert tick(0) == [day]  # first landing: one run (the daemon queues it)
        first = run(DagsterRunStatus.QUEUED, **{"dagster/partition": day})
        assert tick(1) == []  # queued: it will list this file when it starts
        runs.pop(first)
        first = run(DagsterRunStatus.STARTING, **{"dagster/partition": day})
        assert tick(2) == []  # launched, not started: still lists the files itself
        runs.pop(first)
        first = run(DagsterRunStatus.STARTED, **{"dagster/partition": day})
        assert tick(3) == [] and tick() == []  # building: it catches up with file 3 itself (held)
        report(first)  # it did: its tables cover files 0-3
        assert tick() == []  # still running, but covered: nothing to do
        assert tick(4) == [day]  # landed after its build reported: one follow-up, queued behind it
        follow_up = run(DagsterRunStatus.QUEUED, **{"dagster/partition": day})
        assert tick(5) == [] and tick(6) == []  # the waiting follow-up covers them
        runs.pop(follow_up)
        runs[first].status = DagsterRunStatus.SUCCESS
        follow_up = run(DagsterRunStatus.STARTED, **{"dagster/partition": day})
        fake.put(f"{prefix}vqe_result_v3.x+0+{7:019d}.avro")
        runs.pop(follow_up)  # it ended without reporting (failed) while file 7 landed
        assert tick() == [day]  # not covered by the latest build: requested
        follow_up = run(DagsterRunStatus.STARTED, **{"dagster/partition": day})
        report(follow_up)
        runs.pop(follow_up)
        backfill = {"dagster/asset_partition_range_start": day, "dagster/asset_partition_range_end": day}
        run(DagsterRunStatus.NOT_STARTED, "__ASSET_JOB", **backfill)  # a UI backfill: the implicit asset job
        assert tick(8) == []  # a pending range run covers each of its days
        assert tick() == []  # nothing new: nothing requested either


def test_build_until_caught_up_rebuilds_while_files_land_within_the_budget():
    """A file landing during a build is built by the same run (a new round); no round starts after the
    budget; the signature returned is the one read before the last round (never one it did not read)."""
    from qp_assets.assets.features import build_until_caught_up

    landed = ["a"]
    builds: list[list[str]] = []

    def build():
        builds.append(list(landed))
        if len(builds) < 3:  # a file lands during each of the first two builds
            landed.append(f"f{len(builds)}")
        return len(builds)

    def signature():
        return ",".join(landed)

    assert build_until_caught_up(build, signature, budget_s=60) == (3, "a,f1,f2", 3)
    assert builds == [["a"], ["a", "f1"], ["a", "f1", "f2"]]
    landed[:], builds[:] = ["a"], []
    result, covered, rounds = build_until_caught_up(build, signature, budget_s=0)
    assert (result, covered, rounds) == (1, "a", 1)  # no budget: one build, covering what it listed


def test_plan_landing_covered_held_or_requested():
    from qp_assets.sensors.definitions import FeatureRunState, plan_landing

    d1, d2, d3, d4, d5 = (date(2026, 11, n) for n in range(1, 6))
    sig = {d: f"{d.day}:10:t" for d in (d1, d2, d3, d4, d5)}
    state = FeatureRunState(
        pending=frozenset({"2026-11-01"}),
        running={"2026-11-03": frozenset({"r3"}), "2026-11-04": frozenset({"r4"})},
        built={
            "2026-11-02": ("old", sig[d2]),  # the last build covers exactly what has landed
            "2026-11-03": ("old", "3:5:t"),  # r3 is still building (its tables not reported yet)
            "2026-11-04": ("r4", "4:5:t"),  # r4 reported without the new files
            "2026-11-05": ("old", None),  # a range build (no signature)
        },
    )
    request, covered, held = plan_landing([d1, d2, d3, d4, d5], sig, state)
    assert (request, covered, held) == ([d4, d5], [d1, d2], [d3])


def test_run_days_of_partition_and_range_tags():
    from qp_assets.sensors.definitions import run_days

    assert run_days({"dagster/partition": "2026-03-02"}) == {"2026-03-02"}
    assert run_days(
        {
            "dagster/asset_partition_range_start": "2026-02-27",
            "dagster/asset_partition_range_end": "2026-03-01",
        }
    ) == {"2026-02-27", "2026-02-28", "2026-03-01"}
    assert (
        run_days({"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"})
        == set()
    )
    assert run_days({}) == set()


# --- check logic ----------------------------------------------------------------------------------------


def _results(rows):
    keys = ["run_id", "total_energy", "exact_energy", "shots", "num_iterations", "minimum_iteration_energy"]
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def test_variational_bound_flags_only_runs_below_exact():
    exact = -1.1373060357533995
    tbl = _results(
        [
            {"run_id": "ok", "total_energy": exact + 1e-4, "exact_energy": exact},
            {"run_id": "edge", "total_energy": exact - 5e-7, "exact_energy": exact},
            {"run_id": "bad", "total_energy": exact - 1e-3, "exact_energy": exact},
            {"run_id": "noref", "total_energy": -5.0, "exact_energy": None},
            {"run_id": "shots", "total_energy": exact - 1e-3, "exact_energy": exact, "shots": 1000},
        ]
    )
    assert [v["run_id"] for v in check_logic.variational_bound_violations(tbl, 1e-6)] == ["bad"]


def test_exact_error_must_match_the_energies():
    exact = -1.1373060357533995
    rows = [
        {"run_id": "ok", "total_energy": exact + 1e-4, "exact_energy": exact, "error_vs_exact_mha": 0.1},
        {"run_id": "noref", "total_energy": -5.0, "exact_energy": None, "error_vs_exact_mha": None},
        {"run_id": "unset", "total_energy": -5.0, "exact_energy": exact, "error_vs_exact_mha": None},
        {
            "run_id": "hartree",
            "total_energy": exact + 1e-4,
            "exact_energy": exact,
            "error_vs_exact_mha": 1e-4,
        },
        {"run_id": "orphan", "total_energy": -5.0, "exact_energy": None, "error_vs_exact_mha": 2.0},
    ]
    tbl = pa.table({k: [r[k] for r in rows] for k in rows[0]})
    bad = check_logic.exact_error_inconsistencies(tbl)
    assert [(b["run_id"], b["problem"][:8]) for b in bad] == [("hartree", "expected"), ("orphan", "an error")]


def test_iteration_consistency_and_null_keys():
    res = _results(
        [
            {"run_id": "a", "num_iterations": 2, "minimum_iteration_energy": -1.0},
            {"run_id": "b", "num_iterations": 3, "minimum_iteration_energy": -2.0},
        ]
    )
    its = pa.table(
        {
            "run_id": ["a", "a", "b", "b", "c"],
            "iteration": [1, 2, 1, 2, 1],
            "energy": [-0.9, -1.0, -1.5, -2.0, -3.0],
        }
    )
    bad = check_logic.iteration_inconsistencies(res, its)
    assert [b["run_id"] for b in bad] == ["b", "c"]
    assert "2 iteration rows, result says 3" in bad[0]["problem"]
    assert check_logic.null_key_rows(pa.table({"run_id": ["x", None], "i": [1, None]}), ["run_id", "i"]) == 2
    assert check_logic.duplicate_keys(pa.table({"run_id": ["x", "x"], "i": [1, 1]}), ["run_id", "i"]) == [
        ("x", 1)
    ]
    with pytest.raises(ValueError, match="keys"):
        check_logic.null_key_rows(pa.table({"a": [1]}), ["run_id"])


# --- GPU pinning ----------------------------------------------------------------------------------------


def test_pin_device_locks_distinct_gpus_and_falls_back_to_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    first = pin_device("GPU", tmp_path, available=["0", "1"])
    second = pin_device("auto", tmp_path, available=["0", "1"])
    third = pin_device("GPU", tmp_path, available=["0", "1"])
    assert (first.device, first.gpu_id, second.gpu_id) == ("GPU", "0", "1")
    assert third.device == "CPU" and "busy" in third.note
    first.release()
    again = pin_device("GPU", tmp_path, available=["0", "1"])
    assert again.gpu_id == "0"
    for p in (second, again):
        p.release()
    none = pin_device("GPU", tmp_path, available=[])
    assert none.device == "CPU" and "no GPU" in none.note


# --- Kubernetes GPU pod spec ----------------------------------------------------------------------------


def test_k8s_step_pod_spec_requests_gpu_and_node_selector():
    """Build the step Job exactly as k8s_job_executor does: op tags -> user-defined config -> V1Job."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    from qp_assets.assets.vqe_runner import build_vqe_runner_job, k8s_gpu_executor, run_vqe_request

    tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in run_vqe_request.tags.items()}
    user_config = get_user_defined_k8s_config(tags)
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="qp-vqe-runner:gpu", dagster_home="/opt/dagster/home"),
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-run-vqe-request",
        user_defined_k8s_config=user_config,
    )
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.requests["nvidia.com/gpu"] == "1"
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert pod.tolerations[0].key == "nvidia.com/gpu"
    # the cluster executor is a real k8s_job_executor and the job builds with it
    k8s_job = build_vqe_runner_job(k8s_gpu_executor())
    assert k8s_job.executor_def.name == "k8s_gpu_executor"


def test_vqe_op_takes_the_gpu_pool_only_where_steps_take_a_gpu(monkeypatch):
    """A pool of one slot on a CPU-only host serialised the two runner runs' steps (campaign 49.6 -> 85.0
    runs/min with two slots): the VQE op is in pool ``gpu`` with GPUs or the k8s executor, in none on CPU."""
    from qp_assets.assets.vqe_runner import GPU_POOL, vqe_pool

    monkeypatch.delenv("QP_VQE_EXECUTOR", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert vqe_pool() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert vqe_pool() == GPU_POOL == "gpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("QP_VQE_EXECUTOR", "k8s")
    assert vqe_pool() == "gpu"
    # the op as the definitions load on a CPU-only host (a fresh interpreter: this one's environment has
    # been changed by other tests, and the pool is fixed when the module is imported)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "QP_VQE_EXECUTOR")}
    env["CUDA_VISIBLE_DEVICES"] = "-1"
    code = "from qp_assets.assets.vqe_runner import run_vqe_request; print(run_vqe_request.pool)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.stdout.strip() == "None", loaded.stderr[-2000:]


def test_gpu_pool_gets_one_slot_per_gpu_unless_its_limit_was_set(tmp_path):
    """At the instance default (1 slot) a 4-GPU host would run one VQE step at a time: the launcher sizes pool
    ``gpu`` to the GPUs, but never overrides a limit someone set, and leaves 0-1 GPU hosts alone."""
    from dagster import DagsterInstance

    from qp_assets.runner.gpu import GPU_POOL, size_gpu_pool

    (tmp_path / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        assert size_gpu_pool(instance, 1) is None and size_gpu_pool(instance, 0) is None
        assert size_gpu_pool(instance, 4) == 4
        assert storage.get_concurrency_info(GPU_POOL).slot_count == 4
        storage.set_concurrency_slots(GPU_POOL, 2)  # as `dagster instance concurrency set gpu 2`
        assert size_gpu_pool(instance, 4) is None
        assert storage.get_concurrency_info(GPU_POOL).slot_count == 2


# --- Definitions ----------------------------------------------------------------------------------------


def test_definitions_shape(monkeypatch):
    monkeypatch.setenv("QP_FEATURE_RETRY_DELAY_S", "2")
    monkeypatch.setenv("QP_FEATURE_MAX_RETRIES", "3")
    from dagster import AssetCheckKey, AssetKey

    from qp_assets.definitions import build_definitions
    from qp_assets.features.ml_tables import ML_TABLES
    from qp_assets.features.transforms import TABLES

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    features = [k for k in graph.get_all_asset_keys() if k.path[0] == "quantum_features"]
    assert sorted(k.path[-1] for k in features) == sorted([*TABLES, *ML_TABLES])
    # the ML tables: daily partitions like the ten, downstream of the feature tables they read; the model
    # reads ml_run_summary and has its regression check
    summary = graph.get(AssetKey(["quantum_features", "ml_run_summary"]))
    assert summary.parent_keys == {
        AssetKey(["quantum_features", t]) for t in ML_TABLES["ml_run_summary"].depends_on
    }
    assert defs.resolve_assets_def(summary.key).partitions_def.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert graph.get(AssetKey("convergence_model")).parent_keys == {summary.key}
    assert AssetCheckKey(AssetKey("convergence_model"), "cv_error_not_regressed") in graph.asset_check_keys
    node = graph.get(AssetKey(["quantum_features", "processing_metadata"]))
    assert len(node.parent_keys) == 9
    assert graph.get(AssetKey(["quantum_features", "vqe_results"])).parent_keys == {
        AssetKey("raw_vqe_results")
    }
    assets_def = defs.resolve_assets_def(AssetKey(["quantum_features", "vqe_results"]))
    assert assets_def.backfill_policy.max_partitions_per_run is None  # single_run
    policy = assets_def.node_def.retry_policy
    assert (policy.max_retries, policy.delay) == (3, 2.0)
    assert assets_def.partitions_def.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"feature_processing_job", "vqe_runner_job"}
    sensor_names = {s.name for s in defs.sensors}
    assert sensor_names == {
        "kafka_vqe_request_sensor",
        "campaign_sensor",
        "landing_sensor",
        "feature_automation_sensor",  # QP_FEATURE_TRIGGER=automation, the default
        "feature_run_failure_email",
        "feature_run_success_email",
    }
    conditions = {graph.get(AssetKey(["quantum_features", t])).automation_condition for t in TABLES}
    assert [c.get_label() for c in conditions] == ["landed files not covered by a build"]
    runner = defs.resolve_job_def("vqe_runner_job")
    assert runner.executor_def.name in ("local_gpu_executor", "local_inprocess_executor")


def test_partitions_start_defaults_to_the_first_landed_day(monkeypatch, tmp_path):
    from dagster import AssetKey

    from qp_assets.assets import partitions
    from qp_assets.definitions import build_definitions
    from qp_assets.landing import first_landed_file, record_landed_days

    monkeypatch.setenv("QP_HOME", str(tmp_path))  # a runtime whose builds recorded nothing yet
    monkeypatch.delenv("QP_PARTITIONS_START")
    today = date(2026, 3, 10)
    assert partitions.partitions_start_date(today) == "2026-03-03"  # nothing recorded: the last week
    assert record_landed_days(tmp_path, [date(2026, 3, 1), date(2026, 2, 20)]) == date(2026, 2, 20)
    assert partitions.partitions_start_date(today) == "2026-02-20"
    assert record_landed_days(tmp_path, [date(2026, 3, 5)]) == date(2026, 2, 20)  # the earliest stays
    assert first_landed_file(tmp_path).read_text() == "2026-02-20\n"
    assert partitions.partitions_start_date(date(2026, 2, 1)) == "2026-02-01"  # never after today
    monkeypatch.setenv("QP_PARTITIONS_START", "today-30")
    assert partitions.partitions_start_date(today) == "2026-02-08"
    monkeypatch.setenv("QP_PARTITIONS_START", "2026-01-01")
    assert partitions.partitions_start_date(today) == "2026-01-01"
    for bad, msg in [("2026-13-01", "neither first-landed, a YYYY-MM-DD date nor today-N"), ("today+3", "neither"),
                     ("2026-03-11", "is after today \\(2026-03-10, UTC\\)")]:  # fmt: skip
        monkeypatch.setenv("QP_PARTITIONS_START", bad)
        with pytest.raises(ValueError, match=f"QP_PARTITIONS_START={re.escape(repr(bad))} .*{msg}"):
            partitions.partitions_start_date(today)
    # the definitions as a stack whose first result landed two days ago loads them: those three days
    monkeypatch.delenv("QP_PARTITIONS_START")
    now = datetime.now(UTC).date()
    first_landed_file(tmp_path).unlink()
    record_landed_days(tmp_path, [now - timedelta(days=2)])
    key = AssetKey(["quantum_features", "vqe_results"])
    keys = build_definitions().resolve_assets_def(key).partitions_def.get_partition_keys()
    if datetime.now(UTC).date() == now:  # not across midnight
        assert keys == [(now - timedelta(days=i)).isoformat() for i in range(2, -1, -1)]


def test_feature_runs_carry_qp_kind_however_launched(tmp_path):
    """Job runs (sensor, schedule, job page, `dagster job execute`) get qp/kind from the job; runs of the
    implicit asset job (UI Materialize, asset backfills) get it from the run coordinator of dagster.yaml."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.run_coordinator import SubmitRunContext
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from qp_assets.assets.run_tags import QpRunCoordinator
    from qp_assets.definitions import build_definitions

    defs = build_definitions()
    assert defs.resolve_job_def("feature_processing_job").run_tags == {"qp/kind": "features"}
    assert defs.resolve_job_def("vqe_runner_job").run_tags == {"qp/kind": "vqe"}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_coordinator, QpRunCoordinator)
        asset_job = defs.resolve_implicit_global_asset_job_def()
        assert asset_job.run_tags == {}  # what the UI's Materialize launches: no tags of its own
        selection = frozenset({AssetKey(["quantum_features", "vqe_results"])})

        def submit(job, **kwargs):
            code = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="qp_assets.definitions"))
            origin = RemoteJobOrigin(RemoteRepositoryOrigin(code, "__repository__"), job.name)
            run = instance.create_run_for_job(job_def=job, remote_job_origin=origin, **kwargs)
            queued = instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
            assert queued.status == DagsterRunStatus.QUEUED
            tags = dict(instance.get_run_by_id(run.run_id).tags)
            assert (
                tags.pop("dagster/code_location") == "<<in_process>>"
            )  # added by create_run from the origin
            return tags

        tags = submit(asset_job, asset_selection=selection, tags={"dagster/partition": "2026-01-14"})
        assert tags == {"dagster/partition": "2026-01-14", "qp/kind": "features"}
        # a kind set by the launcher is kept; a job run keeps exactly its job's tags
        assert submit(asset_job, asset_selection=selection, tags={"qp/kind": "manual"})["qp/kind"] == "manual"
        vqe_job = defs.resolve_job_def("vqe_runner_job")
        config = {"ops": {"load_request_batch": {"config": {"start_offset": 0, "end_offset": 1}}}}
        assert submit(vqe_job, tags=dict(vqe_job.run_tags), run_config=config) == {"qp/kind": "vqe"}
    finally:
        instance.dispose()


def test_feature_tables_are_stale_without_the_daily_rebuild():
    """Every feature table has the daily freshness policy; Dagster's own evaluator (what the UI shows)
    passes a table built after the 00:30 rebuild and fails one whose last build is older."""
    import asyncio

    from dagster import AssetKey, AssetMaterialization, DagsterInstance
    from dagster._core.definitions.freshness import CronFreshnessPolicy, FreshnessState
    from dagster._core.definitions.freshness_evaluator import CronFreshnessPolicyEvaluator
    from dagster._core.loader import LoadingContextForTest
    from dagster._core.test_utils import freeze_time

    from qp_assets.definitions import build_definitions
    from qp_assets.features.transforms import TABLES

    graph = build_definitions().resolve_asset_graph()
    for name in TABLES:
        policy = graph.get(AssetKey(["quantum_features", name])).freshness_policy
        assert isinstance(policy, CronFreshnessPolicy), name
        assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (
            "0 3 * * *",
            timedelta(hours=2, minutes=30),
            "UTC",
        )
    key = AssetKey(["quantum_features", "vqe_results"])
    node = graph.get(key)
    with DagsterInstance.ephemeral() as instance:

        def state(at: datetime) -> FreshnessState:
            with freeze_time(at):
                evaluation = CronFreshnessPolicyEvaluator().evaluate_freshness(
                    LoadingContextForTest(instance), node
                )
                return asyncio.run(evaluation)

        def build(at: datetime) -> None:
            with freeze_time(at):
                instance.report_runless_asset_event(AssetMaterialization(asset_key=key))

        assert state(datetime(2026, 3, 2, 3, 10, tzinfo=UTC)) == FreshnessState.UNKNOWN  # never built
        build(datetime(2026, 3, 1, 23, 50, tzinfo=UTC))  # a landing build before the 00:30 rebuild
        assert state(datetime(2026, 3, 2, 2, 59, tzinfo=UTC)) == FreshnessState.PASS  # 1 March's window
        assert state(datetime(2026, 3, 2, 3, 0, tzinfo=UTC)) == FreshnessState.FAIL  # no rebuild by 03:00
        build(datetime(2026, 3, 2, 3, 20, tzinfo=UTC))  # late rebuild
        assert state(datetime(2026, 3, 2, 3, 30, tzinfo=UTC)) == FreshnessState.PASS
        assert state(datetime(2026, 3, 4, 3, 0, tzinfo=UTC)) == FreshnessState.FAIL  # two days without builds


def test_feature_assets_carry_every_column_description():
    """The UI's column schema of each feature asset: every column, its type, nullability and description."""
    from dagster import AssetKey

    from qp_assets.definitions import build_definitions
    from qp_assets.features.transforms import TABLES, column_description

    defs = build_definitions()
    for name, spec in TABLES.items():
        key = AssetKey(["quantum_features", name])
        schema = defs.resolve_assets_def(key).specs_by_key[key].metadata["dagster/column_schema"]
        cols = {c.name: c for c in schema.columns}
        assert list(cols) == spec.schema.names
        for f in spec.schema.fields:
            col = cols[f.name]
            assert col.description == column_description(spec, f.name) and len(col.description) >= 20
            assert col.type == f.dataType.simpleString() and col.constraints.nullable == f.nullable
            assert col.description.startswith("Key. ") == (f.name in spec.keys)
    key = AssetKey(["quantum_features", "vqe_results"])
    cols = {
        c.name: c
        for c in defs.resolve_assets_def(key).specs_by_key[key].metadata["dagster/column_schema"].columns
    }
    assert cols["run_id"].description == "Key. The VQE run this row belongs to. Unique per run (UUID4)."
    assert cols["error_vs_hf_mha"].description.startswith(
        "Final VQE energy minus Hartree-Fock energy, milli-hartree"
    )


def test_definitions_validate_cli(tmp_path):
    """`dagster definitions validate -m qp_assets.definitions` (the CI gate)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "qp_assets.definitions",
        ],
        cwd=ROOT,
        env={**__import__("os").environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location qp_assets.definitions" in proc.stderr + proc.stdout


# --- VQE runner wiring ----------------------------------------------------------------------------------


def test_request_inputs_accepts_nested_and_flat_requests_and_names_bad_fields():
    from qp_assets.assets.vqe_runner import gpu_slots, request_inputs

    h2 = {"name": "H2", "symbols": ["H", "H"], "coords": [[0, 0, 0], [0, 0, 0.7414]]}
    mol, cfg, rid = request_inputs(
        {"request_id": "a", "molecule": h2, "config": {"basis": "sto3g", "seed": 3}}
    )
    assert (mol.name, cfg.seed, rid) == ("H2", 3, "a")
    mol, cfg, rid = request_inputs(
        {"request_id": "b", "molecule": h2, "mapper": "parity", "submitted_at": "x"}
    )
    assert (cfg.mapper, rid) == ("parity", "b")
    with pytest.raises(Exception, match="mapper"):
        request_inputs({"molecule": h2, "config": {"mapper": "nope"}})
    with pytest.raises(ValueError, match="molecule"):
        request_inputs({"request_id": "c"})
    assert gpu_slots() >= 1


def test_daily_schedule_requests_yesterday():
    from dagster import build_schedule_context

    from qp_assets.definitions import defs

    schedule = defs.get_schedule_def("daily_feature_schedule")
    ctx = build_schedule_context(
        scheduled_execution_time=datetime(2026, 3, 2, 0, 30, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = schedule.evaluate_tick(ctx).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [("2026-03-01", "daily:2026-03-01")]
    assert schedule.cron_schedule == "30 0 * * *" and schedule.job_name == "feature_processing_job"


@pytest.mark.parametrize(("running", "status"), [(None, "RUNNING"), ("1", "RUNNING"), ("0", "STOPPED")])
def test_daily_schedule_runs_by_default_like_the_sensors(monkeypatch, running, status):
    from qp_assets.definitions import build_definitions

    if running is None:
        monkeypatch.delenv("QP_SENSORS_RUNNING", raising=False)
    else:
        monkeypatch.setenv("QP_SENSORS_RUNNING", running)
    defs = build_definitions()
    assert defs.get_schedule_def("daily_feature_schedule").default_status.value == status
    assert defs.get_sensor_def("kafka_vqe_request_sensor").default_status.value == status


def test_runner_executor_is_selected_by_configuration(monkeypatch) -> None:
    from qp_assets.assets.vqe_runner import executor_from_env
    from qp_assets.definitions import build_definitions

    monkeypatch.setenv("QP_VQE_EXECUTOR", "k8s")
    monkeypatch.setenv("QP_VQE_RUNNER_IMAGE", "registry.example.org/qp-vqe-runner:gpu-1")
    executor = build_definitions().resolve_job_def("vqe_runner_job").executor_def
    assert executor.name == "k8s_gpu_executor"
    resolved = executor.config_schema.resolve_config({})  # validated against k8s_job_executor's schema
    assert resolved.success
    config = resolved.value["config"]
    assert config["job_image"] == "registry.example.org/qp-vqe-runner:gpu-1"
    assert config["job_namespace"] == "quantum-pipeline"
    monkeypatch.delenv("QP_VQE_EXECUTOR")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU-only host
    monkeypatch.setenv("QP_VQE_CPU_SLOTS", "1")
    assert (
        build_definitions().resolve_job_def("vqe_runner_job").executor_def.name == "local_inprocess_executor"
    )
    monkeypatch.setenv("QP_VQE_CPU_SLOTS", "2")  # concurrency wanted: one process per op
    assert build_definitions().resolve_job_def("vqe_runner_job").executor_def.name == "local_gpu_executor"
    with pytest.raises(ValueError, match="QP_VQE_EXECUTOR='slurm'"):
        executor_from_env({"QP_VQE_EXECUTOR": "slurm"})


def test_unreadable_landed_files_counts_only_each_days_latest_build():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    meta = pa.table(
        {
            "event_date": [date(2026, 1, 1), date(2026, 1, 1), date(2026, 1, 2)],
            "processed_at": [t, t.replace(hour=2), t],
            "bad_files": [["s3a://b/raw/topics/t/bad.avro"], [], ["s3a://b/raw/topics/t/junk.avro"]],
        }
    )
    # day 1 was rebuilt after its bad file was moved away; day 2 still has one
    assert check_logic.unreadable_landed_files(meta) == [
        {"day": "2026-01-02", "bad_files": ["s3a://b/raw/topics/t/junk.avro"]}
    ]


def test_a_dead_run_worker_fails_its_run_under_run_monitoring(tmp_path) -> None:
    """The repo's dagster.yaml: QpRunLauncher + run monitoring. A STARTED run whose worker process is gone
    (killed) is marked failed by Dagster's own monitoring step; a live worker's run is left alone."""
    import logging
    import os
    import subprocess
    import sys

    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
    from dagster._core.events import EngineEventData
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    from qp_assets.assets.run_launcher import QpRunLauncher

    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_launcher, QpRunLauncher)
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # a run worker that was there and is gone (as after kill -9)
        runs = {}
        for name, pid in (("dead", dead.pid), ("alive", os.getpid()), ("no-pid", None)):
            run = instance.create_run_for_job(job_def=_tiny_job(), run_id=None)
            instance.handle_run_event(run.run_id, _run_start_event(run))
            if pid is not None:
                instance.report_engine_event(
                    f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
                )
            runs[name] = run.run_id
        for record in instance.get_run_records(RunsFilter(run_ids=list(runs.values()))):
            assert record.dagster_run.status == DagsterRunStatus.STARTED
            monitor_started_run(instance, None, record, logging.getLogger("test"))
        status = {name: instance.get_run_by_id(rid).status for name, rid in runs.items()}
        assert status == {
            "dead": DagsterRunStatus.FAILURE,
            "alive": DagsterRunStatus.STARTED,
            "no-pid": DagsterRunStatus.STARTED,
        }
        assert f"run worker process {dead.pid} is gone" in str(
            [e.message for e in instance.all_logs(runs["dead"]) if e.message]
        )
    finally:
        instance.dispose()


def _tiny_job():
    from dagster import job, op

    @op
    def noop() -> None:
        return None

    @job(name="tiny_job")
    def tiny_job():
        noop()

    return tiny_job


def _run_start_event(run):
    from dagster import DagsterEvent, DagsterEventType

    return DagsterEvent(
        event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name, message="start"
    )
