"""Request latency under a real ``dagster-daemon``, for new and for existing configurations.

What a user gets with the product's defaults (dagster.yaml, sensor intervals, executor): a fresh, isolated
stack (own ``QP_HOME`` under a temp dir, ports shifted by ``--port-offset``) and a fresh Dagster instance;
the daemon runs the sensors. Two scenarios, ``--requests`` H2 requests each, submitted ``--gap`` seconds
apart with ``qp``'s own publisher:

* new configuration: every request has a configuration (basis x mapper) whose result topic does not exist
  yet, so Kafka Connect has never seen it;
* existing configuration: every request uses the default configuration, whose topic exists by then.

Per request it measures submit -> result acknowledged by Kafka (the ``run_vqe_request`` step's output,
recorded after the publish was acknowledged) and submit -> row queryable in Iceberg (``vqe_results`` through
PyIceberg), and prints p50 / p95 of both side by side with their ratio.

    .venv/bin/python benchmarks/daemon_latency.py [--requests 5 --gap 8 --timeout 420]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: H2 configurations whose result topics differ (basis x mapper); H2 stays <= 8 qubits in all of them.
NEW_CONFIGS = [
    {"basis": basis, "mapper": mapper}
    for basis in ("6-31g", "3-21g", "sto-6g")
    for mapper in ("jordan_wigner", "parity", "bravyi_kitaev")
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _acked_at(instance, request_ids: set[str]) -> dict[str, float]:
    """request_id -> wall-clock time its run_vqe_request step output was recorded (epoch seconds)."""
    from dagster import DagsterEventType, RunsFilter

    out: dict[str, float] = {}
    for run in instance.get_runs(RunsFilter(job_name="vqe_runner_job")):
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_OUTPUT):
            meta = entry.dagster_event.event_specific_data.metadata or {}
            rid = meta.get("request_id")
            if rid is not None and rid.value in request_ids:
                out[rid.value] = entry.timestamp
    return out


def _wait_first_tick(instance, daemon: subprocess.Popen, timeout_s: float = 180) -> None:
    from dagster._core.scheduler.instigation import InstigatorType

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError("dagster-daemon exited")
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == "kafka_vqe_request_sensor" and state.instigator_data:
                if state.instigator_data.cursor:
                    return
        time.sleep(1)
    raise TimeoutError("the request sensor did not tick")


def _scenario(name, configs, settings, instance, gap_s, timeout_s) -> dict[str, list[float]]:
    from qp_assets import e2e
    from qp_assets.features.catalog import read_rows

    h2 = e2e.molecule_requests(("H2",))[0]["molecule"]
    submitted: dict[str, float] = {}
    for i, cfg in enumerate(configs):
        req = e2e.build_request(h2, {"seed": i, **cfg}, request_id=f"bench-{name[:3]}-{i}-{time.time_ns()}")
        submitted[req["request_id"]] = time.time()
        e2e.submit_requests([req], settings)
        print(f"  {name}: submitted {req['request_id']} {cfg or '(default configuration)'}", flush=True)
        time.sleep(gap_s)
    acked: dict[str, float] = {}
    landed: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(landed) < len(submitted):
        acked.update(_acked_at(instance, set(submitted) - set(acked)))
        try:
            ids = read_rows("vqe_results", day=datetime.now(UTC).date(), settings=settings).column(
                "request_id"
            )
            now = time.time()
            for rid in set(ids.to_pylist()) & (set(submitted) - set(landed)):
                landed[rid] = now
        except Exception:  # the table does not exist before the first feature run
            pass
        time.sleep(1)
    missing = sorted(set(submitted) - set(landed))
    if missing:
        raise TimeoutError(
            f"{name}: {len(missing)} request(s) not in Iceberg after {timeout_s:.0f} s: {missing}"
        )
    return {
        "ack": [acked[r] - submitted[r] for r in submitted if r in acked],
        "iceberg": [landed[r] - submitted[r] for r in submitted],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5, help="requests per scenario (<= 9)")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between submits")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds to wait per scenario")
    parser.add_argument("--port-offset", type=int, default=None, help="default: the first free one")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= len(NEW_CONFIGS):
        print(f"--requests: 1..{len(NEW_CONFIGS)}", file=sys.stderr)
        return 2

    from qp_assets.stack.launcher import free_port_offset

    if args.port_offset is None:
        args.port_offset = free_port_offset()
    work = Path(tempfile.mkdtemp(prefix="qp-daemon-bench-"))
    os.environ.update({"QP_HOME": str(work / "qp"), "QP_PORT_OFFSET": str(args.port_offset)})
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "KAFKA_CONNECT_URL", "S3_ENDPOINT_URL",
                 "PUSHGATEWAY_URL", "PROMETHEUS_URL", "ICEBERG_CATALOG_URI", "DAGSTER_HOME"):  # fmt: skip
        os.environ.pop(name, None)
    (work / "qp").mkdir()
    lib = ROOT / ".qp" / "lib"
    if lib.exists():
        (work / "qp" / "lib").symlink_to(lib)
    from dagster import DagsterInstance

    from qp_assets.settings import prepare_dagster_home
    from qp_assets.stack import down, ensure_up

    daemon = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the stack and daemon
    try:
        t0 = time.monotonic()
        try:
            settings = ensure_up()
        except Exception:
            for log_file in sorted((work / "qp" / "logs").glob("*.log")):
                print(f"--- {log_file.name}:\n" + log_file.read_text()[-1500:], file=sys.stderr)
            raise
        print(f"fresh stack up in {time.monotonic() - t0:.1f} s (ports +{args.port_offset})", flush=True)
        home = prepare_dagster_home(work / "dagster_home")
        log = (work / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        with DagsterInstance.from_config(str(home)) as instance:
            _wait_first_tick(instance, daemon)
            results = {
                "new configuration": _scenario(
                    "new", NEW_CONFIGS[: args.requests], settings, instance, args.gap, args.timeout
                ),
                "existing configuration": _scenario(
                    "existing", [{}] * args.requests, settings, instance, args.gap, args.timeout
                ),
            }
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, 15)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, 9)
        down()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.requests} H2 requests per scenario, {args.gap:.0f} s apart, under dagster-daemon")
    print(f"{'scenario':<24}{'ack p50':>9}{'ack p95':>9}{'iceberg p50':>13}{'iceberg p95':>13}{'ratio':>7}")
    for name, r in results.items():
        a50, a95, i50, i95 = (
            _pct(r["ack"], 50),
            _pct(r["ack"], 95),
            _pct(r["iceberg"], 50),
            _pct(r["iceberg"], 95),
        )
        print(f"{name:<24}{a50:>9.1f}{a95:>9.1f}{i50:>13.1f}{i95:>13.1f}{i50 / a50:>7.1f}")
    new, old = results["new configuration"], results["existing configuration"]
    ratio = statistics.median(new["iceberg"]) / statistics.median(old["iceberg"])
    print(f"\nratio new / existing configuration, Iceberg p50: {ratio:.2f}")
    print("(seconds; ack = submit -> result acknowledged by Kafka; iceberg = submit -> row queryable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
