"""The end-to-end driver behind ``qp e2e``: requests -> Kafka sensor -> VQE runs -> Kafka -> S3 -> Iceberg.

Steps (each printed with its duration):

1. bring the local stack up (``qp_assets.stack.ensure_up``) and prepare ``DAGSTER_HOME``
   (default ``.qp/dagster_home`` with the repo's dagster.yaml);
2. remember the request topic's current watermarks as the sensor cursor, submit one request per molecule
   (default H2, HeH+, LiH; LiH with a frozen core and a 2-electron / 3-orbital active space);
3. evaluate ``kafka_vqe_request_sensor`` once and execute every RunRequest as a ``vqe_runner_job`` run
   in the Dagster instance (the same run config and run key the daemon would use);
4. wait until Kafka Connect has landed every published run under ``raw/topics/.../day=<today>/``;
5. materialize today's partition of the ten feature tables (``feature_processing_job``);
6. print a summary read back from Iceberg: energies, errors vs exact, row counts per table.
"""

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from qp_assets.settings import Settings, load_env, prepare_dagster_home

DEFAULT_MOLECULES = ("H2", "HeH+", "LiH")
#: VQE configuration per molecule (anything not named uses VQEConfig defaults: sto3g, JW, UCCSD, L-BFGS-B).
MOLECULE_CONFIGS: dict[str, dict[str, Any]] = {
    "LiH": {"freeze_core": True, "active_electrons": 2, "active_orbitals": 3},
}


def build_request(
    molecule: dict[str, Any], config: dict[str, Any], request_id: str | None = None
) -> dict[str, Any]:
    """A request in the streaming contract's flat form: id, molecule, VQE config fields, submit time (ms)."""
    return {
        "request_id": request_id or f"e2e-{uuid.uuid4().hex[:12]}",
        "molecule": molecule,
        **config,
        "submitted_at": int(time.time() * 1000),
    }


def molecule_requests(names: tuple[str, ...] = DEFAULT_MOLECULES, seed: int = 7) -> list[dict[str, Any]]:
    """One request per molecule name from the shipped molecule set (raises ValueError naming unknown ones)."""
    from qp_assets.vqe.molecule import load_molecules

    known = load_molecules()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"molecules: unknown name(s) {unknown}; known: {sorted(known)}")
    out = []
    for name in names:
        cfg = {"seed": seed, **MOLECULE_CONFIGS.get(name, {})}
        out.append(build_request(known[name].to_dict(), cfg))
    return out


@dataclass
class E2EReport:
    """What one end-to-end pass produced (durations in seconds)."""

    request_ids: list[str]
    dagster_run_ids: list[str] = field(default_factory=list)
    result_run_ids: list[str] = field(default_factory=list)
    day: str = ""
    feature_run_id: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _stamp(report: E2EReport, step: str, started: float, verbose: bool) -> float:
    now = time.monotonic()
    report.timings[step] = round(now - started, 2)
    if verbose:
        print(f"[e2e] {step}: {report.timings[step]:.1f} s", flush=True)
    return now


def submit_requests(requests: list[dict[str, Any]], settings: Settings) -> None:
    from qp_assets.streaming.publisher import publish_request

    for req in requests:
        publish_request(req, settings)


def run_sensor_once(instance: Any, defs: Any, cursor: str | None) -> tuple[list[Any], str | None]:
    """Evaluate the Kafka request sensor once with ``cursor``; return (run requests, new cursor)."""
    from dagster import build_sensor_context

    sensor = defs.get_sensor_def("kafka_vqe_request_sensor")
    ctx = build_sensor_context(cursor=cursor, instance=instance, resources={"kafka": defs.resources["kafka"]})
    data = sensor.evaluate_tick(ctx)
    return list(data.run_requests or []), data.cursor


def quiet_run_logs() -> dict[str, Any]:
    """Run config that keeps Dagster's console logger of an in-process run to warnings and errors (the
    run's events are in the instance and the UI either way); ``QP_RUN_LOG_LEVEL`` overrides (e.g. DEBUG)."""
    level = load_env().run_log_level
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def execute_run_requests(instance: Any, defs: Any, run_requests: list[Any]) -> list[str]:
    """Execute each RunRequest as a vqe_runner_job run in ``instance`` (skips run keys already run)."""
    from dagster import DagsterRunStatus, RunsFilter

    job = defs.resolve_job_def("vqe_runner_job")
    run_ids = []
    for req in run_requests:
        done = instance.get_runs(
            RunsFilter(tags={"dagster/run_key": req.run_key}, statuses=[DagsterRunStatus.SUCCESS]), limit=1
        )
        if done:
            continue
        result = job.execute_in_process(
            run_config={**req.run_config, **quiet_run_logs()},
            instance=instance,
            tags={**req.tags, "dagster/run_key": req.run_key},
        )
        run_ids.append(result.run_id)
        if not result.success:
            raise RuntimeError(f"vqe_runner_job run {result.run_id} for {req.run_key} failed")
    return run_ids


def published_run_ids(instance: Any, dagster_run_ids: list[str]) -> list[str]:
    """VQE result run ids published by the given vqe_runner_job runs (from their op outputs)."""
    from dagster import DagsterEventType

    out = []
    for rid in dagster_run_ids:
        for entry in instance.all_logs(rid, of_type=DagsterEventType.STEP_OUTPUT):
            meta = entry.dagster_event.event_specific_data.metadata or {}
            if "run_id" in meta and entry.dagster_event.step_key.startswith("run_vqe_request"):
                out.append(meta["run_id"].value)
    return out


def op_metadata(instance: Any, dagster_run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """request_id -> the metadata values of its run_vqe_request op output in the given vqe_runner_job runs
    (the convergence plot left out)."""
    from dagster import DagsterEventType

    out = {}
    for rid in dagster_run_ids:
        for entry in instance.all_logs(rid, of_type=DagsterEventType.STEP_OUTPUT):
            meta = entry.dagster_event.event_specific_data.metadata or {}
            if entry.dagster_event.step_key.startswith("run_vqe_request") and "request_id" in meta:
                out[meta["request_id"].value] = {
                    k: v.value for k, v in meta.items() if k != "convergence_plot"
                }
    return out


def landed_run_ids(settings: Settings, day: datetime, since: datetime) -> set[str]:
    """run_ids in landed files of ``day`` modified at or after ``since`` (reads the Avro files)."""
    import io

    import fastavro

    from qp_assets.landing import RAW_PREFIX, day_prefix
    from qp_assets.s3 import s3_client
    from qp_assets.sensors.landing import list_topics

    client = s3_client(settings)
    found: set[str] = set()
    for topic in list_topics(client, settings.bucket, RAW_PREFIX):
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.bucket, Prefix=day_prefix(topic, day.date())
        )
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["LastModified"] < since or not obj["Key"].endswith(".avro"):
                    continue
                body = client.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read()
                try:
                    found.update(rec["run_id"] for rec in fastavro.reader(io.BytesIO(body)))
                except Exception:  # a foreign or partial file: not ours
                    continue
    return found


def wait_for_landing(settings: Settings, run_ids: list[str], since: datetime, timeout_s: float) -> float:
    """Poll S3 until all ``run_ids`` have landed; return seconds waited (TimeoutError otherwise)."""
    started = time.monotonic()
    missing = set(run_ids)
    while True:
        missing -= landed_run_ids(settings, datetime.now(UTC), since)
        if not missing:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(
                f"{len(missing)} result(s) not landed after {timeout_s:.0f} s: {sorted(missing)}"
            )
        time.sleep(2)


def iceberg_summary(settings: Settings, day: str, run_ids: list[str]) -> list[dict[str, Any]]:
    """vqe_results rows of ``run_ids`` on ``day`` read back through PyIceberg."""
    from datetime import date

    from qp_assets.features.catalog import read_rows

    rows = read_rows("vqe_results", day=date.fromisoformat(day), settings=settings).to_pylist()
    wanted = set(run_ids)
    cols = (
        "molecule_name",
        "total_energy",
        "exact_energy",
        "error_vs_exact_mha",
        "num_iterations",
        "device_used",
    )
    return [{"run_id": r["run_id"], **{c: r[c] for c in cols}} for r in rows if r["run_id"] in wanted]


def require_sink_connector(settings: Settings) -> list[str]:
    """Names of the connectors registered in Kafka Connect; RuntimeError if none (nothing would land)."""
    import httpx

    names = httpx.get(f"{settings.kafka_connect_url}/connectors", timeout=10).json()
    if not names:
        raise RuntimeError(
            f"Kafka Connect at {settings.kafka_connect_url} has no connector registered: results would never "
            "land in S3 (register the S3 sink first)"
        )
    return list(names)


def run_e2e(
    molecules: tuple[str, ...] = DEFAULT_MOLECULES,
    landing_timeout_s: float = 300.0,
    verbose: bool = True,
) -> E2EReport:
    """Run the whole pipeline once (see module doc) and return what it produced."""
    from dagster import DagsterInstance

    from qp_assets.stack import ensure_up

    t0 = started = time.monotonic()
    settings = ensure_up()
    prepare_dagster_home()
    from qp_assets.definitions import defs
    from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
    from qp_assets.streaming.topics import REQUESTS_TOPIC

    requests = molecule_requests(molecules)
    require_sink_connector(settings)
    report = E2EReport(request_ids=[r["request_id"] for r in requests])
    started = _stamp(report, "stack_up", started, verbose)

    with DagsterInstance.get() as instance:
        marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
        cursor = dump_cursor(REQUESTS_TOPIC, {p: high for p, (_low, high) in marks.items()})
        since = datetime.now(UTC).replace(microsecond=0)
        submit_requests(requests, settings)
        started = _stamp(report, "submit", started, verbose)

        run_requests: list[Any] = []
        deadline = time.monotonic() + 60
        while (
            not run_requests and time.monotonic() < deadline
        ):  # the topic may not exist before the first submit
            run_requests, _ = run_sensor_once(instance, defs, cursor)
            if not run_requests:
                time.sleep(1)
        if not run_requests:
            raise RuntimeError("kafka_vqe_request_sensor saw no new request after submitting")
        report.dagster_run_ids = execute_run_requests(instance, defs, run_requests)
        report.result_run_ids = published_run_ids(instance, report.dagster_run_ids)
        started = _stamp(report, "vqe_runs", started, verbose)

        wait_for_landing(settings, report.result_run_ids, since, landing_timeout_s)
        started = _stamp(report, "landing", started, verbose)

        report.day = datetime.now(UTC).date().isoformat()
        feature_job = defs.resolve_job_def("feature_processing_job")
        result = feature_job.execute_in_process(
            partition_key=report.day, instance=instance, run_config=quiet_run_logs()
        )
        if not result.success:
            raise RuntimeError(f"feature_processing_job run {result.run_id} failed")
        report.feature_run_id = result.run_id
        for ev in result.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            report.row_counts[mat.asset_key.path[-1]] = int(mat.metadata["dagster/row_count"].value)
        started = _stamp(report, "features", started, verbose)

    report.rows = iceberg_summary(settings, report.day, report.result_run_ids)
    report.timings["total"] = round(time.monotonic() - t0, 2)
    return report


def exact_space(molecule: str | None) -> str:
    """Which space the exact reference of ``molecule``'s e2e configuration is computed in: ``full`` (FCI in
    the basis) or the frozen-core / active space, e.g. ``fc, CAS(2e,3o)``."""
    cfg = MOLECULE_CONFIGS.get(molecule or "", {})
    parts = ["fc"] if cfg.get("freeze_core") else []
    if cfg.get("active_electrons") is not None:
        parts.append(f"CAS({cfg['active_electrons']}e,{cfg['active_orbitals']}o)")
    return ", ".join(parts) or "full"


def format_report(report: E2EReport) -> str:
    lines = [
        f"day {report.day}: {len(report.dagster_run_ids)} vqe_runner_job run(s), "
        f"{len(report.result_run_ids)} result(s), feature run {report.feature_run_id[:8]}",
        f"{'molecule':<10} {'E_vqe (Ha)':>14} {'E_exact (Ha)':>14} {'exact in':<18} {'error (mHa)':>12} "
        f"{'iters':>6} device",
    ]
    for r in sorted(report.rows, key=lambda r: r["molecule_name"] or ""):
        exact = f"{r['exact_energy']:.8f}" if r["exact_energy"] is not None else "-"
        err = f"{r['error_vs_exact_mha']:.4f}" if r["error_vs_exact_mha"] is not None else "-"
        lines.append(
            f"{r['molecule_name']:<10} {r['total_energy']:>14.8f} {exact:>14} "
            f"{exact_space(r['molecule_name']):<18} {err:>12} {r['num_iterations']:>6} {r['device_used']}"
        )
    lines.append("rows for the day: " + ", ".join(f"{t}={n}" for t, n in report.row_counts.items()))
    lines.append("timings (s): " + json.dumps(report.timings))
    return "\n".join(lines)
