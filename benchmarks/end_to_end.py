"""End-to-end latency: VQE request submitted -> its row queryable in Iceberg, plus sensor tick duration.

Runs ``--waves`` waves of ``--per-wave`` H2 requests (default 4 x 5 = 20) through the real path in one
process: submit to ``vqe.requests`` -> ``kafka_vqe_request_sensor`` tick -> ``vqe_runner_job`` runs (in
process) -> publish -> Kafka Connect lands Avro in S3 -> ``feature_processing_job`` for today -> PyIceberg
read shows the request's row. Latency per request = first successful PyIceberg read - its submit time.
Also times ``--ticks`` sensor ticks on the idle topic (watermarks only). Prints a table and the ratios
p95/p50 and sensor tick / p50 latency, plus each stage's share of a wave.

    .venv/bin/python benchmarks/end_to_end.py [--waves 4 --per-wave 5 --ticks 20]
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, date, datetime


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--per-wave", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--landing-timeout", type=float, default=300.0)
    parser.add_argument(
        "--until",
        choices=("iceberg", "kafka"),
        default="iceberg",
        help="end point of the latency: row queryable in Iceberg (default) or result acknowledged by Kafka",
    )
    args = parser.parse_args(argv)
    if args.waves < 1 or args.per_wave < 1 or args.ticks < 1:
        print("--waves, --per-wave and --ticks must be >= 1", file=sys.stderr)
        return 2

    # One tick evaluated by hand returns at once (the daemon's ticks wait for a request instead; see
    # docs/orchestration.md): the idle ticks measure the watermark read itself.
    os.environ["QP_REQUEST_SENSOR_WAIT_S"] = "0"
    from dagster import DagsterInstance
    from tqdm import tqdm

    from qp_assets import e2e
    from qp_assets.features.catalog import read_rows
    from qp_assets.resources.core import REQUESTS_TOPIC
    from qp_assets.sensors.kafka_offsets import dump_cursor, read_watermarks
    from qp_assets.stack import ensure_up

    settings = ensure_up()
    if args.until == "iceberg":
        e2e.require_sink_connector(settings)
    e2e.prepare_dagster_home()
    from qp_assets.definitions import defs

    latencies: list[float] = []
    stages: dict[str, list[float]] = {"sensor+runs": [], "landing": [], "features": [], "query": []}
    with DagsterInstance.get() as instance:
        marks = read_watermarks(settings.kafka_bootstrap_servers, REQUESTS_TOPIC)
        cursor = dump_cursor(REQUESTS_TOPIC, {p: h for p, (_l, h) in marks.items()}) if marks else None
        for _wave in tqdm(range(args.waves), desc="waves", unit="wave"):
            requests = [
                e2e.build_request(e2e.molecule_requests(("H2",))[0]["molecule"], {"seed": i})
                for i in range(args.per_wave)
            ]
            since = datetime.now(UTC).replace(microsecond=0)
            submitted = {}
            for req in requests:
                submitted[req["request_id"]] = time.monotonic()
                e2e.submit_requests([req], settings)
            t = time.monotonic()
            run_requests: list = []
            while not run_requests:
                run_requests, cursor = e2e.run_sensor_once(instance, defs, cursor)
            dagster_runs = e2e.execute_run_requests(instance, defs, run_requests)
            run_ids = e2e.published_run_ids(instance, dagster_runs)
            stages["sensor+runs"].append(time.monotonic() - t)
            if args.until == "kafka":
                done = time.monotonic()
                latencies.extend(done - submitted[rid] for rid in submitted)
                continue
            t = time.monotonic()
            e2e.wait_for_landing(settings, run_ids, since, args.landing_timeout)
            stages["landing"].append(time.monotonic() - t)
            t = time.monotonic()
            day = datetime.now(UTC).date().isoformat()
            result = defs.resolve_job_def("feature_processing_job").execute_in_process(
                partition_key=day, instance=instance
            )
            assert result.success, f"feature run {result.run_id} failed"
            stages["features"].append(time.monotonic() - t)
            t = time.monotonic()
            pending = set(submitted)
            while pending:
                rows = read_rows("vqe_results", day=date.fromisoformat(day), settings=settings)
                now = time.monotonic()
                for rid in set(rows.column("request_id").to_pylist()) & pending:
                    latencies.append(now - submitted[rid])
                    pending.discard(rid)
                if pending:
                    raise RuntimeError(f"requests {sorted(pending)} not in vqe_results after the feature run")
            stages["query"].append(time.monotonic() - t)

        tick_times = []
        for _ in range(args.ticks):
            t = time.monotonic()
            e2e.run_sensor_once(instance, defs, cursor)
            tick_times.append(time.monotonic() - t)

    p50, p95 = _pct(latencies, 50), _pct(latencies, 95)
    label = (
        "request -> queryable in Iceberg" if args.until == "iceberg" else "request -> result acked by Kafka"
    )
    t50, t95 = _pct(tick_times, 50), _pct(tick_times, 95)
    stages = {k: v for k, v in stages.items() if v}
    wave_total = sum(statistics.mean(v) for v in stages.values())
    print(
        f"\nrequests: {len(latencies)} ({args.waves} waves x {args.per_wave}), sensor ticks: {len(tick_times)}"
    )
    print(f"{'measure':<34}{'p50 (s)':>10}{'p95 (s)':>10}{'mean (s)':>10}")
    print(f"{label:<34}{p50:>10.2f}{p95:>10.2f}{statistics.mean(latencies):>10.2f}")
    print(
        f"{'sensor tick (watermarks only)':<34}{t50:>10.3f}{t95:>10.3f}{statistics.mean(tick_times):>10.3f}"
    )
    for name, vals in stages.items():
        print(
            f"{'  wave stage: ' + name:<34}{_pct(vals, 50):>10.2f}{_pct(vals, 95):>10.2f}{statistics.mean(vals):>10.2f}"
        )
    print(f"\nratio latency p95/p50: {p95 / p50:.2f}")
    print(f"ratio sensor tick p50 / latency p50: {t50 / p50:.4f}")
    for name, vals in stages.items():
        print(f"share of a wave, {name}: {statistics.mean(vals) / wave_total:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
